package dashtest

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// family is what the scrapes showed of one metric family.
type family struct {
	typ    string
	labels map[string]bool // label names beyond stream and worker
}

// target is one worker's /metrics endpoint.
type target struct {
	id, url string
	last    map[string]labels.Labels // series of the last scrape, by key
	latest  map[string]float64       // last scraped values summed by metric name
	gone    bool                     // the endpoint stopped answering; its series were marked stale
}

// scraper scrapes targets into a storage every interval, marking as stale
// (as Prometheus does) the series that disappear and those of targets that
// stop answering.
type scraper struct {
	t        *testing.T
	db       storage.Appendable
	client   *http.Client
	interval time.Duration

	mu       sync.Mutex
	targets  []*target
	families map[string]*family
	scrapes  int       // rounds done
	lastAt   time.Time // time of the last round
	tick     chan struct{}

	stop chan struct{}
	done chan struct{}
}

func newScraper(t *testing.T, db storage.Appendable, interval time.Duration) *scraper {
	return &scraper{t: t, db: db, client: &http.Client{Timeout: interval}, interval: interval,
		families: map[string]*family{}, tick: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
}

func (s *scraper) add(id, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.targets = append(s.targets, &target{id: id, url: url})
}

func (s *scraper) start() {
	go func() {
		defer close(s.done)
		tk := time.NewTicker(s.interval)
		defer tk.Stop()
		for {
			select {
			case <-s.stop:
				return
			case now := <-tk.C:
				s.round(now)
			}
		}
	}()
}

// close stops scraping after the round in progress.
func (s *scraper) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// round scrapes every live target at ts.
func (s *scraper) round(ts time.Time) {
	s.mu.Lock()
	targets := append([]*target(nil), s.targets...)
	s.mu.Unlock()
	app := s.db.Appender(context.Background())
	for _, tg := range targets {
		if tg.gone {
			continue
		}
		fams, err := s.get(tg.url)
		series := map[string]labels.Labels{}
		latest := map[string]float64{}
		if err == nil {
			for _, mf := range fams {
				s.note(mf)
				for _, smp := range expand(mf) {
					key := smp.l.String()
					series[key] = smp.l
					if _, err := app.Append(0, smp.l, ts.UnixMilli(), smp.v); err != nil {
						s.t.Errorf("append %s: %v", key, err)
					}
					latest[smp.l.Get(labels.MetricName)] += smp.v
				}
			}
		}
		for key, l := range tg.last {
			if _, ok := series[key]; !ok {
				if _, err := app.Append(0, l, ts.UnixMilli(), math.Float64frombits(value.StaleNaN)); err != nil {
					s.t.Errorf("append stale marker %s: %v", key, err)
				}
			}
		}
		s.mu.Lock()
		tg.last, tg.latest = series, latest
		if err != nil {
			tg.gone = true
		}
		s.mu.Unlock()
	}
	if err := app.Commit(); err != nil {
		s.t.Errorf("commit scrape: %v", err)
	}
	s.mu.Lock()
	s.scrapes++
	s.lastAt = ts
	close(s.tick)
	s.tick = make(chan struct{})
	s.mu.Unlock()
}

func (s *scraper) get(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := s.client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// note records the family's type and label names.
func (s *scraper) note(mf *dto.MetricFamily) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.families[mf.GetName()]
	if f == nil {
		f = &family{typ: map[dto.MetricType]string{dto.MetricType_COUNTER: "counter", dto.MetricType_GAUGE: "gauge",
			dto.MetricType_HISTOGRAM: "histogram"}[mf.GetType()], labels: map[string]bool{}}
		if f.typ == "" {
			f.typ = mf.GetType().String()
		}
		s.families[mf.GetName()] = f
	}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if n := lp.GetName(); n != "stream" && n != "worker" {
				f.labels[n] = true
			}
		}
	}
}

type sample struct {
	l labels.Labels
	v float64
}

// expand turns a family into the series Prometheus stores for it: one per
// counter or gauge, and _bucket, _sum and _count series per histogram.
func expand(mf *dto.MetricFamily) []sample {
	var out []sample
	for _, m := range mf.GetMetric() {
		b := labels.NewBuilder(labels.EmptyLabels())
		for _, lp := range m.GetLabel() {
			b.Set(lp.GetName(), lp.GetValue())
		}
		with := func(name string, kv ...string) labels.Labels {
			b.Set(labels.MetricName, name)
			for i := 0; i+1 < len(kv); i += 2 {
				b.Set(kv[i], kv[i+1])
			}
			l := b.Labels()
			b.Del("le")
			return l
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			out = append(out, sample{with(mf.GetName()), m.GetCounter().GetValue()})
		case dto.MetricType_GAUGE:
			out = append(out, sample{with(mf.GetName()), m.GetGauge().GetValue()})
		case dto.MetricType_HISTOGRAM:
			h := m.GetHistogram()
			inf := false
			for _, bk := range h.GetBucket() {
				ub := bk.GetUpperBound()
				inf = inf || math.IsInf(ub, 1)
				out = append(out, sample{with(mf.GetName()+"_bucket", "le", formatLE(ub)), float64(bk.GetCumulativeCount())})
			}
			if !inf {
				out = append(out, sample{with(mf.GetName()+"_bucket", "le", "+Inf"), float64(h.GetSampleCount())})
			}
			out = append(out, sample{with(mf.GetName() + "_sum"), h.GetSampleSum()},
				sample{with(mf.GetName() + "_count"), float64(h.GetSampleCount())})
		}
	}
	return out
}

func formatLE(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// wait blocks until n more scrape rounds are done, failing after a generous
// bound.
func (s *scraper) wait(n int) {
	s.t.Helper()
	for range n {
		s.mu.Lock()
		ch := s.tick
		s.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(30 * s.interval):
			s.t.Fatalf("no scrape for %v", 30*s.interval)
		}
	}
}

// until waits for scrape rounds until cond, given the latest values of the
// live targets, holds; it fails the test after limit.
func (s *scraper) until(limit time.Duration, what string, cond func(v latest) bool) time.Time {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s.wait(1)
		s.mu.Lock()
		v := latest{}
		for _, tg := range s.targets {
			if !tg.gone && tg.latest != nil {
				v[tg.id] = tg.latest
			}
		}
		at := s.lastAt
		s.mu.Unlock()
		if cond(v) {
			return at
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waited %v for %s; last values: %s", limit, what, v.summary())
		}
	}
}

// latest holds the last scraped values by worker ID and metric name (the
// sum of the metric's series).
type latest map[string]map[string]float64

// sum adds up the values of metric name of worker id (every live worker if
// id is empty).
func (v latest) sum(name, id string) float64 {
	var total float64
	for w, byName := range v {
		if id == "" || w == id {
			total += byName[name]
		}
	}
	return total
}

func (v latest) summary() string {
	var parts []string
	for w := range v {
		parts = append(parts, fmt.Sprintf("%s: leases %v, records %v", w, v.sum("shardline_leases_held", w),
			v.sum("shardline_records_processed_total", w)))
	}
	sort.Strings(parts)
	return fmt.Sprint(parts)
}
