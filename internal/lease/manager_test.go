package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/lease/storetest"
	"github.com/shardline/shardline/kcl"
)

// Timing of the managers under test. Inside a synctest bubble these are
// virtual: a test that waits a minute of them finishes at once.
const (
	leaseDuration = 10 * time.Second
	renewInterval = 2 * time.Second
	takeInterval  = 3 * time.Second
	// maxTakePeriod is the longest gap between two taking rounds: the
	// interval jittered by +10%.
	maxTakePeriod = takeInterval + takeInterval/10
)

// acquisition records one lease taken by a manager.
type acquisition struct {
	worker string
	h      *lease.Handle
	at     time.Time
}

// testFleet starts managers over one MemoryStore and records what they
// acquire. All its methods are called inside a synctest bubble.
type testFleet struct {
	t     *testing.T
	store *lease.MemoryStore
	// Timing of the managers started; zero values select the package's
	// leaseDuration, renewInterval and takeInterval.
	leaseDuration, renewInterval, takeInterval time.Duration
	// byLoad makes the managers balance by load.
	byLoad bool

	mu       sync.Mutex
	acquired []acquisition
	managers []*lease.Manager
}

func newTestFleet(t *testing.T, leases int) *testFleet {
	t.Helper()
	f := &testFleet{t: t, store: lease.NewMemoryStore()}
	for i := range leases {
		if err := f.store.Create(t.Context(), lease.Lease{Key: fmt.Sprintf("shard-%02d", i), Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// start starts a manager for worker id over st (the fleet's store when nil).
func (f *testFleet) start(id string, st lease.Store) *lease.Manager {
	f.t.Helper()
	if st == nil {
		st = f.store
	}
	var seed uint64
	for _, c := range id {
		seed = seed*31 + uint64(c)
	}
	or := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return d
	}
	m := lease.NewManager(lease.ManagerConfig{
		Store:         st,
		WorkerID:      id,
		LeaseDuration: or(f.leaseDuration, leaseDuration),
		RenewInterval: or(f.renewInterval, renewInterval),
		TakeInterval:  or(f.takeInterval, takeInterval),
		BalanceByLoad: f.byLoad,
		Logger:        testLogger().With("w", id),
		Rand:          rand.New(rand.NewPCG(seed, 42)),
		OnAcquired: func(h *lease.Handle) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.acquired = append(f.acquired, acquisition{worker: id, h: h, at: time.Now()})
			// Act like a worker: hand the lease over when asked. The
			// goroutine ends when the handle is lost (Close loses all).
			go func() {
				select {
				case <-h.HandoffRequested():
					_ = h.HandOver(context.Background())
				case <-h.Lost():
				}
			}()
		},
	})
	if err := m.Start(f.t.Context()); err != nil {
		f.t.Fatalf("start %s: %v", id, err)
	}
	f.mu.Lock()
	f.managers = append(f.managers, m)
	f.mu.Unlock()
	return m
}

// closeAll closes every manager, ignoring the errors of partitioned ones.
func (f *testFleet) closeAll() {
	for _, m := range f.managers {
		_ = m.Close(context.Background())
	}
}

// acquisitions returns what was acquired so far.
func (f *testFleet) acquisitions() []acquisition {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.acquired)
}

// firstAcquisition returns the first acquisition of key at or after since.
func (f *testFleet) firstAcquisition(key string, since time.Time) (acquisition, bool) {
	for _, a := range f.acquisitions() {
		if a.h.Key() == key && !a.at.Before(since) {
			return a, true
		}
	}
	return acquisition{}, false
}

// advance lets d of virtual time pass and waits for the bubble to settle.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// heldKeys returns the sorted keys m holds.
func heldKeys(m *lease.Manager) []string {
	var out []string
	for _, h := range m.Held() {
		out = append(out, h.Key())
	}
	slices.Sort(out)
	return out
}

// checkOwnership checks that the managers hold disjoint sets of leases and
// that the store names the holder of each as its owner.
func checkOwnership(t *testing.T, st lease.Store, ids []string, ms []*lease.Manager) {
	t.Helper()
	holder := map[string]string{}
	for i, m := range ms {
		for _, k := range heldKeys(m) {
			if other, dup := holder[k]; dup {
				t.Errorf("lease %s held by both %s and %s", k, other, ids[i])
			}
			holder[k] = ids[i]
		}
	}
	ls, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if holder[l.Key] != l.Owner {
			t.Errorf("lease %s: store owner %q, held by %q", l.Key, l.Owner, holder[l.Key])
		}
	}
}

func counts(ms []*lease.Manager) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		out[i] = len(m.Held())
	}
	return out
}

// acquireOne starts a fleet with one lease and one manager "a" and returns
// the handle "a" acquires at its first taking round.
func acquireOne(t *testing.T) (*testFleet, *lease.Manager, *lease.Handle) {
	t.Helper()
	f := newTestFleet(t, 1)
	a := f.start("a", nil)
	advance(maxTakePeriod)
	hs := a.Held()
	if len(hs) != 1 {
		t.Fatalf("a holds %d leases after its first taking round, want 1", len(hs))
	}
	return f, a, hs[0]
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func getLease(t *testing.T, st lease.Store, key string) lease.Lease {
	t.Helper()
	l, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestManagersConverge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 12)
		defer f.closeAll()
		ids := []string{"a", "b", "c"}
		ms := []*lease.Manager{f.start("a", nil), f.start("b", nil), f.start("c", nil)}
		start := time.Now()
		for !slices.Equal(counts(ms), []int{4, 4, 4}) {
			if time.Since(start) > 4*takeInterval {
				t.Fatalf("after %v the managers hold %v, want 4/4/4", time.Since(start), counts(ms))
			}
			advance(takeInterval / 4)
		}
		t.Logf("balanced after %v", time.Since(start))
		checkOwnership(t, f.store, ids, ms)

		// Balanced: further rounds move nothing, renewals keep every lease.
		n := len(f.acquisitions())
		advance(3 * leaseDuration)
		if got := len(f.acquisitions()); got != n {
			t.Errorf("%d more acquisitions after balancing, want none", got-n)
		}
		for _, a := range f.acquisitions() {
			if isClosed(a.h.Lost()) {
				t.Errorf("%s lost %s (%v) in a stable fleet", a.worker, a.h.Key(), a.h.Err())
			}
		}
		checkOwnership(t, f.store, ids, ms)
	})
}

// twoBalanced starts managers a and b on 12 leases and waits until they
// hold 6 each; the caller closes the fleet.
func twoBalanced(t *testing.T) (*testFleet, []*lease.Manager) {
	t.Helper()
	f := newTestFleet(t, 12)
	ms := []*lease.Manager{f.start("a", nil), f.start("b", nil)}
	advance(3 * takeInterval)
	if got := counts(ms); !slices.Equal(got, []int{6, 6}) {
		f.closeAll()
		t.Fatalf("two managers hold %v, want 6/6", got)
	}
	return f, ms
}

func TestManagerJoinRebalances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, ms := twoBalanced(t)
		defer f.closeAll()
		ms = append(ms, f.start("c", nil))
		start := time.Now()
		// c steals one lease per round: 4 rounds, plus one to see the others.
		for !slices.Equal(counts(ms), []int{4, 4, 4}) {
			if time.Since(start) > 6*maxTakePeriod {
				t.Fatalf("after %v the managers hold %v, want 4/4/4", time.Since(start), counts(ms))
			}
			advance(takeInterval / 4)
		}
		// The victims notice the steals at their next renewal.
		advance(renewInterval)
		checkOwnership(t, f.store, []string{"a", "b", "c"}, ms)
	})
}

// partitionedStore is a Store that fails every call once cut off.
type partitionedStore = storetest.Partitioned

// TestManagerTakesOverFromCrashedWorker cuts one of three workers off the
// store. Its leases must go to the others no earlier than the lease duration
// after its last write to them, and soon after that; and the cut-off worker
// must have stopped (Lost closed) before anyone else took them.
func TestManagerTakesOverFromCrashedWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 12)
		defer f.closeAll()

		// lastBeat is when each worker's heartbeat last moved: its leases
		// are valid while it does.
		var mu sync.Mutex
		lastBeat := map[string]time.Time{}
		f.store.SetFaultAfterWrite(func(op, key string) error {
			if op == "beat" {
				mu.Lock()
				lastBeat[key] = time.Now()
				mu.Unlock()
			}
			return nil
		})

		pa := &partitionedStore{Store: f.store}
		a := f.start("a", pa)
		b, c := f.start("b", nil), f.start("c", nil)
		advance(4 * takeInterval)
		if got := counts([]*lease.Manager{a, b, c}); !slices.Equal(got, []int{4, 4, 4}) {
			t.Fatalf("managers hold %v before the crash, want 4/4/4", got)
		}
		// Cut a off midway between two renewals.
		advance(renewInterval / 2)
		crash := time.Now()
		pa.Down.Store(true)
		mu.Lock()
		aLast := map[string]time.Time{}
		for _, h := range a.Held() {
			aLast[h.Key()] = lastBeat["a"]
		}
		mu.Unlock()

		var lmu sync.Mutex
		lostAt := map[string]time.Time{}
		var wg sync.WaitGroup
		for _, h := range a.Held() {
			wg.Go(func() {
				<-h.Lost()
				lmu.Lock()
				lostAt[h.Key()] = time.Now()
				lmu.Unlock()
			})
		}

		advance(leaseDuration + 3*maxTakePeriod)
		wg.Wait()
		if got := counts([]*lease.Manager{b, c}); !slices.Equal(got, []int{6, 6}) {
			t.Errorf("b and c hold %v after the crash, want 6/6", got)
		}
		for key, last := range aLast {
			acq, ok := f.firstAcquisition(key, crash)
			if !ok {
				t.Errorf("%s: never taken over", key)
				continue
			}
			if acq.worker == "a" {
				t.Errorf("%s: taken by the crashed worker", key)
			}
			idle := acq.at.Sub(last)
			if idle < leaseDuration {
				t.Errorf("%s: %s took it %v after a's last write, before the lease duration %v", key, acq.worker, idle, leaseDuration)
			}
			if bound := leaseDuration + 2*maxTakePeriod; idle > bound {
				t.Errorf("%s: %s took it %v after a's last write, later than %v", key, acq.worker, idle, bound)
			}
			if lost := lostAt[key]; !lost.Before(last.Add(leaseDuration)) || lost.After(acq.at) {
				t.Errorf("%s: a's handle lost at +%v after its last write, taken over at +%v: a must stop first, within %v",
					key, lost.Sub(last), idle, leaseDuration)
			}
		}
		for _, h := range f.acquisitions() {
			if h.worker == "a" && !errors.Is(h.h.Err(), kcl.ErrLeaseLost) {
				t.Errorf("a's handle of %s: Err() = %v, want kcl.ErrLeaseLost", h.h.Key(), h.h.Err())
			}
		}
		if len(a.Held()) != 0 {
			t.Errorf("crashed a still holds %v", heldKeys(a))
		}
		checkOwnership(t, f.store, []string{"b", "c"}, []*lease.Manager{b, c})
	})
}

// TestHandleFencedWhenRenewalsFail refuses every renewal. The holder must
// give the lease up before it could expire in other workers' eyes, and a
// checkpoint through its handle must then fail without reaching the store.
func TestHandleFencedWhenRenewalsFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, a, h := acquireOne(t)
		defer f.closeAll()
		key := h.Key()
		b := f.start("b", nil)
		// a would take its own expired lease back as readily as b: leave
		// that to b.
		a.StopTaking()

		var mu sync.Mutex
		var failing bool
		var lastRenew time.Time
		var failures, checkpoints int
		f.store.SetFault(func(op, key string) error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case op == "beat" && key == "a":
				if failing {
					failures++
					return fmt.Errorf("test: renew: %w", kcl.ErrThrottled)
				}
				lastRenew = time.Now()
			case op == "checkpoint":
				checkpoints++
			}
			return nil
		})
		advance(2*renewInterval + renewInterval/2)
		mu.Lock()
		failing = true
		last := lastRenew
		mu.Unlock()
		if last.IsZero() {
			t.Fatal("no renewal before the fault")
		}

		// One failed renewal is not a loss.
		advance(renewInterval)
		if isClosed(h.Lost()) {
			t.Fatalf("lost after a single failed renewal: %v", h.Err())
		}
		<-h.Lost()
		lostAt := time.Now()
		mu.Lock()
		failing = false
		n := failures
		mu.Unlock()
		if n < 2 {
			t.Errorf("%d failed renewals before the loss, want several", n)
		}
		if !lostAt.Before(last.Add(leaseDuration)) {
			t.Errorf("Lost closed %v after the last renewal, not before the lease duration %v", lostAt.Sub(last), leaseDuration)
		}
		if err := h.Err(); !errors.Is(err, kcl.ErrLeaseLost) || !errors.Is(err, lease.ErrExpired) {
			t.Errorf("Err() = %v, want kcl.ErrLeaseLost and lease.ErrExpired", err)
		}
		if len(a.Held()) != 0 {
			t.Errorf("a still holds %v", heldKeys(a))
		}

		before := getLease(t, f.store, key)
		called := false
		_, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) {
			called = true
			l.Checkpoint = kcl.NewSequence("12345")
		})
		if !errors.Is(err, kcl.ErrLeaseLost) {
			t.Errorf("UpdateCheckpoint after the loss = %v, want kcl.ErrLeaseLost", err)
		}
		mu.Lock()
		if checkpoints != 0 || called {
			t.Errorf("checkpoint reached the store (%d writes, edit called %v)", checkpoints, called)
		}
		mu.Unlock()
		if after := getLease(t, f.store, key); !reflect.DeepEqual(after, before) {
			t.Errorf("lease changed by a checkpoint after the loss:\n got %+v\nwant %+v", after, before)
		}

		// b takes the lease only after a stopped, and once the lease duration
		// passed since a's last renewal.
		advance(leaseDuration + 2*maxTakePeriod)
		acq, ok := f.firstAcquisition(key, lostAt)
		if !ok || acq.worker != "b" {
			t.Fatalf("b did not take the lease over (held by b: %v)", heldKeys(b))
		}
		if acq.at.Sub(last) < leaseDuration || acq.at.Before(lostAt) {
			t.Errorf("b took the lease %v after a's last renewal (a stopped at %v), want at least %v and after a stopped",
				acq.at.Sub(last), lostAt.Sub(last), leaseDuration)
		}
	})
}

func TestHandleLostToSteal(t *testing.T) {
	// A take that bypasses the protocol (no fence) is noticed at the
	// owner's next read of the table: leases are not renewed one by one.
	t.Run("read notices", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f, a, h := acquireOne(t)
			defer f.closeAll()
			advance(renewInterval / 2)
			cur := getLease(t, f.store, h.Key())
			stolen, err := f.store.Take(t.Context(), cur, "intruder")
			if err != nil {
				t.Fatal(err)
			}
			if isClosed(h.Lost()) {
				t.Fatal("lost before any write noticed the steal")
			}
			stealAt := time.Now()
			<-h.Lost()
			if d := time.Since(stealAt); d > 4*leaseDuration {
				t.Errorf("loss noticed %v after the steal, want by the next periodic read (%v)", d, 4*leaseDuration)
			}
			if err := h.Err(); !errors.Is(err, kcl.ErrLeaseLost) || !errors.Is(err, lease.ErrConflict) {
				t.Errorf("Err() = %v, want kcl.ErrLeaseLost and lease.ErrConflict", err)
			}
			_, err = h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("777") })
			if !errors.Is(err, kcl.ErrLeaseLost) {
				t.Errorf("UpdateCheckpoint through the old handle = %v, want kcl.ErrLeaseLost", err)
			}
			if got := getLease(t, f.store, h.Key()); !reflect.DeepEqual(got, stolen) {
				t.Errorf("stolen lease changed:\n got %+v\nwant %+v", got, stolen)
			}
			// a does not take it back: the intruder holds one, a none.
			advance(3 * maxTakePeriod)
			if len(a.Held()) != 0 {
				t.Errorf("a holds %v, want nothing", heldKeys(a))
			}
		})
	})
	t.Run("checkpoint notices", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f, a, h := acquireOne(t)
			defer f.closeAll()
			advance(renewInterval / 2)
			stolen, err := f.store.Take(t.Context(), getLease(t, f.store, h.Key()), "intruder")
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("777") })
			if !errors.Is(err, kcl.ErrLeaseLost) {
				t.Errorf("UpdateCheckpoint after the steal = %v, want kcl.ErrLeaseLost", err)
			}
			if !isClosed(h.Lost()) || !errors.Is(h.Err(), kcl.ErrLeaseLost) {
				t.Errorf("handle not lost after a refused checkpoint: Err() = %v", h.Err())
			}
			if len(a.Held()) != 0 {
				t.Errorf("a holds %v, want nothing", heldKeys(a))
			}
			if got := getLease(t, f.store, h.Key()); !reflect.DeepEqual(got, stolen) {
				t.Errorf("stolen lease changed:\n got %+v\nwant %+v", got, stolen)
			}
		})
	})
}

func TestHandleRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, a, h := acquireOne(t)
		defer f.closeAll()
		key := h.Key()
		b := f.start("b", nil)
		// One lease between two workers: b does not steal it.
		advance(3 * maxTakePeriod)
		if len(b.Held()) != 0 {
			t.Fatalf("b took %v from a", heldKeys(b))
		}
		a.StopTaking()

		// Writes that queue up behind the release must be refused: the
		// handle is lost before the release lets go of it.
		var checkpoints atomic.Int32
		var queued sync.WaitGroup
		var queuedErr error
		f.store.SetFault(func(op, _ string) error {
			if op == "checkpoint" {
				checkpoints.Add(1)
			}
			return nil
		})
		f.store.SetFaultAfterWrite(func(op, _ string) error {
			if op == "release" {
				queued.Go(func() {
					_, queuedErr = h.UpdateCheckpoint(context.Background(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("1") })
				})
			}
			return nil
		})
		releasedAt := time.Now()
		if err := h.Release(t.Context()); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if !isClosed(h.Lost()) || !errors.Is(h.Err(), lease.ErrReleased) {
			t.Fatalf("after Release: Lost closed %v, Err() = %v, want closed with lease.ErrReleased", isClosed(h.Lost()), h.Err())
		}
		queued.Wait()
		f.store.SetFaultAfterWrite(nil)
		if !errors.Is(queuedErr, kcl.ErrLeaseLost) || checkpoints.Load() != 0 {
			t.Errorf("checkpoint queued behind Release: err %v, %d store writes; want kcl.ErrLeaseLost and none", queuedErr, checkpoints.Load())
		}
		released := getLease(t, f.store, key)
		if released.Owner != "" {
			t.Errorf("after Release the store owner is %q, want none", released.Owner)
		}
		if len(a.Held()) != 0 {
			t.Errorf("a still holds %v", heldKeys(a))
		}
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("1") }); !errors.Is(err, kcl.ErrLeaseLost) {
			t.Errorf("UpdateCheckpoint after Release = %v, want kcl.ErrLeaseLost", err)
		}
		if err := h.Release(t.Context()); !errors.Is(err, kcl.ErrLeaseLost) {
			t.Errorf("second Release = %v, want kcl.ErrLeaseLost", err)
		}
		if got := getLease(t, f.store, key); !reflect.DeepEqual(got, released) {
			t.Errorf("released lease changed by writes through the old handle:\n got %+v\nwant %+v", got, released)
		}

		// b takes it in its next round, without waiting for any expiry.
		advance(maxTakePeriod)
		acq, ok := f.firstAcquisition(key, releasedAt)
		if !ok || acq.worker != "b" {
			t.Fatalf("b did not take the released lease within one round (b holds %v)", heldKeys(b))
		}
		if d := acq.at.Sub(releasedAt); d > maxTakePeriod {
			t.Errorf("b took the released lease after %v, want within %v", d, maxTakePeriod)
		}
	})
}

// TestHandleCheckpointsDuringRenewals runs many checkpoints from several
// goroutines while renewals go on. Writes through a handle are serialized,
// so none may see a stale counter and lose the lease.
func TestHandleCheckpointsDuringRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, a, h := acquireOne(t)
		defer f.closeAll()
		var renewals atomic.Int32
		f.store.SetFault(func(op, _ string) error {
			if op == "beat" {
				renewals.Add(1)
			}
			return nil
		})
		var seq atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 4*60)
		for range 4 {
			wg.Go(func() {
				// 60 checkpoints 400ms apart: every fifth coincides with a
				// renewal tick, and together they span three lease durations.
				for range 60 {
					n := seq.Add(1)
					_, err := h.UpdateCheckpoint(context.Background(), func(l *lease.Lease) {
						l.Checkpoint = kcl.NewSequence(fmt.Sprint(n))
					})
					if err != nil {
						errs <- err
					}
					time.Sleep(renewInterval / 5)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("UpdateCheckpoint: %v", err)
		}
		if isClosed(h.Lost()) {
			t.Fatalf("lease lost during checkpoints: %v", h.Err())
		}
		if n := renewals.Load(); n < 10 {
			t.Errorf("%d renewals ran alongside the checkpoints, want at least 10", n)
		}
		stored := getLease(t, f.store, h.Key())
		if stored.Owner != "a" || stored.Counter != h.Lease().Counter {
			t.Errorf("store has owner %q counter %d; handle has counter %d", stored.Owner, stored.Counter, h.Lease().Counter)
		}
		if got := heldKeys(a); !slices.Equal(got, []string{h.Key()}) {
			t.Errorf("a holds %v, want [%s]", got, h.Key())
		}
	})
}

// TestManagerCloseLosesHandles checks that Close stops acting on held
// leases without releasing them, and that the handles then refuse writes
// with kcl.ErrLeaseLost.
func TestManagerCloseLosesHandles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, a, h := acquireOne(t)
		before := getLease(t, f.store, h.Key())
		if err := a.Close(t.Context()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !isClosed(h.Lost()) || !errors.Is(h.Err(), kcl.ErrLeaseLost) {
			t.Errorf("after Close: Lost closed %v, Err() = %v, want closed with kcl.ErrLeaseLost", isClosed(h.Lost()), h.Err())
		}
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence("9") }); !errors.Is(err, kcl.ErrLeaseLost) {
			t.Errorf("UpdateCheckpoint after Close = %v, want kcl.ErrLeaseLost", err)
		}
		if got := getLease(t, f.store, h.Key()); !reflect.DeepEqual(got, before) {
			t.Errorf("lease changed by Close:\n got %+v\nwant %+v", got, before)
		}
		if len(a.Held()) != 0 {
			t.Errorf("Held() after Close = %v, want none", heldKeys(a))
		}
		fl, err := f.store.ReadFleet(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(fl.Members) != 0 {
			t.Errorf("fleet members after Close: %v, want none", fl.Members)
		}
		// Nothing runs any more: no renewal moves the counter.
		advance(2 * leaseDuration)
		if got := getLease(t, f.store, h.Key()); got.Counter != before.Counter {
			t.Errorf("counter moved from %d to %d after Close", before.Counter, got.Counter)
		}
		if err := a.Close(t.Context()); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestManagerHeldMatchesAcquired checks Held against what OnAcquired saw.
func TestManagerHeldMatchesAcquired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 5)
		defer f.closeAll()
		a := f.start("a", nil)
		advance(maxTakePeriod)
		got := map[string]*lease.Handle{}
		for _, h := range a.Held() {
			got[h.Key()] = h
		}
		want := map[string]*lease.Handle{}
		for _, acq := range f.acquisitions() {
			want[acq.h.Key()] = acq.h
		}
		if len(got) != 5 || !maps.Equal(got, want) {
			t.Errorf("Held() = %v, OnAcquired saw %v; want the same 5 handles", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
		for _, h := range got {
			if l := h.Lease(); l.Owner != "a" || l.Key != h.Key() {
				t.Errorf("handle %s: Lease() = %+v, want owner a", h.Key(), l)
			}
		}
	})
}

func testLogger() *slog.Logger {
	if os.Getenv("LEASE_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestManagerTidiesFleetRow: a fenced worker's entry and the hand-over
// request of a worker that died are removed from the fleet row after a
// while, so that it does not grow with every crash.
func TestManagerTidiesFleetRow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 2)
		defer f.closeAll()
		ctx := t.Context()
		if _, err := f.store.Beat(ctx, "ghost", 0, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := f.store.AskHandoff(ctx, "shard-00", "ghost"); err != nil {
			t.Fatal(err)
		}
		f.start("a", nil)
		advance(leaseDuration + 2*maxTakePeriod)
		fl, err := f.store.ReadFleet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fl.Members["ghost"] != lease.Dead {
			t.Fatalf("ghost's entry %d after a lease duration without heartbeat, want fenced (Dead)", fl.Members["ghost"])
		}
		advance(6*leaseDuration + 2*maxTakePeriod)
		fl, err = f.store.ReadFleet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fl.Members["ghost"]; ok || len(fl.Handoffs) != 0 {
			t.Errorf("fleet row still holds ghost (%v) or its request (%v)", fl.Members, fl.Handoffs)
		}
		if fl.Members["a"] == 0 {
			t.Errorf("a's entry missing: %v", fl.Members)
		}
	})
}
