package metrics

import (
	"testing"
	"time"

	"github.com/shardline/shardline/worker"
)

// A stalled shard has one series of value 1, for its current reason; none
// once it recovered or its consumer stopped.
func TestShardStalledSeries(t *testing.T) {
	m, g := started(t)
	m.OnShard(worker.ShardEvent{ShardID: "a", Kind: worker.ShardStarted})
	m.OnShard(worker.ShardEvent{ShardID: "b", Kind: worker.ShardStarted})
	if n := Count(Gather(t, g), "shardline_shard_stalled", nil); n != 0 {
		t.Fatalf("%d stall series before any stall, want 0", n)
	}
	m.OnShard(worker.ShardEvent{ShardID: "a", Kind: worker.ShardStalled, Reason: "processor-failing"})
	m.OnShard(worker.ShardEvent{ShardID: "b", Kind: worker.ShardStalled, Reason: "no-progress"})
	got := Gather(t, g)
	want(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "processor-failing"), 1)
	want(t, got, "shardline_shard_stalled", with("shard", "b", "reason", "no-progress"), 1)

	m.OnShard(worker.ShardEvent{ShardID: "a", Kind: worker.ShardStalled, Reason: "checkpoint-failing"})
	got = Gather(t, g)
	absent(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "processor-failing"))
	want(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "checkpoint-failing"), 1)

	m.OnShard(worker.ShardEvent{ShardID: "a", Kind: worker.ShardRecovered, Reason: "checkpoint-failing"})
	m.OnShard(worker.ShardEvent{ShardID: "b", Kind: worker.ShardStopped, Reason: "lease_lost"})
	if n := Count(Gather(t, g), "shardline_shard_stalled", nil); n != 0 {
		t.Errorf("%d stall series after recovery and stop, want 0", n)
	}
}

// The unowned shards are read from the worker when scraped.
func TestShardUnownedSeconds(t *testing.T) {
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	unowned := map[string]time.Duration{"a": 1500 * time.Millisecond}
	m.OnWorkerStart(worker.WorkerStartEvent{WorkerID: "w", Stream: "s",
		Unowned: func() map[string]time.Duration { return unowned }})
	want(t, Gather(t, m.gatherer), "shardline_shard_unowned_seconds", with("shard", "a"), 1.5)
	unowned = map[string]time.Duration{"b": 4 * time.Second}
	got := Gather(t, m.gatherer)
	absent(t, got, "shardline_shard_unowned_seconds", with("shard", "a"))
	want(t, got, "shardline_shard_unowned_seconds", with("shard", "b"), 4)
}
