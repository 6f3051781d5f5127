package dashtest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

const (
	shards        = 4
	scrapeEvery   = time.Second
	leaseDuration = 3 * time.Second
	// rateInterval stands for Grafana's $__rate_interval: four scrape
	// intervals.
	rateInterval = "4s"
	// minStall (seconds) bounds from below how long the killed worker's
	// records wait: its leases expire a lease duration after their last
	// renewal, at most a third of it before the kill (so at least 2 s
	// after), and the producer writes to every shard every 100 ms.
	minStall = 1.5
	// failBatches is how many deliveries of records fail in w4 (see
	// fleetworker's -fail-batches): the shard stalls from the third failure
	// on, for the waits after the third and the fourth (about 2.4 s). Its
	// retries end a few seconds before w1's graceful stop, whose hand-overs
	// they would otherwise hold up.
	failBatches = 5
)

// dashboard is the part of dashboards/shardline.json the test reads.
type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		RefID        string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

func loadDashboard(t *testing.T, path string) []panel {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var flat []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			flat = append(flat, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return flat
}

// phases are the moments of the run the assertions refer to.
type phases struct {
	start, produce, kill, failedOver, join, joined, term, termed, stopProduce, end time.Time
	produced                                                                       int
}

// TestDashboard runs three consumer processes on a 4-shard stream while a
// producer writes continuously, kills one (its leases expire and are
// taken), adds a fourth (a hand-over balances the shards) and stops one
// gracefully (its leases are released and taken), scraping every worker
// every second. It then evaluates every query of the dashboard over the run
// and checks what the panels show.
func TestDashboard(t *testing.T) {
	testenv.Require(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	panels := loadDashboard(t, filepath.Join(root, "dashboards", "shardline.json"))
	docFams := parseDoc(t, filepath.Join(root, "metrics", "doc.go"))
	readme := parseReadme(t, filepath.Join(root, "README.md"))

	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	stream := testenv.CreateStream(t, kc, shards)
	app := testenv.UniqueName("dash")
	dir := t.TempDir()
	bin := buildConsumer(t, root, dir)
	f, err := fleet.New(fleet.Config{
		Binary: bin, Dir: dir, Stream: stream, App: app,
		KinesisEndpoint: testenv.KinesisEndpoint(), DynamoDBEndpoint: testenv.DynamoDBEndpoint(),
		LeaseDuration: leaseDuration, IdleTime: 200 * time.Millisecond, ShutdownTimeout: 15 * time.Second,
		ExtraArgs: []string{"-metrics-addr", "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	prod, err := fleet.NewProducer(t.Context(), kc, stream, 4)
	if err != nil {
		t.Fatal(err)
	}
	db := teststorage.New(t)
	sc := newScraper(t, db, scrapeEvery)
	t.Cleanup(func() {
		sc.close()
		_ = prod.Stop()
		f.Close()
		if t.Failed() {
			for _, id := range f.IDs() {
				if b, err := os.ReadFile(f.LogPath(id)); err == nil {
					t.Logf("log of %s (tail):\n%s", id, tail(string(b), 3000))
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, dc, app)
	})
	start := func(id string, extra ...string) {
		t.Helper()
		if _, err := f.Start(id, extra...); err != nil {
			t.Fatal(err)
		}
		sc.add(id, metricsURL(t, f.LogPath(id)))
	}
	allHeld := func(v latest) bool { return v.sum("shardline_leases_held", "") == shards }
	var ph phases

	// Three workers share the shards; the producer starts once every
	// shard is owned, so the counters' first samples are zeros.
	sc.start()
	start("w1")
	start("w2")
	start("w3")
	ph.start = sc.until(90*time.Second, "3 workers holding the 4 leases", func(v latest) bool {
		return len(v) == 3 && allHeld(v) && v.sum("shardline_leases_held", "w1") > 0 &&
			v.sum("shardline_leases_held", "w2") > 0 && v.sum("shardline_leases_held", "w3") > 0
	})
	sc.wait(2)
	ph.produce = time.Now()
	prod.Start(100*time.Millisecond, 8)
	sc.wait(10)

	// SIGKILL w3: its shards wait for their leases to expire.
	if ph.kill, err = f.Process("w3").Kill(); err != nil {
		t.Fatal(err)
	}
	ph.failedOver = sc.until(60*time.Second, "w1 and w2 holding the 4 leases after the kill", func(v latest) bool {
		return len(v) == 2 && allHeld(v)
	})
	sc.wait(8)

	// w4 joins: a planned hand-over gives it its share. Its first
	// deliveries fail: the shard it takes stalls (processor-failing) for a
	// few seconds.
	ph.join = time.Now()
	start("w4", "-fail-batches", strconv.Itoa(failBatches))
	ph.joined = sc.until(60*time.Second, "w4 holding a lease", func(v latest) bool {
		return allHeld(v) && v.sum("shardline_leases_held", "w4") > 0
	})
	sc.wait(8)

	// SIGTERM w1: it stops gracefully, releasing its leases.
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	ph.term, err = f.Process("w1").Terminate(tctx)
	tcancel()
	if err != nil {
		t.Fatal(err)
	}
	ph.termed = sc.until(60*time.Second, "w2 and w4 holding the 4 leases after w1 stopped", func(v latest) bool {
		return len(v) == 2 && allHeld(v)
	})
	sc.wait(5)

	// The producer stops; the workers drain what is left.
	if err := prod.Stop(); err != nil {
		t.Fatal(err)
	}
	ph.stopProduce = time.Now()
	ph.produced = prod.Count()
	prev, same := -1.0, 0
	ph.end = sc.until(60*time.Second, "the processed counters to settle", func(v latest) bool {
		n := v.sum("shardline_records_processed_total", "")
		if n == prev {
			same++
		} else {
			same = 0
		}
		prev = n
		return same >= 3 // three scrapes alike: the workers wait for records
	})
	sc.wait(2)
	ph.end = ph.end.Add(scrapeEvery)
	sc.close()
	t.Logf("produced %d records; kill at +%v, failed over at +%v, join at +%v, joined at +%v, term at +%v, termed at +%v, end at +%v",
		ph.produced, rel(ph.start, ph.kill), rel(ph.start, ph.failedOver), rel(ph.start, ph.join), rel(ph.start, ph.joined),
		rel(ph.start, ph.term), rel(ph.start, ph.termed), rel(ph.start, ph.end))

	e := &evaluator{t: t, engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute,
		LookbackDelta: 5 * time.Minute}), db: db, stream: stream, from: ph.start, to: ph.end}
	e.checkEveryQuery(panels)
	checkPanels(t, e, panels, ph)
	checkTemplating(t, e, filepath.Join(root, "dashboards", "shardline.json"), stream)

	sc.mu.Lock()
	emitted := sc.families
	sc.mu.Unlock()
	t.Run("doc", func(t *testing.T) { compareDoc(t, docFams, emitted) })
	t.Run("readme", func(t *testing.T) { compareReadme(t, readme, emitted) })
}

func rel(from, at time.Time) time.Duration { return at.Sub(from).Round(100 * time.Millisecond) }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// buildConsumer builds the example consumer (without the race detector:
// the processes are the workload here, not the code under test).
func buildConsumer(t *testing.T, root, dir string) string {
	t.Helper()
	t.Chdir(root) // fleet.Build runs the go tool in the current directory
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := fleet.Build(ctx, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var metricsURLPattern = regexp.MustCompile(`http://127\.0\.0\.1:\d+/metrics`)

// metricsURL waits for the consumer to log the address it serves metrics on.
func metricsURL(t *testing.T, logPath string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if u := metricsURLPattern.Find(b); u != nil {
			return string(u)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no metrics address logged; log:\n%s", logPath, tail(string(b), 2000))
		}
		time.Sleep(50 * time.Millisecond) // polling a file another process writes
	}
}

// evaluator evaluates the dashboard's expressions over the run.
type evaluator struct {
	t        *testing.T
	engine   *promql.Engine
	db       *teststorage.TestStorage
	stream   string
	from, to time.Time
}

// expand substitutes the dashboard's variables: every worker, the test's
// stream, and rng for $__rate_interval.
func (e *evaluator) expand(expr, rng string) string {
	r := strings.NewReplacer(`$stream`, regexp.QuoteMeta(e.stream), `$worker`, ".*",
		`$__rate_interval`, rng, `$__interval`, "1s")
	return r.Replace(expr)
}

// rangeQuery evaluates expr every second from from to to.
func (e *evaluator) rangeQuery(expr string, from, to time.Time) promql.Matrix {
	e.t.Helper()
	var out promql.Matrix
	e.run(expr, func() (promql.Query, error) {
		return e.engine.NewRangeQuery(context.Background(), e.db, nil, expr, from, to, time.Second)
	}, func(r *promql.Result) error {
		m, err := r.Matrix()
		for _, s := range m { // copied: Close recycles the result's points
			out = append(out, promql.Series{Metric: s.Metric, Floats: slices.Clone(s.Floats)})
		}
		return err
	})
	return out
}

// instant evaluates expr at ts and returns the values of its series.
func (e *evaluator) instant(expr string, ts time.Time) []float64 {
	e.t.Helper()
	var out []float64
	e.run(expr, func() (promql.Query, error) {
		return e.engine.NewInstantQuery(context.Background(), e.db, nil, expr, ts)
	}, func(r *promql.Result) error {
		v, err := r.Vector()
		for _, s := range v {
			out = append(out, s.F)
		}
		return err
	})
	return out
}

// run makes a query of expr with mk, runs it and hands its result to read
// before closing it, failing the test on any error.
func (e *evaluator) run(expr string, mk func() (promql.Query, error), read func(*promql.Result) error) {
	e.t.Helper()
	q, err := mk()
	if err != nil {
		e.t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err == nil {
		err = read(res)
	} else {
		err = res.Err
	}
	if err != nil {
		e.t.Fatalf("%s: %v", expr, err)
	}
}

// checkEveryQuery evaluates every panel query over the whole run: each must
// run and return data.
func (e *evaluator) checkEveryQuery(panels []panel) {
	n := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			n++
			m := e.rangeQuery(e.expand(tg.Expr, rateInterval), e.from, e.to)
			if len(m) == 0 {
				e.t.Errorf("panel %q, query %s (%s): no data over the run", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if n < 30 {
		e.t.Errorf("only %d panel queries found in the dashboard", n)
	}
}

// query returns the expression of panel title's target refID.
func query(t *testing.T, panels []panel, title, refID string) string {
	t.Helper()
	for _, p := range panels {
		if p.Title != title {
			continue
		}
		for _, tg := range p.Targets {
			if tg.RefID == refID {
				return tg.Expr
			}
		}
	}
	t.Fatalf("the dashboard has no panel %q with query %s", title, refID)
	return ""
}

// values returns every value of m's series between from and to.
func values(m promql.Matrix, from, to time.Time) []float64 {
	var out []float64
	for _, s := range m {
		for _, p := range s.Floats {
			if p.T >= from.UnixMilli() && p.T <= to.UnixMilli() {
				out = append(out, p.F)
			}
		}
	}
	return out
}

func maxOf(vs []float64) float64 {
	most := math.Inf(-1)
	for _, v := range vs {
		if !math.IsNaN(v) {
			most = max(most, v)
		}
	}
	return most
}

func seconds(d time.Duration) string { return fmt.Sprintf("%ds", max(1, int(d.Seconds()))) }

// checkPanels asserts what the panels show at the moments of the run.
func checkPanels(t *testing.T, e *evaluator, panels []panel, ph phases) {
	at := func(title, refID string, ts time.Time) []float64 {
		t.Helper()
		return e.instant(e.expand(query(t, panels, title, refID), rateInterval), ts)
	}
	over := func(title, refID, rng string, ts time.Time) float64 {
		t.Helper()
		v := e.instant(e.expand(query(t, panels, title, refID), rng), ts)
		if len(v) != 1 {
			t.Fatalf("panel %q %s over %s at %v: %v, want one value", title, refID, rng, ts, v)
		}
		return v[0]
	}

	// Leases held sums to the shard count once each move has settled.
	for name, ts := range map[string]time.Time{"after the failover": ph.failedOver, "after the join": ph.joined,
		"after the graceful stop": ph.termed, "at the end": ph.end} {
		if v := at("Leases held", "A", ts); len(v) != 1 || v[0] != shards {
			t.Errorf("Leases held %s: %v, want %d", name, v, shards)
		}
	}

	// Records processed /s over the whole production window is the
	// produced rate, within a few percent (records processed by the killed
	// worker after its last scrape are not seen; those it processed but did
	// not checkpoint are processed again).
	window := ph.end.Sub(ph.produce) + scrapeEvery
	rate := over("Records processed /s", "A", seconds(window), ph.end)
	secs := float64(int(window.Seconds())) // as seconds(window) gives it
	want := float64(ph.produced) / secs
	if rel := math.Abs(rate-want) / want; rel > 0.05 {
		t.Errorf("Records processed /s over the run: %.2f, produced %.2f/s (%d records in %v): off by %.1f%%",
			rate, want, ph.produced, window, 100*rel)
	} else {
		t.Logf("Records processed /s over the run: %.2f, produced %.2f/s", rate, want)
	}

	// The arrival histogram has one observation per record processed.
	observed := e.instant(fmt.Sprintf(`sum(increase(shardline_arrival_to_processed_seconds_count{stream=~"%s"}[%s]))`,
		regexp.QuoteMeta(e.stream), seconds(window)), ph.end)
	if len(observed) != 1 || math.Abs(observed[0]-rate*secs) > 0.05*rate*secs {
		t.Errorf("arrival to processed: %v observations over the run, want one per record processed (%.0f)",
			observed, rate*secs)
	} else {
		t.Logf("arrival to processed: %.0f observations over the run, %.0f records processed", observed[0], rate*secs)
	}

	// The stall of the killed worker's shards shows in the arrival p99: its
	// records waited at least the lease duration.
	steady := maxOf(values(e.rangeQuery(e.expand(query(t, panels, "Arrival to processed", "B"), rateInterval),
		ph.produce.Add(5*time.Second), ph.kill), ph.produce.Add(5*time.Second), ph.kill))
	stall := maxOf(values(e.rangeQuery(e.expand(query(t, panels, "Arrival to processed", "B"), rateInterval),
		ph.kill, ph.failedOver.Add(10*time.Second)), ph.kill, ph.failedOver.Add(10*time.Second)))
	t.Logf("arrival to processed p99: at most %.2fs before the kill, %.2fs after", steady, stall)
	if stall < minStall { // not compared with before: a loaded machine has stalls of its own
		t.Errorf("arrival to processed p99 peaks at %.2fs after the kill (%.2fs before), want a stall of at least %vs (lease duration %v)",
			stall, steady, minStall, leaseDuration)
	}

	// Lag is never negative; the arrival-derived lag of the killed
	// worker's shards rises by the time they were unowned.
	for _, q := range []struct{ title, ref string }{{"Max lag", "A"}, {"Max lag", "B"}, {"Lag per shard", "A"},
		{"Lag per shard", "B"}, {"Max lag per worker", "A"}, {"Max lag per worker", "B"}} {
		vs := values(e.rangeQuery(e.expand(query(t, panels, q.title, q.ref), rateInterval), e.from, e.to), e.from, e.to)
		if len(vs) == 0 {
			t.Errorf("%s %s: no data", q.title, q.ref)
		}
		for _, v := range vs {
			if v < 0 || math.IsNaN(v) {
				t.Errorf("%s %s: %v, want a non-negative lag", q.title, q.ref, v)
				break
			}
		}
	}
	lag := query(t, panels, "Max lag", "B")
	lagBefore := maxOf(values(e.rangeQuery(e.expand(lag, rateInterval), ph.produce.Add(5*time.Second), ph.kill),
		ph.produce.Add(5*time.Second), ph.kill))
	lagAfter := maxOf(values(e.rangeQuery(e.expand(lag, rateInterval), ph.kill, ph.failedOver.Add(10*time.Second)),
		ph.kill, ph.failedOver.Add(10*time.Second)))
	t.Logf("max lag (arrival): at most %.2fs before the kill, %.2fs after", lagBefore, lagAfter)
	if lagAfter < minStall {
		t.Errorf("max lag (arrival) peaks at %.2fs after the kill (%.2fs before), want at least %vs: the shards were unowned that long",
			lagAfter, lagBefore, minStall)
	}

	// Shards without a live owner: never negative; while the killed
	// worker's shards wait for their leases to expire the seconds rise (to
	// at least minStall), and once every shard is held there is no series.
	unowned := query(t, panels, "Shards without a live owner", "A")
	for _, v := range values(e.rangeQuery(e.expand(unowned, rateInterval), e.from, e.to), e.from, e.to) {
		if v < 0 || math.IsNaN(v) {
			t.Errorf("Shards without a live owner: %v, want a non-negative time", v)
			break
		}
	}
	// The take-over follows the expiry closely, so a scrape may see a
	// shard unowned only once: its value is then the time already, and a
	// series seen more than once must rise.
	kw := e.rangeQuery(e.expand(unowned, rateInterval), ph.kill, ph.failedOver)
	most, rising, seen := 0.0, true, map[float64]bool{}
	for _, s := range kw {
		for i := 1; i < len(s.Floats); i++ {
			rising = rising && s.Floats[i].F >= s.Floats[i-1].F
		}
		for _, p := range s.Floats {
			seen[p.F] = true
		}
		most = max(most, maxOf(values(promql.Matrix{s}, ph.kill, ph.failedOver)))
	}
	t.Logf("shards without a live owner during the kill window: %d series, %d distinct values, peak %.2fs", len(kw), len(seen), most)
	if len(kw) == 0 || !rising || most < minStall {
		t.Errorf("Shards without a live owner from the kill to the failover: %d series, rising %v, peak %.2fs; want a time rising to at least %vs",
			len(kw), rising, most, minStall)
	}
	if v := e.instant(e.expand(unowned, rateInterval), ph.end); len(v) != 0 {
		t.Errorf("Shards without a live owner at the end: %v, want no series (every shard is held)", v)
	}

	// w4's failing deliveries show as a stall, which ends.
	stalled := query(t, panels, "Stalled shards", "A")
	found := false
	for _, s := range e.rangeQuery(e.expand(stalled, rateInterval), ph.join, ph.end) {
		if s.Metric.Get("reason") == "processor-failing" && maxOf(values(promql.Matrix{s}, ph.join, ph.end)) == 1 {
			found = true
		}
	}
	if !found {
		t.Errorf("Stalled shards after w4 joined: no processor-failing stall, want one (w4 fails its first %d deliveries)", failBatches)
	}
	if v := e.instant(e.expand(stalled, rateInterval), ph.end); len(v) != 0 {
		t.Errorf("Stalled shards at the end: %v, want none", v)
	}
	if v := values(e.rangeQuery(e.expand(stalled, rateInterval), e.from, ph.join), e.from, ph.join); len(v) != 0 {
		t.Errorf("Stalled shards before w4 joined: %v, want none", v)
	}

	// The planned hand-over and the graceful stop are clean: no throttle,
	// no lease lost; leases move by hand-over.
	clean := seconds(ph.end.Sub(ph.join))
	for _, q := range []struct{ title, ref, what string }{
		{"Kinesis read errors /s", "B", "throttles"}, {"Lease movements", "C", "leases lost"},
	} {
		for _, v := range e.instant(e.expand(query(t, panels, q.title, q.ref), clean), ph.end) {
			if v != 0 {
				t.Errorf("%s from the join to the end: %v, want 0 (clean hand-overs)", q.what, v)
			}
		}
	}
	if v := maxOf(values(e.rangeQuery(e.expand(query(t, panels, "Kinesis read errors /s", "B"), rateInterval), e.from, e.to),
		e.from, e.to)); v != 0 {
		t.Errorf("throttles /s peak at %v over the run, want 0", v)
	}
	// The hand-over is seen from the owner's side: w4's own counters start
	// within a scrape interval of its steal, so their first sample may
	// already hold it.
	handed := e.instant(e.expand(query(t, panels, "Lease movements", "E"), seconds(ph.joined.Sub(ph.join)+5*time.Second)),
		ph.joined.Add(time.Second))
	if maxOf(handed) < 1 {
		t.Errorf("Lease movements: no lease handed over when w4 joined: %v", handed)
	}
	// A graceful stop hands each lease to the survivor the plan names (B:
	// acquired from a live owner, how=handoff); one that finds no live
	// survivor releases it, and it is taken released (A:
	// how=take-released).
	termWindow := seconds(ph.termed.Sub(ph.term) + 5*time.Second)
	var moves []string
	moved := false
	for _, ref := range []string{"A", "B"} {
		for _, s := range e.rangeQuery(e.expand(query(t, panels, "Lease movements", ref), termWindow), ph.termed, ph.termed) {
			how := s.Metric.Get("how")
			if len(s.Floats) > 0 {
				moves = append(moves, fmt.Sprintf("%s how=%s: %v", ref, how, s.Floats[0].F))
				if (how == "handoff" || how == "take-released") && s.Floats[0].F >= 1 {
					moved = true
				}
			}
		}
	}
	if !moved {
		t.Errorf("Lease movements after w1's graceful stop: %v, want leases acquired with how=handoff or take-released", moves)
	}
}

var labelValues = regexp.MustCompile(`^label_values\((.+), (\w+)\)$`)

// checkTemplating evaluates the variables' label_values queries.
func checkTemplating(t *testing.T, e *evaluator, path, stream string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"stream": {stream}, "worker": {"w1", "w2", "w3", "w4"}}
	for _, v := range d.Templating.List {
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			continue
		}
		found := map[string]bool{}
		for _, s := range e.rangeQuery(e.expand(m[1], rateInterval), e.from, e.to) {
			found[s.Metric.Get(m[2])] = true
		}
		for _, w := range want[v.Name] {
			if !found[w] {
				t.Errorf("variable %s (%s): %v, want %s among them", v.Name, v.Definition, found, w)
			}
		}
		delete(want, v.Name)
	}
	for name := range want {
		t.Errorf("the dashboard has no variable %s", name)
	}
}
