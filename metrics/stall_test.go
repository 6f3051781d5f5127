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
	shard := func(id string, kind worker.EventKind, reason string) {
		m.OnEvent(worker.Event{Kind: kind, ShardID: id, Reason: reason})
	}
	shard("a", worker.EventShardStarted, "")
	shard("b", worker.EventShardStarted, "")
	if n := Count(Gather(t, g), "shardline_shard_stalled", nil); n != 0 {
		t.Fatalf("%d stall series before any stall, want 0", n)
	}
	shard("a", worker.EventShardStalled, "processor-failing")
	shard("b", worker.EventShardStalled, "bad-checkpoint")
	got := Gather(t, g)
	want(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "processor-failing"), 1)
	want(t, got, "shardline_shard_stalled", with("shard", "b", "reason", "bad-checkpoint"), 1)

	shard("a", worker.EventShardStalled, "checkpoint-failing")
	got = Gather(t, g)
	absent(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "processor-failing"))
	want(t, got, "shardline_shard_stalled", with("shard", "a", "reason", "checkpoint-failing"), 1)

	shard("a", worker.EventShardRecovered, "checkpoint-failing")
	shard("b", worker.EventShardStopped, "lease_lost")
	if n := Count(Gather(t, g), "shardline_shard_stalled", nil); n != 0 {
		t.Errorf("%d stall series after recovery and stop, want 0", n)
	}
}

// The unowned time is computed when scraped from the last
// EventShardUnowned; EventShardOwned removes the series.
func TestShardUnownedSeconds(t *testing.T) {
	m, g := started(t)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	m.OnEvent(worker.Event{Kind: worker.EventShardUnowned, ShardID: "a", Duration: 1500 * time.Millisecond})
	want(t, Gather(t, g), "shardline_shard_unowned_seconds", with("shard", "a"), 1.5)
	now = now.Add(2 * time.Second)
	want(t, Gather(t, g), "shardline_shard_unowned_seconds", with("shard", "a"), 3.5)
	m.OnEvent(worker.Event{Kind: worker.EventShardUnowned, ShardID: "b", Duration: 4 * time.Second})
	m.OnEvent(worker.Event{Kind: worker.EventShardOwned, ShardID: "a"})
	got := Gather(t, g)
	absent(t, got, "shardline_shard_unowned_seconds", with("shard", "a"))
	want(t, got, "shardline_shard_unowned_seconds", with("shard", "b"), 4)
}
