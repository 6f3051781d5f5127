package kcltest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kcltest"
)

// counter counts records and checkpoints every second batch; on a shard end
// or a shutdown it checkpoints what it has.
type counter struct {
	n       int
	batches int
}

func (c *counter) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	c.n += len(in.Records)
	c.batches++
	if c.batches%2 == 0 {
		return in.Checkpointer.Checkpoint(ctx)
	}
	return nil
}

func (c *counter) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	return in.Checkpointer.Checkpoint(ctx) // stores SHARD_END
}

func (c *counter) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	return in.Checkpointer.Checkpoint(ctx)
}

// Test what a processor checkpoints, batch by batch.
func Example() {
	ctx := context.Background()
	sh := kcltest.NewShard("shardId-000000000000", &counter{})

	_ = sh.Deliver(ctx, sh.Records("a", "b")...)
	fmt.Println("after batch 1:", sh.Checkpoint())
	_ = sh.Deliver(ctx, sh.Records("c")...)
	fmt.Println("after batch 2 is the last record:", sh.Checkpoint() == sh.Delivered())
	// Output:
	// after batch 1: TRIM_HORIZON
	// after batch 2 is the last record: true
}

// A lost lease: the processor is told, and checkpoints fail with
// kcl.ErrLeaseLost.
func ExampleShard_LoseLease() {
	ctx := context.Background()
	var sh *kcltest.Shard
	sh = kcltest.NewShard("shardId-000000000000", kcl.RecordProcessorFunc(
		func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			_ = sh.LoseLease(ctx) // another worker takes the shard mid-batch
			err := in.Checkpointer.Checkpoint(ctx)
			fmt.Println("checkpoint refused:", errors.Is(err, kcl.ErrLeaseLost))
			return nil
		}))
	err := sh.Deliver(ctx, sh.Records("a")...)
	fmt.Println("deliver reports the loss:", errors.Is(err, kcl.ErrLeaseLost))
	fmt.Println("checkpoint:", sh.Checkpoint())
	// Output:
	// checkpoint refused: true
	// deliver reports the loss: true
	// checkpoint: TRIM_HORIZON
}

// A shard end after a split: the processor must checkpoint SHARD_END.
func ExampleShard_End() {
	ctx := context.Background()
	sh := kcltest.NewShard("shardId-000000000000", &counter{})
	_ = sh.Deliver(ctx, sh.Records("a")...)
	err := sh.End(ctx, "shardId-000000000001", "shardId-000000000002")
	fmt.Println(err, sh.Checkpoint())

	forgetful := kcltest.NewShard("shardId-000000000003", shardEndIgnorer{})
	err = forgetful.End(ctx)
	fmt.Println(errors.Is(err, kcltest.ErrShardEndNotCheckpointed))
	// Output:
	// <nil> SHARD_END
	// true
}

type shardEndIgnorer struct{}

func (shardEndIgnorer) ProcessRecords(context.Context, kcl.ProcessRecordsInput) error { return nil }
func (shardEndIgnorer) ShardEnded(context.Context, kcl.ShardEndedInput) error         { return nil }

// A graceful stop: ShutdownRequested may still checkpoint.
func ExampleShard_Shutdown() {
	ctx := context.Background()
	sh := kcltest.NewShard("shardId-000000000000", &counter{})
	recs := sh.Records("a")
	_ = sh.Deliver(ctx, recs...)
	fmt.Println("before:", sh.Checkpoint())
	_ = sh.Shutdown(ctx)
	fmt.Println("after:", sh.Checkpoint() == recs[0].Position())
	// Output:
	// before: TRIM_HORIZON
	// after: true
}
