package kpl_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/shardline/shardline/kpl"
)

func TestMarshalUnmarshalRoundTrip(t *testing.T) {
	in := []kpl.Record{
		{PartitionKey: "a", Data: []byte("one")},
		{PartitionKey: "b", ExplicitHashKey: "340282366920938463463374607431768211455", Data: []byte{}},
		{PartitionKey: "a", Data: []byte("three")},
	}
	data, err := kpl.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !kpl.IsAggregated(data) {
		t.Fatal("IsAggregated = false for an aggregate")
	}
	out, err := kpl.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
	data[len(data)-1] ^= 1
	if _, err := kpl.Unmarshal(data); !errors.Is(err, kpl.ErrChecksum) {
		t.Errorf("corrupt digest: %v, want ErrChecksum", err)
	}
	if _, err := kpl.Unmarshal([]byte("plain")); !errors.Is(err, kpl.ErrNotAggregated) || kpl.IsAggregated([]byte("plain")) {
		t.Errorf("plain record: %v, want ErrNotAggregated", err)
	}
	if _, err := kpl.Marshal(nil); err == nil {
		t.Error("Marshal(nil) succeeded")
	}
}
