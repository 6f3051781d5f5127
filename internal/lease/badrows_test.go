package lease_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// Rows written by hand or by another tool may lack leaseCounter, or hold an
// empty or NULL leaseOwner. They read as counter 0 and no owner, and every
// write conditioned on that must succeed on them: before, a take of such a
// row was refused at every round, and nobody said so.
func TestDynamoStoreWritesRowsWithoutCounter(t *testing.T) {
	s, client := newDynamoStore(t)
	ctx := t.Context()
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000000"), "checkpoint": attrS("TRIM_HORIZON")})
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000001"), "checkpoint": attrS("TRIM_HORIZON"), "leaseOwner": attrS("")})
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000002"), "checkpoint": attrS("TRIM_HORIZON"),
		"leaseOwner": &types.AttributeValueMemberNULL{Value: true}})
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{"leaseKey": attrS("shardId-000000000003")})
	ls, err := s.List(ctx)
	if err != nil || len(ls) != 4 {
		t.Fatalf("List: %v %v", ls, err)
	}
	for _, l := range ls[:3] {
		if l.Counter != 0 || l.Owner != "" {
			t.Fatalf("%s reads as counter %d owner %q, want 0 and none", l.Key, l.Counter, l.Owner)
		}
		got, err := s.Take(ctx, l, "w1")
		if err != nil {
			t.Fatalf("take %s: %v", l.Key, err)
		}
		if got.Counter != 1 || got.Owner != "w1" || got.OwnerSwitchesSinceCheckpoint != 1 {
			t.Errorf("%s after the take: counter %d owner %q switches %d, want 1, w1, 1", l.Key, got.Counter, got.Owner, got.OwnerSwitchesSinceCheckpoint)
		}
		if _, err := s.Take(ctx, l, "w2"); !errors.Is(err, lease.ErrConflict) {
			t.Errorf("second take of %s from counter 0: %v, want a conflict", l.Key, err)
		}
	}
	// The other writes conditioned on counter 0 work too.
	if _, err := s.UpdateShardInfo(ctx, ls[3]); err != nil {
		t.Errorf("shard info on a row without counter: %v", err)
	}
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{"leaseKey": attrS("shardId-000000000004")})
	if err := s.Delete(ctx, lease.Lease{Key: "shardId-000000000004"}); err != nil {
		t.Errorf("delete of a row without counter: %v", err)
	}
}

// A worker takes and processes a lease row without leaseCounter (the
// issue: 0 of 32 records in 26 s, nothing logged).
func TestManagerTakesRowWithoutCounter(t *testing.T) {
	s, client := newDynamoStore(t)
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000000"), "checkpoint": attrS("TRIM_HORIZON")})
	acquired := make(chan *lease.Handle, 1)
	m := lease.NewManager(lease.ManagerConfig{Store: s, WorkerID: "w1", LeaseDuration: 3 * time.Second,
		RenewInterval: time.Second, TakeInterval: 200 * time.Millisecond, Logger: testenv.NewLogs(t).Logger(),
		OnAcquired: func(h *lease.Handle) { acquired <- h }})
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	select {
	case h := <-acquired:
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("42") }); err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the lease row without leaseCounter was never taken")
	}
}

// One mistyped row (leaseCounter stored as a string) does not stop the
// others: List returns them with an *UnreadableError naming the row, the
// manager takes the others (again after a release), and names the row in
// one WARN and one event however many rounds it sees it.
func TestManagerSkipsUnreadableRows(t *testing.T) {
	s, client := newDynamoStore(t)
	ctx := t.Context()
	for _, k := range []string{"shardId-000000000000", "shardId-000000000002"} {
		if err := s.Create(ctx, lease.Lease{Key: k, Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000001"), "leaseCounter": attrS("5"), "checkpoint": attrS("TRIM_HORIZON")})
	putRaw(t, client, s.Table(), map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-000000000003"), "leaseCounter": attrN("1" + strings.Repeat("0", 37)), "checkpoint": attrS("TRIM_HORIZON")})

	ls, err := s.List(ctx)
	var ue *lease.UnreadableError
	if !errors.As(err, &ue) || len(ls) != 2 || len(ue.Rows) != 2 {
		t.Fatalf("List: %d leases, err %v; want the 2 readable ones and an UnreadableError naming 2 rows", len(ls), err)
	}
	if why := ue.Rows["shardId-000000000001"]; !strings.Contains(why, "leaseCounter is S, want N") {
		t.Errorf("reason for the string counter: %q", why)
	}
	if why := ue.Rows["shardId-000000000003"]; !strings.Contains(why, "is not an integer") || len(why) > 300 {
		t.Errorf("reason for the huge counter: %q", why)
	}

	logs := testenv.NewLogs(t)
	var mu sync.Mutex
	events := map[lease.EventKind]int{}
	acquired := make(chan *lease.Handle, 8)
	m := lease.NewManager(lease.ManagerConfig{Store: s, WorkerID: "w1", LeaseDuration: 3 * time.Second,
		RenewInterval: time.Second, TakeInterval: 200 * time.Millisecond, Logger: logs.Logger(),
		OnAcquired: func(h *lease.Handle) { acquired <- h },
		OnEvent: func(e lease.Event) {
			mu.Lock()
			events[e.Kind]++
			mu.Unlock()
		}})
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start with a mistyped row: %v", err)
	}
	defer m.Close(context.Background())
	got := map[string]*lease.Handle{}
	for len(got) < 2 {
		select {
		case h := <-acquired:
			got[h.Key()] = h
		case <-time.After(60 * time.Second):
			t.Fatalf("took %d of the 2 readable leases", len(got))
		}
	}
	// A released lease is taken again (before: every round failed).
	if err := got["shardId-000000000000"].Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-acquired:
		if h.Key() != "shardId-000000000000" {
			t.Fatalf("took %s, want the released lease", h.Key())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the released lease was not taken again")
	}
	for _, k := range []string{"shardId-000000000001", "shardId-000000000003"} {
		if n := logs.Count(slog.LevelWarn, "lease row cannot be read", "shard", k); n != 1 {
			t.Errorf("%d WARNs naming %s, want 1 (however many rounds saw it)", n, k)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if events[lease.EventUnreadable] != 2 {
		t.Errorf("%d unreadable events, want 2", events[lease.EventUnreadable])
	}
}

// A take refused although the row still shows the owner and counter it was
// conditioned on will be refused at every round: it is logged (once per
// lease and counter) and counted (an event per refusal).
func TestManagerReportsUnexplainedRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 2)
		defer f.closeAll()
		f.store.SetFault(func(op, key string) error {
			if op != "take" || key != "shard-01" {
				return nil
			}
			cur, err := f.store.Get(context.Background(), key)
			if err != nil {
				return err
			}
			return &lease.ConflictError{Op: op, Key: key, Current: &cur}
		})
		logs := testenv.NewLogs(t)
		refusals := 0
		m := lease.NewManager(lease.ManagerConfig{Store: f.store, WorkerID: "a", LeaseDuration: leaseDuration,
			RenewInterval: renewInterval, TakeInterval: takeInterval, Logger: logs.Logger(),
			OnEvent: func(e lease.Event) {
				if e.Kind == lease.EventTakeRefused && e.Key == "shard-01" {
					refusals++
				}
			}})
		if err := m.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer m.Close(context.Background())
		advance(5 * maxTakePeriod)
		if got := heldKeys(m); len(got) != 1 || got[0] != "shard-00" {
			t.Fatalf("held %v, want shard-00 alone", got)
		}
		if refusals < 2 {
			t.Errorf("%d refusals counted over 5 rounds, want one per round", refusals)
		}
		if n := logs.Count(slog.LevelWarn, "taking a lease was refused", "shard", "shard-01"); n != 1 {
			t.Errorf("%d WARNs for the refused take, want 1", n)
		}
	})
}
