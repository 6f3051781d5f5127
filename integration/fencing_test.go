package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
)

// TestPausedWorkerIsFenced: a worker frozen with SIGSTOP past its leases
// (as in a long GC pause or a suspended VM) while another takes its shards
// cannot, once resumed with SIGCONT, store a checkpoint over the new
// owner's, gets LeaseLost for every shard, and delivers at most the batch
// that was in flight when it was frozen.
func TestPausedWorkerIsFenced(t *testing.T) {
	// Each batch takes 300ms of simulated work before its checkpoint, so the
	// pause almost surely catches batches in flight: their checkpoints come
	// after the resume and must be refused.
	t.Setenv("SHARDLINE_WORK", "300ms")
	e := setup(t, 4, 0) // checkpoint after every batch
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	e.prod.Start(100*time.Millisecond, 8)
	workers := []string{"w1", "w2"}
	e.start(workers...)
	e.waitBalanced(ctx, workers, 0)
	waitEveryShardDelivering(ctx, t, e, 4)

	held := fleet.Ownership(e.leases(ctx))["w1"]
	pausedAt, err := e.fleet.Process("w1").Pause()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("paused w1 holding %v", held)

	// w2 takes every shard of w1, delivers and checkpoints on it.
	var taken map[string]fleet.Event // shard -> w2's initialize
	err = fleet.Poll(ctx, 100*time.Millisecond, "w2 checkpointing on w1's shards", func(context.Context) (bool, error) {
		evs := e.events()
		taken = map[string]fleet.Event{}
		checkpointed := map[string]bool{}
		for _, ev := range evs.Records {
			if ev.Worker != "w2" || !ev.Time.After(pausedAt) || !slices.Contains(held, ev.Shard) {
				continue
			}
			switch ev.Type {
			case fleet.EventInitialize:
				if _, ok := taken[ev.Shard]; !ok {
					taken[ev.Shard] = ev
				}
			case fleet.EventCheckpoint:
				checkpointed[ev.Shard] = true
			}
		}
		if len(checkpointed) < len(held) || len(taken) < len(held) {
			return false, fmt.Errorf("%d of %d shards taken and checkpointed", len(checkpointed), len(held))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := fleet.Checkpoints(e.leases(ctx))
	resumedAt, err := e.fleet.Process("w1").Resume()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("w1 paused for %v; w2 took its shards %v after the pause", resumedAt.Sub(pausedAt).Round(time.Millisecond),
		func() (d time.Duration) {
			for _, ev := range taken {
				d = max(d, ev.Time.Sub(pausedAt))
			}
			return d.Round(time.Millisecond)
		}())

	// w1 gets LeaseLost for every shard it held.
	err = fleet.Poll(ctx, 100*time.Millisecond, "LeaseLost on w1's shards", func(context.Context) (bool, error) {
		lost := map[string]bool{}
		for _, ev := range e.events().Records {
			if ev.Worker == "w1" && ev.Type == fleet.EventLeaseLost && !ev.Time.Before(resumedAt) {
				lost[ev.Shard] = true
			}
		}
		for _, s := range held {
			if !lost[s] {
				return false, fmt.Errorf("no LeaseLost for %s yet", s)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after := fleet.Checkpoints(e.leases(ctx))
	for _, s := range held {
		if after[s].Compare(before[s]) < 0 {
			t.Errorf("%s: checkpoint went back from %s to %s after w1 resumed", s, before[s], after[s])
		}
	}

	// What w1's processors of the held shards did after the resume, until
	// w1 started the shard afresh (it may get shards back by hand-over).
	evs := e.events()
	refused := 0
	for _, s := range held {
		lastBatch, inFlight := 0, map[int]int{}
		var lastRecord string
		stored := map[string]bool{}
		failed, ended := false, false
		for _, ev := range evs.Records {
			if ev.Worker != "w1" || ev.Shard != s || ended {
				continue
			}
			if ev.Type == fleet.EventCheckpoint {
				stored[ev.Position] = true
			}
			if ev.Time.Before(resumedAt) {
				if ev.Type == fleet.EventRecord && ev.Batch >= lastBatch {
					lastBatch, lastRecord = ev.Batch, ev.Seq
				}
				continue
			}
			switch ev.Type {
			case fleet.EventInitialize:
				ended = true // a new session: w1 holds the shard again
			case fleet.EventRecord:
				inFlight[ev.Batch]++
			case fleet.EventCheckpointFailed:
				failed = true
			case fleet.EventCheckpoint:
				// Only a write sent before the pause and answered after it can
				// succeed, and it then precedes w2's take.
				pos, err := fleet.ParsePosition(ev.Position)
				if err != nil {
					t.Fatal(err)
				}
				from, _ := fleet.ParsePosition(taken[s].Checkpoint)
				if pos.Compare(from) > 0 {
					t.Errorf("%s: w1 stored checkpoint %s after resuming, beyond %s where w2 started", s, pos, from)
				} else {
					t.Logf("%s: w1's checkpoint write in flight at the pause (%s) had landed before w2 took the lease", s, pos)
				}
			}
		}
		if !stored[lastRecord] {
			// The batch in flight at the pause: its checkpoint came after.
			if !failed {
				t.Errorf("%s: batch %d was in flight at the pause, but w1 reported no refused checkpoint", s, lastBatch)
			} else {
				refused++
				t.Logf("%s: batch %d in flight at the pause; its checkpoint after the resume was refused", s, lastBatch)
			}
		}
		for b, n := range inFlight {
			if b != lastBatch {
				t.Errorf("%s: w1 delivered batch %d (%d records) after resuming; only batch %d was in flight", s, b, n, lastBatch)
			} else {
				t.Logf("%s: w1 finished its in-flight batch %d (%d records) after resuming", s, b, n)
			}
		}
	}

	if refused == 0 {
		t.Errorf("no batch was caught in flight by the pause: the test did not exercise a fenced checkpoint")
	}

	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(ctx)
	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}
