package checkpoint_test

import (
	"fmt"
	"math/big"
	"testing"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

// kinesisSeq returns a sequence number of today's Kinesis format for the
// shard numbered shard, the n-th of its records.
func kinesisSeq(shard, n int64) kcl.ExtendedSequenceNumber {
	v := new(big.Int).Lsh(big.NewInt(2), 184)
	v.Or(v, new(big.Int).Lsh(big.NewInt(n+1_000_000), 40))
	v.Or(v, new(big.Int).Lsh(big.NewInt(shard), 4))
	return kcl.NewSequence(v.String())
}

// A sequence number of another shard, or a made-up one, between the stored
// checkpoint and the last delivered record is refused (before: accepted,
// and after a restart the shard could not be read from it).
func TestCheckpointRefusesOtherShards(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, kcl.TrimHorizon) // shard number 7
	c.SetDelivered(kinesisSeq(7, 100))
	ctx := t.Context()
	for _, bad := range []kcl.ExtendedSequenceNumber{
		kinesisSeq(1, 50), // another shard's record, within range
		kcl.NewSequence("49000000000000000000000000000000000000000000000000000001"), // made up
		kcl.NewSequence("1"),
	} {
		err := c.CheckpointAt(ctx, bad)
		wantShardError(t, err, kcl.ErrInvalidCheckpoint)
		if _, err := c.Prepare(ctx, bad, nil); err == nil {
			t.Errorf("Prepare(%s) accepted", bad)
		}
	}
	if n := len(w.written()); n != 0 {
		t.Fatalf("%d writes of refused checkpoints", n)
	}
	if err := c.CheckpointAt(ctx, kinesisSeq(7, 60)); err != nil {
		t.Fatalf("a record of this shard: %v", err)
	}
	if err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Last(); got != kinesisSeq(7, 100) {
		t.Errorf("last %s, want the last delivered", got)
	}
}

// Sequence numbers made up by emulators and test fakes (a counter) do not
// carry the shard's number: the check stays off, and every delivered record
// can be checkpointed.
func TestCheckpointMadeUpSequenceNumbers(t *testing.T) {
	fake := func(n int) kcl.ExtendedSequenceNumber { return kcl.NewSequence(fmt.Sprintf("4959%052d", n)) }
	c := checkpoint.New(shardID, &fakeWriter{}, kcl.TrimHorizon)
	c.SetDeliveredBatch(fake(100), fake(140)) // both read as shard 6 or 8, not 7
	for _, n := range []int{101, 120, 140} {
		if err := c.CheckpointAt(t.Context(), fake(n)); err != nil {
			t.Fatalf("checkpoint at delivered record %d: %v", n, err)
		}
	}
	// A batch of real-looking numbers of this shard that begins with one of
	// another shard turns the check off too.
	c = checkpoint.New(shardID, &fakeWriter{}, kcl.TrimHorizon)
	c.SetDeliveredBatch(kinesisSeq(3, 1), kinesisSeq(7, 9))
	if err := c.CheckpointAt(t.Context(), kinesisSeq(3, 1)); err != nil {
		t.Fatalf("checkpoint at the batch's first record: %v", err)
	}
}

func TestOtherShard(t *testing.T) {
	// A sequence number kinesis-mock gave a record of shardId-000000000001.
	const mock = "49680810963119755836572392076487871072204526704796893202"
	for _, tt := range []struct {
		shard, seq, want string
	}{
		{"shardId-000000000000", mock, "shardId-000000000001"},
		{"shardId-000000000001", mock, ""},
		{"shardId-000000000007", kinesisSeq(8, 1).SequenceNumber, "shardId-000000000008"},
		{"shardId-000000000000", "100", ""}, // another format: cannot tell
		{"my-shard", mock, ""},              // another shard ID form
		{"shardId-000000000000", "TRIM_HORIZON", ""},
	} {
		got, ok := checkpoint.OtherShard(tt.shard, tt.seq)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("OtherShard(%s, %s) = %q %v, want %q", tt.shard, tt.seq, got, ok, tt.want)
		}
	}
}
