// Package hashkey computes and compares Kinesis hash keys: the 128-bit
// unsigned integers that decide which shard a record goes to. A record's hash
// key is its explicit hash key when it has one, else the MD5 digest of its
// partition key read as a big-endian integer. Shards own contiguous, inclusive
// ranges of hash keys, written in decimal by the Kinesis API.
package hashkey

import (
	"crypto/md5"
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
	"strconv"
)

// Key is a 128-bit hash key.
type Key struct{ Hi, Lo uint64 }

// ErrInvalid is returned by Parse for a string that is not a decimal number
// from 0 to 2^128-1.
var ErrInvalid = errors.New("not a decimal hash key from 0 to 2^128-1")

// FromPartitionKey returns the hash key Kinesis derives from a partition key:
// the MD5 digest of its UTF-8 bytes.
func FromPartitionKey(pk string) Key {
	sum := md5.Sum([]byte(pk))
	return Key{Hi: binary.BigEndian.Uint64(sum[:8]), Lo: binary.BigEndian.Uint64(sum[8:])}
}

// For returns the hash key of a record: explicitHashKey parsed when it is set,
// else the partition key's digest.
func For(partitionKey, explicitHashKey string) (Key, error) {
	if explicitHashKey != "" {
		return Parse(explicitHashKey)
	}
	return FromPartitionKey(partitionKey), nil
}

// Parse reads a decimal hash key.
func Parse(s string) (Key, error) {
	if s == "" || len(s) > 39 {
		return Key{}, ErrInvalid
	}
	var k Key
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return Key{}, ErrInvalid
		}
		// k = k*10 + d, failing on overflow.
		hiHi, hiLo := bits.Mul64(k.Hi, 10)
		loHi, loLo := bits.Mul64(k.Lo, 10)
		if hiHi != 0 {
			return Key{}, ErrInvalid
		}
		hi, carry := bits.Add64(hiLo, loHi, 0)
		if carry != 0 {
			return Key{}, ErrInvalid
		}
		lo, carry := bits.Add64(loLo, uint64(c-'0'), 0)
		hi, carry = bits.Add64(hi, 0, carry)
		if carry != 0 {
			return Key{}, ErrInvalid
		}
		k = Key{Hi: hi, Lo: lo}
	}
	return k, nil
}

// String returns k in decimal, the form the Kinesis API uses.
func (k Key) String() string {
	if k.Hi == 0 {
		return strconv.FormatUint(k.Lo, 10)
	}
	// Divide by 10^19 (the largest power of ten below 2^64) twice.
	const p = 10_000_000_000_000_000_000
	var parts [3]uint64
	hi, lo := k.Hi, k.Lo
	for i := 2; i >= 0; i-- {
		qHi := hi / p
		r := hi % p
		qLo, rem := bits.Div64(r, lo, p)
		parts[i] = rem
		hi, lo = qHi, qLo
	}
	// 2^128 < 10^39, so three base-10^19 digits suffice.
	buf := make([]byte, 0, 39)
	started := false
	for _, d := range parts {
		if !started {
			if d == 0 {
				continue
			}
			buf = strconv.AppendUint(buf, d, 10)
			started = true
			continue
		}
		s := strconv.FormatUint(d, 10)
		for range 19 - len(s) {
			buf = append(buf, '0')
		}
		buf = append(buf, s...)
	}
	return string(buf)
}

// Compare returns -1, 0 or +1 as k is below, equal to or above o.
func (k Key) Compare(o Key) int {
	switch {
	case k.Hi < o.Hi:
		return -1
	case k.Hi > o.Hi:
		return 1
	case k.Lo < o.Lo:
		return -1
	case k.Lo > o.Lo:
		return 1
	}
	return 0
}

// Range is an inclusive range of hash keys, as a shard owns.
type Range struct{ Start, End Key }

// ParseRange reads a range from its decimal bounds.
func ParseRange(start, end string) (Range, error) {
	s, err := Parse(start)
	if err != nil {
		return Range{}, err
	}
	e, err := Parse(end)
	if err != nil {
		return Range{}, err
	}
	if s.Compare(e) > 0 {
		return Range{}, ErrInvalid
	}
	return Range{Start: s, End: e}, nil
}

// Contains reports whether k lies in r.
func (r Range) Contains(k Key) bool {
	return k.Compare(r.Start) >= 0 && k.Compare(r.End) <= 0
}

// Max returns the largest hash key, 2^128-1.
func Max() Key { return Key{Hi: ^uint64(0), Lo: ^uint64(0)} }

// Next returns k+1; ok is false when k is Max.
func (k Key) Next() (next Key, ok bool) {
	lo, carry := bits.Add64(k.Lo, 1, 0)
	hi, carry := bits.Add64(k.Hi, 0, carry)
	return Key{Hi: hi, Lo: lo}, carry == 0
}

// Prev returns k-1; ok is false when k is 0.
func (k Key) Prev() (prev Key, ok bool) {
	lo, borrow := bits.Sub64(k.Lo, 1, 0)
	hi, borrow := bits.Sub64(k.Hi, 0, borrow)
	return Key{Hi: hi, Lo: lo}, borrow == 0
}

// Overlaps reports whether r and o share a key.
func (r Range) Overlaps(o Range) bool {
	return r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// String formats r as "start..end" for logs.
func (r Range) String() string { return r.Start.String() + ".." + r.End.String() }

// Uncovered returns the parts of the whole space [0, Max] outside every
// range of rs, in order. It sorts rs.
func Uncovered(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return a.Start.Compare(b.Start) })
	var gaps []Range
	next, more := Key{}, true // first key not yet covered; more is false past Max
	for _, r := range rs {
		if !more {
			break
		}
		if r.Start.Compare(next) > 0 {
			end, _ := r.Start.Prev()
			gaps = append(gaps, Range{Start: next, End: end})
		}
		if r.End.Compare(next) >= 0 {
			next, more = r.End.Next()
		}
	}
	if more {
		gaps = append(gaps, Range{Start: next, End: Max()})
	}
	return gaps
}

// Split cuts the whole space into n ranges (n ≥ 1) of equal size, give or
// take one key, as Kinesis does for a new stream of n shards.
func Split(n int) []Range {
	out := make([]Range, n)
	// The i-th range starts at floor(i * 2^128 / n).
	start := func(i int) Key {
		if i == 0 {
			return Key{}
		}
		// Long division of i·2^128 by n in base 2^64; i < n, so the
		// quotient fits in 128 bits.
		hi, r := bits.Div64(uint64(i), 0, uint64(n))
		lo, _ := bits.Div64(r, 0, uint64(n))
		return Key{Hi: hi, Lo: lo}
	}
	for i := range n {
		out[i].Start = start(i)
		if i+1 < n {
			out[i].End, _ = start(i + 1).Prev()
		} else {
			out[i].End = Max()
		}
	}
	return out
}
