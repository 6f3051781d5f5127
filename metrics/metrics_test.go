package metrics

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// started returns a Metrics on its own registry, started for stream "s" and
// worker "w", and its gatherer.
func started(t *testing.T) (*Metrics, prometheus.Gatherer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w", Stream: "s"})
	return m, reg
}

// sw are the labels of the worker started by started.
var sw = map[string]string{"stream": "s", "worker": "w"}

func with(kv ...string) map[string]string {
	l := map[string]string{"stream": "s", "worker": "w"}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// want checks the value of one series.
func want(t *testing.T, got map[string]Series, name string, labels map[string]string, v float64) {
	t.Helper()
	s, ok := got[SeriesKey(name, labels)]
	if !ok {
		t.Errorf("series %s missing", SeriesKey(name, labels))
		return
	}
	if s.Value != v {
		t.Errorf("%s = %v, want %v", s.Key(), s.Value, v)
	}
}

func absent(t *testing.T, got map[string]Series, name string, labels map[string]string) {
	t.Helper()
	if s, ok := got[SeriesKey(name, labels)]; ok {
		t.Errorf("series %s present (value %v), want none", s.Key(), s.Value)
	}
}

func TestBatchProcessed(t *testing.T) {
	m, g := started(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m.now = func() time.Time { return now }

	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 3, Bytes: 30, Attempt: 1,
		Duration: 20 * time.Millisecond,
		Arrivals: []time.Time{now.Add(-2 * time.Second), now.Add(-time.Second), now.Add(-time.Second)}})
	got := Gather(t, g)
	want(t, got, "shardline_behind_arrival_seconds", with("shard", "a"), 2)
	want(t, got, "shardline_behind_arrival_max_seconds", sw, 2)
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 2, Bytes: 5, Attempt: 1,
		Duration: time.Second, Err: errors.New("boom")})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 2, Bytes: 5, Attempt: 2,
		Duration: time.Second, Err: fmt.Errorf("wrapped: %w", &kcl.ProcessorPanicError{Value: "x"})})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 2, Bytes: 5, Attempt: 3,
		Duration: 10 * time.Millisecond,
		Arrivals: []time.Time{now.Add(time.Second), now.Add(time.Second)}}) // arrival "after" now: clock skew
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "b", Attempt: 1}) // empty batch

	got = Gather(t, g)
	// The first batch's lag holds for lagWindow; the empty batch's is 0.
	want(t, got, "shardline_behind_arrival_seconds", with("shard", "a"), 2)
	want(t, got, "shardline_behind_arrival_seconds", with("shard", "b"), 0)
	want(t, got, "shardline_behind_arrival_max_seconds", sw, 2)
	now = now.Add(lagWindow + time.Second)
	lag := Gather(t, g)
	// Then the last batch's: the skewed one, clamped to 0.
	want(t, lag, "shardline_behind_arrival_seconds", with("shard", "a"), 0)
	want(t, lag, "shardline_behind_arrival_max_seconds", sw, 0)
	want(t, got, "shardline_records_processed_total", with("shard", "a"), 5)
	want(t, got, "shardline_bytes_processed_total", with("shard", "a"), 35)
	want(t, got, "shardline_records_processed_total", with("shard", "b"), 0)
	want(t, got, "shardline_batches_processed_total", sw, 3)
	want(t, got, "shardline_processor_errors_total", with("type", "error"), 1)
	want(t, got, "shardline_processor_errors_total", with("type", "panic"), 1)
	want(t, got, "shardline_processor_retries_total", sw, 2)
	d := got[SeriesKey("shardline_processing_duration_seconds", sw)]
	if d.Value != 5 || math.Abs(d.Sum-2.03) > 1e-9 {
		t.Errorf("processing duration: count %v sum %v, want 5 and 2.03", d.Value, d.Sum)
	}
	// One observation per record of the successful batches: 2s, 1s, 1s and
	// two skewed -1s, clamped to 0.
	a := got[SeriesKey("shardline_arrival_to_processed_seconds", sw)]
	if a.Value != 5 || a.Sum != 4 {
		t.Errorf("arrival delay: count %v sum %v, want 5 and 4", a.Value, a.Sum)
	}
}

func TestFetchCountsReadsErrorsAndLag(t *testing.T) {
	m, g := started(t)
	for _, e := range []worker.Event{
		{ShardID: "a", Op: "GetRecords", Records: 4, Bytes: 400, MillisBehindLatest: 5000, Duration: 50 * time.Millisecond},
		{ShardID: "b", Op: "GetRecords", Records: 1, Bytes: 10, MillisBehindLatest: 2000},
		{ShardID: "c", Op: "SubscribeToShardEvent", Records: 2, Bytes: 20, MillisBehindLatest: 1500},
		{ShardID: "d", Op: "GetShardIterator"}, // reports no lag
		{ShardID: "a", Op: "GetRecords", Err: errors.New("slow down"), Reason: "throttled"},
		{ShardID: "a", Op: "GetRecords", Err: errors.New("expired"), Reason: "expired_iterator"},
		{ShardID: "a", Op: "GetRecords", Err: errors.New("reset"), Reason: "transient"},
		{ShardID: "a", Op: "SubscribeToShard", Err: errors.New("unclassified")}, // unclassified: transient
		{ShardID: "a", Op: "GetRecords", Err: errors.New("gone"), Reason: "not_found"},
		{ShardID: "a", Op: "SubscribeToShard", Err: errors.New("another subscription"), Reason: "in_use"},
	} {
		e.Kind = worker.EventFetch
		m.OnEvent(e)
	}
	got := Gather(t, g)
	want(t, got, "shardline_read_calls_total", with("op", "GetRecords"), 6)
	want(t, got, "shardline_read_calls_total", with("op", "SubscribeToShardEvent"), 1)
	want(t, got, "shardline_read_calls_total", with("op", "SubscribeToShard"), 2)
	want(t, got, "shardline_read_calls_total", with("op", "GetShardIterator"), 1)
	want(t, got, "shardline_read_duration_seconds", with("op", "GetRecords"), 6)
	want(t, got, "shardline_read_records_total", sw, 7)
	want(t, got, "shardline_read_bytes_total", sw, 430)
	want(t, got, "shardline_read_throttles_total", sw, 1)
	want(t, got, "shardline_iterator_expirations_total", sw, 1)
	want(t, got, "shardline_read_errors_total", with("kind", "transient"), 2)
	want(t, got, "shardline_read_errors_total", with("kind", "not_found"), 1)
	want(t, got, "shardline_read_errors_total", with("kind", "in_use"), 1)
	want(t, got, "shardline_read_errors_total", with("kind", "fatal"), 0)
	if n := Count(got, "shardline_read_errors_total", nil); n != len(readErrorKinds) {
		t.Errorf("%d read error series, want %d (throttles and expirations are apart)", n, len(readErrorKinds))
	}
	want(t, got, "shardline_behind_latest_seconds", with("shard", "a"), 5)
	want(t, got, "shardline_behind_latest_seconds", with("shard", "b"), 2)
	want(t, got, "shardline_behind_latest_seconds", with("shard", "c"), 1.5)
	absent(t, got, "shardline_behind_latest_seconds", with("shard", "d"))
	want(t, got, "shardline_behind_latest_max_seconds", sw, 5)

	// The lag follows the last read, down as well as up.
	m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: "a", Op: "GetRecords", MillisBehindLatest: 0})
	got = Gather(t, g)
	want(t, got, "shardline_behind_latest_seconds", with("shard", "a"), 0)
	want(t, got, "shardline_behind_latest_max_seconds", sw, 2)
}

func TestWindowMax(t *testing.T) {
	var w windowMax
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := w.max(t0); got != 0 {
		t.Errorf("empty window: %v, want 0", got)
	}
	w.add(t0, 5*time.Second)
	w.add(t0.Add(10*time.Second), 2*time.Second)
	w.add(t0.Add(20*time.Second), 3*time.Second)
	w.add(t0.Add(25*time.Second), time.Second)
	for _, c := range []struct {
		at   time.Duration
		want time.Duration
	}{{25 * time.Second, 5 * time.Second}, {lagWindow + time.Second, 3 * time.Second},
		{20*time.Second + lagWindow + time.Second, time.Second}, {time.Hour, time.Second}} {
		if got := w.max(t0.Add(c.at)); got != c.want {
			t.Errorf("at +%v: %v, want %v", c.at, got, c.want)
		}
	}
	if len(w) != 1 {
		t.Errorf("%d samples kept, want only the newest", len(w))
	}
}

// The per-shard counters are scraped at 0 once before they count, so that
// rate() and increase() count the first batch.
func TestShardStartCreatesCountersAtZero(t *testing.T) {
	m, g := started(t)
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventShardStarted})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 3, Bytes: 30, Attempt: 1})
	// The first scrape sees 0 even if the first batch came before it...
	got := Gather(t, g)
	want(t, got, "shardline_records_processed_total", with("shard", "a"), 0)
	want(t, got, "shardline_bytes_processed_total", with("shard", "a"), 0)
	// ... and the next one counts it.
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 1, Bytes: 10, Attempt: 1})
	got = Gather(t, g)
	want(t, got, "shardline_records_processed_total", with("shard", "a"), 4)
	want(t, got, "shardline_bytes_processed_total", with("shard", "a"), 40)
}

func TestShardStopRemovesShardSeries(t *testing.T) {
	m, g := started(t)
	for _, id := range []string{"a", "b"} {
		m.OnEvent(worker.Event{ShardID: id, Kind: worker.EventShardStarted})
		m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: id, Records: 1, Bytes: 1, Attempt: 1})
	}
	Gather(t, g) // the shards' counters are scraped at 0 once
	m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: "a", Op: "GetRecords", MillisBehindLatest: 9000})
	m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: "b", Op: "GetRecords", MillisBehindLatest: 3000})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventShardStopped, Reason: "lease_lost"})

	// The lag series go at once; the counters show their final values to
	// one more scrape, then go.
	got := Gather(t, g)
	for _, name := range []string{"shardline_behind_latest_seconds", "shardline_behind_arrival_seconds"} {
		absent(t, got, name, with("shard", "a"))
		if n := Count(got, name, nil); n != 1 {
			t.Errorf("%s: %d series, want 1 (shard b)", name, n)
		}
	}
	want(t, got, "shardline_records_processed_total", with("shard", "a"), 1)
	want(t, got, "shardline_bytes_processed_total", with("shard", "a"), 1)
	next := Gather(t, g)
	for _, name := range []string{"shardline_records_processed_total", "shardline_bytes_processed_total"} {
		absent(t, next, name, with("shard", "a"))
		if n := Count(next, name, nil); n != 1 {
			t.Errorf("%s after the next scrape: %d series, want 1 (shard b)", name, n)
		}
	}
	// A shard started again before the scrape keeps its counters.
	m.OnEvent(worker.Event{ShardID: "b", Kind: worker.EventShardStopped, Reason: "handoff"})
	m.OnEvent(worker.Event{ShardID: "b", Kind: worker.EventShardStarted})
	Gather(t, g)
	want(t, Gather(t, g), "shardline_records_processed_total", with("shard", "b"), 1)
	want(t, got, "shardline_behind_latest_max_seconds", sw, 3) // no longer a's 9s
	want(t, got, "shardline_shards_started_total", sw, 2)
	want(t, got, "shardline_shards_stopped_total", with("reason", "lease_lost"), 1)

	m.OnEvent(worker.Event{ShardID: "b", Kind: worker.EventShardStopped, Reason: "shutdown"})
	got = Gather(t, g)
	Gather(t, g)
	if n := Count(Gather(t, g), "shardline_records_processed_total", nil); n != 0 {
		t.Errorf("%d records series after every shard stopped and two scrapes, want 0", n)
	}
	if n := Count(got, "shardline_behind_latest_seconds", nil); n != 0 {
		t.Errorf("%d lag series after every shard stopped, want 0", n)
	}
	want(t, got, "shardline_behind_latest_max_seconds", sw, 0)
}

func TestLeaseEvents(t *testing.T) {
	m, g := started(t)
	for _, e := range []worker.Event{
		{Kind: worker.EventLeaseAcquired, ShardID: "a", Reason: "take"},
		{Kind: worker.EventLeaseAcquired, ShardID: "b", Reason: "take-released"},
		{Kind: worker.EventLeaseAcquired, ShardID: "c", Reason: "handoff"},
		{Kind: worker.EventLeaseAcquired, ShardID: "d", Reason: "handoff-timeout"},
		{Kind: worker.EventLeaseAcquired, ShardID: "e", Reason: "take"},
		{Kind: worker.EventLeaseAcquired, ShardID: "f", Reason: "take"},
		{Kind: worker.EventHandoffRequested, ShardID: "c", Peer: "other"},
		{Kind: worker.EventLeaseRenewFailed, ShardID: "a", Err: errors.New("timeout")},
		{Kind: worker.EventLeaseLost, ShardID: "a", Reason: "expired"},
		{Kind: worker.EventLeaseLost, ShardID: "c", Reason: "conflict"},
		{Kind: worker.EventLeaseLost, ShardID: "f", Reason: "other"},
		{Kind: worker.EventLeaseReleased, ShardID: "b"},
		{Kind: worker.EventLeaseHandedOver, ShardID: "d", Peer: "other"},
	} {
		m.OnEvent(e)
	}
	got := Gather(t, g)
	want(t, got, "shardline_leases_held", sw, 1) // 6 acquired, 3 lost, 1 released, 1 handed over
	want(t, got, "shardline_leases_taken_total", with("how", "take"), 3)
	want(t, got, "shardline_leases_taken_total", with("how", "take-released"), 1)
	want(t, got, "shardline_leases_stolen_total", with("how", "handoff"), 1)
	want(t, got, "shardline_leases_stolen_total", with("how", "handoff-timeout"), 1)
	want(t, got, "shardline_leases_lost_total", with("cause", "expired"), 1)
	want(t, got, "shardline_leases_lost_total", with("cause", "conflict"), 1)
	want(t, got, "shardline_leases_lost_total", with("cause", "other"), 1)
	want(t, got, "shardline_leases_released_total", sw, 1)
	want(t, got, "shardline_leases_handed_over_total", sw, 1)
	want(t, got, "shardline_lease_handoff_requests_total", sw, 1)
	want(t, got, "shardline_lease_renew_failures_total", sw, 1)
}

func TestCheckpointEvents(t *testing.T) {
	m, g := started(t)
	m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: "a", Duration: 10 * time.Millisecond})
	m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: "a", Err: fmt.Errorf("checkpoint: %w", kcl.ErrLeaseLost)})
	m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: "a", Err: errors.New("throttled")})
	m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: "b"})
	got := Gather(t, g)
	want(t, got, "shardline_checkpoint_writes_total", sw, 4)
	want(t, got, "shardline_checkpoint_failures_total", with("cause", "lease_lost"), 1)
	want(t, got, "shardline_checkpoint_failures_total", with("cause", "other"), 1)
	want(t, got, "shardline_checkpoint_duration_seconds", sw, 4)
}

func TestWorkerStartCreatesSeriesAndCountsRecordEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	if got := Gather(t, reg); len(got) != 0 {
		t.Errorf("%d series before the worker started, want none", len(got))
	}
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w", Stream: "s"})
	got := Gather(t, reg)
	for name, v := range map[string]float64{
		"shardline_kpl_aggregates_total": 0, "shardline_kpl_user_records_total": 0,
		"shardline_kpl_malformed_aggregates_total": 0, "shardline_kpl_dropped_aggregates_total": 0,
		"shardline_kpl_dropped_user_records_total": 0, "shardline_record_decode_failures_total": 0,
		"shardline_leases_held": 0, "shardline_behind_latest_max_seconds": 0, "shardline_checkpoint_writes_total": 0,
		// Histograms too (their sample counts): a series first seen with
		// observations in it loses them to increase().
		"shardline_arrival_to_processed_seconds": 0, "shardline_processing_duration_seconds": 0,
	} {
		want(t, got, name, sw, v)
	}
	want(t, got, "shardline_read_errors_total", with("kind", "fatal"), 0)
	want(t, got, "shardline_leases_stolen_total", with("how", "handoff-timeout"), 0)
	want(t, got, "shardline_shards_stopped_total", with("reason", "shard_end"), 0)

	for _, e := range []worker.Event{
		{Kind: worker.EventAggregatesUnpacked, ShardID: "a", Aggregates: 5, Records: 50},
		{Kind: worker.EventAggregatesUnpacked, ShardID: "b", Aggregates: 2, Records: 20},
		{Kind: worker.EventAggregatesMalformed, ShardID: "a", Aggregates: 1},
		{Kind: worker.EventAggregatesDropped, ShardID: "a", Aggregates: 2, Records: 20},
		{Kind: worker.EventDecodeFailed, ShardID: "a", Records: 3},
		{Kind: worker.EventDecodeFailed, ShardID: "b", Records: 1},
	} {
		m.OnEvent(e)
	}
	got = Gather(t, reg)
	for name, v := range map[string]float64{
		"shardline_kpl_aggregates_total": 7, "shardline_kpl_user_records_total": 70,
		"shardline_kpl_malformed_aggregates_total": 1, "shardline_kpl_dropped_aggregates_total": 2,
		"shardline_kpl_dropped_user_records_total": 20, "shardline_record_decode_failures_total": 4,
	} {
		want(t, got, name, sw, v)
	}
}

// feedAll sends every kind of event once, so that every metric has a series.
func feedAll(m *Metrics) {
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w", Stream: "s"})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventShardStarted})
	m.OnEvent(worker.Event{ShardID: "a", Kind: worker.EventShardStalled, Reason: "no-progress"})
	m.OnEvent(worker.Event{ShardID: "b", Kind: worker.EventShardUnowned, Duration: time.Second})
	m.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "a", Reason: "take"})
	m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: "a", Op: "GetRecords", Records: 1, MillisBehindLatest: 10})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Records: 1, Bytes: 1, Attempt: 1, Arrivals: []time.Time{time.Now()}})
	m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: "a"})
}

// TestPackageDocListsEveryMetric checks that the package doc lists exactly
// the metrics the registry holds, with their types and labels.
func TestPackageDocListsEveryMetric(t *testing.T) {
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	feedAll(m)
	fams := Families(Gather(t, m.gatherer))

	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	entry := regexp.MustCompile(`(?m)^//   - (shardline_\w+) \((counter|gauge|histogram); ([^)]*)\)`)
	documented := map[string]bool{}
	for _, e := range entry.FindAllStringSubmatch(string(src), -1) {
		name, typ, extra := e[1], e[2], e[3]
		documented[name] = true
		f, ok := fams[name]
		if !ok {
			t.Errorf("doc lists %s, which the registry does not hold", name)
			continue
		}
		if f.Type != typ {
			t.Errorf("%s: doc says %s, registry holds a %s", name, typ, f.Type)
		}
		wantLabels := []string{"stream", "worker"}
		if extra != "-" {
			wantLabels = append(wantLabels, strings.Split(extra, ", ")...)
		}
		var gotLabels []string
		for l := range f.Labels {
			gotLabels = append(gotLabels, l)
		}
		sort.Strings(wantLabels)
		sort.Strings(gotLabels)
		if !slices.Equal(gotLabels, wantLabels) {
			t.Errorf("%s: doc gives labels %v, registry %v", name, wantLabels, gotLabels)
		}
	}
	for name := range fams {
		if !documented[name] {
			t.Errorf("%s is not listed in the package doc", name)
		}
	}
	if len(documented) < 30 {
		t.Errorf("only %d metrics documented; the entry pattern may be off", len(documented))
	}
}

// TestNamesFollowPrometheusConventions runs Prometheus' own linter (units,
// _total suffixes, help text) over every metric.
func TestNamesFollowPrometheusConventions(t *testing.T) {
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	feedAll(m)
	mfs, err := m.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "shardline_") {
			t.Errorf("%s lacks the shardline_ prefix", mf.GetName())
		}
	}
}

func TestSharedRegistryAndHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := New(WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := New(WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	m1.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w1", Stream: "s"})
	m2.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w2", Stream: "s"})
	m1.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "a", Reason: "take"})
	m2.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "b", Reason: "take"})
	m2.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "c", Reason: "take"})

	rec := httptest.NewRecorder()
	m1.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	for _, line := range []string{
		`shardline_leases_held{stream="s",worker="w1"} 1`,
		`shardline_leases_held{stream="s",worker="w2"} 2`,
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("handler output lacks %q:\n%s", line, body)
		}
	}
	// The application's own metrics are served beside Shardline's.
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_things_total", Help: "Things."})
	reg.MustRegister(c)
	rec = httptest.NewRecorder()
	m2.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body, _ := io.ReadAll(rec.Result().Body); !strings.Contains(string(body), "app_things_total 0\n") {
		t.Errorf("handler output lacks the application's metric:\n%s", body)
	}
}

// registererOnly hides the Gatherer side of a registry.
type registererOnly struct{ prometheus.Registerer }

func TestRegistererThatIsNoGatherer(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(WithRegistry(registererOnly{reg}))
	if err != nil {
		t.Fatal(err)
	}
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w", Stream: "s"})
	m.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: "a", Reason: "take"})
	want(t, Gather(t, reg), "shardline_leases_held", sw, 1)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body, _ := io.ReadAll(rec.Result().Body); !strings.Contains(string(body), `shardline_leases_held{stream="s",worker="w"} 1`) {
		t.Errorf("handler output lacks the lease gauge:\n%s", body)
	}
}

func TestOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"nil registry":       WithRegistry(nil),
		"no bucket":          WithProcessingBuckets(),
		"decreasing buckets": WithDelayBuckets(1, 0.5),
		"equal buckets":      WithProcessingBuckets(1, 1),
		"NaN bucket":         WithDelayBuckets(math.NaN()),
		"infinite bucket":    WithProcessingBuckets(1, math.Inf(1)),
		"negative bucket":    WithDelayBuckets(-1, 1),
	} {
		if _, err := New(opt); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("%s: New returned %v, want an error matching kcl.ErrInvalidConfig", name, err)
		}
	}

	m, err := New(WithProcessingBuckets(0.5, 1), WithDelayBuckets(10))
	if err != nil {
		t.Fatal(err)
	}
	m.OnEvent(worker.Event{Kind: worker.EventWorkerStart, WorkerID: "w", Stream: "s"})
	m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: "a", Attempt: 1, Duration: 700 * time.Millisecond, Arrivals: []time.Time{time.Now()}})
	mfs, err := m.gatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	buckets := map[string][]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, b := range mt.GetHistogram().GetBucket() {
				buckets[mf.GetName()] = append(buckets[mf.GetName()], b.GetUpperBound())
			}
		}
	}
	if b := buckets["shardline_processing_duration_seconds"]; !slices.Equal(b, []float64{0.5, 1}) {
		t.Errorf("processing buckets %v, want [0.5 1]", b)
	}
	if b := buckets["shardline_arrival_to_processed_seconds"]; !slices.Equal(b, []float64{10}) {
		t.Errorf("delay buckets %v, want [10]", b)
	}
}

// TestConcurrentHooks calls the hooks from many goroutines, as the worker
// does, and checks that nothing is lost (and, under -race, that nothing
// races).
func TestConcurrentHooks(t *testing.T) {
	m, g := started(t)
	const shards, batches = 8, 200
	var wg sync.WaitGroup
	for i := range shards {
		id := fmt.Sprintf("shard-%d", i)
		wg.Add(3)
		go func() {
			defer wg.Done()
			m.OnEvent(worker.Event{Kind: worker.EventLeaseAcquired, ShardID: id, Reason: "take"})
			m.OnEvent(worker.Event{ShardID: id, Kind: worker.EventShardStarted})
			for range batches {
				m.OnEvent(worker.Event{Kind: worker.EventBatchProcessed, ShardID: id, Records: 2, Bytes: 3, Attempt: 1})
			}
		}()
		go func() {
			defer wg.Done()
			for j := range batches {
				m.OnEvent(worker.Event{Kind: worker.EventFetch, ShardID: id, Op: "GetRecords", MillisBehindLatest: int64(j)})
			}
		}()
		go func() {
			defer wg.Done()
			for range batches {
				m.OnEvent(worker.Event{Kind: worker.EventCheckpoint, ShardID: id})
				_ = Gather(t, g) // scrapes race with updates
			}
		}()
	}
	wg.Wait()
	got := Gather(t, g)
	want(t, got, "shardline_leases_held", sw, shards)
	want(t, got, "shardline_batches_processed_total", sw, shards*batches)
	want(t, got, "shardline_checkpoint_writes_total", sw, shards*batches)
	if v := Sum(got, "shardline_records_processed_total", sw); v != 2*shards*batches {
		t.Errorf("records processed %v, want %d", v, 2*shards*batches)
	}
	want(t, got, "shardline_behind_latest_max_seconds", sw, float64(batches-1)/1000)
}
