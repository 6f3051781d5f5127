package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/worker"
)

// delivered counts what processors accepted, per worker.
type delivered struct {
	mu             sync.Mutex
	records, bytes map[string]int
}

func (d *delivered) factory(workerID string) kcl.ProcessorFactory {
	return func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			if err := in.Checkpointer.Checkpoint(ctx); err != nil {
				return err // delivered again; not counted
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			d.records[workerID] += len(in.Records)
			for _, r := range in.Records {
				d.bytes[workerID] += len(r.Data)
			}
			return nil
		}), nil
	}
}

func (d *delivered) get(workerID string) (records, bytes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.records[workerID], d.bytes[workerID]
}

func putRecords(t *testing.T, kc *kinesis.Client, stream string, n int) map[string]bool {
	t.Helper()
	var entries []ktypes.PutRecordsRequestEntry
	for i := range n {
		entries = append(entries, ktypes.PutRecordsRequestEntry{
			PartitionKey: aws.String(fmt.Sprintf("pk-%d", i%37)),
			Data:         fmt.Appendf(nil, "record-%d", i),
		})
	}
	out, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
	if err != nil {
		t.Fatal(err)
	}
	shards := map[string]bool{}
	for _, e := range out.Records {
		if e.ErrorCode != nil {
			t.Fatalf("put record: %s", aws.ToString(e.ErrorMessage))
		}
		shards[aws.ToString(e.ShardId)] = true
	}
	return shards
}

type runningWorker struct {
	w    *worker.Worker
	errc chan error
}

// testConfig is the configuration of the tests' workers on the emulators.
func testConfig(t *testing.T, stream, app, id string, m *metrics.Metrics, f kcl.ProcessorFactory) worker.Config {
	return worker.Config{
		StreamName:           stream,
		ApplicationName:      app,
		WorkerID:             id,
		Kinesis:              testenv.Kinesis(t),
		DynamoDB:             testenv.DynamoDB(t),
		ProcessorFactory:     f,
		InitialPosition:      kcl.StartAtTrimHorizon(),
		LeaseDuration:        3 * time.Second,
		RenewInterval:        time.Second,
		TakeInterval:         500 * time.Millisecond,
		IdleTimeBetweenReads: 100 * time.Millisecond,
		RetryInitialInterval: 50 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Hooks:                []worker.Hook{m},
	}
}

func startWorker(t *testing.T, stream, app, id string, m *metrics.Metrics, d *delivered) *runningWorker {
	t.Helper()
	w, err := worker.New(testConfig(t, stream, app, id, m, d.factory(id)))
	if err != nil {
		t.Fatal(err)
	}
	rw := &runningWorker{w: w, errc: make(chan error, 1)}
	go func() { rw.errc <- w.Run(context.Background()) }()
	t.Cleanup(func() { rw.stop(t) })
	return rw
}

// stop shuts the worker down gracefully (once; later calls do nothing).
func (rw *runningWorker) stop(t *testing.T) {
	t.Helper()
	if rw.errc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rw.w.Shutdown(ctx); err != nil {
		t.Errorf("shutdown %s: %v", rw.w.ID(), err)
	}
	if err := <-rw.errc; err != nil {
		t.Errorf("run %s: %v", rw.w.ID(), err)
	}
	rw.errc = nil
}

// eventually polls cond until it reports true, failing the test with cond's
// last explanation after d.
func eventually(t *testing.T, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("after %v: %s", d, why)
		case <-tick.C:
		}
	}
}

// shardLabels returns the sorted shard labels of the series named name of a
// worker.
func shardLabels(got map[string]metrics.Series, name, workerID string) []string {
	var out []string
	for _, s := range got {
		if s.Name == name && s.Labels["worker"] == workerID {
			out = append(out, s.Labels["shard"])
		}
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); sort.Strings(s); return s }

// TestWorkerMetrics runs one worker, then a second one that takes half of
// the shards, against the emulators, and checks the registry they share.
func TestWorkerMetrics(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("metrics")
	const n = 200
	if shards := putRecords(t, kc, stream, n); len(shards) != 4 {
		t.Fatalf("records landed on %d shards, want 4", len(shards))
	}

	reg := prometheus.NewRegistry()
	m1, err := metrics.New(metrics.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := metrics.New(metrics.WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	d := &delivered{records: map[string]int{}, bytes: map[string]int{}}
	id1, id2 := testenv.UniqueName("w1"), testenv.UniqueName("w2")
	w1 := label(stream, id1)

	// Phase 1: one worker processes every record.
	rw1 := startWorker(t, stream, app, id1, m1, d)
	var got map[string]metrics.Series
	eventually(t, 60*time.Second, func() (bool, string) {
		got = metrics.Gather(t, reg)
		recs, _ := d.get(id1)
		processed := metrics.Sum(got, "shardline_records_processed_total", w1)
		held := metrics.Sum(got, "shardline_leases_held", w1)
		owned := len(rw1.w.HeldShards())
		lags := shardLabels(got, "shardline_behind_latest_seconds", id1)
		return recs == n && processed == n && held == float64(owned) && owned == 4 && len(lags) == 4,
			fmt.Sprintf("delivered %d, records processed %v (want %d); leases held %v, shards owned %d (want 4); lag series %v",
				recs, processed, n, held, owned, lags)
	})
	_, bytes := d.get(id1)
	if v := metrics.Sum(got, "shardline_bytes_processed_total", w1); v != float64(bytes) {
		t.Errorf("bytes processed %v, want %d delivered", v, bytes)
	}
	if held := sorted(rw1.w.HeldShards()); !slices.Equal(shardLabels(got, "shardline_behind_latest_seconds", id1), held) {
		t.Errorf("lag series for shards %v, worker owns %v", shardLabels(got, "shardline_behind_latest_seconds", id1), held)
	}
	batches := metrics.Sum(got, "shardline_batches_processed_total", w1)
	if batches < 4 || batches > n {
		t.Errorf("batches processed %v, want 4..%d (every shard had records)", batches, n)
	}
	checkSeries := func(name string, match map[string]string, ok func(float64) bool, want string) {
		t.Helper()
		if v := metrics.Sum(got, name, match); !ok(v) {
			t.Errorf("%s%v = %v, want %s", name, match, v, want)
		}
	}
	eq := func(x float64) func(float64) bool { return func(v float64) bool { return v == x } }
	atLeast := func(x float64) func(float64) bool { return func(v float64) bool { return v >= x } }
	checkSeries("shardline_processing_duration_seconds", w1, eq(batches), "one sample per batch (no failures)")
	checkSeries("shardline_arrival_to_processed_seconds", w1, eq(n), "one sample per record")
	checkSeries("shardline_processor_errors_total", w1, eq(0), "0")
	checkSeries("shardline_checkpoint_writes_total", w1, atLeast(batches), ">= batches (each batch checkpoints)")
	checkSeries("shardline_checkpoint_failures_total", w1, eq(0), "0")
	checkSeries("shardline_read_calls_total", label(stream, id1, "op", "GetRecords"), atLeast(4), ">= 4")
	checkSeries("shardline_read_records_total", w1, eq(n), fmt.Sprint(n))
	checkSeries("shardline_shards_started_total", w1, eq(4), "4")
	checkSeries("shardline_leases_taken_total", w1, eq(4), "4")
	checkSeries("shardline_kpl_aggregates_total", w1, eq(0), "0 (no KPL records)")
	var maxLag float64
	for _, s := range got {
		if s.Name == "shardline_behind_latest_seconds" && s.Labels["worker"] == id1 {
			if s.Value < 0 || s.Value > 3600 {
				t.Errorf("%s = %v s, want a plausible lag", s.Key(), s.Value)
			}
			maxLag = max(maxLag, s.Value)
		}
	}
	checkSeries("shardline_behind_latest_max_seconds", w1, eq(maxLag), "the largest shard lag")
	if a := got[metrics.SeriesKey("shardline_arrival_to_processed_seconds", w1)]; a.Sum/a.Value > 600 {
		t.Errorf("mean arrival-to-processed delay %v s, want a plausible value", a.Sum/a.Value)
	}

	t.Run("dashboard", func(t *testing.T) { checkDashboard(t, got) })

	// Phase 2: a second worker joins and the shards are shared.
	rw2 := startWorker(t, stream, app, id2, m2, d)
	w2 := label(stream, id2)
	eventually(t, 60*time.Second, func() (bool, string) {
		got = metrics.Gather(t, reg)
		h1, h2 := sorted(rw1.w.HeldShards()), sorted(rw2.w.HeldShards())
		g1, g2 := metrics.Sum(got, "shardline_leases_held", w1), metrics.Sum(got, "shardline_leases_held", w2)
		l1, l2 := shardLabels(got, "shardline_behind_latest_seconds", id1), shardLabels(got, "shardline_behind_latest_seconds", id2)
		return len(h1) == 2 && len(h2) == 2 && g1 == 2 && g2 == 2 && slices.Equal(l1, h1) && slices.Equal(l2, h2),
			fmt.Sprintf("worker 1 owns %v, leases held %v, lag series %v; worker 2 owns %v, leases held %v, lag series %v",
				h1, g1, l1, h2, g2, l2)
	})
	moved := metrics.Sum(got, "shardline_leases_handed_over_total", w1) + metrics.Sum(got, "shardline_leases_lost_total", w1)
	stolen := metrics.Sum(got, "shardline_leases_stolen_total", w2) + metrics.Sum(got, "shardline_leases_taken_total", w2)
	if moved < 2 || stolen < 2 {
		t.Errorf("worker 1 gave up %v leases (handed over or lost), worker 2 acquired %v; want at least 2 each", moved, stolen)
	}
	checkSeries("shardline_lease_handoff_requests_total", w2, atLeast(1), ">= 1")
	// Every hand-over follows a shard consumer's stop for a hand-over.
	checkSeries("shardline_shards_stopped_total", label(stream, id1, "reason", "handoff"),
		atLeast(metrics.Sum(got, "shardline_leases_handed_over_total", w1)), "at least one per hand-over")

	// Stopping gives every lease up and removes every shard series: worker
	// 2, stopping first, hands its two leases to worker 1; worker 1, the
	// last, releases what it holds.
	handedBefore := metrics.Sum(got, "shardline_leases_handed_over_total", w2)
	rw2.stop(t)
	rw1.stop(t)
	got = metrics.Gather(t, reg)
	if v := metrics.Sum(got, "shardline_records_processed_total", w1); v == 0 {
		t.Errorf("records processed by worker 1 seen by the scrape after shutdown: 0, want its shards' final counts")
	}
	got = metrics.Gather(t, reg) // the stopped shards' counters went after the previous scrape
	for _, w := range []map[string]string{w1, w2} {
		checkSeries("shardline_leases_held", w, eq(0), "0 after shutdown")
		checkSeries("shardline_behind_latest_max_seconds", w, eq(0), "0 after shutdown")
	}
	for _, name := range []string{"shardline_behind_latest_seconds", "shardline_records_processed_total", "shardline_bytes_processed_total"} {
		if c := metrics.Count(got, name, nil); c != 0 {
			t.Errorf("%d %s series after shutdown, want 0", c, name)
		}
	}
	// Worker 1 may take the leases worker 2 handed over before it stops too.
	checkSeries("shardline_leases_released_total", w1, atLeast(2), ">= 2 (graceful stop)")
	if n := metrics.Sum(got, "shardline_leases_handed_over_total", w2) - handedBefore + metrics.Sum(got, "shardline_leases_released_total", w2); n != 2 {
		t.Errorf("worker 2's graceful stop handed over or released %v leases, want its 2", n)
	}
}

func label(stream, workerID string, kv ...string) map[string]string {
	l := map[string]string{"stream": stream, "worker": workerID}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// metricName finds metric names in PromQL expressions.
var metricName = regexp.MustCompile(`\bshardline_[a-z0-9_]+`)

// conditional are the metrics whose series exist only while something is
// wrong (a stalled shard, a shard without a live owner); a clean run has
// none. TestStalledProcessorMetrics, the package doc's test and the
// dashboard test (dashtest) cover them.
var conditional = map[string]bool{"shardline_shard_stalled": true, "shardline_shard_unowned_seconds": true}

// checkDashboard checks that every metric the Grafana dashboard queries
// exists in got, a registry gathered after a worker run.
func checkDashboard(t *testing.T, got map[string]metrics.Series) {
	raw, err := os.ReadFile("../dashboards/shardline.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	uses := map[string][]string{} // metric name -> where
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				uses[name] = append(uses[name], "panel "+p.Title)
			}
		}
	}
	for _, v := range dash.Templating.List {
		q, _ := json.Marshal(v.Query)
		for _, name := range metricName.FindAllString(string(q), -1) {
			uses[name] = append(uses[name], "variable "+v.Name)
		}
	}
	fams := metrics.Families(got)
	for _, name := range slices.Sorted(maps.Keys(uses)) {
		if conditional[name] {
			continue
		}
		f, ok := fams[name]
		if !ok {
			// A histogram is queried through its _bucket, _sum and _count series.
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut {
					if f, ok = fams[base]; ok && f.Type != "histogram" {
						ok = false
					}
				}
			}
		}
		if !ok {
			t.Errorf("the dashboard queries %s (%s), which the registry does not hold", name, strings.Join(uses[name], ", "))
		}
	}
	if len(uses) < 25 {
		t.Errorf("the dashboard queries only %d metrics; the expression parsing may be off", len(uses))
	}
}
