package metrics_test

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/worker"
)

// A worker's metrics on the application's own registry, served by the
// application's own HTTP server.
func Example() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.WithRegistry(reg))
	if err != nil {
		log.Fatal(err)
	}

	// The worker calls the hooks: pass m in its configuration.
	cfg := worker.Config{
		StreamName:      "orders",
		ApplicationName: "orders-counter",
		WorkerID:        "worker-1",
		Hooks:           []worker.Hook{m},
		// Kinesis, DynamoDB, ProcessorFactory...
	}
	_ = cfg

	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// The application serves mux where it likes: http.ListenAndServe(addr, mux).

	scrape := func() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "shardline_leases_held") || strings.HasPrefix(line, "shardline_records_processed_total") {
				fmt.Println(line)
			}
		}
	}

	// What a running worker would report, simulated here. A shard's
	// counters are scraped at 0 once before they count.
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "worker-1", Stream: "orders"})
	m.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "shardId-000000000000", Reason: "take"})
	m.OnEvent(worker.Event{ShardID: "shardId-000000000000", Kind: worker.EventShardStarted})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "shardId-000000000000", Records: 25, Bytes: 2500, Attempt: 1})
	scrape()
	scrape()
	// Output:
	// shardline_leases_held{stream="orders",worker="worker-1"} 1
	// shardline_records_processed_total{shard="shardId-000000000000",stream="orders",worker="worker-1"} 0
	// shardline_leases_held{stream="orders",worker="worker-1"} 1
	// shardline_records_processed_total{shard="shardId-000000000000",stream="orders",worker="worker-1"} 25
}
