package hashkey

import (
	"crypto/md5"
	"errors"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestParseAndString(t *testing.T) {
	for _, s := range []string{
		"0", "1", "9", "10", "18446744073709551615", "18446744073709551616",
		"170141183460469231731687303715884105727", "170141183460469231731687303715884105728",
		"340282366920938463463374607431768211455", "10000000000000000000", "100000000000000000000000000000000000000",
	} {
		k, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if got := k.String(); got != s {
			t.Errorf("Parse(%q).String() = %q", s, got)
		}
		want, _ := new(big.Int).SetString(s, 10)
		if got := toBig(k); got.Cmp(want) != 0 {
			t.Errorf("Parse(%q) = %v", s, got)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "-1", "1.5", "abc", " 1", "340282366920938463463374607431768211456",
		"999999999999999999999999999999999999999", "1000000000000000000000000000000000000000"} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error %v, want ErrInvalid", s, err)
		}
	}
}

func TestRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		k := Key{Hi: r.Uint64() >> r.UintN(64), Lo: r.Uint64()}
		want := toBig(k).String()
		if got := k.String(); got != want {
			t.Fatalf("%+v: String %q, want %q", k, got, want)
		}
		back, err := Parse(want)
		if err != nil || back != k {
			t.Fatalf("Parse(%q) = %+v, %v; want %+v", want, back, err, k)
		}
		o := Key{Hi: r.Uint64() >> r.UintN(64), Lo: r.Uint64()}
		if got, want := k.Compare(o), toBig(k).Cmp(toBig(o)); got != want {
			t.Fatalf("Compare(%v, %v) = %d, want %d", k, o, got, want)
		}
	}
}

func TestFromPartitionKey(t *testing.T) {
	sum := md5.Sum([]byte("pk-1"))
	want := new(big.Int).SetBytes(sum[:])
	if got := toBig(FromPartitionKey("pk-1")); got.Cmp(want) != 0 {
		t.Fatalf("FromPartitionKey = %v, want %v", got, want)
	}
	k, err := For("pk-1", "")
	if err != nil || k != FromPartitionKey("pk-1") {
		t.Fatalf("For without explicit key = %v, %v", k, err)
	}
	k, err = For("pk-1", "42")
	if err != nil || k != (Key{Lo: 42}) {
		t.Fatalf("For with explicit key = %v, %v", k, err)
	}
}

func TestRange(t *testing.T) {
	r, err := ParseRange("100", "200")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[uint64]bool{99: false, 100: true, 150: true, 200: true, 201: false} {
		if got := r.Contains(Key{Lo: k}); got != want {
			t.Errorf("Contains(%d) = %v, want %v", k, got, want)
		}
	}
	if _, err := ParseRange("200", "100"); !errors.Is(err, ErrInvalid) {
		t.Errorf("inverted range accepted: %v", err)
	}
	if _, err := ParseRange("0", "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad end accepted: %v", err)
	}
}

func toBig(k Key) *big.Int {
	hi := new(big.Int).SetUint64(k.Hi)
	return hi.Lsh(hi, 64).Or(hi, new(big.Int).SetUint64(k.Lo))
}
