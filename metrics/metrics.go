package metrics

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

var _ worker.Hook = new(Metrics)

// Default histogram buckets, in seconds.
var (
	// defaultProcessingBuckets are the buckets of
	// shardline_processing_duration_seconds: 1ms to 1 minute.
	defaultProcessingBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// defaultDelayBuckets are the buckets of
	// shardline_arrival_to_processed_seconds: 50ms to 1 hour.
	defaultDelayBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	// callBuckets serve the durations of AWS calls (reads, checkpoints).
	callBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// Label names.
const (
	lStream = "stream"
	lWorker = "worker"
	lShard  = "shard"
)

// Metrics collects Prometheus metrics from a worker's hooks. Pass it in
// worker.Config.Hooks and serve [Metrics.Handler]. It is safe for concurrent
// use. A Metrics observes one worker: give each worker of a process its own
// (they may share a registry; their series differ by the worker label).
type Metrics struct {
	reg      prometheus.Registerer
	gatherer prometheus.Gatherer
	now      func() time.Time

	id atomic.Pointer[identity] // set by worker.EventWorkerStart

	lagMu      sync.Mutex
	lag        map[string]int64      // shard -> last MillisBehindLatest; guarded by lagMu
	arrivalLag map[string]*windowMax // shard -> ages of its batches' oldest records; guarded by lagMu

	// Per shard (stream, worker, shard).
	perShard     *shardCounters // records and bytes processed
	behindLatest *prometheus.GaugeVec
	shardStalled *prometheus.GaugeVec // reason
	stallMu      sync.Mutex           // orders the changes of shardStalled
	unownedMu    sync.Mutex
	unowned      map[string]time.Time // shard -> unowned since (EventShardUnowned); guarded by unownedMu

	// Per worker (stream, worker[, ...]).
	batchesProcessed   *prometheus.CounterVec
	processingDuration *prometheus.HistogramVec
	processorErrors    *prometheus.CounterVec // type
	processorRetries   *prometheus.CounterVec
	arrivalDelay       *prometheus.HistogramVec
	behindLatestMax    *prometheus.GaugeVec

	readCalls           *prometheus.CounterVec   // op
	readDuration        *prometheus.HistogramVec // op
	readRecords         *prometheus.CounterVec
	readBytes           *prometheus.CounterVec
	readErrors          *prometheus.CounterVec // kind
	readThrottles       *prometheus.CounterVec
	iteratorExpirations *prometheus.CounterVec

	leasesHeld      *prometheus.GaugeVec
	leasesTaken     *prometheus.CounterVec // how
	leasesStolen    *prometheus.CounterVec // how
	leasesLost      *prometheus.CounterVec // cause
	leasesReleased  *prometheus.CounterVec
	leasesHanded    *prometheus.CounterVec
	handoffRequests *prometheus.CounterVec
	renewFailures   *prometheus.CounterVec

	checkpointWrites   *prometheus.CounterVec
	checkpointFailures *prometheus.CounterVec // cause
	checkpointDuration *prometheus.HistogramVec

	shardsStarted *prometheus.CounterVec
	shardsStopped *prometheus.CounterVec // reason

	// Delivery policies (worker.DeliveryPolicy).
	filteredRecords *prometheus.CounterVec
	deadLetters     *prometheus.CounterVec
	bisects         *prometheus.CounterVec
	partialFailures *prometheus.CounterVec
	lanesBusy       *prometheus.GaugeVec
	lanesMu         sync.Mutex
	lanes           map[string]int // shard -> lanes busy; guarded by lanesMu

	// KPL de-aggregation and record decoding.
	kplAggregates, kplUserRecords, kplMalformed, kplDroppedAggregates, kplDroppedRecords, decodeFailures *prometheus.CounterVec

	all []prometheus.Collector

	// Computed from arrivalLag when scraped.
	behindArrival, behindArrivalMax *prometheus.Desc
	// Computed from unowned when scraped.
	unownedShard *prometheus.Desc
}

// identity is the worker a Metrics observes.
type identity struct {
	stream, worker string
}

// Option configures [New]. An option given an unusable value makes New fail
// with an error matching kcl.ErrInvalidConfig.
type Option func(*options) error

type options struct {
	reg        prometheus.Registerer
	processing []float64
	delay      []float64
}

// WithRegistry registers the metrics on reg instead of on a registry of
// their own. [Metrics.Handler] then serves reg if it is also a
// prometheus.Gatherer (a *prometheus.Registry is), so that the application's
// own metrics appear beside Shardline's; otherwise it serves Shardline's
// metrics only.
func WithRegistry(reg prometheus.Registerer) Option {
	return func(o *options) error {
		if reg == nil {
			return fmt.Errorf("%w: metrics: nil registry", kcl.ErrInvalidConfig)
		}
		o.reg = reg
		return nil
	}
}

// WithProcessingBuckets replaces the default processing buckets (seconds,
// strictly increasing, at least one).
func WithProcessingBuckets(buckets ...float64) Option {
	return func(o *options) error {
		if err := checkBuckets(buckets); err != nil {
			return fmt.Errorf("%w: metrics: processing buckets: %w", kcl.ErrInvalidConfig, err)
		}
		o.processing = buckets
		return nil
	}
}

// WithDelayBuckets replaces the default delay buckets (seconds, strictly
// increasing, at least one).
func WithDelayBuckets(buckets ...float64) Option {
	return func(o *options) error {
		if err := checkBuckets(buckets); err != nil {
			return fmt.Errorf("%w: metrics: delay buckets: %w", kcl.ErrInvalidConfig, err)
		}
		o.delay = buckets
		return nil
	}
}

func checkBuckets(b []float64) error {
	if len(b) == 0 {
		return errors.New("no bucket")
	}
	for i, v := range b {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("bucket %v is not a finite non-negative number", v)
		}
		if i > 0 && v <= b[i-1] {
			return fmt.Errorf("buckets are not strictly increasing at %v", v)
		}
	}
	return nil
}

// New returns a Metrics registered on its own registry, or on the one given
// with [WithRegistry]. It never starts a server: serve [Metrics.Handler]
// where the application wants it.
func New(opts ...Option) (*Metrics, error) {
	o := options{processing: slices.Clone(defaultProcessingBuckets), delay: slices.Clone(defaultDelayBuckets)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	m := &Metrics{now: time.Now, lag: map[string]int64{}, arrivalLag: map[string]*windowMax{}}
	if o.reg == nil {
		r := prometheus.NewRegistry()
		m.reg, m.gatherer = r, r
	} else {
		m.reg = o.reg
		if g, ok := o.reg.(prometheus.Gatherer); ok {
			m.gatherer = g
		}
	}
	m.build(o)
	c := collector{m}
	if err := m.reg.Register(c); err != nil {
		return nil, fmt.Errorf("metrics: register: %w", err)
	}
	if m.gatherer == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(c) // a fresh registry cannot refuse it
		m.gatherer = r
	}
	return m, nil
}

// Handler returns an http.Handler serving the metrics in the Prometheus
// exposition format, for the application to mount (e.g. on /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

func (m *Metrics) build(o options) {
	perShard := []string{lStream, lWorker, lShard}
	perWorker := []string{lStream, lWorker}
	with := func(extra string) []string { return []string{lStream, lWorker, extra} }
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.all = append(m.all, c)
		return c
	}
	gauge := func(name, help string, labels []string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		m.all = append(m.all, g)
		return g
	}
	histogram := func(name, help string, buckets []float64, labels []string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.all = append(m.all, h)
		return h
	}

	m.perShard = newShardCounters(
		prometheus.NewDesc("shardline_records_processed_total",
			"User records in batches the processor accepted (ProcessRecords returned nil).", perShard, nil),
		prometheus.NewDesc("shardline_bytes_processed_total",
			"Data bytes of the user records counted by shardline_records_processed_total.", perShard, nil))
	m.behindLatest = gauge("shardline_behind_latest_seconds",
		"How far the shard's last read was behind the tip of the shard (MillisBehindLatest / 1000).", perShard)
	m.shardStalled = gauge("shardline_shard_stalled",
		"1 while a shard the worker holds is stalled, by reason (bad-checkpoint, open-failing, processor-failing, checkpoint-failing, read-failing, no-progress); no series otherwise.",
		[]string{lStream, lWorker, lShard, "reason"})

	m.batchesProcessed = counter("shardline_batches_processed_total",
		"Batches the processor accepted.", perWorker)
	m.processingDuration = histogram("shardline_processing_duration_seconds",
		"Duration of every ProcessRecords call, failed or not.", o.processing, perWorker)
	m.processorErrors = counter("shardline_processor_errors_total",
		"ProcessRecords calls that failed, by type (error or panic); the batch is delivered again.", with("type"))
	m.processorRetries = counter("shardline_processor_retries_total",
		"Deliveries of a batch that had failed before (attempt 2 and later).", perWorker)
	m.arrivalDelay = histogram("shardline_arrival_to_processed_seconds",
		"Time from the arrival in Kinesis of each user record to the end of the successful processing of its batch (one observation per record).", o.delay, perWorker)
	m.behindLatestMax = gauge("shardline_behind_latest_max_seconds",
		"The largest shardline_behind_latest_seconds of the shards the worker processes (0 with none).", perWorker)

	m.readCalls = counter("shardline_read_calls_total",
		"Read calls to Kinesis (and enhanced fan-out events received) by operation, failed or not.", with("op"))
	m.readDuration = histogram("shardline_read_duration_seconds",
		"Duration of read calls to Kinesis by operation.", callBuckets, with("op"))
	m.readRecords = counter("shardline_read_records_total",
		"Kinesis records received, before KPL de-aggregation and filtering.", perWorker)
	m.readBytes = counter("shardline_read_bytes_total",
		"Data bytes of the Kinesis records received.", perWorker)
	m.readErrors = counter("shardline_read_errors_total",
		"Failed read calls by kind (transient, in_use, trimmed, not_found, fatal); throttles and iterator expirations are counted apart.", with("kind"))
	m.readThrottles = counter("shardline_read_throttles_total",
		"Read calls refused by Kinesis throttling (retried after a backoff).", perWorker)
	m.iteratorExpirations = counter("shardline_iterator_expirations_total",
		"Read calls that found their shard iterator expired (a new one is fetched).", perWorker)

	m.leasesHeld = gauge("shardline_leases_held",
		"Leases the worker holds.", perWorker)
	m.leasesTaken = counter("shardline_leases_taken_total",
		"Leases acquired that had no live owner, by how (take: new or expired; take-released: released by its owner).", with("how"))
	m.leasesStolen = counter("shardline_leases_stolen_total",
		"Leases acquired from a live owner for balance, by how (handoff: handed over; handoff-timeout: taken after the owner did not hand it over in time).", with("how"))
	m.leasesLost = counter("shardline_leases_lost_total",
		"Leases lost without giving them up, by cause (expired: not renewed in time; conflict: another worker took or changed it; other).", with("cause"))
	m.leasesReleased = counter("shardline_leases_released_total",
		"Leases given up to no one (shard end, failed start, a graceful stop with no other live worker).", perWorker)
	m.leasesHanded = counter("shardline_leases_handed_over_total",
		"Leases handed over to another worker (one that asked, or the planned survivor of a graceful stop).", perWorker)
	m.handoffRequests = counter("shardline_lease_handoff_requests_total",
		"Hand-overs this worker asked other workers for.", perWorker)
	m.renewFailures = counter("shardline_lease_renew_failures_total",
		"Lease renewals that failed for a reason other than a lost lease (retried until the lease's deadline).", perWorker)

	m.checkpointWrites = counter("shardline_checkpoint_writes_total",
		"Checkpoint writes to the lease table, failed or not.", perWorker)
	m.checkpointFailures = counter("shardline_checkpoint_failures_total",
		"Failed checkpoint writes by cause (lease_lost or other).", with("cause"))
	m.checkpointDuration = histogram("shardline_checkpoint_duration_seconds",
		"Duration of checkpoint writes.", callBuckets, perWorker)

	m.shardsStarted = counter("shardline_shards_started_total",
		"Shard consumers started.", perWorker)
	m.shardsStopped = counter("shardline_shards_stopped_total",
		"Shard consumers stopped, by reason (lease_lost, shutdown, handoff, shard_end, stopped, error).", with("reason"))

	m.filteredRecords = counter("shardline_delivery_filtered_records_total",
		"User records the delivery filter kept from the processor (they count as processed).", perWorker)
	m.deadLetters = counter("shardline_delivery_dead_letters_total",
		"User records given up on (MaxAttempts, MaxRecordAge) and accepted by the dead-letter handler.", perWorker)
	m.bisects = counter("shardline_delivery_bisects_total",
		"Failing batches split in halves (BisectOnError).", perWorker)
	m.partialFailures = counter("shardline_delivery_partial_failures_total",
		"Partial batch failures the processor reported (kcl.PartialFailureError) that moved past processed records.", perWorker)
	m.lanesBusy = gauge("shardline_delivery_lanes_busy",
		"Batches running at once in the lanes of the worker's shards (Parallelism).", perWorker)

	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, perWorker, nil)
	}
	m.kplAggregates = counter("shardline_kpl_aggregates_total", "KPL aggregated records unpacked.", perWorker)
	m.kplUserRecords = counter("shardline_kpl_user_records_total", "User records delivered from KPL aggregated records.", perWorker)
	m.kplMalformed = counter("shardline_kpl_malformed_aggregates_total",
		"Records with the KPL magic bytes that could not be unpacked (delivered raw, with DecodeErr).", perWorker)
	m.kplDroppedAggregates = counter("shardline_kpl_dropped_aggregates_total",
		"KPL aggregated records dropped because a user record's hash key lies outside the shard.", perWorker)
	m.kplDroppedRecords = counter("shardline_kpl_dropped_user_records_total",
		"User records inside the dropped KPL aggregated records.", perWorker)
	m.decodeFailures = counter("shardline_record_decode_failures_total",
		"User records the RecordDecoder failed on (delivered with DecodeErr).", perWorker)
	m.behindArrival = prometheus.NewDesc("shardline_behind_arrival_seconds",
		"The largest time from the arrival in Kinesis of a batch's oldest record to the end of its processing, over the shard's batches of the last 30 s (or its last batch).",
		perShard, nil)
	m.behindArrivalMax = desc("shardline_behind_arrival_max_seconds",
		"The largest shardline_behind_arrival_seconds of the shards the worker processes (0 with none).")
	m.unownedShard = prometheus.NewDesc("shardline_shard_unowned_seconds",
		"For each unfinished shard no live worker holds, as this worker sees it: seconds since its owner's heartbeat last moved, or since its lease was last seen changing when it has no owner (a lower bound).",
		perShard, nil)
}

// collector exposes a Metrics to a registry. It is unchecked (Describe
// sends nothing): the stream and worker label values are only known when the
// worker starts, and several Metrics may share a registry.
type collector struct{ m *Metrics }

// Describe implements prometheus.Collector.
func (collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, x := range c.m.all {
		x.Collect(ch)
	}
	id := c.m.id.Load()
	if id == nil {
		return
	}
	c.m.perShard.collect(ch, id.stream, id.worker)
	c.m.collectArrivalLag(ch, id)
	c.m.collectUnowned(ch, id)
}

// collectUnowned sends shardline_shard_unowned_seconds per shard.
func (m *Metrics) collectUnowned(ch chan<- prometheus.Metric, id *identity) {
	now := m.now()
	m.unownedMu.Lock()
	defer m.unownedMu.Unlock()
	for shard, since := range m.unowned {
		ch <- prometheus.MustNewConstMetric(m.unownedShard, prometheus.GaugeValue, max(0, now.Sub(since).Seconds()),
			shardLabelValues(id.stream, id.worker, shard)...)
	}
}

// onUnowned follows the shards the worker sees without a live owner.
func (m *Metrics) onUnowned(e worker.Event) {
	m.unownedMu.Lock()
	defer m.unownedMu.Unlock()
	if e.Kind == worker.EventShardOwned {
		delete(m.unowned, e.ShardID)
		return
	}
	if m.unowned == nil {
		m.unowned = map[string]time.Time{}
	}
	m.unowned[e.ShardID] = m.now().Add(-e.Duration)
}

// collectArrivalLag sends shardline_behind_arrival_seconds per shard and
// shardline_behind_arrival_max_seconds.
func (m *Metrics) collectArrivalLag(ch chan<- prometheus.Metric, id *identity) {
	now := m.now()
	var most time.Duration
	m.lagMu.Lock()
	defer m.lagMu.Unlock()
	for shard, wm := range m.arrivalLag {
		lag := wm.max(now)
		most = max(most, lag)
		ch <- prometheus.MustNewConstMetric(m.behindArrival, prometheus.GaugeValue, lag.Seconds(), shardLabelValues(id.stream, id.worker, shard)...)
	}
	ch <- prometheus.MustNewConstMetric(m.behindArrivalMax, prometheus.GaugeValue, most.Seconds(), id.stream, id.worker)
}

// shardLabels returns the stream and shard label values of a shard as the
// worker's hooks name it: a multi-stream worker names its shards by lease
// key (ACCOUNT:STREAM:EPOCH:SHARD), whose stream name and shard ID become the
// labels; otherwise stream (the worker's) and the shard ID as they are.
func shardLabels(stream, key string) (string, string) {
	if sid, shard, ok := ilease.SplitKey(key); ok && sid != "" {
		_, name, _, _ := ilease.ParseStreamIdentifier(sid)
		return name, shard
	}
	return stream, key
}

// shardLabelValues returns the label values of a per-shard series.
func shardLabelValues(stream, worker, key string) []string {
	s, shard := shardLabels(stream, key)
	return []string{s, worker, shard}
}

// ident returns the observed worker's identity (empty before it started).
func (m *Metrics) ident() *identity {
	if id := m.id.Load(); id != nil {
		return id
	}
	return &identity{}
}

// Bounded label values known in advance; their series are created at zero
// when the worker starts so that rate() and dashboards see them at once.
var (
	processorErrorTypes = []string{"error", "panic"}
	readErrorKinds      = []string{"transient", "in_use", "trimmed", "not_found", "fatal"}
	takeHows            = []string{"take", "take-released"}
	stealHows           = []string{"handoff", "handoff-timeout"}
	lostCauses          = []string{"expired", "conflict", "other"}
	checkpointCauses    = []string{"lease_lost", "other"}
	stopReasons         = []string{"lease_lost", "shutdown", "handoff", "shard_end", "stopped", "error"}
)

// OnEvent implements worker.Hook: it updates the metrics the event
// concerns.
func (m *Metrics) OnEvent(e worker.Event) {
	switch e.Kind {
	case worker.EventWorkerStart:
		m.onWorkerStart(e)
	case worker.EventBatchProcessed:
		m.onBatchProcessed(e)
	case worker.EventFetch:
		m.onFetch(e)
	case worker.EventAggregatesUnpacked, worker.EventAggregatesMalformed, worker.EventAggregatesDropped,
		worker.EventDecodeFailed:
		m.onRecordCounts(e)
	case worker.EventShardStarted, worker.EventShardStopped, worker.EventShardStalled, worker.EventShardRecovered:
		m.onShard(e)
	case worker.EventShardUnowned, worker.EventShardOwned:
		m.onUnowned(e)
	case worker.EventLeaseAcquired, worker.EventLeaseLost, worker.EventLeaseReleased, worker.EventLeaseHandedOver,
		worker.EventHandoffRequested, worker.EventLeaseRenewFailed:
		m.onLease(e)
	case worker.EventCheckpoint:
		m.onCheckpoint(e)
	case worker.EventRecordsFiltered, worker.EventPartialFailure, worker.EventBisect, worker.EventDeadLetter,
		worker.EventLanesBusy:
		m.onDelivery(e)
	}
}

// onWorkerStart takes the stream and worker labels from e and creates the
// worker's series at zero.
func (m *Metrics) onWorkerStart(e worker.Event) {
	id := &identity{stream: e.Stream, worker: e.WorkerID}
	m.id.Store(id)
	s, w := id.stream, id.worker
	for _, c := range []*prometheus.CounterVec{m.batchesProcessed, m.processorRetries, m.readRecords, m.readBytes,
		m.readThrottles, m.iteratorExpirations, m.leasesReleased, m.leasesHanded, m.handoffRequests,
		m.renewFailures, m.checkpointWrites, m.shardsStarted,
		m.filteredRecords, m.deadLetters, m.bisects, m.partialFailures,
		m.kplAggregates, m.kplUserRecords, m.kplMalformed, m.kplDroppedAggregates, m.kplDroppedRecords,
		m.decodeFailures} {
		c.WithLabelValues(s, w)
	}
	for c, values := range map[*prometheus.CounterVec][]string{
		m.processorErrors: processorErrorTypes, m.readErrors: readErrorKinds, m.leasesTaken: takeHows,
		m.leasesStolen: stealHows, m.leasesLost: lostCauses, m.checkpointFailures: checkpointCauses,
		m.shardsStopped: stopReasons,
	} {
		for _, v := range values {
			c.WithLabelValues(s, w, v)
		}
	}
	// The per-worker histograms too: a series that first appears with
	// observations in it loses them to increase() and rate().
	m.processingDuration.WithLabelValues(s, w)
	m.arrivalDelay.WithLabelValues(s, w)
	m.leasesHeld.WithLabelValues(s, w).Set(0)
	m.lanesBusy.WithLabelValues(s, w).Set(0)
	m.lagMu.Lock()
	m.setMaxLocked(id)
	m.lagMu.Unlock()
}

// onBatchProcessed counts one ProcessRecords call.
func (m *Metrics) onBatchProcessed(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	m.processingDuration.WithLabelValues(s, w).Observe(e.Duration.Seconds())
	if e.Attempt > 1 {
		m.processorRetries.WithLabelValues(s, w).Inc()
	}
	if e.Err != nil {
		typ := "error"
		var pe *kcl.ProcessorPanicError
		if errors.As(e.Err, &pe) {
			typ = "panic"
		}
		m.processorErrors.WithLabelValues(s, w, typ).Inc()
		return
	}
	m.batchesProcessed.WithLabelValues(s, w).Inc()
	m.perShard.add(e.ShardID, float64(e.Records), float64(e.Bytes))
	// Delays are clamped at 0: arrival times come from AWS's clock.
	now := m.now()
	delay := m.arrivalDelay.WithLabelValues(s, w)
	for _, at := range e.Arrivals {
		if !at.IsZero() {
			delay.Observe(max(0, now.Sub(at).Seconds()))
		}
	}
	var oldest time.Duration
	if len(e.Arrivals) > 0 && !e.Arrivals[0].IsZero() {
		oldest = max(0, now.Sub(e.Arrivals[0]))
	}
	m.lagMu.Lock()
	wm := m.arrivalLag[e.ShardID]
	if wm == nil {
		wm = new(windowMax)
		m.arrivalLag[e.ShardID] = wm
	}
	wm.add(now, oldest)
	m.lagMu.Unlock()
}

// onFetch counts one read call.
func (m *Metrics) onFetch(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	m.readCalls.WithLabelValues(s, w, e.Op).Inc()
	m.readDuration.WithLabelValues(s, w, e.Op).Observe(e.Duration.Seconds())
	if e.Err != nil {
		kind := e.Reason
		if kind == "" { // the worker always classifies; an unclassified error is retried
			kind = "transient"
		}
		switch kind {
		case "throttled":
			m.readThrottles.WithLabelValues(s, w).Inc()
		case "expired_iterator":
			m.iteratorExpirations.WithLabelValues(s, w).Inc()
		default:
			m.readErrors.WithLabelValues(s, w, kind).Inc()
		}
		return
	}
	m.readRecords.WithLabelValues(s, w).Add(float64(e.Records))
	m.readBytes.WithLabelValues(s, w).Add(float64(e.Bytes))
	switch e.Op {
	case "GetRecords", "SubscribeToShardEvent": // the reads that report the shard's lag
		m.lagMu.Lock()
		m.lag[e.ShardID] = e.MillisBehindLatest
		m.behindLatest.WithLabelValues(shardLabelValues(s, w, e.ShardID)...).Set(float64(e.MillisBehindLatest) / 1000)
		m.setMaxLocked(id)
		m.lagMu.Unlock()
	}
}

// setMaxLocked sets shardline_behind_latest_max_seconds. m.lagMu is held.
func (m *Metrics) setMaxLocked(id *identity) {
	var most int64
	for _, ms := range m.lag {
		most = max(most, ms)
	}
	m.behindLatestMax.WithLabelValues(id.stream, id.worker).Set(float64(most) / 1000)
}

// onShard follows the shard consumers. When a shard consumer stops, the
// shard's series are removed: the worker no longer reports on it, and the
// series of the shards a worker does not own would otherwise accumulate and
// keep reporting a stale lag. The lag gauges go at once; the records and
// bytes counters after the next scrape (see shardCounters).
func (m *Metrics) onShard(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	switch e.Kind {
	case worker.EventShardStarted:
		m.shardsStarted.WithLabelValues(s, w).Inc()
		m.perShard.start(e.ShardID)
	case worker.EventShardStopped:
		m.shardsStopped.WithLabelValues(s, w, e.Reason).Inc()
		m.lagMu.Lock()
		delete(m.lag, e.ShardID)
		delete(m.arrivalLag, e.ShardID)
		m.behindLatest.DeleteLabelValues(shardLabelValues(s, w, e.ShardID)...)
		m.perShard.stop(e.ShardID)
		m.setMaxLocked(id)
		m.lagMu.Unlock()
		m.setLanes(id, e.ShardID, 0)
		m.setStalled(id, e.ShardID, "")
	case worker.EventShardStalled:
		m.setStalled(id, e.ShardID, e.Reason)
	case worker.EventShardRecovered:
		m.setStalled(id, e.ShardID, "")
	}
}

// setStalled sets shardline_shard_stalled of a shard: one series of value
// 1 for its reason, none when it is not stalled.
func (m *Metrics) setStalled(id *identity, key, reason string) {
	stream, shard := shardLabels(id.stream, key)
	m.stallMu.Lock()
	defer m.stallMu.Unlock()
	m.shardStalled.DeletePartialMatch(prometheus.Labels{lStream: stream, lWorker: id.worker, lShard: shard})
	if reason != "" {
		m.shardStalled.WithLabelValues(stream, id.worker, shard, reason).Set(1)
	}
}

// onLease follows the lease changes. shardline_leases_held goes up by one
// for every acquisition and down by one for every loss, release and
// hand-over, so it follows the leases the worker holds.
func (m *Metrics) onLease(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	switch e.Kind {
	case worker.EventLeaseAcquired:
		m.leasesHeld.WithLabelValues(s, w).Inc()
		switch e.Reason {
		case "handoff", "handoff-timeout":
			m.leasesStolen.WithLabelValues(s, w, e.Reason).Inc()
		default:
			m.leasesTaken.WithLabelValues(s, w, e.Reason).Inc()
		}
	case worker.EventLeaseLost:
		m.leasesHeld.WithLabelValues(s, w).Dec()
		m.leasesLost.WithLabelValues(s, w, e.Reason).Inc()
	case worker.EventLeaseReleased:
		m.leasesHeld.WithLabelValues(s, w).Dec()
		m.leasesReleased.WithLabelValues(s, w).Inc()
	case worker.EventLeaseHandedOver:
		m.leasesHeld.WithLabelValues(s, w).Dec()
		m.leasesHanded.WithLabelValues(s, w).Inc()
	case worker.EventHandoffRequested:
		m.handoffRequests.WithLabelValues(s, w).Inc()
	case worker.EventLeaseRenewFailed:
		m.renewFailures.WithLabelValues(s, w).Inc()
	}
}

// onRecordCounts counts what KPL de-aggregation and decoding met.
func (m *Metrics) onRecordCounts(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	switch e.Kind {
	case worker.EventAggregatesUnpacked:
		m.kplAggregates.WithLabelValues(s, w).Add(float64(e.Aggregates))
		m.kplUserRecords.WithLabelValues(s, w).Add(float64(e.Records))
	case worker.EventAggregatesMalformed:
		m.kplMalformed.WithLabelValues(s, w).Add(float64(e.Aggregates))
	case worker.EventAggregatesDropped:
		m.kplDroppedAggregates.WithLabelValues(s, w).Add(float64(e.Aggregates))
		m.kplDroppedRecords.WithLabelValues(s, w).Add(float64(e.Records))
	case worker.EventDecodeFailed:
		m.decodeFailures.WithLabelValues(s, w).Add(float64(e.Records))
	}
}

// onCheckpoint counts one checkpoint write.
func (m *Metrics) onCheckpoint(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	m.checkpointWrites.WithLabelValues(s, w).Inc()
	m.checkpointDuration.WithLabelValues(s, w).Observe(e.Duration.Seconds())
	if e.Err != nil {
		cause := "other"
		if errors.Is(e.Err, kcl.ErrLeaseLost) {
			cause = "lease_lost"
		}
		m.checkpointFailures.WithLabelValues(s, w, cause).Inc()
	}
}

// onDelivery counts the actions of the delivery policies.
func (m *Metrics) onDelivery(e worker.Event) {
	id := m.ident()
	s, w := id.stream, id.worker
	switch e.Kind {
	case worker.EventRecordsFiltered:
		m.filteredRecords.WithLabelValues(s, w).Add(float64(e.Records))
	case worker.EventDeadLetter:
		m.deadLetters.WithLabelValues(s, w).Add(float64(e.Records))
	case worker.EventBisect:
		m.bisects.WithLabelValues(s, w).Inc()
	case worker.EventPartialFailure:
		m.partialFailures.WithLabelValues(s, w).Inc()
	case worker.EventLanesBusy:
		m.setLanes(id, e.ShardID, e.LanesBusy)
	}
}

// setLanes records the busy lanes of one shard and publishes the worker's
// total.
func (m *Metrics) setLanes(id *identity, shard string, busy int) {
	m.lanesMu.Lock()
	defer m.lanesMu.Unlock()
	if m.lanes == nil {
		m.lanes = map[string]int{}
	}
	if busy == 0 {
		delete(m.lanes, shard)
	} else {
		m.lanes[shard] = busy
	}
	total := 0
	for _, n := range m.lanes {
		total += n
	}
	m.lanesBusy.WithLabelValues(id.stream, id.worker).Set(float64(total))
}
