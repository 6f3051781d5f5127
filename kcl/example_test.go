package kcl_test

import (
	"context"
	"fmt"

	"github.com/shardline/shardline/kcl"
)

// A processor written as a function: handle the batch, then checkpoint. If
// it returned an error, the same batch would be delivered again.
func ExampleRecordProcessorFunc() {
	proc := kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		for _, r := range in.Records {
			fmt.Printf("%s %s %s\n", in.ShardID, r.PartitionKey, r.Data)
		}
		return in.Checkpointer.Checkpoint(ctx)
	})
	in := kcl.ProcessRecordsInput{
		ShardID:      "shardId-000000000000",
		Records:      []kcl.Record{{PartitionKey: "user-1", Data: []byte("hello"), SequenceNumber: "1"}},
		Checkpointer: noopCheckpointer{},
	}
	if err := proc.ProcessRecords(context.Background(), in); err != nil {
		fmt.Println("error:", err)
	}
	// Output: shardId-000000000000 user-1 hello
}

// Positions compare numerically, then by sub-sequence number.
func ExampleExtendedSequenceNumber_Compare() {
	a := kcl.NewSequence("9")
	b := kcl.ExtendedSequenceNumber{SequenceNumber: "10", SubSequenceNumber: 2}
	fmt.Println(a.Compare(b), b.Compare(kcl.ShardEnd), kcl.TrimHorizon.Compare(a))
	// Output: -1 -1 -1
}

type noopCheckpointer struct{}

func (noopCheckpointer) Checkpoint(context.Context) error                               { return nil }
func (noopCheckpointer) CheckpointAt(context.Context, kcl.ExtendedSequenceNumber) error { return nil }
func (noopCheckpointer) CheckpointRecord(context.Context, kcl.Record) error             { return nil }
func (noopCheckpointer) Prepare(context.Context, kcl.ExtendedSequenceNumber, []byte) (kcl.PreparedCheckpoint, error) {
	return nil, nil
}
func (noopCheckpointer) Last() kcl.ExtendedSequenceNumber { return kcl.TrimHorizon }
