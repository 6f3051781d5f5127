package lease

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// lineage is a table after two reshardings:
//
//	g ─┬─ p ─┬─ c1
//	   │     └─ c2
//	   └─ q
//
// g and p are finished; c1, c2 and q are being processed.
func lineage() []Lease {
	return []Lease{
		{Key: "g", Counter: 9, Checkpoint: kcl.ShardEnd, ChildShardIDs: []string{"p", "q"}},
		{Key: "p", Counter: 7, Checkpoint: kcl.ShardEnd, ParentShardIDs: []string{"g"}}, // children known from theirs
		{Key: "q", Counter: 5, Owner: "w1", Checkpoint: kcl.NewSequence("300"), ParentShardIDs: []string{"g"}},
		{Key: "c1", Counter: 3, Owner: "w1", Checkpoint: kcl.NewSequence("100"), ParentShardIDs: []string{"p"}},
		{Key: "c2", Counter: 4, Owner: "w2", Checkpoint: kcl.NewSequence("200"), ParentShardIDs: []string{"p"}},
	}
}

// planned summarises a plan as "shard=checkpoint (why)" in write order and
// the skipped shards.
func planned(p ResetPlan) (changes, skipped []string) {
	for _, c := range p.Changes {
		cp := c.Checkpoint.String()
		if !c.CheckpointTimestamp.IsZero() {
			cp += "@" + c.CheckpointTimestamp.Format(time.TimeOnly)
		}
		changes = append(changes, c.Shard+"="+cp+" ("+c.Why+")")
	}
	for k := range p.Skipped {
		skipped = append(skipped, k)
	}
	slices.Sort(skipped)
	return changes, skipped
}

func TestPlanReset(t *testing.T) {
	ts := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	all := []string{"g", "p", "q", "c1", "c2"}
	tests := []struct {
		name    string
		req     ResetRequest
		changes []string
		skipped []string
	}{{
		name: "all at a timestamp, every shard still in the stream",
		req:  ResetRequest{Position: kcl.StartAtTimestamp(ts), StreamShards: all},
		changes: []string{"g=AT_TIMESTAMP@10:00:00 (selected)", "p=AT_TIMESTAMP@10:00:00 (selected)",
			"q=AT_TIMESTAMP@10:00:00 (selected)", "c1=AT_TIMESTAMP@10:00:00 (selected)", "c2=AT_TIMESTAMP@10:00:00 (selected)"},
	}, {
		name: "all at a timestamp, the oldest shard trimmed",
		req:  ResetRequest{Position: kcl.StartAtTimestamp(ts), StreamShards: []string{"p", "q", "c1", "c2"}},
		changes: []string{"p=AT_TIMESTAMP@10:00:00 (selected)", "q=AT_TIMESTAMP@10:00:00 (selected)",
			"c1=AT_TIMESTAMP@10:00:00 (selected)", "c2=AT_TIMESTAMP@10:00:00 (selected)"},
		skipped: []string{"g"},
	}, {
		name:    "all without the stream's shard list leaves finished leases finished",
		req:     ResetRequest{Position: kcl.StartAtTrimHorizon()},
		changes: []string{"q=TRIM_HORIZON (selected)", "c1=TRIM_HORIZON (selected)", "c2=TRIM_HORIZON (selected)"},
		skipped: []string{"g", "p"},
	}, {
		name: "one shard at a timestamp takes in its ancestors, not its cousins",
		req:  ResetRequest{Shards: []string{"c1"}, Position: kcl.StartAtTimestamp(ts), StreamShards: all},
		changes: []string{"g=AT_TIMESTAMP@10:00:00 (ancestor of c1)", "p=AT_TIMESTAMP@10:00:00 (ancestor of c1)",
			"c1=AT_TIMESTAMP@10:00:00 (selected)"},
	}, {
		name: "a closed shard at a timestamp takes in its descendants too",
		req:  ResetRequest{Shards: []string{"p"}, Position: kcl.StartAtTimestamp(ts), StreamShards: all},
		changes: []string{"g=AT_TIMESTAMP@10:00:00 (ancestor of p)", "p=AT_TIMESTAMP@10:00:00 (selected)",
			"c1=AT_TIMESTAMP@10:00:00 (descendant of p)", "c2=AT_TIMESTAMP@10:00:00 (descendant of p)"},
	}, {
		name:    "a sequence number: the record again, then the descendants from their start",
		req:     ResetRequest{Shards: []string{"p"}, Sequence: kcl.NewSequence("50"), StreamShards: all},
		changes: []string{"p=50/-1 (selected)", "c1=TRIM_HORIZON (descendant of p)", "c2=TRIM_HORIZON (descendant of p)"},
	}, {
		name:    "a named finished shard is reopened even without the shard list",
		req:     ResetRequest{Shards: []string{"p"}, Sequence: kcl.ExtendedSequenceNumber{SequenceNumber: "50", SubSequenceNumber: 2}},
		changes: []string{"p=50/1 (selected)", "c1=TRIM_HORIZON (descendant of p)", "c2=TRIM_HORIZON (descendant of p)"},
	}, {
		name:    "latest skips what is finished",
		req:     ResetRequest{Position: kcl.StartAtLatest(), StreamShards: all},
		changes: []string{"q=LATEST (selected)", "c1=LATEST (selected)", "c2=LATEST (selected)"},
		skipped: []string{"g", "p"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := planReset(lineage(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			changes, skipped := planned(plan)
			if !slices.Equal(changes, tc.changes) {
				t.Errorf("changes:\n got %q\nwant %q", changes, tc.changes)
			}
			if !slices.Equal(skipped, tc.skipped) {
				t.Errorf("skipped: got %q, want %q", skipped, tc.skipped)
			}
			for _, c := range plan.Changes {
				if c.Applied {
					t.Errorf("%s: planned change marked applied", c.Shard)
				}
			}
		})
	}
}

func TestPlanResetRefuses(t *testing.T) {
	seq := kcl.NewSequence("1")
	tests := []struct {
		name string
		req  ResetRequest
		want error
	}{
		{"sequence without a shard", ResetRequest{Sequence: seq}, ErrInvalidArgument},
		{"sequence on two shards", ResetRequest{Shards: []string{"c1", "c2"}, Sequence: seq}, ErrInvalidArgument},
		{"unknown shard", ResetRequest{Shards: []string{"nope"}, Position: kcl.StartAtLatest()}, ErrNotFound},
		{"empty shard name", ResetRequest{Shards: []string{""}, Position: kcl.StartAtLatest()}, ErrInvalidArgument},
		{"worker row", ResetRequest{Shards: []string{"shardline:worker:w1"}, Position: kcl.StartAtLatest()}, ErrInvalidArgument},
		{"timestamp missing", ResetRequest{Position: kcl.StartAtTimestamp(time.Time{})}, kcl.ErrInvalidCheckpoint},
		{"timestamp in the future", ResetRequest{Position: kcl.StartAtTimestamp(time.Now().Add(time.Hour))}, kcl.ErrInvalidCheckpoint},
		{"sentinel as a sequence", ResetRequest{Shards: []string{"c1"}, Sequence: kcl.TrimHorizon}, kcl.ErrInvalidCheckpoint},
		{"negative sub-sequence", ResetRequest{Shards: []string{"c1"}, Sequence: kcl.NewSequence("5").Before()}, kcl.ErrInvalidCheckpoint},
		{"garbage sequence", ResetRequest{Shards: []string{"c1"}, Sequence: kcl.NewSequence("12x")}, kcl.ErrInvalidCheckpoint},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := planReset(lineage(), tc.req); !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// storeWith returns a MemoryStore holding leases.
func storeWith(t *testing.T, leases []Lease) *ilease.MemoryStore {
	t.Helper()
	s := ilease.NewMemoryStore()
	for _, l := range leases {
		if err := s.Create(t.Context(), toInternal(l)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestResetDryRunWritesNothing(t *testing.T) {
	s := storeWith(t, lineage())
	before, _ := s.List(t.Context())
	plan, err := newTableOn(s).Reset(t.Context(), ResetRequest{Position: kcl.StartAtTrimHorizon(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 3 || plan.Changes[0].Applied {
		t.Fatalf("plan: %+v; want 3 changes, none applied", plan.Changes)
	}
	after, _ := s.List(t.Context())
	if !slices.EqualFunc(before, after, func(a, b ilease.Lease) bool { return a.Counter == b.Counter && a.Owner == b.Owner }) {
		t.Errorf("dry run changed the table:\n%+v\n%+v", before, after)
	}
}

func TestResetRetriesWhenTheOwnerRenews(t *testing.T) {
	ctx := t.Context()
	s := storeWith(t, lineage())
	// The owner of c1 renews between the planner's read and each of the
	// first three reset writes.
	renewals := 0
	s.SetFault(func(op, key string) error {
		if op == "reset" && key == "c1" && renewals < 3 {
			renewals++
			l, err := s.Get(ctx, key)
			if err != nil {
				return err
			}
			if _, err := s.Renew(ctx, l); err != nil {
				return err
			}
		}
		return nil
	})
	plan, err := newTableOn(s).Reset(ctx, ResetRequest{Shards: []string{"c1"}, Sequence: kcl.NewSequence("42")})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Changes) != 1 || !plan.Changes[0].Applied {
		t.Fatalf("plan %+v: want c1 applied", plan.Changes)
	}
	got, _ := s.Get(ctx, "c1")
	want := kcl.ExtendedSequenceNumber{SequenceNumber: "42", SubSequenceNumber: -1}
	if got.Checkpoint != want || got.Owner != "" || got.Counter != 3+3+1 {
		t.Errorf("c1 after reset: %+v; want checkpoint %v, no owner, counter 7", got, want)
	}
	if plan.Changes[0].Before.Counter+1 != got.Counter || plan.Changes[0].Before.Counter != 6 {
		t.Errorf("change before counter %d (stored %d), want 6 (7)", plan.Changes[0].Before.Counter, got.Counter)
	}
}

func TestResetGivesUpOnALeaseThatNeverSettles(t *testing.T) {
	ctx := t.Context()
	s := storeWith(t, lineage())
	s.SetFault(func(op, key string) error {
		if op == "reset" && key == "c2" {
			l, err := s.Get(ctx, key)
			if err != nil {
				return err
			}
			_, err = s.Renew(ctx, l)
			return err
		}
		return nil
	})
	plan, err := newTableOn(s).Reset(ctx, ResetRequest{Position: kcl.StartAtLatest()})
	if !errors.Is(err, ilease.ErrConflict) {
		t.Fatalf("error %v, want a conflict", err)
	}
	// The write order is q, c1, c2 (by generation, then key): the reset
	// stopped at c2.
	var order []string
	applied := map[string]bool{}
	for _, c := range plan.Changes {
		order = append(order, c.Shard)
		applied[c.Shard] = c.Applied
	}
	if !slices.Equal(order, []string{"q", "c1", "c2"}) || !applied["q"] || !applied["c1"] || applied["c2"] {
		t.Errorf("order %v, applied %v; want q and c1 applied, then c2 failed", order, applied)
	}
}

// A reset fences the worker holding the lease: its checkpoint write is
// refused with kcl.ErrLeaseLost, its handle is lost at its next renewal, and
// a worker takes the lease again from the new position.
func TestResetFencesTheOwner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		s := storeWith(t, []Lease{{Key: "shard-0", Checkpoint: kcl.TrimHorizon}})
		acquired := make(chan *ilease.Handle, 4)
		m := ilease.NewManager(ilease.ManagerConfig{
			Store: s, WorkerID: "w1",
			LeaseDuration: 10 * time.Second, RenewInterval: 2 * time.Second, TakeInterval: 3 * time.Second,
			Logger:     slog.New(slog.DiscardHandler),
			Rand:       rand.New(rand.NewPCG(1, 2)),
			OnAcquired: func(h *ilease.Handle) { acquired <- h },
		})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Close(context.Background())
		h := <-acquired
		if _, err := h.UpdateCheckpoint(ctx, func(l *ilease.Lease) { l.Checkpoint = kcl.NewSequence("900") }); err != nil {
			t.Fatal(err)
		}

		at := time.Date(1999, 5, 6, 7, 8, 9, 0, time.UTC) // before the bubble's clock: a reset time must be past
		if _, err := newTableOn(s).Reset(ctx, ResetRequest{Position: kcl.StartAtTimestamp(at)}); err != nil {
			t.Fatal(err)
		}
		// The owner's in-flight checkpoint cannot overwrite the reset.
		_, err := h.UpdateCheckpoint(ctx, func(l *ilease.Lease) { l.Checkpoint = kcl.NewSequence("950") })
		if !errors.Is(err, kcl.ErrLeaseLost) {
			t.Fatalf("checkpoint after the reset: %v, want kcl.ErrLeaseLost", err)
		}
		select {
		case <-h.Lost():
		default:
			t.Fatal("handle not lost after a refused checkpoint")
		}

		// The lease is unowned: the next taking round takes it again, at the
		// reset position.
		nh := <-acquired
		l := nh.Lease()
		if l.Checkpoint != kcl.AtTimestamp || !l.CheckpointTimestamp.Equal(at) {
			t.Errorf("retaken lease at %v %v, want AT_TIMESTAMP %v", l.Checkpoint, l.CheckpointTimestamp, at)
		}
		if got := l.InitialPosition(kcl.StartAtLatest()); got != kcl.StartAtTimestamp(at) {
			t.Errorf("initial position %v, want AT_TIMESTAMP %v", got, at)
		}
	})
}

// A reset between two renewals is seen by the owner's next renewal.
func TestResetLosesTheHandleAtTheNextRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		s := storeWith(t, []Lease{{Key: "shard-0", Checkpoint: kcl.TrimHorizon}})
		acquired := make(chan *ilease.Handle, 4)
		m := ilease.NewManager(ilease.ManagerConfig{
			Store: s, WorkerID: "w1",
			LeaseDuration: 10 * time.Second, RenewInterval: 2 * time.Second, TakeInterval: time.Hour,
			Logger:     slog.New(slog.DiscardHandler),
			Rand:       rand.New(rand.NewPCG(1, 2)),
			OnAcquired: func(h *ilease.Handle) { acquired <- h },
		})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Close(context.Background())
		m.WakeTaker()
		h := <-acquired
		start := time.Now()
		if _, err := newTableOn(s).Reset(ctx, ResetRequest{Position: kcl.StartAtTrimHorizon()}); err != nil {
			t.Fatal(err)
		}
		<-h.Lost()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("handle lost %v after the reset, want within one renewal interval", d)
		}
		if !errors.Is(h.Err(), kcl.ErrLeaseLost) {
			t.Errorf("handle error %v, want kcl.ErrLeaseLost", h.Err())
		}
	})
}

// A merge child's other parent is an ancestor of every shard below the
// child, even when the child is also a descendant of another named shard.
func TestPlanResetAncestorThroughAMerge(t *testing.T) {
	//	a ──┐
	//	    ├─ b ── d
	//	q ──┘
	leases := []Lease{
		{Key: "a", Checkpoint: kcl.ShardEnd, ChildShardIDs: []string{"b"}},
		{Key: "q", Checkpoint: kcl.ShardEnd},
		{Key: "b", Checkpoint: kcl.ShardEnd, ParentShardIDs: []string{"a", "q"}},
		{Key: "d", Owner: "w1", Checkpoint: kcl.NewSequence("9"), ParentShardIDs: []string{"b"}},
		{Key: "x", Owner: "w1", Checkpoint: kcl.NewSequence("7")}, // unrelated
	}
	at := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	plan, err := planReset(leases, ResetRequest{
		Shards: []string{"a", "d"}, Position: kcl.StartAtTimestamp(at), StreamShards: []string{"a", "q", "b", "d", "x"},
	})
	if err != nil {
		t.Fatal(err)
	}
	changes, skipped := planned(plan)
	want := []string{"a=AT_TIMESTAMP@10:00:00 (selected)", "q=AT_TIMESTAMP@10:00:00 (ancestor of d)",
		"b=AT_TIMESTAMP@10:00:00 (descendant of a)", "d=AT_TIMESTAMP@10:00:00 (selected)"}
	if !slices.Equal(changes, want) || len(skipped) != 0 {
		t.Errorf("changes:\n got %q\nwant %q\nskipped %q", changes, want, skipped)
	}
}
