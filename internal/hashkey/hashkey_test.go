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

func TestNextPrev(t *testing.T) {
	for _, k := range []Key{{}, {Lo: 1}, {Lo: ^uint64(0)}, {Hi: 1}, {Hi: 7, Lo: 9}, Max()} {
		n, ok := k.Next()
		if want := new(big.Int).Add(toBig(k), big.NewInt(1)); ok != (k != Max()) || ok && toBig(n).Cmp(want) != 0 {
			t.Errorf("%v.Next() = %v, %v", k, n, ok)
		}
		p, ok := k.Prev()
		if want := new(big.Int).Sub(toBig(k), big.NewInt(1)); ok != (k != Key{}) || ok && toBig(p).Cmp(want) != 0 {
			t.Errorf("%v.Prev() = %v, %v", k, p, ok)
		}
	}
	if Max().String() != "340282366920938463463374607431768211455" {
		t.Errorf("Max = %v", Max())
	}
}

func TestSplit(t *testing.T) {
	space := new(big.Int).Lsh(big.NewInt(1), 128)
	for _, n := range []int{1, 2, 3, 4, 7, 10, 1000} {
		rs := Split(n)
		if len(rs) != n || rs[0].Start != (Key{}) || rs[n-1].End != Max() {
			t.Fatalf("Split(%d) = %v", n, rs)
		}
		for i, r := range rs {
			// Start is floor(i * 2^128 / n); each range ends where the next
			// begins.
			want := new(big.Int).Div(new(big.Int).Mul(space, big.NewInt(int64(i))), big.NewInt(int64(n)))
			if toBig(r.Start).Cmp(want) != 0 {
				t.Fatalf("Split(%d)[%d].Start = %v, want %v", n, i, r.Start, want)
			}
			if i+1 < n {
				if next, _ := r.End.Next(); next != rs[i+1].Start {
					t.Fatalf("Split(%d)[%d] ends at %v, next starts at %v", n, i, r.End, rs[i+1].Start)
				}
			}
		}
		if got := Uncovered(rs); len(got) != 0 {
			t.Errorf("Split(%d) leaves %v uncovered", n, got)
		}
	}
}

func TestUncoveredAndOverlaps(t *testing.T) {
	r := func(a, b uint64) Range { return Range{Start: Key{Lo: a}, End: Key{Lo: b}} }
	got := Uncovered([]Range{r(10, 20), r(0, 4), r(15, 30), {Start: Key{Lo: 40}, End: Max()}})
	want := []Range{r(5, 9), r(31, 39)}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Uncovered = %v, want %v", got, want)
	}
	if got := Uncovered(nil); len(got) != 1 || got[0] != (Range{End: Max()}) {
		t.Errorf("Uncovered(nil) = %v, want the whole space", got)
	}
	if !r(1, 5).Overlaps(r(5, 9)) || r(1, 4).Overlaps(r(5, 9)) || !r(0, 100).Overlaps(r(5, 9)) {
		t.Error("Overlaps is wrong at the edges")
	}
	if s := r(1, 5).String(); s != "1..5" {
		t.Errorf("String = %q", s)
	}
}
