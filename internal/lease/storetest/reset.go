package storetest

import (
	"testing"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// replayTime is a timestamp in a zone other than UTC with a monotonic
// reading, as time.Now() gives: stores return it in UTC without either.
func replayTime() time.Time {
	return time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("X", 3600)).Add(0)
}

// testResetCheckpoint: a reset moves the checkpoint whoever owns the lease,
// drops the owner, the pending checkpoint and any hand-over request, and
// fences the previous owner's renewals and checkpoints.
func testResetCheckpoint(t *testing.T, s lease.Store) {
	ctx := t.Context()
	owned := mustCreate(t, s, full("shardId-000000000000"))
	owned, err := s.RequestHandoff(ctx, owned, "worker-b")
	if err != nil {
		t.Fatalf("RequestHandoff: %v", err)
	}

	ts := replayTime()
	reset := owned.Clone()
	reset.Checkpoint = kcl.AtTimestamp
	reset.CheckpointTimestamp = ts
	got, err := s.ResetCheckpoint(ctx, reset)
	if err != nil {
		t.Fatalf("ResetCheckpoint: %v", err)
	}
	want := owned.Clone()
	want.Owner = ""
	want.HandoffTo = ""
	want.Counter++
	want.Checkpoint = kcl.AtTimestamp
	want.CheckpointTimestamp = ts.UTC().Round(0)
	want.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
	want.PendingCheckpointState = nil
	want.OwnerSwitchesSinceCheckpoint = 0
	equal(t, "reset lease", got, want)
	expectStored(t, s, want)
	if !got.CheckpointTimestamp.Equal(ts) {
		t.Errorf("timestamp %v, want %v", got.CheckpointTimestamp, ts)
	}

	// The previous owner is fenced: its renewal and its in-flight
	// checkpoint are refused and change nothing.
	_, err = s.Renew(ctx, owned)
	expectConflictWith(t, err, "renew", want)
	late := owned.Clone()
	late.Checkpoint = kcl.NewSequence(bigSeq + "9")
	_, err = s.UpdateCheckpoint(ctx, late)
	expectConflictWith(t, err, "checkpoint", want)
	expectStored(t, s, want)

	// Anyone takes it at once; the position survives the take.
	taken := mustTake(t, s, got, "worker-c")
	if taken.Checkpoint != kcl.AtTimestamp || !taken.CheckpointTimestamp.Equal(ts) {
		t.Errorf("taken lease: checkpoint %v at %v, want AT_TIMESTAMP at %v", taken.Checkpoint, taken.CheckpointTimestamp, ts)
	}

	// A sequence-number reset stores the position just before the record;
	// a timestamp passed along with a position other than AT_TIMESTAMP is
	// not kept.
	for _, cp := range []kcl.ExtendedSequenceNumber{
		kcl.NewSequence(bigSeq).Before(),
		{SequenceNumber: bigSeq, SubSequenceNumber: 2},
		kcl.TrimHorizon,
		kcl.Latest,
	} {
		r := taken.Clone()
		r.Checkpoint = cp
		r.CheckpointTimestamp = ts
		got, err := s.ResetCheckpoint(ctx, r)
		if err != nil {
			t.Fatalf("ResetCheckpoint(%v): %v", cp, err)
		}
		w := taken.Clone()
		w.Owner = ""
		w.Counter++
		w.Checkpoint = cp
		w.CheckpointTimestamp = time.Time{}
		w.OwnerSwitchesSinceCheckpoint = 0
		equal(t, "lease reset to "+cp.String(), got, w)
		expectStored(t, s, w)
		taken = mustTake(t, s, got, "worker-c")
	}
}

// testResetConflicts: a reset is fenced by the counter alone.
func testResetConflicts(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	renewed, err := s.Renew(ctx, l)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	stale := l.Clone()
	stale.Checkpoint = kcl.TrimHorizon
	_, err = s.ResetCheckpoint(ctx, stale)
	expectConflictWith(t, err, "reset", renewed)

	// The owner is not part of the condition.
	other := renewed.Clone()
	other.Owner = "someone-else"
	other.Checkpoint = kcl.TrimHorizon
	got, err := s.ResetCheckpoint(ctx, other)
	if err != nil {
		t.Fatalf("ResetCheckpoint with another owner: %v", err)
	}
	if got.Owner != "" || got.Checkpoint != kcl.TrimHorizon || got.Counter != renewed.Counter+1 {
		t.Errorf("reset lease %+v", got)
	}

	missing := full("shardId-404")
	_, err = s.ResetCheckpoint(ctx, missing)
	expectConflictGone(t, err, "reset", missing.Key)
}

// testCheckpointTimestamp: the timestamp of an AT_TIMESTAMP checkpoint is
// kept by Create and by checkpoints that stay at AT_TIMESTAMP (a prepared
// checkpoint), and goes once the checkpoint moves to a record.
func testCheckpointTimestamp(t *testing.T, s lease.Store) {
	ts := replayTime()
	l := fresh("shardId-000000000000")
	l.Checkpoint = kcl.AtTimestamp
	l.CheckpointTimestamp = ts
	got := mustCreate(t, s, l)
	if !got.CheckpointTimestamp.Equal(ts) || got.CheckpointTimestamp.Location() != time.UTC {
		t.Fatalf("created lease timestamp %v, want %v in UTC", got.CheckpointTimestamp, ts)
	}

	other := fresh("shardId-000000000001")
	other.CheckpointTimestamp = ts // not AT_TIMESTAMP: dropped
	if got := mustCreate(t, s, other); !got.CheckpointTimestamp.IsZero() {
		t.Errorf("TRIM_HORIZON lease stored timestamp %v", got.CheckpointTimestamp)
	}

	l = mustTake(t, s, got, "worker-a")
	l.PendingCheckpoint = kcl.NewSequence("10")
	l.PendingCheckpointState = []byte("state")
	l = checkpoint(t, s, l)
	if !l.CheckpointTimestamp.Equal(ts) {
		t.Errorf("timestamp after a prepared checkpoint: %v, want %v", l.CheckpointTimestamp, ts)
	}
	l.Checkpoint = l.PendingCheckpoint
	l.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
	nl, err := s.UpdateCheckpoint(t.Context(), l)
	if err != nil {
		t.Fatalf("UpdateCheckpoint: %v", err)
	}
	if !nl.CheckpointTimestamp.IsZero() {
		t.Errorf("timestamp kept after checkpointing a record: %v", nl.CheckpointTimestamp)
	}
	expectStored(t, s, nl)
}
