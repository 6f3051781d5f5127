package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// handEncoded builds an aggregated record field by field, following the
// KPL's documented layout, independently of the generated code.
func handEncoded(pks, ehks []string, recs [][3]any) []byte {
	var body []byte
	for _, pk := range pks {
		body = protowire.AppendTag(body, 1, protowire.BytesType)
		body = protowire.AppendString(body, pk)
	}
	for _, ehk := range ehks {
		body = protowire.AppendTag(body, 2, protowire.BytesType)
		body = protowire.AppendString(body, ehk)
	}
	for _, r := range recs {
		var rec []byte
		rec = protowire.AppendTag(rec, 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, uint64(r[0].(int)))
		if ehki, ok := r[1].(int); ok {
			rec = protowire.AppendTag(rec, 2, protowire.VarintType)
			rec = protowire.AppendVarint(rec, uint64(ehki))
		}
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendString(rec, r[2].(string))
		body = protowire.AppendTag(body, 3, protowire.BytesType)
		body = protowire.AppendBytes(body, rec)
	}
	return seal(body)
}

// seal frames a message body with the magic bytes and its digest.
func seal(body []byte) []byte {
	sum := md5.Sum(body)
	out := append([]byte(magic), body...)
	return append(out, sum[:]...)
}

func TestMarshalMatchesDocumentedLayout(t *testing.T) {
	recs := []Record{
		{PartitionKey: "a", Data: []byte("one")},
		{PartitionKey: "b", ExplicitHashKey: "42", Data: []byte("two")},
		{PartitionKey: "a", Data: []byte("three")},
		{PartitionKey: "c", ExplicitHashKey: "42", Data: []byte{}},
	}
	got, err := Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	want := handEncoded([]string{"a", "b", "c"}, []string{"42"}, [][3]any{
		{0, nil, "one"}, {1, 0, "two"}, {0, nil, "three"}, {2, 0, ""},
	})
	if !bytes.Equal(got, want) {
		t.Fatalf("Marshal\n got %x\nwant %x", got, want)
	}
	if !bytes.HasPrefix(got, []byte{0xF3, 0x89, 0x9A, 0xC2}) {
		t.Fatalf("no magic prefix: %x", got[:4])
	}
}

func TestUnmarshalHandEncoded(t *testing.T) {
	data := handEncoded([]string{"k1", "k2"}, []string{"7", "8"}, [][3]any{
		{1, 1, "x"}, {0, nil, "y"}, {1, 0, "z"},
	})
	got, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{PartitionKey: "k2", ExplicitHashKey: "8", Data: []byte("x")},
		{PartitionKey: "k1", Data: []byte("y")},
		{PartitionKey: "k2", ExplicitHashKey: "7", Data: []byte("z")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Unmarshal = %+v, want %+v", got, want)
	}
}

func TestRoundTripAndSize(t *testing.T) {
	var a Aggregator
	var want []Record
	for i := range 300 {
		r := Record{PartitionKey: fmt.Sprintf("pk-%d", i%17), Data: bytes.Repeat([]byte{byte(i)}, i)}
		if i%5 == 0 {
			r.ExplicitHashKey = fmt.Sprint(i % 3)
		}
		predicted := a.SizeWith(r)
		a.Add(r)
		want = append(want, r)
		if a.Size() != predicted {
			t.Fatalf("after %d records: Size %d, SizeWith predicted %d", i+1, a.Size(), predicted)
		}
		if i%50 == 0 || i == 299 {
			enc, err := a.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if len(enc) != a.Size() {
				t.Fatalf("after %d records: encoded %d bytes, Size says %d", i+1, len(enc), a.Size())
			}
			got, err := Unmarshal(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip after %d records differs", i+1)
			}
		}
	}
	if a.Len() != 300 || len(a.Records()) != 300 {
		t.Fatalf("Len %d", a.Len())
	}
	a.Reset()
	if a.Len() != 0 || a.Size() != Overhead {
		t.Fatalf("after Reset: Len %d Size %d", a.Len(), a.Size())
	}
	if _, err := a.Marshal(); err == nil {
		t.Fatal("Marshal of an empty aggregator succeeded")
	}
}

func TestUnmarshalErrors(t *testing.T) {
	valid, err := Marshal([]Record{{PartitionKey: "k", Data: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(valid)
	flipped[len(magic)+2] ^= 0xFF
	body := func(b []byte) []byte { return seal(b) }
	var noData []byte // a record without its required data field
	{
		var rec []byte
		rec = protowire.AppendTag(rec, 1, protowire.VarintType)
		rec = protowire.AppendVarint(rec, 0)
		noData = protowire.AppendTag(noData, 1, protowire.BytesType)
		noData = protowire.AppendString(noData, "k")
		noData = protowire.AppendTag(noData, 3, protowire.BytesType)
		noData = protowire.AppendBytes(noData, rec)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrNotAggregated},
		{"plain", []byte("hello, world, this is a plain record"), ErrNotAggregated},
		{"magic only", []byte(magic), ErrNotAggregated},
		{"short", append([]byte(magic), make([]byte, digestSize-1)...), ErrNotAggregated},
		{"bad digest", flipped, ErrChecksum},
		{"truncated", valid[:len(valid)-1], ErrChecksum},
		{"no records", body(nil), ErrMalformed},
		{"garbage protobuf", body([]byte{0xFF, 0xFF, 0xFF}), ErrMalformed},
		{"missing required data", body(noData), ErrMalformed},
		{"pk index out of range", handEncoded([]string{"a"}, nil, [][3]any{{1, nil, "x"}}), ErrMalformed},
		{"ehk index out of range", handEncoded([]string{"a"}, []string{"1"}, [][3]any{{0, 1, "x"}}), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := Unmarshal(tc.data)
			if !errors.Is(err, tc.want) || recs != nil {
				t.Fatalf("Unmarshal = %v, %v; want nil, %v", recs, err, tc.want)
			}
			for _, other := range []error{ErrNotAggregated, ErrChecksum, ErrMalformed} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("error %v also matches %v", err, other)
				}
			}
		})
	}
}

func TestUnmarshalIgnoresTagsAndUnknownFields(t *testing.T) {
	var rec []byte
	rec = protowire.AppendTag(rec, 1, protowire.VarintType)
	rec = protowire.AppendVarint(rec, 0)
	rec = protowire.AppendTag(rec, 3, protowire.BytesType)
	rec = protowire.AppendString(rec, "payload")
	var tag []byte
	tag = protowire.AppendTag(tag, 1, protowire.BytesType)
	tag = protowire.AppendString(tag, "env")
	tag = protowire.AppendTag(tag, 2, protowire.BytesType)
	tag = protowire.AppendString(tag, "prod")
	rec = protowire.AppendTag(rec, 4, protowire.BytesType)
	rec = protowire.AppendBytes(rec, tag)
	rec = protowire.AppendTag(rec, 99, protowire.VarintType) // a field this schema does not know
	rec = protowire.AppendVarint(rec, 5)
	var body []byte
	body = protowire.AppendTag(body, 1, protowire.BytesType)
	body = protowire.AppendString(body, "k")
	body = protowire.AppendTag(body, 3, protowire.BytesType)
	body = protowire.AppendBytes(body, rec)
	got, err := Unmarshal(seal(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].PartitionKey != "k" || string(got[0].Data) != "payload" {
		t.Fatalf("Unmarshal = %+v", got)
	}
}

func TestUnmarshalDoesNotAlias(t *testing.T) {
	data, _ := Marshal([]Record{{PartitionKey: "k", Data: []byte("abc")}})
	got, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 0
	}
	if string(got[0].Data) != "abc" || got[0].PartitionKey != "k" {
		t.Fatalf("records changed with the input: %+v", got)
	}
}

func TestIsAggregated(t *testing.T) {
	data, _ := Marshal([]Record{{PartitionKey: "k", Data: []byte("abc")}})
	if !IsAggregated(data) {
		t.Error("an aggregate is not recognised")
	}
	if IsAggregated([]byte(strings.Repeat("x", 40))) {
		t.Error("plain data recognised as an aggregate")
	}
}
