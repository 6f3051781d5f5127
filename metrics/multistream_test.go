package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardline/shardline/worker"
)

// A multi-stream worker names its shards by lease key
// (ACCOUNT:STREAM:EPOCH:SHARD): the per-shard series carry the stream's
// name and the shard ID as labels; per-worker series have an empty stream.
func TestMultiStreamShardLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w"})
	keys := map[string]string{"orders": "123456789012:orders:100:shardId-000000000001", "payments": "123456789012:payments:200:shardId-000000000001"}
	for _, key := range keys {
		m.OnEvent(worker.Event{Kind: worker.EventShardStarted, ShardID: key})
		m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: key, Records: 3, Bytes: 30, Attempt: 1, Arrivals: []time.Time{time.Now(), time.Now(), time.Now()}})
		m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: key, Op: "GetRecords", Records: 3, MillisBehindLatest: 4000})
	}
	Gather(t, reg) // the counters are scraped at 0 once
	got := Gather(t, reg)
	for stream := range keys {
		l := map[string]string{"stream": stream, "worker": "w", "shard": "shardId-000000000001"}
		want(t, got, "shardline_behind_latest_seconds", l, 4)
		want(t, got, "shardline_records_processed_total", l, 3)
		if _, ok := got[SeriesKey("shardline_behind_arrival_seconds", l)]; !ok {
			t.Errorf("shardline_behind_arrival_seconds%v missing", l)
		}
	}
	want(t, got, "shardline_read_records_total", map[string]string{"stream": "", "worker": "w"}, 6)
	m.OnEvent(worker.Event{Kind: worker.EventShardStopped, ShardID: keys["orders"], Reason: "shutdown"})
	absent(t, Gather(t, reg), "shardline_behind_latest_seconds", map[string]string{"stream": "orders", "worker": "w", "shard": "shardId-000000000001"})
}
