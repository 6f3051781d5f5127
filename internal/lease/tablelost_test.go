package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// tableLostManager starts a manager of worker "w1" over st that reports
// the handles it acquires and the table's loss.
func tableLostManager(t *testing.T, st lease.Store) (m *lease.Manager, lost <-chan error, held func() []*lease.Handle) {
	var mu sync.Mutex
	var hs []*lease.Handle
	ch := make(chan error, 1)
	m = lease.NewManager(lease.ManagerConfig{
		Store: st, WorkerID: "w1", LeaseDuration: leaseDuration, RenewInterval: renewInterval, TakeInterval: takeInterval,
		Logger:      testLogger(),
		OnAcquired:  func(h *lease.Handle) { mu.Lock(); hs = append(hs, h); mu.Unlock() },
		OnTableLost: func(err error) { ch <- err }, // called once: never blocks
	})
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m, ch, func() []*lease.Handle { mu.Lock(); defer mu.Unlock(); return append([]*lease.Handle(nil), hs...) }
}

// Issue 19, item 5: a lease table deleted and created again between two
// heartbeats (empty, then filled by another worker starting at LATEST) was
// joined again silently: the worker took the new leases and skipped what
// was written in between. Now the manager sees its fleet row go back,
// reports the table lost (kcl.ErrTableNotFound), loses its handles and
// takes nothing in the new table.
func TestManagerStopsWhenTheTableIsCreatedAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := lease.NewMemoryStore()
		for i := range 2 {
			if err := store.Create(t.Context(), lease.Lease{Key: fmt.Sprintf("shard-%02d", i), Checkpoint: kcl.TrimHorizon}); err != nil {
				t.Fatal(err)
			}
		}
		m, lost, held := tableLostManager(t, store)
		defer m.Close(context.Background())
		time.Sleep(3 * takeInterval)
		if n := len(held()); n != 2 {
			t.Fatalf("%d leases held before the reset, want 2", n)
		}
		lease.ResetMemoryTable(store)
		for i := range 2 {
			if err := store.Create(t.Context(), lease.Lease{Key: fmt.Sprintf("shard-%02d", i), Checkpoint: kcl.Latest}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(leaseDuration)
		select {
		case err := <-lost:
			if !errors.Is(err, kcl.ErrTableNotFound) {
				t.Errorf("OnTableLost(%v): want an error matching kcl.ErrTableNotFound", err)
			}
		default:
			t.Fatal("OnTableLost not called after the table was created again")
		}
		for _, h := range held() {
			if err := h.Err(); !errors.Is(err, kcl.ErrLeaseLost) || !errors.Is(err, kcl.ErrTableNotFound) {
				t.Errorf("handle %s: Err %v, want lost with kcl.ErrTableNotFound", h.Key(), err)
			}
		}
		leases, err := store.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.Owner != "" {
				t.Errorf("lease %s of the new table taken by %s", l.Key, l.Owner)
			}
		}
	})
}

// A heartbeat refused because the table does not exist is reported once.
func TestManagerReportsAMissingTable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := lease.NewMemoryStore()
		m, lost, _ := tableLostManager(t, store)
		defer m.Close(context.Background())
		store.SetFault(func(op, _ string) error {
			return fmt.Errorf("lease: %s: %w", op, kcl.ErrTableNotFound)
		})
		time.Sleep(2 * renewInterval)
		select {
		case err := <-lost:
			if !errors.Is(err, kcl.ErrTableNotFound) {
				t.Errorf("OnTableLost(%v): want an error matching kcl.ErrTableNotFound", err)
			}
		default:
			t.Fatal("OnTableLost not called while the table is missing")
		}
		store.SetFault(nil)
	})
}
