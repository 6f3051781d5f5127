package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/worker"
)

// TestStalledProcessorMetrics runs a worker whose processor keeps failing on
// the emulators: the shard shows as stalled (processor-failing) in
// shardline_shard_stalled and in the fleet row that kclctl reads, and both
// clear once the processor succeeds again.
func TestStalledProcessorMetrics(t *testing.T) {
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	stream := testenv.CreateStream(t, kc, 1)
	putRecords(t, kc, stream, 5)
	app := testenv.UniqueName("stall")
	id := testenv.UniqueName("w")
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	failing.Store(true)
	cfg := testConfig(t, stream, app, id, m, func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			if failing.Load() {
				return errors.New("downstream unavailable")
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	})
	cfg.RetryMaxInterval = 500 * time.Millisecond
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	table, err := lease.NewTable(dc, app)
	if err != nil {
		t.Fatal(err)
	}
	const shard = "shardId-000000000000"
	stalled := label(stream, id, "shard", shard, "reason", "processor-failing")
	fleetStall := func() (string, error) {
		ws, err := table.Workers(context.Background())
		for _, x := range ws {
			if x.ID == id {
				return x.Stalled[shard], err
			}
		}
		return "", err
	}

	eventually(t, 60*time.Second, func() (bool, string) {
		v := metrics.Sum(metrics.Gather(t, reg), "shardline_shard_stalled", stalled)
		r, err := fleetStall()
		return v == 1 && r == "processor-failing",
			fmt.Sprintf("shardline_shard_stalled%v = %v, fleet row stall %q (%v); want 1 and processor-failing", stalled, v, r, err)
	})
	if n := metrics.Count(metrics.Gather(t, reg), "shardline_shard_stalled", nil); n != 1 {
		t.Errorf("%d stall series, want the one of the failing shard", n)
	}

	failing.Store(false)
	eventually(t, 60*time.Second, func() (bool, string) {
		n := metrics.Count(metrics.Gather(t, reg), "shardline_shard_stalled", nil)
		r, err := fleetStall()
		return n == 0 && r == "" && err == nil,
			fmt.Sprintf("%d stall series, fleet row stall %q (%v) after the processor recovered; want none", n, r, err)
	})
}
