package worker_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// stallLog records the EventShardStalled and EventShardRecovered events.
type stallLog struct {
	mu  sync.Mutex
	evs []string // "stalled:reason", "recovered:reason"
}

func (l *stallLog) OnEvent(e worker.Event) {
	kind, ok := map[worker.EventKind]string{worker.EventShardStalled: "stalled", worker.EventShardRecovered: "recovered"}[e.Kind]
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, kind+":"+e.Reason)
}

func (l *stallLog) events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// TestStallDetector walks one shard through the detector's states: idle at
// the tip (not a stall), a batch that does not return for StallTimeout
// (no-progress), a processor that keeps failing, checkpoints that keep
// failing; each change is reported once, recovery included, and the fleet
// row carries the stall while it lasts.
func TestStallDetector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs, k, store, rec, cfg := stallSetup(t)
		cfg.StallTimeout = 10 * time.Second
		cfg.RetryMaxInterval = time.Second
		_, stop := runFake(t, cfg)
		want := []string{}
		expect := func(what string, more ...string) {
			t.Helper()
			synctest.Wait()
			want = append(want, more...)
			if got := rec.events(); !slices.Equal(got, want) {
				t.Fatalf("%s: events %v, want %v", what, got, want)
			}
		}
		fleetStalls := func(what string, wantStalls map[string]string) {
			t.Helper()
			time.Sleep(2 * time.Second) // the next heartbeat writes them
			synctest.Wait()
			f, err := store.ReadFleet(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := f.Stalls["w1"]
			if len(got) != len(wantStalls) || !equalMaps(got, wantStalls) {
				t.Fatalf("%s: fleet row stalls %v, want %v", what, got, wantStalls)
			}
		}

		// Idle at the tip for three timeouts: not a stall.
		time.Sleep(30 * time.Second)
		expect("idle at the tip")

		// A batch that does not return.
		release := k.hold(shard0)
		fs.put("a")
		time.Sleep(9 * time.Second)
		expect("a batch held for less than StallTimeout")
		time.Sleep(3 * time.Second)
		expect("a batch held past StallTimeout", "stalled:no-progress")
		fleetStalls("while held", map[string]string{shard0: "no-progress"})
		time.Sleep(time.Minute)
		expect("a batch held long: reported once")
		release()
		k.mu.Lock()
		delete(k.holds, shard0)
		k.mu.Unlock()
		expect("released", "recovered:no-progress")
		fleetStalls("after release", nil)

		// A processor that keeps failing.
		k.mu.Lock()
		k.killed["w1"] = true
		k.mu.Unlock()
		fs.put("b")
		time.Sleep(5 * time.Second)
		expect("processor failing", "stalled:processor-failing")
		fleetStalls("processor failing", map[string]string{shard0: "processor-failing"})
		k.mu.Lock()
		k.killed["w1"] = false
		k.mu.Unlock()
		time.Sleep(3 * time.Second)
		expect("processor recovered", "recovered:processor-failing")

		// Checkpoints that keep failing (the processor returns their error).
		store.SetFault(func(op, _ string) error {
			if op == "checkpoint" {
				return errors.New("injected checkpoint failure")
			}
			return nil
		})
		fs.put("c")
		time.Sleep(5 * time.Second)
		expect("checkpoints failing", "stalled:checkpoint-failing")
		store.SetFault(nil)
		time.Sleep(3 * time.Second)
		expect("checkpoints recovered", "recovered:checkpoint-failing")
		fleetStalls("at the end", nil)

		if err := stop(); err != nil {
			t.Fatal(err)
		}
		expect("stopped")
	})
}

// A stall still reported when the shard's consumer stops ends with it.
func TestStallEndsWithConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs, k, _, rec, cfg := stallSetup(t)
		_, stop := runFake(t, cfg)
		k.mu.Lock()
		k.killed["w1"] = true
		k.mu.Unlock()
		time.Sleep(2 * time.Second)
		fs.put("a")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := rec.events(); !slices.Equal(got, []string{"stalled:processor-failing"}) {
			t.Fatalf("events %v, want the processor's stall", got)
		}
		// A graceful stop waits for the failing batch; Shutdown's context
		// ends that wait with a hard stop.
		if err := stop(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		if got := rec.events(); !slices.Equal(got, []string{"stalled:processor-failing", "recovered:processor-failing"}) {
			t.Fatalf("events after the stop %v, want the stall ended", got)
		}
	})
}

// stallSetup returns a one-shard fake stream, its key log, a lease table, a
// stall recorder and the configuration of a worker on them that reports to
// the recorder.
func stallSetup(t *testing.T) (*fakeStream, *keyLog, *lease.MemoryStore, *stallLog, worker.Config) {
	fs := newFakeStream("s", 1)
	k := newKeyLog()
	store := lease.NewMemoryStore()
	rec := &stallLog{}
	cfg := fakeWorkerConfig(t, fs, store, "w1", k)
	cfg.Hooks = []worker.Hook{rec}
	return fs, k, store, rec, cfg
}

func equalMaps(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return len(a) == len(b)
}

func TestConfigStallTimeout(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 500 * time.Millisecond} {
		err := newErr(func(c *worker.Config) { c.StallTimeout = d })
		if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), "StallTimeout") {
			t.Errorf("StallTimeout %v: got %v, want ErrInvalidConfig naming it", d, err)
		}
	}
	for _, d := range []time.Duration{0, time.Second, time.Hour} {
		if err := newErr(func(c *worker.Config) { c.StallTimeout = d }); err != nil {
			t.Errorf("StallTimeout %v: %v", d, err)
		}
	}
}

// initFailing is a processor whose Initialize fails while failing is set.
type initFailing struct {
	kcl.RecordProcessor
	failing *atomic.Bool
}

func (p initFailing) Initialize(context.Context, kcl.InitializeInput) error {
	if p.failing.Load() {
		return errors.New("cannot reach the downstream store")
	}
	return nil
}

// A processor that keeps failing to initialize stalls its shard
// (open-failing) before it ever starts; the stall ends when it succeeds.
func TestStallOpenFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, _, rec, cfg := stallSetup(t)
		var failing atomic.Bool
		failing.Store(true)
		inner := cfg.ProcessorFactory
		cfg.ProcessorFactory = func(shard string) (kcl.RecordProcessor, error) {
			p, err := inner(shard)
			return initFailing{RecordProcessor: p, failing: &failing}, err
		}
		cfg.RetryMaxInterval = time.Second
		_, stop := runFake(t, cfg)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := rec.events(); !slices.Equal(got, []string{"stalled:open-failing"}) {
			t.Fatalf("events %v, want the shard stalled opening", got)
		}
		failing.Store(false)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.events(); !slices.Equal(got, []string{"stalled:open-failing", "recovered:open-failing"}) {
			t.Fatalf("events %v, want the stall ended", got)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// A shard whose owner stopped heart-beating is reported unowned, at each
// heartbeat with a rising duration, until the worker takes it over; then it is
// reported owned, once.
func TestUnownedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, store, _, cfg := stallSetup(t)
		cfg.LeaseDuration = 10 * time.Second
		ctx := context.Background()
		if _, err := store.Beat(ctx, "ghost", 0, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := store.Create(ctx, lease.Lease{Key: shard0, Owner: "ghost", Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var unowned []time.Duration
		owned := 0
		cfg.Hooks = append(cfg.Hooks, worker.HookFunc(func(e worker.Event) {
			if e.ShardID != shard0 {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch e.Kind {
			case worker.EventShardUnowned:
				if owned > 0 {
					t.Errorf("EventShardUnowned (%v) after EventShardOwned", e.Duration)
				}
				unowned = append(unowned, e.Duration)
			case worker.EventShardOwned:
				owned++
			}
		}))
		_, stop := runFake(t, cfg)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if l, ok := leaseOf(t, store, shard0); !ok || l.Owner != "w1" {
			t.Fatalf("lease %+v (found %v), want it taken over by w1", l, ok)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if owned != 1 {
			t.Errorf("%d EventShardOwned, want 1", owned)
		}
		if len(unowned) < 3 || !slices.IsSorted(unowned) || unowned[len(unowned)-1] < 5*time.Second {
			t.Errorf("unowned durations %v, want at least 3, rising, up to 5s or more", unowned)
		}
	})
}
