package lease_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Protocol tests: whole fleets of managers over one MemoryStore, in virtual
// time. They use the timing constants of manager_test.go.

// skewedClock is a worker's clock: offset from the bubble's clock and
// running at rate times its speed, from base on.
type skewedClock struct {
	base   time.Time
	offset time.Duration
	rate   float64
}

func (c skewedClock) now() time.Time {
	return c.base.Add(c.offset + time.Duration(float64(time.Since(c.base))*c.rate))
}

// protoWorker is one manager of a protoFleet.
type protoWorker struct {
	id    string
	m     *lease.Manager
	st    *partitionedStore
	clock skewedClock
}

// held is one handle a worker acquired.
type held struct {
	worker string
	h      *lease.Handle
	at     time.Time
}

// protoFleet runs managers over one store and checks, at every
// acquisition, that no other handle of the lease is still valid or not yet
// lost.
//
// Why checking at acquisitions suffices for "never two valid holders": a
// handle is valid from its acquisition until its deadline passes or it is
// lost, and becomes valid again only through a successful conditional
// write, which the store refuses once another worker took the lease. So if
// two handles of a lease were ever valid at one instant, the later one's
// acquisition happened while the earlier one was valid, and this check, run
// at that very instant (virtual time stands still while goroutines run), sees
// it. The checks use each holder's own clock, as Valid does.
type protoFleet struct {
	t     *testing.T
	store *lease.MemoryStore
	base  time.Time

	mu         sync.Mutex
	workers    []*protoWorker
	byKey      map[string][]held
	nAcquired  int
	violations []string
	// requireLost also demands that the previous holder's Lost channel is
	// closed at the acquisition (not only that Valid is false).
	requireLost bool
	// stubborn workers never hand a lease over when asked.
	stubborn map[string]bool
	// byLoad makes the managers balance by load; loadOf, when set, gives
	// the units per second each lease's holder records.
	byLoad bool
	loadOf func(key string) float64
}

func newProtoFleet(t *testing.T, leases int) *protoFleet {
	t.Helper()
	f := &protoFleet{t: t, store: lease.NewMemoryStore(), base: time.Now(), byKey: map[string][]held{}, requireLost: true, stubborn: map[string]bool{}}
	for i := range leases {
		if err := f.store.Create(t.Context(), lease.Lease{Key: fmt.Sprintf("shard-%05d", i), Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// start starts a manager for id whose clock has the given offset and rate.
func (f *protoFleet) start(id string, offset time.Duration, rate float64) *protoWorker {
	f.t.Helper()
	w := &protoWorker{id: id, st: &partitionedStore{Store: f.store}, clock: skewedClock{base: f.base, offset: offset, rate: rate}}
	var seed uint64
	for _, c := range id {
		seed = seed*31 + uint64(c)
	}
	w.m = lease.NewManager(lease.ManagerConfig{
		Store:         w.st,
		WorkerID:      id,
		LeaseDuration: leaseDuration,
		RenewInterval: renewInterval,
		TakeInterval:  takeInterval,
		Logger:        testLogger().With("worker", id),
		Rand:          rand.New(rand.NewPCG(seed, 7)),
		Now:           w.clock.now,
		BalanceByLoad: f.byLoad,
		OnAcquired:    func(h *lease.Handle) { f.acquired(id, h) },
	})
	if err := w.m.Start(f.t.Context()); err != nil {
		f.t.Fatalf("start %s: %v", id, err)
	}
	f.mu.Lock()
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	return w
}

func (f *protoFleet) acquired(id string, h *lease.Handle) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nAcquired++
	for _, prev := range f.byKey[h.Key()] {
		if prev.h == h {
			continue
		}
		if prev.h.Valid() {
			f.violations = append(f.violations, fmt.Sprintf("%v: %s acquired %s while %s's handle (since %v) was still valid",
				now.Sub(f.base), id, h.Key(), prev.worker, prev.at.Sub(f.base)))
		} else if f.requireLost && !isClosed(prev.h.Lost()) {
			f.violations = append(f.violations, fmt.Sprintf("%v: %s acquired %s before %s's handle was lost",
				now.Sub(f.base), id, h.Key(), prev.worker))
		}
	}
	f.byKey[h.Key()] = append(f.byKey[h.Key()], held{worker: id, h: h, at: now})
	if f.loadOf != nil {
		rate := f.loadOf(h.Key())
		go func() {
			for {
				select {
				case <-h.Lost():
					return
				case <-time.After(renewInterval / 4):
					h.RecordLoad(rate * (renewInterval / 4).Seconds())
				}
			}
		}()
	}
	if f.stubborn[id] {
		return
	}
	// Act like a worker: hand the lease over when asked. The goroutine
	// ends when the handle is lost (Close loses all).
	go func() {
		select {
		case <-h.HandoffRequested():
			_ = h.HandOver(context.Background())
		case <-h.Lost():
		}
	}()
}

// check fails the test on any violation seen so far.
func (f *protoFleet) check() {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, v := range f.violations {
		if i == 10 {
			f.t.Errorf("... and %d more", len(f.violations)-10)
			break
		}
		f.t.Error(v)
	}
}

func (f *protoFleet) closeAll() {
	for _, w := range f.workers {
		w.st.Down.Store(false)
		_ = w.m.Close(context.Background())
	}
}

// spread returns the lowest and highest lease counts among ws and their sum.
func spread(ws []*protoWorker) (lo, hi, sum int) {
	lo = int(^uint(0) >> 1)
	for _, w := range ws {
		n := len(w.m.Held())
		lo, hi, sum = min(lo, n), max(hi, n), sum+n
	}
	return lo, hi, sum
}

// converge advances virtual time until ws hold all n leases within one of
// each other, failing after limit. It returns the virtual time it took.
func converge(t *testing.T, ws []*protoWorker, n int, limit time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		lo, hi, sum := spread(ws)
		if sum == n && hi-lo <= 1 {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: after %v the %d workers hold %d of %d leases, %d to %d each", what, time.Since(start), len(ws), sum, n, lo, hi)
		}
		advance(takeInterval / 10)
	}
}

// checkStore checks that the store names, for every lease, a worker of ws
// that holds it.
func checkStore(t *testing.T, st lease.Store, ws []*protoWorker) {
	t.Helper()
	holder := map[string]string{}
	for _, w := range ws {
		for _, h := range w.m.Held() {
			if other, dup := holder[h.Key()]; dup {
				t.Errorf("lease %s held by both %s and %s", h.Key(), other, w.id)
			}
			holder[h.Key()] = w.id
		}
	}
	ls, err := st.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for _, l := range ls {
		if holder[l.Key] != l.Owner {
			if bad++; bad <= 5 {
				t.Errorf("lease %s: store owner %q, held by %q", l.Key, l.Owner, holder[l.Key])
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d leases in all disagree", bad)
	}
}

// fleetSize returns the workers and leases of the large protocol tests: 100
// and 10,000, or 20 and 2,000 with -short or the race detector (which slows
// the full size to minutes on two cores).
func fleetSize() (workers, leases int) {
	if testing.Short() || raceEnabled {
		return 20, 2000
	}
	return 100, 10000
}

// TestProtocolLargeFleetConverges starts all workers at once on a table of
// free leases and measures how long they take to hold them within one lease
// of each other; then checks that nothing moves for a while.
func TestProtocolLargeFleetConverges(t *testing.T) {
	nw, nl := fleetSize()
	synctest.Test(t, func(t *testing.T) {
		f := newProtoFleet(t, nl)
		defer f.closeAll()
		var ws []*protoWorker
		for i := range nw {
			ws = append(ws, f.start(fmt.Sprintf("w%03d", i), 0, 1))
		}
		took := converge(t, ws, nl, 10*takeInterval, "start")
		f.mu.Lock()
		moves := f.nAcquired
		f.mu.Unlock()
		t.Logf("%d workers × %d leases: balanced after %v of virtual time (%.1f take intervals of %v), %d acquisitions (minimum %d)",
			nw, nl, took, float64(took)/float64(takeInterval), takeInterval, moves, nl)
		if moves != nl {
			t.Errorf("%d acquisitions to spread %d free leases, want exactly one each", moves, nl)
		}
		checkStore(t, f.store, ws)

		// Balanced: nothing moves over several lease durations.
		advance(3 * leaseDuration)
		f.mu.Lock()
		if f.nAcquired != moves {
			t.Errorf("%d acquisitions in a balanced fleet, want none", f.nAcquired-moves)
		}
		f.mu.Unlock()
		lo, hi, sum := spread(ws)
		if sum != nl || hi-lo > 1 {
			t.Errorf("balanced fleet drifted to %d leases, %d to %d each", sum, lo, hi)
		}
		f.check()
	})
}

// TestProtocolCrashReassignment crashes 30% of a balanced fleet (their
// store calls fail from then on: no renewal, no release) and checks that
// every lease they held is taken by a survivor within the lease duration
// plus one take period of the crash, that the crashed workers' handles were
// lost before (checked at every acquisition), and that the survivors end up
// balanced.
func TestProtocolCrashReassignment(t *testing.T) {
	nw, nl := fleetSize()
	synctest.Test(t, func(t *testing.T) {
		f := newProtoFleet(t, nl)
		defer f.closeAll()
		var ws []*protoWorker
		for i := range nw {
			ws = append(ws, f.start(fmt.Sprintf("w%03d", i), 0, 1))
		}
		converge(t, ws, nl, 10*takeInterval, "start")
		advance(leaseDuration) // settle into steady renewals

		// Crash every worker whose index is 3 mod 10 or below 2 mod 10:
		// 30%, spread over the ID order.
		r := rand.New(rand.NewPCG(5, 6))
		advance(time.Duration(r.Int64N(int64(renewInterval))))
		crash := time.Now()
		var crashed, survivors []*protoWorker
		orphans := map[string]bool{}
		for i, w := range ws {
			if i%10 < 3 {
				w.st.Down.Store(true)
				crashed = append(crashed, w)
				for _, h := range w.m.Held() {
					orphans[h.Key()] = true
				}
			} else {
				survivors = append(survivors, w)
			}
		}
		took := converge(t, survivors, nl, leaseDuration+10*takeInterval, "after the crash")

		latest := time.Duration(0)
		for key := range orphans {
			var at time.Time
			f.mu.Lock()
			for _, hd := range f.byKey[key] {
				if hd.at.After(crash) {
					at = hd.at
					break
				}
			}
			f.mu.Unlock()
			if at.IsZero() {
				t.Errorf("%s: never taken over", key)
				continue
			}
			latest = max(latest, at.Sub(crash))
		}
		// The crashed workers' last heartbeats are seen up to a heartbeat
		// period (min(renew, take) interval) late; views read a moment
		// apart may leave a lease to the next round.
		bound := leaseDuration + min(renewInterval, takeInterval) + maxTakePeriod
		t.Logf("%d of %d workers crashed holding %d leases: all reassigned within %v of the crash (bound %v); survivors balanced after %v",
			len(crashed), nw, len(orphans), latest, bound, took)
		if latest > bound {
			t.Errorf("last orphan reassigned %v after the crash, want within %v", latest, bound)
		}
		for _, w := range crashed {
			if n := len(w.m.Held()); n != 0 {
				t.Errorf("crashed %s still holds %d leases", w.id, n)
			}
		}
		checkStore(t, f.store, survivors)
		f.check()
	})
}

// sampleValidity checks every period, until stop is closed, that no lease
// has two handles that are valid at once. It complements the check at
// acquisitions (which is exact) with a look at ordinary instants.
func (f *protoFleet) sampleValidity(period time.Duration, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(period):
			}
			f.mu.Lock()
			for key, hs := range f.byKey {
				var valid []string
				for _, hd := range hs {
					if hd.h.Valid() {
						valid = append(valid, hd.worker)
					}
				}
				if len(valid) > 1 {
					f.violations = append(f.violations, fmt.Sprintf("%v: %s valid for %v at once", time.Since(f.base), key, valid))
				}
			}
			f.mu.Unlock()
		}
	})
	return &wg
}

// expiryTakeovers counts acquisitions of a lease whose previous holder lost
// it by expiry: the path where skewed clocks could let two workers overlap.
func (f *protoFleet) expiryTakeovers() (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, hs := range f.byKey {
		for i := 1; i < len(hs); i++ {
			if errors.Is(hs[i-1].h.Err(), lease.ErrExpired) {
				n++
			}
		}
	}
	return n
}

// TestProtocolSkewedClocks runs a fleet whose workers' clocks are offset by
// up to ±9 s and run up to 1% fast or slow, through partitions (a worker
// cut off from the table, then back), a graceful leave and a join. Leases
// move by expiry, by hand-over and by release throughout; no lease may ever
// have two holders that both consider their handle valid.
func TestProtocolSkewedClocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const nl = 200
		f := newProtoFleet(t, nl)
		defer f.closeAll()
		offsets := []time.Duration{-8 * time.Second, -5 * time.Second, -2 * time.Second, 0, 3 * time.Second,
			6 * time.Second, 9 * time.Second, -4 * time.Second, time.Second, 7 * time.Second}
		rates := []float64{1.01, 0.99, 1, 1.01, 0.99, 1.005, 0.995, 1, 1.01, 0.99}
		var ws []*protoWorker
		for i := range offsets {
			ws = append(ws, f.start(fmt.Sprintf("w%d", i), offsets[i], rates[i]))
		}
		stop := make(chan struct{})
		sampler := f.sampleValidity(250*time.Millisecond, stop)
		converge(t, ws, nl, 10*takeInterval, "start")

		r := rand.New(rand.NewPCG(21, 22))
		for step := range 10 {
			switch step {
			case 4:
				// A graceful leave: stop taking, release everything, close.
				w := ws[len(ws)-1]
				ws = ws[:len(ws)-1]
				w.m.StopTaking()
				for _, h := range w.m.Held() {
					if err := h.Release(t.Context()); err != nil {
						t.Errorf("release %s by %s: %v", h.Key(), w.id, err)
					}
				}
				if err := w.m.Close(t.Context()); err != nil {
					t.Errorf("close %s: %v", w.id, err)
				}
			case 7:
				// A join, with a clock 6 s behind and 1% fast.
				ws = append(ws, f.start("late", -6*time.Second, 1.01))
			}
			// Cut one to three workers off the table for 0.3 to 2.5 lease
			// durations, then let them back.
			cut := map[int]bool{}
			for range 1 + r.IntN(3) {
				cut[r.IntN(len(ws))] = true
			}
			for i := range cut {
				ws[i].st.Down.Store(true)
			}
			advance(leaseDuration*3/10 + time.Duration(r.Int64N(int64(leaseDuration*22/10))))
			for i := range cut {
				ws[i].st.Down.Store(false)
			}
			advance(leaseDuration/2 + time.Duration(r.Int64N(int64(leaseDuration*3/2))))
		}
		took := converge(t, ws, nl, 20*takeInterval, "after the partitions")
		close(stop)
		sampler.Wait()
		checkStore(t, f.store, ws)
		n := f.expiryTakeovers()
		f.mu.Lock()
		acquired := f.nAcquired
		f.mu.Unlock()
		t.Logf("%d acquisitions, %d of them after the previous holder's handle expired; balanced %v after the last partition", acquired, n, took)
		if n < 20 {
			t.Errorf("only %d takeovers after an expiry: the test did not exercise skewed expiry", n)
		}
		f.check()
	})
}

// TestProtocolSkewCheckDetectsOverlap is the control of the skewed-clock
// test: a holder whose clock runs at half speed is beyond what the safety
// margin covers (it believes its lease valid for twice as long), and the
// check must see two valid holders when its leases are taken over.
func TestProtocolSkewCheckDetectsOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const nl = 30
		f := newProtoFleet(t, nl)
		defer f.closeAll()
		ws := []*protoWorker{f.start("a", 0, 1), f.start("b", 0, 1), f.start("slow", 0, 0.5)}
		converge(t, ws, nl, 10*takeInterval, "start")
		ws[2].st.Down.Store(true)
		advance(2 * leaseDuration)
		f.mu.Lock()
		n := len(f.violations)
		f.violations = nil
		f.mu.Unlock()
		if n == 0 {
			t.Errorf("no overlap seen although the slow holder's handles stay valid past the takeover")
		}
		t.Logf("%d overlaps seen", n)
	})
}

// TestProtocolHandoffTimeout has an owner that ignores hand-over requests.
// The requester takes the lease after its timeout; the owner's handle must
// have turned invalid (and lost) by then, although the owner kept renewing.
func TestProtocolHandoffTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newProtoFleet(t, 4)
		defer f.closeAll()
		f.stubborn["a"] = true
		a := f.start("a", 0, 1)
		converge(t, []*protoWorker{a}, 4, 2*takeInterval, "a alone")
		b := f.start("b", 0, 1)
		start := time.Now()
		converge(t, []*protoWorker{a, b}, 4, 4*leaseDuration, "b joining")
		t.Logf("b got its share from a stubborn owner after %v", time.Since(start))
		timedOut := 0
		f.mu.Lock()
		for _, hd := range f.byKey {
			for _, x := range hd {
				if x.worker != "a" {
					continue
				}
				if errors.Is(x.h.Err(), lease.ErrHandoffTimeout) && errors.Is(x.h.Err(), kcl.ErrLeaseLost) {
					timedOut++
				} else if !slices.Contains(heldKeysOf(a), x.h.Key()) {
					t.Errorf("a's handle of %s: not held, Err() = %v, want lease.ErrHandoffTimeout", x.h.Key(), x.h.Err())
				}
			}
		}
		f.mu.Unlock()
		if timedOut != 2 {
			t.Errorf("%d of a's handles lost by hand-over timeout, want the 2 that b took", timedOut)
		}
		f.check()
	})
}

func heldKeysOf(w *protoWorker) []string { return heldKeys(w.m) }

// TestProtocolBalanceByLoad runs managers balancing by load: 3 of 12 shards
// carry ten times the load of the others. Counting leases alone could put
// two hot shards on one worker; by load, each worker ends up with one, the
// measured throughput is in the table, and then nothing moves.
func TestProtocolBalanceByLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newProtoFleet(t, 12)
		defer f.closeAll()
		f.byLoad = true
		// Spread by count, shards 0, 3, 6 and 9 would go to one worker.
		hot := map[string]bool{"shard-00000": true, "shard-00003": true, "shard-00006": true}
		f.loadOf = func(key string) float64 {
			if hot[key] {
				return 100
			}
			return 10
		}
		ws := []*protoWorker{f.start("a", 0, 1), f.start("b", 0, 1), f.start("c", 0, 1)}
		start := time.Now()
		hotOn := func() map[string]int {
			n := map[string]int{}
			for _, w := range ws {
				for _, h := range w.m.Held() {
					if hot[h.Key()] {
						n[w.id]++
					}
				}
			}
			return n
		}
		// Before any load is measured, leases weigh the same.
		advance(maxTakePeriod)
		if n := hotOn(); n["a"] != 3 {
			t.Fatalf("before measuring, the hot shards are spread %v; the test expects all on a", n)
		}
		for {
			n := hotOn()
			if n["a"] == 1 && n["b"] == 1 && n["c"] == 1 {
				break
			}
			if time.Since(start) > 10*leaseDuration {
				t.Fatalf("after %v the hot shards are spread %v, want one per worker", time.Since(start), n)
			}
			advance(takeInterval / 4)
		}
		t.Logf("one hot shard per worker after %v", time.Since(start))
		advance(3 * leaseDuration) // the smoothed rates settle
		ls, err := f.store.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			want := f.loadOf(l.Key)
			if l.Throughput < want*0.8 || l.Throughput > want*1.2 {
				t.Errorf("%s: stored throughput %v, want about %v", l.Key, l.Throughput, want)
			}
		}
		f.mu.Lock()
		n := f.nAcquired
		f.mu.Unlock()
		advance(5 * leaseDuration)
		f.mu.Lock()
		if f.nAcquired != n {
			t.Errorf("%d leases moved after balancing by load, want none", f.nAcquired-n)
		}
		f.mu.Unlock()
		if got := hotOn(); got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
			t.Errorf("hot shards spread %v after a while, want one per worker", got)
		}
		f.check()
	})
}

// TestHandleRecordLoad checks what renewals store as Throughput: the
// stored value untouched while nothing is recorded, then the smoothed rate
// of what RecordLoad was given, starting from the stored value.
func TestHandleRecordLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 0)
		if err := f.store.Create(t.Context(), lease.Lease{Key: "shard-x", Checkpoint: kcl.TrimHorizon, Throughput: 42}); err != nil {
			t.Fatal(err)
		}
		f.byLoad = true // throughputs are written for load-aware balancing only
		a := f.start("a", nil)
		defer f.closeAll()
		advance(maxTakePeriod)
		hs := a.Held()
		if len(hs) != 1 {
			t.Fatalf("a holds %d leases, want 1", len(hs))
		}
		h := hs[0]
		c0 := getLease(t, f.store, "shard-x").Counter
		advance(3 * renewInterval)
		if l := getLease(t, f.store, "shard-x"); l.Counter != c0 || l.Throughput != 42 {
			t.Fatalf("after 3 renewal intervals without RecordLoad: counter %d (from %d), Throughput %v; want no write and 42 kept", l.Counter, c0, l.Throughput)
		}
		// 50 units per second, in 10 slices per renewal interval.
		for i := range 10 {
			for range 10 {
				h.RecordLoad(50 * (renewInterval / 10).Seconds())
				advance(renewInterval / 10)
			}
			if i == 1 {
				// Smoothed from 42: the first rates stored lie between.
				if tp := getLease(t, f.store, "shard-x").Throughput; tp <= 42 || tp >= 50 {
					t.Errorf("first measured Throughput %v, want between 42 and 50", tp)
				}
			}
		}
		if tp := getLease(t, f.store, "shard-x").Throughput; tp < 49 || tp > 51 {
			t.Errorf("Throughput %v after 10 renewals at 50/s, want about 50", tp)
		}
		h.RecordLoad(-1)
		h.RecordLoad(math.NaN())
		advance(renewInterval)
		if tp := getLease(t, f.store, "shard-x").Throughput; tp < 0 || tp > 51 || math.IsNaN(tp) {
			t.Errorf("Throughput %v after invalid records, want them ignored", tp)
		}
	})
}

// blindStore is a Store whose List fails: a worker that heartbeats but
// cannot scan the table, so it never takes what the plan gives it.
type blindStore struct{ lease.Store }

func (blindStore) List(context.Context) ([]lease.Lease, error) {
	return nil, errors.New("test: scan times out")
}

// TestProtocolStaleLeaseTakenByAnother checks liveness when the worker the
// plan names for a free lease does not take it: after a few rounds the lease
// is stale and another worker below its share takes it.
func TestProtocolStaleLeaseTakenByAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 1)
		defer f.closeAll()
		// With one lease and two empty workers, the plan names a (the
		// smaller ID); a cannot scan.
		a := f.start("a", blindStore{f.store})
		b := f.start("b", nil)
		start := time.Now()
		advance(2 * maxTakePeriod)
		if len(b.Held()) != 0 {
			t.Fatalf("b took the lease planned for a before it was stale")
		}
		for len(b.Held()) == 0 {
			if time.Since(start) > 6*maxTakePeriod {
				t.Fatalf("b did not take the stale lease within %v", time.Since(start))
			}
			advance(takeInterval / 4)
		}
		t.Logf("b took the lease a could not, %v after start", time.Since(start))
		if len(a.Held()) != 0 {
			t.Errorf("a holds %v", heldKeys(a))
		}
	})
}

// TestProtocolJoinLargeFleet adds a worker to a balanced large fleet and
// measures how long the hand-overs that give it its share take. Only the
// leases it needs move.
func TestProtocolJoinLargeFleet(t *testing.T) {
	nw, nl := fleetSize()
	synctest.Test(t, func(t *testing.T) {
		f := newProtoFleet(t, nl)
		defer f.closeAll()
		var ws []*protoWorker
		for i := range nw {
			ws = append(ws, f.start(fmt.Sprintf("w%03d", i), 0, 1))
		}
		converge(t, ws, nl, 10*takeInterval, "start")
		f.mu.Lock()
		before := f.nAcquired
		f.mu.Unlock()
		ws = append(ws, f.start("w999", 0, 1))
		took := converge(t, ws, nl, 200*takeInterval, "join")
		f.mu.Lock()
		moved := f.nAcquired - before
		f.mu.Unlock()
		want := nl / len(ws) // the newcomer's share; nobody else moves
		t.Logf("a worker joining %d workers × %d leases got its %d leases after %v (%.1f take intervals)",
			nw, nl, moved, took, float64(took)/float64(takeInterval))
		if moved != want {
			t.Errorf("%d leases moved for a join, want the newcomer's share %d", moved, want)
		}
		f.check()
	})
}
