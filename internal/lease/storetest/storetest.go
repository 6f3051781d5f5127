// Package storetest is the conformance suite of [lease.Store]. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) lease.Store { return lease.NewMemoryStore() })
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"testing"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Run runs the conformance suite. newStore must return a store with no rows
// of its own (a fresh table); the suite calls EnsureTable itself. Subtests
// run in parallel, each on its own store, so newStore must be safe to call
// concurrently.
func Run(t *testing.T, newStore func(t *testing.T) lease.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, lease.Store)
	}{
		{"EnsureTableTwice", testEnsureTableTwice},
		{"CreateGet", testCreateGet},
		{"CreateTwice", testCreateTwice},
		{"GetMissing", testGetMissing},
		{"InvalidArguments", testInvalidArguments},
		{"Renew", testRenew},
		{"RenewConflicts", testRenewConflicts},
		{"TakeUnowned", testTakeUnowned},
		{"TakeOwned", testTakeOwned},
		{"TakeStale", testTakeStale},
		{"TakeSameOwner", testTakeSameOwner},
		{"ReleaseThenTake", testReleaseThenTake},
		{"ReleaseConflicts", testReleaseConflicts},
		{"CheckpointRoundTrip", testCheckpointRoundTrip},
		{"CheckpointSentinels", testCheckpointSentinels},
		{"PendingCheckpoint", testPendingCheckpoint},
		{"CheckpointConflicts", testCheckpointConflicts},
		{"ShardInfo", testShardInfo},
		{"ShardInfoConflicts", testShardInfoConflicts},
		{"Delete", testDelete},
		{"ListSorted", testListSorted},
		{"Heartbeats", testHeartbeats},
		{"DeleteWorker", testDeleteWorker},
		{"Stalls", testStalls},
		{"ConcurrentTake", testConcurrentTake},
		{"CopiesInAndOut", testCopies},
		{"CancelledContext", testCancelledContext},
		{"Handoff", testHandoff},
		{"HandoffConflicts", testHandoffConflicts},
		{"Nudge", testNudge},
		{"ResetCheckpoint", testResetCheckpoint},
		{"ResetConflicts", testResetConflicts},
		{"CheckpointTimestamp", testCheckpointTimestamp},
		{"Throughput", testThroughput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			if err := s.EnsureTable(t.Context()); err != nil {
				t.Fatalf("EnsureTable: %v", err)
			}
			tc.fn(t, s)
		})
	}
}

// A sequence number longer than 64 bits, as Kinesis hands out.
const bigSeq = "49590338271490256608559692538361571095921575989136588898"

// full returns a lease with every field set, as the store returns it.
func full(key string) lease.Lease {
	return lease.Lease{
		Key:                          key,
		Owner:                        "worker-a",
		Counter:                      3,
		Checkpoint:                   kcl.ExtendedSequenceNumber{SequenceNumber: bigSeq, SubSequenceNumber: 4},
		PendingCheckpoint:            kcl.ExtendedSequenceNumber{SequenceNumber: bigSeq + "1", SubSequenceNumber: 2},
		PendingCheckpointState:       []byte{0, 1, 2, 0xff},
		OwnerSwitchesSinceCheckpoint: 1,
		ParentShardIDs:               []string{"shardId-000000000000", "shardId-000000000001"},
		ChildShardIDs:                []string{"shardId-000000000003"},
		StartingHashKey:              "0",
		EndingHashKey:                "340282366920938463463374607431768211455",
		Throughput:                   1234.5,
	}
}

// fresh returns a new unowned lease with counter 0 and TRIM_HORIZON.
func fresh(key string) lease.Lease {
	return lease.Lease{Key: key, Checkpoint: kcl.TrimHorizon}
}

func mustCreate(t *testing.T, s lease.Store, l lease.Lease) lease.Lease {
	t.Helper()
	if err := s.Create(t.Context(), l); err != nil {
		t.Fatalf("Create(%s): %v", l.Key, err)
	}
	return mustGet(t, s, l.Key)
}

func mustGet(t *testing.T, s lease.Store, key string) lease.Lease {
	t.Helper()
	l, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return l
}

func mustTake(t *testing.T, s lease.Store, l lease.Lease, owner string) lease.Lease {
	t.Helper()
	nl, err := s.Take(t.Context(), l, owner)
	if err != nil {
		t.Fatalf("Take(%s, %s): %v", l.Key, owner, err)
	}
	return nl
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// expectStored checks that Get returns want.
func expectStored(t *testing.T, s lease.Store, want lease.Lease) {
	t.Helper()
	equal(t, "stored lease", mustGet(t, s, want.Key), want)
}

// expectConflict checks that err is a *ConflictError for op and key that
// matches ErrConflict and kcl.ErrLeaseLost, and returns its Current.
func expectConflict(t *testing.T, err error, op, key string) *lease.Lease {
	t.Helper()
	if err == nil {
		t.Fatalf("%s %s: no error, want a conflict", op, key)
	}
	var ce *lease.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("%s %s: error %v (%T) is not a *ConflictError", op, key, err, err)
	}
	if !errors.Is(err, lease.ErrConflict) || !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("%s %s: %v does not match ErrConflict and kcl.ErrLeaseLost", op, key, err)
	}
	if errors.Is(err, lease.ErrNotFound) {
		t.Errorf("%s %s: conflict %v matches ErrNotFound", op, key, err)
	}
	if ce.Op != op || ce.Key != key {
		t.Errorf("conflict Op, Key = %q, %q; want %q, %q", ce.Op, ce.Key, op, key)
	}
	return ce.Current
}

// expectConflictWith checks a conflict whose Current is want.
func expectConflictWith(t *testing.T, err error, op string, want lease.Lease) {
	t.Helper()
	cur := expectConflict(t, err, op, want.Key)
	if cur == nil {
		t.Fatalf("%s %s: conflict without Current, want %+v", op, want.Key, want)
	}
	equal(t, op+" conflict Current", *cur, want)
}

// expectConflictGone checks a conflict on a lease that does not exist.
func expectConflictGone(t *testing.T, err error, op, key string) {
	t.Helper()
	if cur := expectConflict(t, err, op, key); cur != nil {
		t.Errorf("%s %s: conflict Current = %+v, want nil (no such lease)", op, key, *cur)
	}
}

func testEnsureTableTwice(t *testing.T, s lease.Store) {
	if err := s.EnsureTable(t.Context()); err != nil {
		t.Fatalf("second EnsureTable: %v", err)
	}
	ls, err := s.List(t.Context())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(ls) != 0 {
		t.Errorf("List of a new table = %+v, want empty", ls)
	}
	f, err := s.ReadFleet(t.Context())
	if err != nil {
		t.Fatalf("ReadFleet: %v", err)
	}
	if len(f.Members) != 0 || f.Gen != 0 {
		t.Errorf("ReadFleet of a new table = %+v, want empty", f)
	}
}

func testCreateGet(t *testing.T, s lease.Store) {
	want := full("shardId-000000000002")
	equal(t, "Get after Create", mustCreate(t, s, want), want)

	minimal := lease.Lease{Key: "shardId-000000000009"}
	equal(t, "Get of a minimal lease", mustCreate(t, s, minimal), minimal)

	// Sets are sets: sorted, without duplicates or empty strings.
	messy := lease.Lease{Key: "shardId-000000000010", ParentShardIDs: []string{"b", "a", "b", ""}, ChildShardIDs: []string{}}
	got := mustCreate(t, s, messy)
	equal(t, "parents", got.ParentShardIDs, []string{"a", "b"})
	equal(t, "children", got.ChildShardIDs, []string(nil))

	// A pending state without a pending checkpoint is not kept.
	orphan := lease.Lease{Key: "shardId-000000000011", PendingCheckpointState: []byte("x")}
	equal(t, "orphan state", mustCreate(t, s, orphan).PendingCheckpointState, []byte(nil))
}

func testCreateTwice(t *testing.T, s lease.Store) {
	first := mustCreate(t, s, full("shardId-000000000000"))
	second := fresh("shardId-000000000000")
	second.Owner = "worker-b"
	err := s.Create(t.Context(), second)
	expectConflictWith(t, err, "create", first)
	expectStored(t, s, first)
}

func testGetMissing(t *testing.T, s lease.Store) {
	_, err := s.Get(t.Context(), "shardId-404")
	if !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("Get of a missing lease: %v, want ErrNotFound", err)
	}
	if errors.Is(err, lease.ErrConflict) {
		t.Errorf("Get of a missing lease: %v matches ErrConflict", err)
	}
}

func testInvalidArguments(t *testing.T, s lease.Store) {
	ctx := t.Context()
	if _, err := s.Beat(ctx, "w", 0, false, false, nil); err != nil {
		t.Fatalf("Beat: %v", err)
	}
	worker := lease.Lease{Key: "shardline:worker:*", Owner: "w", Counter: 1}
	if !lease.IsWorkerKey(worker.Key) {
		t.Fatalf("IsWorkerKey(%q) = false", worker.Key)
	}
	if lease.IsWorkerKey("shardId-000000000000") {
		t.Fatalf("IsWorkerKey of a shard ID = true")
	}
	l := mustCreate(t, s, fresh("shardId-000000000000"))
	calls := map[string]error{}
	for _, key := range []string{"", worker.Key} {
		bad := worker
		bad.Key = key
		_, calls["get "+key] = s.Get(ctx, key)
		calls["create "+key] = s.Create(ctx, bad)
		_, calls["renew "+key] = s.Renew(ctx, bad)
		_, calls["take "+key] = s.Take(ctx, bad, "x")
		_, calls["release "+key] = s.Release(ctx, bad)
		_, calls["checkpoint "+key] = s.UpdateCheckpoint(ctx, bad)
		_, calls["shardinfo "+key] = s.UpdateShardInfo(ctx, bad)
		calls["delete "+key] = s.Delete(ctx, bad)
	}
	_, calls["take to nobody"] = s.Take(ctx, l, "")
	_, calls["beat without ID"] = s.Beat(ctx, "", 0, false, false, nil)
	_, calls["fence without ID"] = s.Fence(ctx, "", 1)
	calls["leave without ID"] = s.Leave(ctx, "", 1, false)
	calls["ask for the fleet row"] = s.AskHandoff(ctx, worker.Key, "w")
	calls["nudge the fleet row"] = s.Nudge(ctx, worker.Key, "w", "t")
	calls["nudge without owner"] = s.Nudge(ctx, l.Key, "", "t")
	calls["nudge without token"] = s.Nudge(ctx, l.Key, "w", "")
	for what, err := range calls {
		if !errors.Is(err, lease.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", what, err)
		}
	}
	expectStored(t, s, l)
	f, err := s.ReadFleet(ctx)
	if err != nil {
		t.Fatalf("ReadFleet: %v", err)
	}
	equal(t, "members", f.Members, map[string]int64{"w": 1})
}

func testRenew(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	for i := range 3 {
		nl, err := s.Renew(t.Context(), l)
		if err != nil {
			t.Fatalf("Renew %d: %v", i, err)
		}
		want := l
		want.Counter++
		equal(t, "renewed lease", nl, want)
		l = nl
	}
	expectStored(t, s, l)

	// An unowned lease renews with an empty owner.
	u := mustCreate(t, s, fresh("shardId-000000000001"))
	nu, err := s.Renew(t.Context(), u)
	if err != nil {
		t.Fatalf("Renew of an unowned lease: %v", err)
	}
	if nu.Counter != u.Counter+1 || nu.Owner != "" {
		t.Errorf("renewed unowned lease = %+v", nu)
	}
}

func testRenewConflicts(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	cur, err := s.Renew(ctx, l)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}

	_, err = s.Renew(ctx, l) // stale counter
	expectConflictWith(t, err, "renew", cur)

	wrongOwner := cur
	wrongOwner.Owner = "worker-b"
	_, err = s.Renew(ctx, wrongOwner)
	expectConflictWith(t, err, "renew", cur)

	unowned := cur
	unowned.Owner = ""
	_, err = s.Renew(ctx, unowned)
	expectConflictWith(t, err, "renew", cur)

	owned := mustCreate(t, s, fresh("shardId-000000000001"))
	owned.Owner = "worker-a" // the lease is in fact unowned
	_, err = s.Renew(ctx, owned)
	expectConflictWith(t, err, "renew", mustGet(t, s, owned.Key))

	_, err = s.Renew(ctx, full("shardId-404"))
	expectConflictGone(t, err, "renew", "shardId-404")

	expectStored(t, s, cur)
}

func testTakeUnowned(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, fresh("shardId-000000000000"))
	nl := mustTake(t, s, l, "worker-a")
	want := l
	want.Owner = "worker-a"
	want.Counter++
	want.OwnerSwitchesSinceCheckpoint++
	equal(t, "taken lease", nl, want)
	expectStored(t, s, want)
}

func testTakeOwned(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	nl := mustTake(t, s, l, "worker-b")
	want := l
	want.Owner = "worker-b"
	want.Counter++
	want.OwnerSwitchesSinceCheckpoint++
	equal(t, "stolen lease", nl, want)
	expectStored(t, s, want)

	// The previous owner has lost it.
	_, err := s.Renew(t.Context(), l)
	expectConflictWith(t, err, "renew", want)
}

func testTakeStale(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	renewed, err := s.Renew(ctx, l)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	_, err = s.Take(ctx, l, "worker-b") // counter moved on: the owner is alive
	expectConflictWith(t, err, "take", renewed)

	wrongOwner := renewed
	wrongOwner.Owner = "worker-c"
	_, err = s.Take(ctx, wrongOwner, "worker-b")
	expectConflictWith(t, err, "take", renewed)

	unowned := renewed
	unowned.Owner = ""
	_, err = s.Take(ctx, unowned, "worker-b")
	expectConflictWith(t, err, "take", renewed)

	_, err = s.Take(ctx, fresh("shardId-404"), "worker-b")
	expectConflictGone(t, err, "take", "shardId-404")
	expectStored(t, s, renewed)
}

func testTakeSameOwner(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	nl := mustTake(t, s, l, l.Owner)
	want := l
	want.Counter++ // no owner switch
	equal(t, "lease taken by its owner", nl, want)
}

func testReleaseThenTake(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	rel, err := s.Release(t.Context(), l)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	want := l
	want.Owner = ""
	want.Counter++
	equal(t, "released lease", rel, want)
	expectStored(t, s, want)

	nl := mustTake(t, s, rel, "worker-b")
	want.Owner = "worker-b"
	want.Counter++
	want.OwnerSwitchesSinceCheckpoint++
	equal(t, "lease taken after release", nl, want)
	expectStored(t, s, want)
}

func testReleaseConflicts(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	stolen := mustTake(t, s, l, "worker-b")
	_, err := s.Release(ctx, l)
	expectConflictWith(t, err, "release", stolen)

	wrongOwner := stolen
	wrongOwner.Owner = "worker-a"
	_, err = s.Release(ctx, wrongOwner)
	expectConflictWith(t, err, "release", stolen)

	_, err = s.Release(ctx, full("shardId-404"))
	expectConflictGone(t, err, "release", "shardId-404")
	expectStored(t, s, stolen)
}

// checkpoint stores cp on l through UpdateCheckpoint and checks the result.
func checkpoint(t *testing.T, s lease.Store, l lease.Lease) lease.Lease {
	t.Helper()
	nl, err := s.UpdateCheckpoint(t.Context(), l)
	if err != nil {
		t.Fatalf("UpdateCheckpoint(%+v): %v", l, err)
	}
	want := l.Clone()
	want.Counter++
	if want.PendingCheckpoint.IsZero() || len(want.PendingCheckpointState) == 0 {
		want.PendingCheckpointState = nil
	}
	equal(t, "checkpointed lease", nl, want)
	expectStored(t, s, want)
	return nl
}

func testCheckpointRoundTrip(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, fresh("shardId-000000000000"))
	l = mustTake(t, s, l, "worker-a")
	if l.OwnerSwitchesSinceCheckpoint != 1 {
		t.Fatalf("owner switches after take = %d, want 1", l.OwnerSwitchesSinceCheckpoint)
	}
	for _, cp := range []kcl.ExtendedSequenceNumber{
		kcl.NewSequence("1"),
		{SequenceNumber: bigSeq, SubSequenceNumber: 0},
		{SequenceNumber: bigSeq, SubSequenceNumber: 1},
		{SequenceNumber: bigSeq, SubSequenceNumber: 9_223_372_036_854_775_807},
	} {
		l.Checkpoint = cp
		l.OwnerSwitchesSinceCheckpoint = 0
		l = checkpoint(t, s, l)
	}
	if l.Owner != "worker-a" {
		t.Errorf("owner after checkpoints = %q", l.Owner)
	}
}

func testCheckpointSentinels(t *testing.T, s lease.Store) {
	l := mustTake(t, s, mustCreate(t, s, fresh("shardId-000000000000")), "worker-a")
	for _, cp := range []kcl.ExtendedSequenceNumber{kcl.Latest, kcl.AtTimestamp, kcl.TrimHorizon, kcl.ShardEnd} {
		l.Checkpoint = cp
		l = checkpoint(t, s, l)
	}
	if !l.Finished() {
		t.Errorf("lease at SHARD_END not Finished: %+v", l)
	}
}

func testPendingCheckpoint(t *testing.T, s lease.Store) {
	l := mustTake(t, s, mustCreate(t, s, fresh("shardId-000000000000")), "worker-a")
	state := make([]byte, 256)
	for i := range state {
		state[i] = byte(255 - i) // every byte value, NUL and invalid UTF-8 included
	}
	l.Checkpoint = kcl.NewSequence("100")
	l.PendingCheckpoint = kcl.ExtendedSequenceNumber{SequenceNumber: bigSeq, SubSequenceNumber: 3}
	l.PendingCheckpointState = state
	l = checkpoint(t, s, l)

	// A pending checkpoint with no state.
	l.PendingCheckpointState = nil
	l = checkpoint(t, s, l)

	// State again, then commit: the pending checkpoint and its state go.
	l.PendingCheckpointState = []byte("app state")
	l = checkpoint(t, s, l)
	l.Checkpoint = l.PendingCheckpoint
	l.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
	l = checkpoint(t, s, l)
	if l.PendingCheckpointState != nil || !l.PendingCheckpoint.IsZero() {
		t.Errorf("pending checkpoint not removed: %+v", l)
	}

	// A zero pending checkpoint removes a state passed along with it.
	l.PendingCheckpoint = kcl.NewSequence("200")
	l.PendingCheckpointState = []byte{1}
	l = checkpoint(t, s, l)
	l.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
	checkpoint(t, s, l)
}

func testCheckpointConflicts(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	stolen := mustTake(t, s, l, "worker-b")

	late := l
	late.Checkpoint = kcl.NewSequence("999")
	_, err := s.UpdateCheckpoint(ctx, late) // the previous owner, after losing the lease
	expectConflictWith(t, err, "checkpoint", stolen)

	wrongOwner := stolen
	wrongOwner.Owner = "worker-a"
	wrongOwner.Checkpoint = kcl.NewSequence("999")
	_, err = s.UpdateCheckpoint(ctx, wrongOwner)
	expectConflictWith(t, err, "checkpoint", stolen)

	_, err = s.UpdateCheckpoint(ctx, full("shardId-404"))
	expectConflictGone(t, err, "checkpoint", "shardId-404")
	expectStored(t, s, stolen)
}

func testShardInfo(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustTake(t, s, mustCreate(t, s, fresh("shardId-000000000002")), "worker-a")

	// Any worker may record lineage: the owner is not part of the condition.
	info := l
	info.Owner = "worker-b"
	info.ParentShardIDs = []string{"shardId-000000000001", "shardId-000000000000"}
	info.ChildShardIDs = []string{"shardId-000000000004", "shardId-000000000003", "shardId-000000000003"}
	info.StartingHashKey = "170141183460469231731687303715884105728"
	info.EndingHashKey = "340282366920938463463374607431768211455"
	// Fields other than the shard info are not written.
	info.Checkpoint = kcl.NewSequence("5")
	nl, err := s.UpdateShardInfo(ctx, info)
	if err != nil {
		t.Fatalf("UpdateShardInfo: %v", err)
	}
	want := l
	want.Counter++
	want.ParentShardIDs = []string{"shardId-000000000000", "shardId-000000000001"}
	want.ChildShardIDs = []string{"shardId-000000000003", "shardId-000000000004"}
	want.StartingHashKey = info.StartingHashKey
	want.EndingHashKey = info.EndingHashKey
	equal(t, "lease with shard info", nl, want)
	expectStored(t, s, want)

	// Empty sets and hash keys clear the attributes.
	clear := nl
	clear.ParentShardIDs = nil
	clear.ChildShardIDs = []string{}
	clear.StartingHashKey, clear.EndingHashKey = "", ""
	nl, err = s.UpdateShardInfo(ctx, clear)
	if err != nil {
		t.Fatalf("UpdateShardInfo (clear): %v", err)
	}
	want = l
	want.Counter += 2
	equal(t, "lease with shard info cleared", nl, want)
	expectStored(t, s, want)
}

func testShardInfoConflicts(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	renewed, err := s.Renew(t.Context(), l)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	l.ChildShardIDs = []string{"shardId-000000000009"}
	_, err = s.UpdateShardInfo(t.Context(), l)
	expectConflictWith(t, err, "shardinfo", renewed)

	_, err = s.UpdateShardInfo(t.Context(), full("shardId-404"))
	expectConflictGone(t, err, "shardinfo", "shardId-404")
	expectStored(t, s, renewed)
}

func testDelete(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustCreate(t, s, full("shardId-000000000000"))
	renewed, err := s.Renew(ctx, l)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	expectConflictWith(t, s.Delete(ctx, l), "delete", renewed)
	expectStored(t, s, renewed)

	// The owner is not part of the condition.
	other := renewed
	other.Owner = "worker-z"
	if err := s.Delete(ctx, other); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, l.Key); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	expectConflictGone(t, s.Delete(ctx, renewed), "delete", l.Key)

	// The key can be created again.
	mustCreate(t, s, fresh(l.Key))
}

func testListSorted(t *testing.T, s lease.Store) {
	ctx := t.Context()
	keys := []string{"shardId-000000000007", "shardId-000000000001", "a", "shardId-000000000010", "z", "shardline:workerish"}
	want := make([]lease.Lease, 0, len(keys))
	for i, k := range keys {
		l := full(k)
		l.Counter = int64(i)
		if _, err := s.Beat(ctx, fmt.Sprintf("w%d", i), 0, false, false, nil); err != nil {
			t.Fatalf("Beat: %v", err)
		}
		want = append(want, mustCreate(t, s, l))
	}
	got, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	sorted := []string{"a", "shardId-000000000001", "shardId-000000000007", "shardId-000000000010", "shardline:workerish", "z"}
	if len(got) != len(sorted) {
		t.Fatalf("List returned %d leases, want %d: %+v", len(got), len(sorted), got)
	}
	for i, l := range got {
		if l.Key != sorted[i] {
			t.Errorf("List[%d].Key = %q, want %q", i, l.Key, sorted[i])
		}
		if lease.IsWorkerKey(l.Key) {
			t.Errorf("List returned the worker row %q", l.Key)
		}
		for _, w := range want {
			if w.Key == l.Key {
				equal(t, "listed lease", l, w)
			}
		}
	}
}

func testHeartbeats(t *testing.T, s lease.Store) {
	ctx := t.Context()
	beat := func(id string, from int64, withdrawn, bump bool) lease.Fleet {
		t.Helper()
		f, err := s.Beat(ctx, id, from, withdrawn, bump, nil)
		if err != nil {
			t.Fatalf("Beat(%s, %d): %v", id, from, err)
		}
		return f
	}
	f := beat("worker-a", 0, false, false)
	equal(t, "first heartbeat", f.Members, map[string]int64{"worker-a": 1})
	f = beat("worker-a", 1, false, true)
	equal(t, "second heartbeat", f.Members, map[string]int64{"worker-a": 2})
	equal(t, "generation", f.Gen, int64(1))
	b := beat("worker-b", 0, true, false)
	equal(t, "members", b.Members, map[string]int64{"worker-a": 2, "worker-b": 1})
	equal(t, "withdrawn", b.Withdrawn, map[string]bool{"worker-b": true})
	if b.Version <= f.Version {
		t.Errorf("version %d after %d, want it to grow", b.Version, f.Version)
	}

	// A heartbeat from a stale value, or joining twice, is refused.
	_, err := s.Beat(ctx, "worker-a", 1, false, false, nil)
	expectConflict(t, err, "beat", "worker-a")
	_, err = s.Beat(ctx, "worker-a", 0, false, false, nil)
	expectConflict(t, err, "beat", "worker-a")

	got, err := s.ReadFleet(ctx)
	if err != nil {
		t.Fatalf("ReadFleet: %v", err)
	}
	equal(t, "read", got, b)
	ls, err := s.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(ls) != 0 {
		t.Errorf("List returned the fleet row: %+v", ls)
	}

	// Hand-over requests.
	if err := s.AskHandoff(ctx, "shardId-1", "worker-b"); err != nil {
		t.Fatalf("AskHandoff: %v", err)
	}
	expectConflict(t, s.ClearHandoff(ctx, "shardId-1", "worker-a"), "clearhandoff", "shardId-1")
	got, _ = s.ReadFleet(ctx)
	equal(t, "handoffs", got.Handoffs, map[string]string{"shardId-1": "worker-b"})
	if err := s.ClearHandoff(ctx, "shardId-1", "worker-b"); err != nil {
		t.Fatalf("ClearHandoff: %v", err)
	}
	got, _ = s.ReadFleet(ctx)
	equal(t, "handoffs after clear", got.Handoffs, map[string]string{})
}

// testStalls checks that each heartbeat replaces the worker's stalls in the
// fleet row, and that fencing and leaving remove them.
func testStalls(t *testing.T, s lease.Store) {
	ctx := t.Context()
	stalls := map[string]string{"shardId-1": "processor-failing", "shardId-2": "no-progress"}
	if _, err := s.Beat(ctx, "worker-a", 0, false, false, stalls); err != nil {
		t.Fatalf("Beat: %v", err)
	}
	f, err := s.Beat(ctx, "worker-b", 0, false, false, map[string]string{"shardId-3": "open-failing"})
	if err != nil {
		t.Fatalf("Beat: %v", err)
	}
	equal(t, "stalls", f.Stalls, map[string]map[string]string{"worker-a": stalls, "worker-b": {"shardId-3": "open-failing"}})
	stalls["shardId-1"] = "changed after the call"
	got, err := s.ReadFleet(ctx)
	if err != nil {
		t.Fatalf("ReadFleet: %v", err)
	}
	equal(t, "stalls read", got.Stalls["worker-a"], map[string]string{"shardId-1": "processor-failing", "shardId-2": "no-progress"})
	f, err = s.Beat(ctx, "worker-a", 1, false, false, nil)
	if err != nil {
		t.Fatalf("Beat: %v", err)
	}
	equal(t, "stalls after recovery", f.Stalls, map[string]map[string]string{"worker-b": {"shardId-3": "open-failing"}})
	if f, err = s.Fence(ctx, "worker-b", 1); err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if len(f.Stalls) != 0 {
		t.Errorf("stalls after fencing: %v, want none", f.Stalls)
	}
	if _, err := s.Beat(ctx, "worker-a", 2, false, false, map[string]string{"shardId-1": "read-failing"}); err != nil {
		t.Fatalf("Beat: %v", err)
	}
	if err := s.Leave(ctx, "worker-a", 3, false); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got, _ = s.ReadFleet(ctx); len(got.Stalls) != 0 {
		t.Errorf("stalls after leaving: %v, want none", got.Stalls)
	}
}

func testDeleteWorker(t *testing.T, s lease.Store) {
	ctx := t.Context()
	for _, id := range []string{"worker-a", "worker-b"} {
		if _, err := s.Beat(ctx, id, 0, false, false, nil); err != nil {
			t.Fatalf("Beat: %v", err)
		}
	}
	if _, err := s.Beat(ctx, "worker-a", 1, false, false, nil); err != nil {
		t.Fatalf("Beat: %v", err)
	}
	// b saw a's old heartbeat and thinks a is dead; a is alive.
	_, err := s.Fence(ctx, "worker-a", 1)
	expectConflict(t, err, "fence", "worker-a")
	f, err := s.Fence(ctx, "worker-a", 2)
	if err != nil {
		t.Fatalf("Fence: %v", err)
	}
	equal(t, "after fence", f.Members, map[string]int64{"worker-a": lease.Dead, "worker-b": 1})
	// a's next heartbeat is refused; it joins again from 0.
	_, err = s.Beat(ctx, "worker-a", 2, false, false, nil)
	expectConflict(t, err, "beat", "worker-a")
	f, err = s.Beat(ctx, "worker-a", 0, false, false, nil)
	if err != nil {
		t.Fatalf("Beat after fence: %v", err)
	}
	equal(t, "joined again", f.Members["worker-a"], int64(1))

	expectConflict(t, s.Leave(ctx, "worker-b", 7, false), "leave", "worker-b")
	if err := s.Leave(ctx, "worker-b", 1, true); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	f, _ = s.ReadFleet(ctx)
	equal(t, "after leave", f.Members, map[string]int64{"worker-a": 1})
	equal(t, "generation after leave", f.Gen, int64(1))
}

func testConcurrentTake(t *testing.T, s lease.Store) {
	const n = 8
	l := mustCreate(t, s, full("shardId-000000000000"))
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		errs  [n]error
		got   [n]lease.Lease
	)
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = s.Take(t.Context(), l, fmt.Sprintf("taker-%d", i))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("takers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		default:
			var ce *lease.ConflictError
			if !errors.As(err, &ce) {
				t.Errorf("taker %d: %v, want a *ConflictError", i, err)
			}
		}
	}
	if winner < 0 {
		t.Fatalf("no taker won: %v", errs)
	}
	want := l
	want.Owner = fmt.Sprintf("taker-%d", winner)
	want.Counter++
	want.OwnerSwitchesSinceCheckpoint++
	equal(t, "winner's lease", got[winner], want)
	expectStored(t, s, want)
}

func testCopies(t *testing.T, s lease.Store) {
	ctx := t.Context()
	in := full("shardId-000000000000")
	want := in.Clone()
	if err := s.Create(ctx, in); err != nil {
		t.Fatalf("Create: %v", err)
	}
	in.ParentShardIDs[0] = "changed"
	in.PendingCheckpointState[0] = 42
	out := mustGet(t, s, want.Key)
	equal(t, "lease after changing the created value", out, want)
	out.ChildShardIDs[0] = "changed"
	out.PendingCheckpointState[1] = 42
	expectStored(t, s, want)

	renewed, err := s.Renew(ctx, want)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	_, err = s.Renew(ctx, want)
	var ce *lease.ConflictError
	if !errors.As(err, &ce) || ce.Current == nil {
		t.Fatalf("stale Renew: %v, want a conflict with Current", err)
	}
	ce.Current.ParentShardIDs[0] = "changed"
	ce.Current.PendingCheckpointState[0] = 42
	renewed.ChildShardIDs[0] = "changed"
	want.Counter++
	expectStored(t, s, want)
}

func testCancelledContext(t *testing.T, s lease.Store) {
	l := mustCreate(t, s, full("shardId-000000000000"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Renew(ctx, l)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Renew with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.List(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context: %v, want context.Canceled", err)
	}
	expectStored(t, s, l)
}

// testHandoff: a requested hand-over is visible to the owner's renewal
// (the request does not move the counter), and HandOver moves ownership.
func testHandoff(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustTake(t, s, mustCreate(t, s, fresh("shard-h")), "worker-a")
	req, err := s.RequestHandoff(ctx, l, "worker-b")
	if err != nil {
		t.Fatalf("RequestHandoff: %v", err)
	}
	want := l.Clone()
	want.HandoffTo = "worker-b"
	equal(t, "lease after request", req, want)
	expectStored(t, s, want)

	// The owner's renewal still succeeds and carries the request.
	renewed, err := s.Renew(ctx, l)
	if err != nil {
		t.Fatalf("Renew after request: %v", err)
	}
	if renewed.HandoffTo != "worker-b" || renewed.Counter != l.Counter+1 {
		t.Fatalf("renewed lease %+v: want HandoffTo worker-b, counter %d", renewed, l.Counter+1)
	}
	// A second request is refused while one is pending.
	_, err = s.RequestHandoff(ctx, renewed, "worker-c")
	expectConflictWith(t, err, "handoff", renewed)

	moved, err := s.HandOver(ctx, renewed)
	if err != nil {
		t.Fatalf("HandOver: %v", err)
	}
	want = renewed.Clone()
	want.Owner, want.HandoffTo = "worker-b", ""
	want.Counter++
	want.OwnerSwitchesSinceCheckpoint++
	equal(t, "lease after hand-over", moved, want)
	expectStored(t, s, want)

	// Release and Take clear a pending request.
	req, err = s.RequestHandoff(ctx, moved, "worker-a")
	if err != nil {
		t.Fatalf("RequestHandoff: %v", err)
	}
	rel, err := s.Release(ctx, req)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rel.HandoffTo != "" || rel.Owner != "" {
		t.Errorf("released lease %+v still has an owner or a hand-over", rel)
	}
	tk := mustTake(t, s, rel, "worker-c")
	if _, err := s.RequestHandoff(ctx, tk, "worker-a"); err != nil {
		t.Fatalf("RequestHandoff: %v", err)
	}
	cur := mustGet(t, s, "shard-h")
	stolen := mustTake(t, s, cur, "worker-a")
	if stolen.HandoffTo != "" {
		t.Errorf("taken lease %+v keeps the hand-over request", stolen)
	}
}

func testHandoffConflicts(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustTake(t, s, mustCreate(t, s, fresh("shard-hc")), "worker-a")
	// Stale counter, wrong owner.
	stale := l.Clone()
	stale.Counter--
	_, err := s.RequestHandoff(ctx, stale, "worker-b")
	expectConflictWith(t, err, "handoff", l)
	wrong := l.Clone()
	wrong.Owner = "worker-x"
	_, err = s.RequestHandoff(ctx, wrong, "worker-b")
	expectConflictWith(t, err, "handoff", l)
	// Bad arguments.
	if _, err := s.RequestHandoff(ctx, l, ""); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Errorf("RequestHandoff to nobody: %v, want ErrInvalidArgument", err)
	}
	if _, err := s.RequestHandoff(ctx, l, "worker-a"); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Errorf("RequestHandoff to the owner: %v, want ErrInvalidArgument", err)
	}
	if _, err := s.HandOver(ctx, l); !errors.Is(err, lease.ErrInvalidArgument) {
		t.Errorf("HandOver without a request: %v, want ErrInvalidArgument", err)
	}
	// HandOver to a worker other than the one that asked.
	req, err := s.RequestHandoff(ctx, l, "worker-b")
	if err != nil {
		t.Fatal(err)
	}
	other := req.Clone()
	other.HandoffTo = "worker-z"
	_, err = s.HandOver(ctx, other)
	expectConflictWith(t, err, "handover", req)
	// Missing lease.
	gone := req.Clone()
	gone.Key = "shard-missing"
	_, err = s.HandOver(ctx, gone)
	expectConflictGone(t, err, "handover", "shard-missing")
}

// testNudge: Nudge stores a token on a lease of the named owner without
// moving the counter, the owner's writes return it, and a change of owner
// removes it.
func testNudge(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustTake(t, s, mustCreate(t, s, fresh("shard-n")), "worker-a")
	// Only on a lease of the named owner.
	expectConflictWith(t, s.Nudge(ctx, l.Key, "worker-b", "t1"), "nudge", l)
	expectConflictGone(t, s.Nudge(ctx, "shard-missing", "worker-a", "t1"), "nudge", "shard-missing")
	if err := s.Nudge(ctx, l.Key, "worker-a", "worker-b shard-x 7"); err != nil {
		t.Fatalf("Nudge: %v", err)
	}
	want := l.Clone()
	want.Nudge = "worker-b shard-x 7"
	expectStored(t, s, want) // the counter did not move

	// The owner's next write, conditioned on the counter it knows, succeeds
	// and returns the token; a later token replaces it.
	cp := checkpoint(t, s, want) // l with the token: what the write returns and stores
	if err := s.Nudge(ctx, l.Key, "worker-a", "t2"); err != nil {
		t.Fatalf("Nudge: %v", err)
	}
	renewed, err := s.Renew(ctx, cp)
	if err != nil {
		t.Fatalf("Renew after a nudge: %v", err)
	}
	if renewed.Nudge != "t2" || renewed.Counter != cp.Counter+1 {
		t.Errorf("renewed lease %+v: want Nudge t2, counter %d", renewed, cp.Counter+1)
	}
	// A take (and so a release or hand-over) removes it.
	if tk := mustTake(t, s, renewed, "worker-c"); tk.Nudge != "" {
		t.Errorf("taken lease keeps Nudge %q", tk.Nudge)
	}
}

// testThroughput: Renew stores the lease's throughput (rounded to
// thousandths, invalid values as zero) and the other writes keep it.
func testThroughput(t *testing.T, s lease.Store) {
	ctx := t.Context()
	l := mustTake(t, s, mustCreate(t, s, fresh("shard-t")), "worker-a")
	if l.Throughput != 0 {
		t.Fatalf("new lease has Throughput %v, want 0", l.Throughput)
	}
	for _, tc := range []struct {
		give, want float64
	}{
		{1500.25, 1500.25},
		{0.0004, 0},
		{2.0 / 3, 0.667},
		{123456789.1234, 123456789.123},
		{math.NaN(), 0},
		{math.Inf(1), 0},
		{-3, 0},
		{7, 7},
	} {
		l.Throughput = tc.give
		renewed, err := s.Renew(ctx, l)
		if err != nil {
			t.Fatalf("Renew with Throughput %v: %v", tc.give, err)
		}
		want := l.Clone()
		want.Counter++
		want.Throughput = tc.want
		equal(t, fmt.Sprintf("renewed with Throughput %v", tc.give), renewed, want)
		expectStored(t, s, want)
		l = renewed
	}

	// Other writes keep the stored value, whatever the lease passed says.
	l.Throughput = 99
	l.Checkpoint = kcl.NewSequence("42")
	cp, err := s.UpdateCheckpoint(ctx, l)
	if err != nil {
		t.Fatalf("UpdateCheckpoint: %v", err)
	}
	if cp.Throughput != 7 {
		t.Errorf("after UpdateCheckpoint Throughput = %v, want 7 (kept)", cp.Throughput)
	}
	taken := mustTake(t, s, cp, "worker-b")
	if taken.Throughput != 7 {
		t.Errorf("after Take Throughput = %v, want 7 (kept)", taken.Throughput)
	}
	released, err := s.Release(ctx, taken)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if released.Throughput != 7 {
		t.Errorf("after Release Throughput = %v, want 7 (kept)", released.Throughput)
	}
	expectStored(t, s, released)
}
