package checkpoint_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

// The worker hands the checkpointer to the processor after recording how far
// it delivered; the processor then stores positions up to there. In a worker
// the Writer is a conditional write to the shard's lease.
func ExampleCheckpointer() {
	ctx := context.Background()
	w := checkpoint.WriterFunc(func(_ context.Context, s checkpoint.State) error {
		fmt.Println("stored", s.Checkpoint)
		return nil
	})
	c := checkpoint.New("shardId-000000000000", w, kcl.TrimHorizon)

	// The worker delivers a batch ending at sequence number 300.
	c.SetDelivered(kcl.NewSequence("300"))

	// The processor finished the record at 250 only.
	if err := c.CheckpointAt(ctx, kcl.NewSequence("250")); err != nil {
		fmt.Println(err)
	}
	// A position beyond what was delivered is refused.
	err := c.CheckpointAt(ctx, kcl.NewSequence("400"))
	fmt.Println("invalid:", errors.Is(err, kcl.ErrInvalidCheckpoint))

	// Checkpoint stores the end of the delivered records.
	if err := c.Checkpoint(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("last", c.Last())
	// Output:
	// stored 250
	// invalid: true
	// stored 300
	// last 300
}

// A two-phase checkpoint stores application state with a pending position
// first; a processor restarted between the two steps finds both in its
// InitializeInput.
func ExampleCheckpointer_Prepare() {
	ctx := context.Background()
	w := checkpoint.WriterFunc(func(_ context.Context, s checkpoint.State) error {
		if s.Pending.IsZero() {
			fmt.Println("checkpoint", s.Checkpoint)
		} else {
			fmt.Printf("checkpoint %s, pending %s with state %q\n", s.Checkpoint, s.Pending, s.PendingState)
		}
		return nil
	})
	c := checkpoint.New("shardId-000000000000", w, kcl.NewSequence("100"))
	c.SetDelivered(kcl.NewSequence("200"))

	p, err := c.Prepare(ctx, kcl.NewSequence("200"), []byte("offset=42"))
	if err != nil {
		fmt.Println(err)
		return
	}
	// ... make the side effects of records 101..200 durable ...
	if err := p.Commit(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// checkpoint 100, pending 200 with state "offset=42"
	// checkpoint 200
}
