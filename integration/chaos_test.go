package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
)

// Chaos settings. The short run is part of every `go test`; `make chaos`
// sets SHARDLINE_CHAOS_DURATION for a long one.
const (
	chaosShards       = 8
	chaosShortRun     = 40 * time.Second
	chaosShortWorkers = 3
	chaosLongWorkers  = 4
	// chaosFaults are injected into every worker's AWS HTTP calls (see
	// internal/faults); %d is a per-process seed.
	chaosFaults = "seed=%d,kinesis=0.05,dynamodb=0.02,latency=20ms,latency-rate=0.2,timeout-delay=200ms"
)

// TestChaos runs worker processes of the harness consumer on eight shards
// while a producer writes numbered records per partition key, kills
// (SIGKILL) or stops (SIGTERM) a random worker every few seconds and
// restarts it shortly after, with throttling, 5xx, timeouts, expired
// iterators and latency injected into the workers' AWS calls. Then it checks
// what the processors saw: nothing lost, nothing out of order within a
// shard, every duplicate after the shard's last checkpoint and explained by
// a failover (a kill or a lost lease, never a clean hand-over), no worker
// dying on its own; and it reports failover and hand-over times.
//
// SHARDLINE_CHAOS_DURATION (e.g. 4m) makes it a long run with four workers;
// SHARDLINE_CHAOS_SEED picks another sequence of disruptions and faults.
func TestChaos(t *testing.T) {
	run, n, seed := chaosSettings(t, chaosShortRun)

	e := setup(t, chaosShards, 0) // checkpoint after every batch
	if dir := os.Getenv("SHARDLINE_CHAOS_KEEP"); dir != "" {
		t.Cleanup(func() { // before setup's clean-up removes them
			if err := os.CopyFS(dir, os.DirFS(e.fleet.Config().Dir)); err != nil {
				t.Errorf("keep events and logs: %v", err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), run+3*time.Minute)
	defer cancel()
	sink := e.sink(ctx) // every worker also counts per key, transactionally

	var ids []string
	for i := 1; i <= n; i++ {
		ids = append(ids, "w"+strconv.Itoa(i))
	}
	e.prod.Start(100*time.Millisecond, 8) // 80 records/s, 10 per shard
	ds, elapsed := disrupt(ctx, t, e, ids, run, seed)
	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	e.waitDelivered(dctx)

	sr := e.waitSink(dctx, sink)
	r := e.report(ctx)
	f := fleet.Chaos(e.events(), r, ds, 15*time.Second)
	table := fleet.ChaosTable(r, f, ds, elapsed) + sr.String() + "\n"
	t.Logf("chaos figures:\n%s", table)
	for name, moves := range map[string][]fleet.Move{"failovers": f.Failovers, "hand-overs": f.Handoffs, "releases": f.Releases} {
		t.Logf("slowest %s: %v", name, fleet.Slowest(moves, 3))
	}
	if path := os.Getenv("SHARDLINE_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}
	if err := r.Err(); err != nil {
		t.Error(err)
	}
	if sr.Duplicates != 0 || sr.Lost != 0 {
		t.Errorf("%v: the transactional sink must be exact", sr)
	}
	if err := f.Err(); err != nil {
		t.Error(err)
	}
	if len(r.Lost) > 0 || r.Distinct != r.Produced {
		t.Errorf("%d of %d records delivered", r.Distinct, r.Produced)
	}
	if !slices.ContainsFunc(ds, func(d fleet.Disruption) bool { return d.Kind == fleet.Kill }) || len(fleet.Idle(f.Failovers, false)) == 0 {
		t.Errorf("no failover measured (%d disruptions)", len(ds))
	}
	// The planned moves during the run: joins after restarts get their
	// share by hand-over; a graceful stop releases.
	if len(f.Handoffs)+len(f.Releases) == 0 {
		t.Errorf("no planned move measured")
	}
	// Failover: a survivor takes a dead worker's lease once it has seen the
	// lease's counter stand still for a lease duration, scanning every take
	// interval. Typical: lease duration + a take interval + the first read.
	// The tail is longer under churn: a worker restarted moments ago cannot
	// judge expiry before it has watched a lease for a lease duration, and
	// one at its share takes no more; a new owner may be killed before it
	// starts. No shard may stay idle for long, though.
	// The figures (typically a lease duration + a take interval for a
	// failover, a few tenths of a second for a hand-over) are in the table
	// above and the chaos report; the bounds here are only generous ones
	// that a loaded machine never reaches while a shard left idle for many
	// lease durations, or hand-overs stalled as long, fail them.
	fo := fleet.Idle(f.Failovers, false)
	if m := fleet.Median(fo); m > failoverBound {
		t.Errorf("median failover %v, want at most %v", m, failoverBound)
	}
	if m := fleet.Max(fo); m > 10*leaseDuration {
		t.Errorf("slowest failover %v, want at most %v", m, 10*leaseDuration)
	}
	ho := fleet.Idle(f.Handoffs, false)
	t.Logf("hand-over idle: median %v, max %v (%d)", fleet.Median(ho), fleet.Max(ho), len(ho))
	if m := fleet.Median(ho); m > failoverBound {
		t.Errorf("median hand-over idle time %v, want at most %v: hand-overs are not happening", m, failoverBound)
	}
	stopAll(ctx, t, e, ids)
}

// chaosSettings returns the run length, the number of workers and the seed
// of a chaos run: a short run by default, a long one with four workers when
// SHARDLINE_CHAOS_DURATION is set (e.g. 4m); SHARDLINE_CHAOS_SEED picks
// another sequence of disruptions and faults.
func chaosSettings(t *testing.T, short time.Duration) (time.Duration, int, uint64) {
	t.Helper()
	run, n := short, chaosShortWorkers
	if v := os.Getenv("SHARDLINE_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SHARDLINE_CHAOS_DURATION: %v", err)
		}
		run, n = d, chaosLongWorkers
	}
	seed := uint64(1)
	if v := os.Getenv("SHARDLINE_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SHARDLINE_CHAOS_SEED: %v", err)
		}
		seed = s
	}
	t.Logf("chaos for %v with %d workers, seed %d", run, n, seed)
	return run, n, seed
}

// disrupt starts the workers ids, waits until they share the leases, then
// for run kills (SIGKILL) or stops (SIGTERM) a random worker every few
// seconds and restarts it shortly after, each process with its own seed of
// injected AWS faults; it fails the test if a worker dies on its own. At the
// end every worker is running again. It returns the disruptions applied and
// the time the disruptions took.
func disrupt(ctx context.Context, t *testing.T, e *env, ids []string, run time.Duration, seed uint64) ([]fleet.Disruption, time.Duration) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5ead))
	n := len(ids)
	starts := 0
	start := func(id string) {
		starts++
		t.Setenv("SHARDLINE_FAULTS", fmt.Sprintf(chaosFaults, seed*1000+uint64(starts)))
		e.start(id)
	}
	for _, id := range ids {
		start(id)
	}
	e.waitBalanced(ctx, ids, 1)

	var ds []fleet.Disruption
	down := map[string]time.Time{} // stopped worker -> when to restart it
	began := time.Now()
	for time.Since(began) < run {
		pause := time.NewTimer(2*time.Second + time.Duration(rng.Int64N(int64(2*time.Second))))
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-pause.C:
		}
		for _, id := range ids {
			if at, ok := down[id]; ok {
				if time.Now().After(at) {
					start(id)
					delete(down, id)
				}
				continue
			}
			if p := e.fleet.Process(id); !p.Running() {
				t.Fatalf("worker %s (pid %d) died on its own: %v", id, p.PID, p.ExitErr())
			}
		}
		if len(down) >= n/2 {
			continue // keep most workers up
		}
		var up []string
		for _, id := range ids {
			// Not a process that has just started: a signal during the Go
			// runtime's start-up, before the program listens, kills it.
			if _, ok := down[id]; !ok && time.Since(e.fleet.Process(id).Started) > time.Second {
				up = append(up, id)
			}
		}
		if len(up) == 0 {
			continue
		}
		victim := up[rng.IntN(len(up))]
		p := e.fleet.Process(victim)
		if rng.Float64() < 0.75 {
			at, err := p.Kill()
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, fleet.Disruption{Worker: victim, Kind: fleet.Kill, At: at})
		} else {
			at, err := p.Terminate(ctx)
			if err != nil {
				t.Errorf("graceful stop of %s: %v", victim, err)
			}
			ds = append(ds, fleet.Disruption{Worker: victim, Kind: fleet.Terminate, At: at})
		}
		down[victim] = time.Now().Add(time.Second + time.Duration(rng.Int64N(int64(3*time.Second))))
	}
	for _, id := range ids {
		if _, ok := down[id]; ok {
			start(id)
		}
	}
	return ds, time.Since(began)
}

// stopAll stops every worker gracefully and fails the test if one cannot
// or if a worker log holds a panic.
func stopAll(ctx context.Context, t *testing.T, e *env, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := e.fleet.Process(id).Terminate(ctx); err != nil {
			t.Errorf("final graceful stop of %s: %v", id, err)
		}
	}
	panics := 0
	for _, id := range e.fleet.IDs() {
		b, err := os.ReadFile(e.fleet.LogPath(id))
		if err != nil {
			t.Fatal(err)
		}
		panics += bytes.Count(b, []byte("panic:"))
	}
	if panics > 0 {
		t.Errorf("%d panics in the worker logs", panics)
	}
}
