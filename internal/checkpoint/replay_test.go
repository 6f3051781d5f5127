package checkpoint_test

import (
	"testing"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

// A replay stores (S, -1), "just before S". The checkpointer resumes from
// it like from any checkpoint, but a processor can never store a negative
// position itself.
func TestCheckpointAfterReplayToSequence(t *testing.T) {
	ctx := t.Context()
	w := &fakeWriter{}
	replayed := seq("500").Before() // (500, -1)
	c := checkpoint.New(shardID, w, replayed)
	c.SetDelivered(seq("500"))

	for _, bad := range []kcl.ExtendedSequenceNumber{replayed, sub("500", -2), sub("499", -1)} {
		wantShardError(t, c.CheckpointAt(ctx, bad), kcl.ErrInvalidCheckpoint)
		if _, err := c.Prepare(ctx, bad, nil); err == nil {
			t.Errorf("Prepare(%v): no error", bad)
		}
	}
	if n := len(w.written()); n != 0 {
		t.Fatalf("%d writes after refused checkpoints", n)
	}
	if err := c.CheckpointAt(ctx, seq("500")); err != nil {
		t.Fatalf("checkpoint of the replayed record: %v", err)
	}
	if got := c.Last(); got != seq("500") {
		t.Errorf("Last = %v, want 500", got)
	}
}
