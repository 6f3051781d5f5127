package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
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
		cp2 := kcl.NewSequence("49680000000000000000000000000000000000000000000000000025")
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = cp2 }); err != nil {
			t.Fatalf("next checkpoint: %v", err)
		}
		if got := getLease(t, f.store, h.Key()); got.Checkpoint != cp2 || got.Owner != "a" {
			t.Errorf("stored lease %+v after the next checkpoint, want %v owned by a", got, cp2)
		}
		if got := h.Lease(); got.Checkpoint != cp2 || got.Counter != getLease(t, f.store, h.Key()).Counter {
			t.Errorf("handle's lease %+v after the next checkpoint, want it adopted and written", got)
		}
	})
}

// TestHandleAdoptsTimedOutCheckpointThenRequest: a hand-over request made
// after the timed-out checkpoint was applied (it does not move the counter)
// does not prevent the adoption: the next renewal adopts the write, sees
// the request, and the holder hands the lease over.
func TestHandleAdoptsTimedOutCheckpointThenRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, _, h := acquireOne(t)
		defer f.closeAll()
		loseAnswerOnce(f.store, "checkpoint")
		cp := kcl.NewSequence("49680000000000000000000000000000000000000000000000000015")
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = cp }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("checkpoint: err %v, want the injected timeout", err)
		}
		if _, err := f.store.RequestHandoff(t.Context(), getLease(t, f.store, h.Key()), "b"); err != nil {
			t.Fatal(err)
		}
		if err := f.store.AskHandoff(t.Context(), h.Key(), "b"); err != nil {
			t.Fatal(err)
		}
		advance(renewInterval)
		// The fleet's holders hand a lease over when asked.
		if !isClosed(h.HandoffRequested()) {
			t.Fatalf("hand-over request not signalled; handle error %v", h.Err())
		}
		if !errors.Is(h.Err(), lease.ErrReleased) {
			t.Fatalf("handle error %v, want it handed over (ErrReleased)", h.Err())
		}
		if got := getLease(t, f.store, h.Key()); got.Checkpoint != cp || got.Owner != "b" {
			t.Errorf("stored lease: checkpoint %v, owner %q; want %v handed over to b", got.Checkpoint, got.Owner, cp)
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

// listed returns lease key as List reads it (not Get, which tests gate).
func listed(t *testing.T, st lease.Store, key string) lease.Lease {
	t.Helper()
	ls, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Key == key {
			return l
		}
	}
	t.Fatalf("lease %s not listed", key)
	return lease.Lease{}
}

// gate blocks the callers of wait until open is called.
type gate struct {
	ch   chan struct{}
	used atomic.Bool
}

func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) wait() { g.used.Store(true); <-g.ch }
func (g *gate) open() { close(g.ch) }

// recorder counts the acquisitions of one manager.
type recorder struct {
	mu  sync.Mutex
	got []*lease.Handle
}

func (r *recorder) acquired(h *lease.Handle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, h)
}

func (r *recorder) of(key string) []*lease.Handle {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*lease.Handle
	for _, h := range r.got {
		if h.Key() == key {
			out = append(out, h)
		}
	}
	return out
}

// startManager starts a manager with the test timings that reports its
// acquisitions to rec and never hands a lease over by itself.
func startManager(t *testing.T, st lease.Store, id string, rec *recorder) *lease.Manager {
	t.Helper()
	m := lease.NewManager(lease.ManagerConfig{
		Store: st, WorkerID: id,
		LeaseDuration: leaseDuration, RenewInterval: renewInterval, TakeInterval: takeInterval,
		Logger:     slog.New(slog.DiscardHandler),
		Rand:       rand.New(rand.NewPCG(uint64(len(id)), 7)),
		OnAcquired: rec.acquired,
	})
	if err := m.Start(t.Context()); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return m
}

// TestManagerInstallsOnce: b asks a for shard-01; a releases it instead of
// handing it over, and b's taking round and b's hand-over waiter both go
// for it. Whichever order their writes and installs take, b must acquire
// the lease once, keep that handle, and renew it.
func TestManagerInstallsOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// waiterFirst: the round's take is applied, then the waiter adopts
		// the lease and installs it before the round does.
		waiterFirst bool
	}{
		{"round then waiter", false},
		{"waiter installs between the round's take and install", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := lease.NewMemoryStore()
				for _, k := range []string{"shard-00", "shard-01"} {
					if err := st.Create(t.Context(), lease.Lease{Key: k, Checkpoint: kcl.TrimHorizon}); err != nil {
						t.Fatal(err)
					}
				}
				const key = "shard-01"
				getGate, takeGate := newGate(), newGate()
				var gatesOn atomic.Bool
				st.SetFault(func(op, k string) error {
					if gatesOn.Load() && op == "get" && k == key {
						getGate.wait()
					}
					return nil
				})
				st.SetFaultAfterWrite(func(op, k string) error {
					if gatesOn.Load() && tc.waiterFirst && op == "take" && k == key {
						takeGate.wait()
					}
					return nil
				})
				var ra, rb recorder
				a := startManager(t, st, "a", &ra)
				defer a.Close(context.Background())
				advance(maxTakePeriod)
				if n := len(a.Held()); n != 2 {
					t.Fatalf("a holds %d leases, want 2", n)
				}
				gatesOn.Store(true)
				b := startManager(t, st, "b", &rb)
				defer b.Close(context.Background())
				advance(maxTakePeriod) // b asks a for shard-01; its waiter blocks on its first poll
				if !getGate.used.Load() {
					t.Fatal("b's hand-over waiter did not poll shard-01")
				}
				ha := ra.of(key)
				if len(ha) != 1 {
					t.Fatalf("a acquired %s %d times, want 1", key, len(ha))
				}
				if err := ha[0].Release(t.Context()); err != nil {
					t.Fatal(err)
				}
				b.WakeTaker()
				synctest.Wait() // the round takes the lease (and installs it, unless gated)
				if listed(t, st, key).Owner != "b" {
					t.Fatalf("b's round did not take %s", key)
				}
				getGate.open()
				synctest.Wait() // the waiter sees b as the owner
				if tc.waiterFirst {
					takeGate.open()
					synctest.Wait()
				}
				hs := rb.of(key)
				if len(hs) != 1 {
					t.Fatalf("b acquired %s %d times, want once", key, len(hs))
				}
				h := hs[0]
				advance(2 * leaseDuration)
				if !h.Valid() {
					t.Fatalf("b's handle of %s lost: %v", key, h.Err())
				}
				if got := heldKeys(b); !slices.Equal(got, []string{key}) {
					t.Errorf("b holds %v, want [%s]", got, key)
				}
				if n := len(rb.of(key)); n != 1 {
					t.Errorf("b acquired %s %d times, want once", key, n)
				}
				if got := listed(t, st, key); got.Owner != "b" || got.Counter != h.Lease().Counter {
					t.Errorf("stored %s: owner %q counter %d; b's handle at counter %d", key, got.Owner, got.Counter, h.Lease().Counter)
				}
			})
		})
	}
}

// TestManagerFailoverWhileAnotherRestarts: of five workers, e crashes, and a
// crashes and restarts (same WorkerID) shortly before e's leases expire.
// The restarted a cannot judge e's leases expired for a lease duration, so
// the plan must not give them to it: every lease of e and of a's first run
// must be taken within LeaseDuration + two take periods (jittered) of its
// last write, the bound of a plain crash (one period for others to see the
// last write, one for the named worker's round), not at the stale-lease
// fallback (3 take periods after expiry). Run
// with the package's test timings and with the worker's defaults for a 3 s
// lease (renewal every second, a scan every half second).
func TestManagerFailoverWhileAnotherRestarts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ld, ri, ti time.Duration
	}{
		{"lease 10s", leaseDuration, renewInterval, takeInterval},
		{"lease 3s", 3 * time.Second, time.Second, 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { failoverWhileRestarting(t, tc.ld, tc.ri, tc.ti) })
		})
	}
}

func failoverWhileRestarting(t *testing.T, ld, ri, ti time.Duration) {
	f := newTestFleet(t, 10)
	f.leaseDuration, f.renewInterval, f.takeInterval = ld, ri, ti
	defer f.closeAll()
	var mu sync.Mutex
	lastBeat := map[string]time.Time{} // worker -> last heartbeat
	f.store.SetFaultAfterWrite(func(op, key string) error {
		if op == "beat" {
			mu.Lock()
			lastBeat[key] = time.Now()
			mu.Unlock()
		}
		return nil
	})
	pa, pe := &partitionedStore{Store: f.store}, &partitionedStore{Store: f.store}
	a := f.start("a", pa)
	b, c, d := f.start("b", nil), f.start("c", nil), f.start("d", nil)
	e := f.start("e", pe)
	advance(max(6*ti, 2*ld))
	if got := counts([]*lease.Manager{a, b, c, d, e}); !slices.Equal(got, []int{2, 2, 2, 2, 2}) {
		t.Fatalf("managers hold %v before the crash, want 2 each", got)
	}
	advance(ri / 2)
	type held struct {
		h    *lease.Handle
		last time.Time // last heartbeat of the crashed holder
	}
	crashed := map[string]held{}
	crash := func(id string, m *lease.Manager, p *partitionedStore) {
		p.Down.Store(true)
		mu.Lock()
		defer mu.Unlock()
		for _, h := range m.Held() {
			crashed[h.Key()] = held{h, lastBeat[id]}
		}
	}
	crash("e", e, pe)
	advance(ld - ld/10)
	crash("a", a, pa)
	a2 := f.start("a", nil) // a restarts: young for a lease duration
	advance(3*ld + 6*ti)

	maxPeriod := ti + ti/10
	var worst time.Duration
	for key, ch := range crashed {
		last := ch.last
		var acq acquisition
		ok := false
		for _, x := range f.acquisitions() {
			if x.h.Key() == key && x.h != ch.h && !x.at.Before(last) {
				acq, ok = x, true
				break
			}
		}
		if !ok {
			t.Errorf("%s: never taken over", key)
			continue
		}
		idle := acq.at.Sub(last)
		worst = max(worst, idle)
		if idle < ld {
			t.Errorf("%s: taken %v after its holder's last write, before the lease duration", key, idle)
		}
		if bound := ld + 2*maxPeriod; idle > bound {
			t.Errorf("%s: taken by %s %v after its holder's last write, later than %v", key, acq.worker, idle, bound)
		}
	}
	t.Logf("failover: worst %v from the last write to the take (lease %v, take interval %v)", worst, ld, ti)
	live := []*lease.Manager{a2, b, c, d}
	if got := counts(live); slices.Max(got)-slices.Min(got) > 1 {
		t.Errorf("live workers hold %v, want balanced", got)
	}
	checkOwnership(t, f.store, []string{"a", "b", "c", "d"}, live)
}

// TestPlanNeverGivesExpiredToYoung: the fleet-wide plan gives a crashed
// worker's expired leases only to workers old enough to judge them expired,
// each to exactly one of them (every planner agrees), while a young worker
// still takes unowned leases. With only young workers, expired leases wait.
func TestPlanNeverGivesExpiredToYoung(t *testing.T) {
	mk := func(key, owner string) lease.Lease {
		return lease.Lease{Key: key, Owner: owner, Counter: 5, Checkpoint: kcl.TrimHorizon}
	}
	leases := []lease.Lease{
		mk("b-1", "b"), mk("b-2", "b"), mk("c-1", "c"), mk("c-2", "c"),
		mk("x-1", "x"), mk("x-2", "x"), mk("x-3", "x"), mk("free-1", ""),
	}
	expired := map[string]bool{"x-1": true, "x-2": true, "x-3": true}
	for _, tc := range []struct {
		name   string
		young  map[string]bool
		byLoad bool
	}{
		{"by count", map[string]bool{"a": true}, false},
		{"by load", map[string]bool{"a": true}, true},
		{"by count, all young", map[string]bool{"a": true, "b": true, "c": true}, false},
		{"by load, all young", map[string]bool{"a": true, "b": true, "c": true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			takers := map[string][]string{}
			for _, self := range []string{"a", "b", "c"} {
				v := lease.View{Self: self, Leases: leases, Expired: expired, LiveWorkers: []string{"a", "b", "c"},
					Young: tc.young, ByLoad: tc.byLoad}
				for _, l := range lease.PlanTakes(v).Take {
					takers[l.Key] = append(takers[l.Key], self)
				}
			}
			allYoung := len(tc.young) == 3
			for key := range expired {
				got := takers[key]
				switch {
				case allYoung && len(got) != 0:
					t.Errorf("%s planned for %v, all of them young", key, got)
				case !allYoung && (len(got) != 1 || tc.young[got[0]]):
					t.Errorf("%s planned for %v, want exactly one mature worker", key, got)
				}
			}
			if got := takers["free-1"]; len(got) != 1 {
				t.Errorf("free-1 planned for %v, want exactly one worker", got)
			} else if !allYoung && got[0] != "a" && !tc.byLoad {
				t.Errorf("free-1 planned for %s, want the empty young worker a", got[0])
			}
		})
	}
}
