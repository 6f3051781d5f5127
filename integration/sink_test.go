package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

// sink creates a sink table for the test and makes the workers started
// from now on count every partition key's records in it, transactionally
// with their checkpoints (the consumer's -sink-table).
func (e *env) sink(ctx context.Context) string {
	e.t.Helper()
	table := testenv.UniqueName("sink")
	if err := fleet.CreateSinkTable(ctx, e.dc, table); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, e.dc, table)
	})
	e.fleet.UseSink(table)
	return table
}

// waitSink waits until the sink counts every record produced (the last
// transactions may trail the deliveries), prints its line and returns it.
func (e *env) waitSink(ctx context.Context, table string) fleet.SinkReport {
	e.t.Helper()
	var r fleet.SinkReport
	err := fleet.Poll(ctx, 200*time.Millisecond, "sink complete", func(ctx context.Context) (bool, error) {
		var err error
		if r, err = fleet.CheckSink(ctx, e.dc, table, e.prod.Records()); err != nil {
			return false, err
		}
		if r.Lost > 0 {
			return false, fmt.Errorf("%v", r)
		}
		return true, nil
	})
	if err != nil {
		e.t.Error(err)
	}
	fmt.Println(r)
	return r
}

// TestPausedWorkerCommitsNothingToTheSink: with the transactional sink, a
// worker frozen with SIGSTOP past its leases while batches are in flight
// (300ms of work before each transaction) has its shards taken over; once
// resumed, its transactions are refused, and the sink's counts stay exact.
func TestPausedWorkerCommitsNothingToTheSink(t *testing.T) {
	t.Setenv("SHARDLINE_WORK", "300ms")
	e := setup(t, 4, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sink := e.sink(ctx)

	e.prod.Start(100*time.Millisecond, 8)
	workers := []string{"w1", "w2"}
	e.start(workers...)
	e.waitBalanced(ctx, workers, 0)
	waitEveryShardDelivering(ctx, t, e, 4)

	w1 := e.fleet.Process("w1")
	if _, err := w1.Pause(); err != nil {
		t.Fatal(err)
	}
	err := fleet.Poll(ctx, 200*time.Millisecond, "w2 holding every shard", func(ctx context.Context) (bool, error) {
		own := fleet.Ownership(e.leases(ctx))
		if len(own["w1"]) > 0 {
			return false, fmt.Errorf("ownership %v", own)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before, err := fleet.CheckSink(ctx, e.dc, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	// w2 commits while w1 is frozen.
	err = fleet.Poll(ctx, 200*time.Millisecond, "w2 committing", func(ctx context.Context) (bool, error) {
		r, err := fleet.CheckSink(ctx, e.dc, sink, nil)
		return err == nil && r.Counted > before.Counted, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Resume(); err != nil {
		t.Fatal(err)
	}
	e.waitBalanced(ctx, workers, 0) // w1 gets its share back by hand-over
	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	e.waitDelivered(dctx)
	r := e.waitSink(dctx, sink)
	if r.Duplicates != 0 || r.Lost != 0 {
		t.Errorf("%v: want exact counts", r)
	}
}
