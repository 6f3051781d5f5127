package kpl

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzUnmarshal feeds arbitrary bytes to the de-aggregator. It must never
// panic, must classify every failure as one of the three errors, and what it
// accepts must re-encode to records that decode the same. It runs on its
// seed corpus (testdata/fuzz/FuzzUnmarshal and the f.Add calls below) as a
// normal test; `go test -fuzz=FuzzUnmarshal ./internal/kpl` explores further.
func FuzzUnmarshal(f *testing.F) {
	seeds := [][]Record{
		{{PartitionKey: "k", Data: []byte("v")}},
		{{PartitionKey: "a", Data: nil}, {PartitionKey: "b", ExplicitHashKey: "340282366920938463463374607431768211455", Data: []byte{0, 1, 2}}},
		{{PartitionKey: "same", Data: []byte("1")}, {PartitionKey: "same", Data: []byte("2")}, {PartitionKey: "other", ExplicitHashKey: "0", Data: []byte("3")}},
	}
	for _, s := range seeds {
		data, err := Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)-1])
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add([]byte("plain record"))
	f.Add(seal([]byte{0x1a, 0x02, 0x08, 0x05}))      // record with an out-of-range key index, no data
	f.Add(seal([]byte{0x0a, 0x01, 'k', 0x1a, 0x80})) // truncated record length

	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := Unmarshal(data)
		if err != nil {
			n := 0
			for _, e := range []error{ErrNotAggregated, ErrChecksum, ErrMalformed} {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 || recs != nil {
				t.Fatalf("Unmarshal(%x) = %d records, error %v matching %d sentinels", data, len(recs), err, n)
			}
			if IsAggregated(data) == errors.Is(err, ErrNotAggregated) {
				t.Fatalf("IsAggregated disagrees with %v", err)
			}
			return
		}
		if len(recs) == 0 {
			t.Fatal("success with no records")
		}
		again, err := Marshal(recs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Unmarshal(again)
		if err != nil {
			t.Fatalf("decode of re-encoded records: %v", err)
		}
		if !reflect.DeepEqual(back, recs) {
			t.Fatalf("round trip differs:\n%+v\n%+v", recs, back)
		}
		var a Aggregator
		for _, r := range recs {
			a.Add(r)
		}
		if a.Size() != len(again) {
			t.Fatalf("Size %d, encoded %d", a.Size(), len(again))
		}
		if !bytes.HasPrefix(again, []byte(magic)) {
			t.Fatal("re-encoded without magic")
		}
	})
}
