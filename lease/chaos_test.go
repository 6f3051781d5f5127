package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// Tests of faults found by the chaos run (killed and restarted workers,
// lost answers, racing acquisitions).

// loseAnswerOnce makes the first successful op on st fail as if its answer
// had been lost (a client timeout): the write is applied all the same.
func loseAnswerOnce(st *lease.MemoryStore, op string) *atomic.Bool {
	var fired atomic.Bool
	st.SetFaultAfterWrite(func(o, key string) error {
		if o == op && fired.CompareAndSwap(false, true) {
			return fmt.Errorf("lease: %s %s: %w", o, key, context.DeadlineExceeded)
		}
		return nil
	})
	return &fired
}

// TestHandleAdoptsTimedOutCheckpoint: a checkpoint that timed out on the
// client but was applied in the table must not cost the lease. The next
// renewal is refused (the counter moved) and must recognise the write as
// its own, adopt it, and go on.
func TestHandleAdoptsTimedOutCheckpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, a, h := acquireOne(t)
		defer f.closeAll()
		fired := loseAnswerOnce(f.store, "checkpoint")
		cp := kcl.NewSequence("49680000000000000000000000000000000000000000000000000015")
		_, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = cp })
		if !fired.Load() || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("checkpoint: err %v, want the injected timeout", err)
		}
		if got := getLease(t, f.store, h.Key()); got.Checkpoint != cp || got.Owner != "a" {
			t.Fatalf("stored lease %+v: want the timed-out checkpoint applied, owner a", got)
		}

		advance(2 * leaseDuration) // several renewals
		if !h.Valid() {
			t.Fatalf("handle lost after a timed-out but applied checkpoint: %v", h.Err())
		}
		if hs := a.Held(); len(hs) != 1 || hs[0] != h {
			t.Fatalf("a holds %v, want the same handle", heldKeys(a))
		}
		if got := h.Lease().Checkpoint; got != cp {
			t.Errorf("handle's checkpoint %v, want %v", got, cp)
		}
		cp2 := kcl.NewSequence("49680000000000000000000000000000000000000000000000000025")
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = cp2 }); err != nil {
			t.Fatalf("next checkpoint: %v", err)
		}
		if got := getLease(t, f.store, h.Key()); got.Checkpoint != cp2 || got.Owner != "a" {
			t.Errorf("stored lease %+v after the next checkpoint, want %v owned by a", got, cp2)
		}
	})
}

// TestHandleDoesNotAdoptResetAfterTimedOutCheckpoint: after a timed-out
// checkpoint, a reset to the very same position (owner cleared, counter one
// up) must not pass for the lost answer: the handle is lost.
func TestHandleDoesNotAdoptResetAfterTimedOutCheckpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, h := acquireOne(t)
		defer f.closeAll()
		// The checkpoint's answer is lost and the write not applied; an
		// operator then resets the lease to the checkpoint it tried.
		var fired atomic.Bool
		f.store.SetFault(func(op, key string) error {
			if op == "checkpoint" && fired.CompareAndSwap(false, true) {
				return fmt.Errorf("lease: %s %s: %w", op, key, context.DeadlineExceeded)
			}
			return nil
		})
		cp := kcl.NewSequence("49680000000000000000000000000000000000000000000000000015")
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = cp }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("checkpoint: err %v, want the injected timeout", err)
		}
		cur := getLease(t, f.store, h.Key())
		cur.Checkpoint = cp
		if _, err := f.store.ResetCheckpoint(t.Context(), cur); err != nil {
			t.Fatal(err)
		}
		advance(renewInterval)
		var ce *lease.ConflictError
		if h.Valid() || !errors.As(h.Err(), &ce) || ce.Current == nil || ce.Current.Owner != "" {
			t.Fatalf("handle after a reset: valid %v, err %v; want lost to the reset's conflict", h.Valid(), h.Err())
		}
	})
}
