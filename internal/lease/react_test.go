package lease_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
)

// Reaction-time tests (issue 17), in virtual time with the timing of
// manager_test.go: lease 10 s, heartbeat every 2 s, taking rounds every 3 s.
// The bounds are far below a TakeInterval, which is what each change
// removes from the path, and far above what the protocol needs.

// TestFirstRoundRunsAtOnce: a worker takes the free leases a moment after
// Start, not a TakeInterval later.
func TestFirstRoundRunsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 8)
		defer f.closeAll()
		start := time.Now()
		m := f.start("a", nil)
		advance(takeInterval / 3)
		if n := len(m.Held()); n != 8 {
			t.Fatalf("%v after Start the worker holds %d of 8 leases, want all (the first round must not wait a TakeInterval of %v)",
				time.Since(start), n, takeInterval)
		}
		for _, a := range f.acquisitions() {
			t.Logf("%s acquired %v after Start", a.h.Key(), a.at.Sub(start))
		}
	})
}

// TestStartedTogetherDivideWithoutMoves: workers started at the same moment
// see each other at their first round and divide the free leases evenly,
// each lease acquired once.
func TestStartedTogetherDivideWithoutMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 12)
		defer f.closeAll()
		ms := []*lease.Manager{f.start("a", nil), f.start("b", nil), f.start("c", nil)}
		advance(takeInterval / 3)
		if got := counts(ms); !slices.Equal(got, []int{4, 4, 4}) {
			t.Fatalf("%v after a start together the workers hold %v, want 4/4/4", takeInterval/3, got)
		}
		advance(3 * takeInterval)
		if n := len(f.acquisitions()); n != 12 {
			t.Errorf("%d acquisitions for 12 leases, want 12 (none moved)", n)
		}
		checkOwnership(t, f.store, []string{"a", "b", "c"}, ms)
	})
}

// TestJoinerAsksAtFirstRound: a worker joining a balanced fleet asks for
// its share at its first round, right after Start, and holds it once the
// owners' next heartbeats have shown them the requests.
func TestJoinerAsksAtFirstRound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, ms := twoBalanced(t)
		defer f.closeAll()
		start := time.Now()
		ms = append(ms, f.start("c", nil))
		advance(takeInterval / 3)
		ls, err := f.store.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		asked := 0 // asked for, or already handed over
		for _, l := range ls {
			if l.HandoffTo == "c" || l.Owner == "c" {
				asked++
			}
		}
		if asked != 4 {
			t.Fatalf("%v after its Start the joiner asked for %d leases, want its share of 4 at its first round", time.Since(start), asked)
		}
		// The owners learn of the requests at their next heartbeat.
		for !slices.Equal(counts(ms), []int{4, 4, 4}) {
			if time.Since(start) > takeInterval/3+2*renewInterval {
				t.Fatalf("%v after the join the managers hold %v, want 4/4/4", time.Since(start), counts(ms))
			}
			advance(renewInterval / 10)
		}
		t.Logf("joiner held its share %v after its start", time.Since(start))
		checkOwnership(t, f.store, []string{"a", "b", "c"}, ms)
	})
}

// TestGracefulStopPassesToPlannedSurvivors: a worker that stops hands each
// lease, by a write conditional on its ownership, to the survivor the plan
// names: the leases are never unowned, split evenly, each acquired once,
// and held by the survivors within a heartbeat period, without waiting for
// a taking round.
func TestGracefulStopPassesToPlannedSurvivors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 12)
		defer f.closeAll()
		ms := []*lease.Manager{f.start("a", nil), f.start("b", nil), f.start("c", nil)}
		advance(3 * takeInterval)
		if got := counts(ms); !slices.Equal(got, []int{4, 4, 4}) {
			t.Fatalf("managers hold %v, want 4/4/4", got)
		}
		n0 := len(f.acquisitions())
		c := ms[2]
		keys := heldKeys(c)
		stop := time.Now()
		stopGracefully(t, c)
		to := map[string]int{}
		for _, k := range keys {
			l := getLease(t, f.store, k)
			if l.Owner != "a" && l.Owner != "b" {
				t.Fatalf("after Pass lease %s names %q, want a survivor", k, l.Owner)
			}
			to[l.Owner]++
		}
		if to["a"] != 2 || to["b"] != 2 {
			t.Errorf("passed %v, want 2 to each survivor", to)
		}
		survivors := ms[:2]
		for !slices.Equal(counts(survivors), []int{6, 6}) {
			if time.Since(stop) > renewInterval+takeInterval/3 {
				t.Fatalf("%v after the stop the survivors hold %v, want 6/6 within a heartbeat period", time.Since(stop), counts(survivors))
			}
			advance(renewInterval / 20)
		}
		t.Logf("survivors held the passed leases %v after the stop", time.Since(stop))
		if err := c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		advance(3 * takeInterval)
		if n := len(f.acquisitions()) - n0; n != len(keys) {
			t.Errorf("%d acquisitions after the stop, want %d (each passed lease once)", n, len(keys))
		}
		checkOwnership(t, f.store, []string{"a", "b"}, survivors)
		fl, err := f.store.ReadFleet(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(fl.Handoffs) != 0 {
			t.Errorf("hand-over records left in the fleet row: %v", fl.Handoffs)
		}
	})
}

// TestGracefulStopNudgesSurvivors: survivors that write to their leases
// (an application checkpointing every 100 ms) learn of the leases passed
// to them at their next write, through the nudge on their own leases, and
// hold them well before their next heartbeat. The stop comes at a moment
// when each survivor's next heartbeat is at least half a second away.
func TestGracefulStopNudgesSurvivors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 12)
		defer f.closeAll()
		beats := &beatLog{Store: f.store, last: map[string]time.Time{}}
		ms := []*lease.Manager{f.start("a", beats), f.start("b", beats), f.start("c", beats)}
		advance(3 * takeInterval)
		if got := counts(ms); !slices.Equal(got, []int{4, 4, 4}) {
			t.Fatalf("managers hold %v, want 4/4/4", got)
		}
		survivors := ms[:2]
		done := make(chan struct{})
		var wg sync.WaitGroup
		for _, m := range survivors {
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(100 * time.Millisecond):
					}
					for _, h := range m.Held() {
						_, _ = h.UpdateCheckpoint(context.Background(), nil)
					}
				}
			})
		}
		defer wg.Wait()
		defer close(done)

		const bound = 500 * time.Millisecond
		for beats.age("a") > renewInterval-bound || beats.age("b") > renewInterval-bound {
			advance(20 * time.Millisecond)
		}
		stop := time.Now()
		stopGracefully(t, ms[2])
		for !slices.Equal(counts(survivors), []int{6, 6}) {
			if time.Since(stop) > bound {
				t.Fatalf("%v after the stop the survivors hold %v, want 6/6 before their next heartbeat (%v, %v away at the stop)",
					time.Since(stop), counts(survivors), renewInterval-beats.ageAt("a", stop), renewInterval-beats.ageAt("b", stop))
			}
			advance(10 * time.Millisecond)
		}
		t.Logf("survivors held the passed leases %v after the stop", time.Since(stop))
		checkOwnership(t, f.store, []string{"a", "b"}, survivors)
	})
}

// beatLog is a store that records when each worker's heartbeat last
// succeeded.
type beatLog struct {
	lease.Store
	mu   sync.Mutex
	last map[string]time.Time
}

func (b *beatLog) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (lease.Fleet, error) {
	f, err := b.Store.Beat(ctx, id, from, withdrawn, bump, stalls)
	if err == nil {
		b.mu.Lock()
		b.last[id] = time.Now()
		b.mu.Unlock()
	}
	return f, err
}

// age returns how long ago worker id's last heartbeat succeeded.
func (b *beatLog) age(id string) time.Duration { return b.ageAt(id, time.Now()) }

func (b *beatLog) ageAt(id string, at time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return at.Sub(b.last[id])
}

// TestStopAfterSurvivorLeftReleases: when the whole fleet stops, one
// worker after the other within a heartbeat period, the last one does not
// hand its leases to a worker that already left (it would never take
// them; they would wait for their lease duration): it reads the fleet row
// as it stops and, with no other member left, releases them.
func TestStopAfterSurvivorLeftReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 4)
		defer f.closeAll()
		ms := []*lease.Manager{f.start("a", nil), f.start("b", nil)}
		advance(3 * takeInterval)
		if got := counts(ms); !slices.Equal(got, []int{2, 2}) {
			t.Fatalf("managers hold %v, want 2/2", got)
		}
		a, b := ms[0], ms[1]
		stopGracefully(t, b)
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// a stops before its next heartbeat: its last view still shows b.
		keys := heldKeys(a)
		stopGracefully(t, a)
		for _, k := range keys {
			if l := getLease(t, f.store, k); l.Owner != "" {
				t.Errorf("lease %s left to %q by the last worker to stop, want released", k, l.Owner)
			}
		}
	})
}

// TestLeavingReleasesLeasesPassedToIt: a worker that stops just after
// another passed it leases, before its heartbeat took them up, releases
// them as it leaves: a restarted fleet takes them at once instead of
// waiting for them to expire.
func TestLeavingReleasesLeasesPassedToIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 4)
		defer f.closeAll()
		ms := []*lease.Manager{f.start("a", nil), f.start("b", nil)}
		advance(3 * takeInterval)
		if got := counts(ms); !slices.Equal(got, []int{2, 2}) {
			t.Fatalf("managers hold %v, want 2/2", got)
		}
		a, b := ms[0], ms[1]
		passed := heldKeys(b)
		stopGracefully(t, b)
		for _, k := range passed {
			if l := getLease(t, f.store, k); l.Owner != "a" {
				t.Fatalf("b passed %s to %q, want a", k, l.Owner)
			}
		}
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// a stops at once, before a heartbeat takes the passed leases up.
		stopGracefully(t, a)
		if err := a.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, k := range passed {
			if l := getLease(t, f.store, k); l.Owner != "" {
				t.Errorf("lease %s passed to a left naming %q, want released", k, l.Owner)
			}
		}
	})
}

// TestHandedBeforeJoinIsNotAdopted: a hand-over recorded for a worker ID
// before that worker (re)joined may have been meant for an earlier run,
// which may still act until it notices it was fenced. The new run does not
// adopt it on the record's word; it treats the lease as its orphan, taken
// only a lease duration after it joined.
func TestHandedBeforeJoinIsNotAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newTestFleet(t, 1)
		defer f.closeAll()
		ctx := t.Context()
		l := getLease(t, f.store, "shard-00")
		if _, err := f.store.Take(ctx, l, "x"); err != nil {
			t.Fatal(err)
		}
		if err := f.store.AskHandoff(ctx, "shard-00", "x"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		x := f.start("x", nil)
		advance(3 * renewInterval)
		if n := len(x.Held()); n != 0 {
			t.Fatalf("x adopted a lease handed before it joined, %v after its start", time.Since(start))
		}
		fl, err := f.store.ReadFleet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fl.Handoffs["shard-00"]; ok {
			t.Errorf("the stale hand-over record was not cleared")
		}
		for len(x.Held()) == 0 {
			if time.Since(start) > leaseDuration+3*maxTakePeriod {
				t.Fatalf("x never took its orphan lease")
			}
			advance(takeInterval / 4)
		}
		if d := time.Since(start); d < leaseDuration {
			t.Errorf("x held the lease %v after its start, before a lease duration", d)
		}
	})
}

// stopGracefully does what a worker's graceful stop does with m: it stops
// taking, then passes every lease it holds (to the planned survivor, or
// releases it).
func stopGracefully(t *testing.T, m *lease.Manager) {
	t.Helper()
	m.StopTaking()
	for _, h := range m.Held() {
		if err := h.Pass(t.Context()); err != nil {
			t.Fatalf("pass %s: %v", h.Key(), err)
		}
	}
}
