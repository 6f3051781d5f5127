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
