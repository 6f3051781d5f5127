package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/lease/storetest"
	"github.com/shardline/shardline/kcl"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) lease.Store { return lease.NewMemoryStore() })
}

func TestMemoryStoreFault(t *testing.T) {
	ctx := t.Context()
	s := lease.NewMemoryStore()
	l := lease.Lease{Key: "shardId-0", Owner: "a"}
	if err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	var seen []string
	injected := fmt.Errorf("injected: %w", kcl.ErrThrottled)
	s.SetFault(func(op, key string) error {
		seen = append(seen, op+" "+key)
		if op == "renew" {
			return injected
		}
		return nil
	})
	if _, err := s.Renew(ctx, l); err != injected {
		t.Fatalf("Renew with a fault: %v, want the injected error", err)
	}
	got, err := s.Get(ctx, l.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counter != 0 {
		t.Errorf("a refused Renew changed the counter to %d", got.Counter)
	}
	if _, err := s.Beat(ctx, "a", 0, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadFleet(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"renew shardId-0", "get shardId-0", "beat a", "readfleet "}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("fault hook saw %q, want %q", seen, want)
	}

	s.SetFault(nil)
	if _, err := s.Renew(ctx, l); err != nil {
		t.Fatalf("Renew after removing the fault: %v", err)
	}
}

func TestMemoryStoreFaultAfterWrite(t *testing.T) {
	ctx := t.Context()
	s := lease.NewMemoryStore()
	l := lease.Lease{Key: "shardId-0", Owner: "a"}
	if err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	lost := errors.New("response lost")
	s.SetFaultAfterWrite(func(op, key string) error {
		if op == "renew" {
			return lost
		}
		return nil
	})
	if _, err := s.Renew(ctx, l); err != lost {
		t.Fatalf("Renew: %v, want the injected error", err)
	}
	s.SetFaultAfterWrite(nil)
	// The write took effect: retrying with the old view is refused.
	_, err := s.Renew(ctx, l)
	var ce *lease.ConflictError
	if !errors.As(err, &ce) || ce.Current == nil || ce.Current.Counter != 1 {
		t.Fatalf("second Renew: %v, want a conflict at counter 1", err)
	}
}

// The hook runs without the store's lock: it can hold an operation while
// others proceed, and call the store itself.
func TestMemoryStoreFaultCanCallStore(t *testing.T) {
	ctx := t.Context()
	s := lease.NewMemoryStore()
	l := lease.Lease{Key: "shardId-0", Owner: "a"}
	if err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	s.SetFault(func(op, key string) error {
		if op == "take" && once.CompareAndSwap(false, true) {
			// Another worker renews between our read and our write.
			if _, err := s.Renew(ctx, l); err != nil {
				t.Errorf("Renew from the hook: %v", err)
			}
		}
		return nil
	})
	_, err := s.Take(ctx, l, "b")
	if !errors.Is(err, lease.ErrConflict) {
		t.Fatalf("Take racing a renewal: %v, want ErrConflict", err)
	}
}

func TestMemoryStoreCancelledBeforeFault(t *testing.T) {
	s := lease.NewMemoryStore()
	called := false
	s.SetFault(func(string, string) error { called = true; return nil })
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.List(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("List: %v", err)
	}
	if called {
		t.Error("fault hook called for a cancelled operation")
	}
}
