package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/kcl"
)

// TestThreeWorkersShareTwelveShards: three processes started together spread
// twelve shards 4/4/4 (±1) and together deliver every record.
func TestThreeWorkersShareTwelveShards(t *testing.T) {
	e := setup(t, 12, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if err := e.prod.Put(ctx, 1200); err != nil {
		t.Fatal(err)
	}
	workers := []string{"w1", "w2", "w3"}
	started := time.Now()
	e.start(workers...)

	ls := e.waitBalanced(ctx, workers, 1)
	t.Logf("leases spread over %d workers %v after start", len(workers), time.Since(started).Round(time.Millisecond))
	e.waitDelivered(ctx)
	t.Logf("all %d records delivered %v after start", e.prod.Count(), time.Since(started).Round(time.Millisecond))

	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	for w, shards := range fleet.Ownership(ls) {
		if len(shards) < 3 || len(shards) > 5 {
			t.Errorf("worker %q holds %d shards, want 4±1", w, len(shards))
		}
	}
	for _, w := range workers {
		if r.ByWorker[w] == 0 {
			t.Errorf("worker %s delivered no record", w)
		}
	}
}

// Failover timing: a survivor takes a dead worker's lease once it has seen
// the lease's counter stand still for a lease duration, looking every take
// interval (the worker's default: RenewInterval/2). Tests bound it at three
// times that: generous enough for a loaded machine, tight enough to catch a
// lease left untaken.
const (
	takeInterval  = renewInterval / 2
	failoverBound = 3 * (leaseDuration + takeInterval)
)

// TestKilledWorkerShardsMoveWithinLeaseDuration: after a SIGKILL of one of
// three workers, each of its shards delivers records from a new owner within
// lease duration + one renewal interval; nothing is lost, and the only
// duplicates are records after the shard's last checkpoint.
func TestKilledWorkerShardsMoveWithinLeaseDuration(t *testing.T) {
	// Checkpointing once a second leaves processed records behind each
	// checkpoint, so the kill has duplicates to classify.
	e := setup(t, 12, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// About 50 records/s, four a second per shard: a new owner never waits
	// long for a record to deliver.
	e.prod.Start(100*time.Millisecond, 5)
	workers := []string{"w1", "w2", "w3"}
	e.start(workers...)
	ls := e.waitBalanced(ctx, workers, 1)
	waitEveryShardDelivering(ctx, t, e, len(ls))

	// The victim is the worker holding the most shards.
	own := fleet.Ownership(e.leases(ctx))
	victim := slices.MaxFunc(workers, func(a, b string) int { return len(own[a]) - len(own[b]) })
	victimShards := own[victim]
	killedAt, err := e.fleet.Process(victim).Kill()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody can take the victim's leases before they expire, so the
	// checkpoints read now are the last ones each shard had before its owner
	// died.
	lastCheckpoint := fleet.Checkpoints(e.leases(ctx))
	t.Logf("killed %s holding %v", victim, victimShards)

	// A survivor considers a lease expired once it has seen its counter
	// stand still for LeaseDuration, and it looks every TakeInterval: the
	// typical failover is LeaseDuration + TakeInterval + the first read
	// (figures in the log and the chaos report). The test bounds it only
	// generously, so that a loaded machine never fails a correct build
	// while a shard left without owner, or taken only after several lease
	// durations, still fails it.
	var first map[string]fleet.Event
	err = fleet.Poll(ctx, 100*time.Millisecond, "a new owner on every shard of the killed worker", func(context.Context) (bool, error) {
		first = e.events().FirstDeliveries(victimShards, killedAt, victim)
		if len(first) < len(victimShards) {
			return false, fmt.Errorf("%d of %d shards moved", len(first), len(victimShards))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var slowest time.Duration
	for _, shard := range victimShards {
		d := first[shard].Time.Sub(killedAt)
		slowest = max(slowest, d)
		t.Logf("failover %s -> %s: first record %v after SIGKILL", shard, first[shard].Worker, d.Round(time.Millisecond))
	}
	t.Logf("slowest failover %v (typical: lease duration + take interval = %v; bound %v)",
		slowest.Round(time.Millisecond), leaseDuration+takeInterval, failoverBound)
	if slowest > failoverBound {
		t.Errorf("failover took %v, want at most 3 x (lease duration + take interval) = %v", slowest, failoverBound)
	}

	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(ctx)
	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	// Every duplicate is a record of one of the victim's shards after the
	// checkpoint it had when the victim died.
	for _, d := range r.DuplicateDeliveries {
		if !slices.Contains(victimShards, d.Shard) {
			t.Errorf("duplicate on shard %s, which the killed worker did not hold: %+v", d.Shard, d)
			continue
		}
		pos, err := fleet.ParsePosition(d.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if cp := lastCheckpoint[d.Shard]; !cp.IsSentinel() && pos.Compare(cp) <= 0 {
			t.Errorf("duplicate %s/%s is at or before the checkpoint %s stored before the kill", d.Shard, d.Seq, cp)
		}
	}
	t.Logf("%d duplicates, all after the killed worker's last checkpoints", r.Duplicates)
}

// TestGracefulShutdownHandsOverWithoutDuplicates: SIGTERM to one of two
// workers makes it checkpoint and hand its leases to the other, which
// re-delivers nothing.
func TestGracefulShutdownHandsOverWithoutDuplicates(t *testing.T) {
	// Checkpointing once a second: only the final checkpoint written on
	// ShutdownRequested keeps the new owner from re-delivering records.
	e := setup(t, 6, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	e.prod.Start(100*time.Millisecond, 4)
	e.start("w1", "w2")
	e.waitBalanced(ctx, []string{"w1", "w2"}, 0)
	waitEveryShardDelivering(ctx, t, e, 6)

	handed := fleet.Ownership(e.leases(ctx))["w2"]
	stoppedAt, err := e.fleet.Process("w2").Terminate(ctx)
	if err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	t.Logf("w2 stopped gracefully in %v, handing over %v", time.Since(stoppedAt).Round(time.Millisecond), handed)
	// Its checkpoints are final: nothing may be delivered again.
	final := fleet.Checkpoints(e.leases(ctx))

	var first map[string]fleet.Event
	err = fleet.Poll(ctx, 100*time.Millisecond, "w1 delivering on the handed-over shards", func(context.Context) (bool, error) {
		first = e.events().FirstDeliveries(handed, stoppedAt, "w2")
		if len(first) < len(handed) {
			return false, fmt.Errorf("%d of %d shards taken over", len(first), len(handed))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, shard := range handed {
		t.Logf("hand-over %s: first record from w1 %v after SIGTERM", shard, first[shard].Time.Sub(stoppedAt).Round(time.Millisecond))
		if first[shard].Worker != "w1" {
			t.Errorf("shard %s delivered by %s", shard, first[shard].Worker)
		}
	}

	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(ctx)
	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range r.DuplicateDeliveries {
		if !d.Time.Before(stoppedAt) {
			t.Errorf("duplicate after the graceful stop: %+v (w2's final checkpoint %s)", d, final[d.Shard])
		}
	}
	// w2 was asked to shut down on every shard it held.
	asked := e.events().Filter(func(ev fleet.Event) bool {
		return ev.Worker == "w2" && ev.Type == fleet.EventShutdownRequested
	})
	for _, shard := range handed {
		if !slices.ContainsFunc(asked, func(ev fleet.Event) bool { return ev.Shard == shard }) {
			t.Errorf("w2 got no ShutdownRequested for %s", shard)
		}
	}
}

// TestRestartResumesFromCheckpoint: a worker stopped with SIGTERM and started
// again resumes each shard right after its stored checkpoint: nothing before
// it is delivered again, nothing after it is missed.
func TestRestartResumesFromCheckpoint(t *testing.T) {
	// Checkpointing once a second: the checkpoint at the last record comes
	// from ShutdownRequested.
	e := setup(t, 4, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	if err := e.prod.Put(ctx, 400); err != nil {
		t.Fatal(err)
	}
	e.start("w1")
	e.waitDelivered(ctx)
	if _, err := e.fleet.Process("w1").Terminate(ctx); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	stored := fleet.Checkpoints(e.leases(ctx))
	// Everything was processed and checkpointed: each checkpoint is the
	// shard's last record.
	lastProduced := make(map[string]kcl.ExtendedSequenceNumber)
	for _, p := range e.prod.Records() {
		if pos := kcl.NewSequence(p.Seq); pos.Compare(lastProduced[p.Shard]) > 0 {
			lastProduced[p.Shard] = pos
		}
	}
	for shard, last := range lastProduced {
		if stored[shard].Compare(last) != 0 {
			t.Errorf("shard %s: checkpoint after graceful stop %s, want its last record %s", shard, stored[shard], last)
		}
	}
	firstRun := e.prod.Count()

	// More records while the worker is down, then the same worker again.
	if err := e.prod.Put(ctx, 400); err != nil {
		t.Fatal(err)
	}
	e.start("w1")
	e.waitDelivered(ctx)
	if _, err := e.fleet.Process("w1").Terminate(ctx); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}

	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Duplicates != 0 {
		t.Errorf("%d records delivered again after the restart", r.Duplicates)
	}
	// The second process started every shard at the stored checkpoint and
	// delivered exactly the records after it.
	evs := e.events()
	for _, ev := range evs.Records {
		if ev.Incarnation != 2 || ev.Type != fleet.EventInitialize {
			continue
		}
		if ev.Checkpoint != stored[ev.Shard].String() {
			t.Errorf("restart initialized %s at %s, want the stored checkpoint %s", ev.Shard, ev.Checkpoint, stored[ev.Shard])
		}
	}
	want := make(map[string]bool)
	for _, p := range e.prod.Records()[firstRun:] {
		want[p.Shard+"/"+p.Seq] = true
	}
	got := make(map[string]bool)
	for _, ev := range evs.Records {
		if ev.Incarnation == 2 && ev.Type == fleet.EventRecord {
			got[ev.Shard+"/"+ev.Seq] = true
			if !want[ev.Shard+"/"+ev.Seq] {
				t.Errorf("restart re-delivered %s/%s (data %s), at or before the stored checkpoint", ev.Shard, ev.Seq, ev.Data)
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("restart delivered %d distinct records, want the %d written after the checkpoint", len(got), len(want))
	}
	t.Logf("restart resumed at the stored checkpoints and delivered the %d new records", len(got))
}

// waitEveryShardDelivering waits until each of the n shards has delivered a
// record since now, so that a test acts on a fleet in steady state.
func waitEveryShardDelivering(ctx context.Context, t *testing.T, e *env, n int) {
	t.Helper()
	since := time.Now()
	err := fleet.Poll(ctx, 200*time.Millisecond, "records on every shard", func(context.Context) (bool, error) {
		shards := make(map[string]bool)
		for _, ev := range e.events().Records {
			if ev.Type == fleet.EventRecord && !ev.Time.Before(since) {
				shards[ev.Shard] = true
			}
		}
		if len(shards) < n {
			return false, fmt.Errorf("%d of %d shards delivering", len(shards), n)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
