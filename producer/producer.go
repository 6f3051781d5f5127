// Package producer writes records to a Kinesis stream the way the Kinesis
// documentation advises for throughput: it buffers records, sends them in
// PutRecords calls of up to 500 records / 5 MiB, runs several calls in
// parallel, and retries only the records a call reports as failed, with
// exponential backoff. Optionally it packs small records into KPL aggregated
// records (Config.Aggregate), keeps each partition key's records in order
// (Config.KeepOrder) and transforms each record's data (Config.Encoder, for
// client-side encryption).
//
// Every record Put accepts gets an outcome in its [Result]: where Kinesis
// stored it, or why it could not be written. [Producer.Flush] waits for the
// outcomes of everything accepted before it; [Producer.Close] does the same
// and then stops.
//
// # Concurrency
//
// Put, PutWithHashKey, Flush and Stats are safe for concurrent use. One
// dispatcher goroutine cuts batches and starts one goroutine per PutRecords
// call (at most Config.MaxInFlight); a call's goroutine also performs its
// retries. Close joins them all. One mutex guards the buffers; no call to
// Kinesis or to the Encoder is made while holding it.
package producer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/kpl"
)

// maxRequeues bounds how often a record is re-aggregated because Kinesis put
// its aggregate on a shard the shard map did not predict.
const maxRequeues = 8

// Producer batches records into PutRecords calls. Create it with [New] and
// stop it with [Producer.Close].
type Producer struct {
	cfg    Config
	log    *slog.Logger
	shards *shardMapper
	ctx    context.Context // cancelled when Close gives up: in-flight calls end
	cancel context.CancelFunc
	wake   chan struct{} // nudges the dispatcher
	wg     sync.WaitGroup
	stats  counters

	mu        sync.Mutex
	closing   bool
	aborted   error         // set when Close's context ended: what unwritten records fail with
	closeDone chan struct{} // closed when Close has finished
	closeErr  error

	fifo  entryQueue             // unordered mode: entries ready to send
	units map[string]*entryQueue // KeepOrder: entries per ordering unit
	ready []string               // KeepOrder: units with entries and nothing in flight
	busy  map[string]bool        // KeepOrder: units with an entry in flight
	open  map[string]*openAgg    // Aggregate: the aggregate being filled, per shard

	queued, queuedBytes int       // entries ready to send, and their size
	lingerSince         time.Time // when the oldest unsent record arrived; zero when none waits
	inFlight            int
	flushers            int

	buffered, bufferedBytes int            // accepted records without an outcome
	epoch                   uint64         // incremented by each Flush
	outstanding             map[uint64]int // accepted records without an outcome, per epoch
	changed                 chan struct{}  // closed and replaced when outcomes arrive
}

// record is one user record.
type record struct {
	pk, ehk  string
	data     []byte // after the encoder
	hash     hashkey.Key
	size     int // len(data) + len(pk)
	res      *Result
	epoch    uint64
	attempts int
	requeues int
}

// entry is one entry of a PutRecords call: a plain record or an aggregate.
type entry struct {
	pk, ehk  string
	data     []byte          // for an aggregate, encoded when first sent
	agg      *kpl.Aggregator // nil for a plain record
	recs     []*record
	shard    string    // the shard predicted for an aggregate
	shardMap *shardMap // the map that predicted it
	unit     string    // KeepOrder: the ordering unit
	size     int       // bytes counted against the call's limit
	firstTry time.Time
	code     string // last per-entry error
	message  string
	lastErr  error
}

// openAgg is an aggregate being filled.
type openAgg struct {
	shard    string
	shardMap *shardMap
	agg      kpl.Aggregator
	recs     []*record
}

// counters back Stats.
type counters struct {
	accepted, written, failed, requests, retried, aggregates, aggregated, wrongShard atomic.Int64
}

// Stats are running totals of a producer's work.
type Stats struct {
	// Written counts user records Kinesis stored, and Failed those whose
	// Result reports an error.
	Written, Failed int64
	// Retried counts PutRecords entries sent again after a failure
	// (throttling, internal errors): a rising rate means the stream is
	// short of capacity.
	Retried int64
	// Buffered is the number of accepted records without an outcome yet.
	Buffered int
}

// totals are every running total of a producer; tests read them.
type totals struct {
	accepted, written, failed, requests, retried, aggregates, aggregated, wrongShard, shardMapLoads int64
	buffered                                                                                        int
}

// New validates cfg and returns a running producer. It does not contact
// AWS: with aggregation the shard map is loaded by the first Put.
func New(cfg Config) (*Producer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{
		cfg:         cfg,
		log:         cfg.Logger.With(slog.String("stream", cfg.stream())),
		ctx:         ctx,
		cancel:      cancel,
		wake:        make(chan struct{}, 1),
		closeDone:   make(chan struct{}),
		units:       make(map[string]*entryQueue),
		busy:        make(map[string]bool),
		open:        make(map[string]*openAgg),
		outstanding: make(map[uint64]int),
		changed:     make(chan struct{}),
	}
	p.shards = &shardMapper{client: cfg.Client, cfg: &p.cfg}
	p.wg.Add(1)
	go p.dispatch()
	return p, nil
}

// Put accepts a record for the stream and returns its Result. The record's
// partition key picks its shard (by MD5 hash, as Kinesis does). Put copies
// data (or passes it to the Encoder), so the caller may reuse it.
//
// Put fails at once, accepting nothing, for a record over the service
// limits (ErrInvalidRecord), an Encoder error
// (ErrEncode), after Close (ErrClosed), or with aggregation when the shard
// map cannot be loaded. It blocks while the buffer is full
// (Config.MaxBufferedRecords, MaxBufferedBytes) until there is room or ctx
// ends.
func (p *Producer) Put(ctx context.Context, partitionKey string, data []byte) (*Result, error) {
	return p.put(ctx, partitionKey, "", data)
}

// PutWithHashKey is Put with an explicit hash key (a decimal number from 0
// to 2^128-1) that picks the shard instead of the partition key's hash.
func (p *Producer) PutWithHashKey(ctx context.Context, partitionKey, explicitHashKey string, data []byte) (*Result, error) {
	if explicitHashKey == "" {
		return nil, fmt.Errorf("%w: empty explicit hash key", ErrInvalidRecord)
	}
	return p.put(ctx, partitionKey, explicitHashKey, data)
}

func (p *Producer) put(ctx context.Context, pk, ehk string, data []byte) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case pk == "":
		return nil, fmt.Errorf("%w: empty partition key", ErrInvalidRecord)
	case !utf8.ValidString(pk):
		return nil, fmt.Errorf("%w: partition key not UTF-8", ErrInvalidRecord)
	case utf8.RuneCountInString(pk) > maxPartitionKeyLength:
		return nil, fmt.Errorf("%w: partition key of %d characters, at most %d", ErrInvalidRecord, utf8.RuneCountInString(pk), maxPartitionKeyLength)
	}
	rec := &record{pk: pk, ehk: ehk}
	if ehk != "" {
		k, err := hashkey.Parse(ehk)
		if err != nil {
			return nil, fmt.Errorf("%w: explicit hash key %q is not a decimal number from 0 to 2^128-1", ErrInvalidRecord, ehk)
		}
		rec.hash = k
	} else if p.cfg.Aggregate {
		rec.hash = hashkey.FromPartitionKey(pk)
	}
	if enc := p.cfg.Encoder; enc != nil {
		out, err := enc(ctx, pk, data)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrEncode, err)
		}
		rec.data = out
	} else {
		rec.data = append(make([]byte, 0, len(data)), data...)
	}
	rec.size = len(rec.data) + len(pk)
	if rec.size > maxRecordSize {
		return nil, fmt.Errorf("%w: larger than 1 MiB: %d bytes of data and %d of partition key", ErrInvalidRecord, len(rec.data), len(pk))
	}
	var m *shardMap
	if p.cfg.Aggregate {
		var err error
		if m, err = p.shards.get(ctx); err != nil {
			return nil, err
		}
	}
	rec.res = newResult()

	p.mu.Lock()
	for !p.closing && p.buffered > 0 &&
		(p.buffered >= p.cfg.MaxBufferedRecords || p.bufferedBytes+rec.size > p.cfg.MaxBufferedBytes) {
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p.mu.Lock()
	}
	if p.closing {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.buffered++
	p.bufferedBytes += rec.size
	rec.epoch = p.epoch
	p.outstanding[rec.epoch]++
	p.stats.accepted.Add(1)
	wasIdle := p.lingerSince.IsZero()
	if wasIdle {
		p.lingerSince = time.Now()
	}
	p.enqueue(rec, m)
	full := p.queued >= p.cfg.MaxBatchRecords || p.queuedBytes >= maxBatchBytesLimit
	p.mu.Unlock()
	if wasIdle || full || p.cfg.Linger < 0 {
		p.signal()
	}
	return rec.res, nil
}

// signal wakes the dispatcher.
func (p *Producer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueue routes an accepted record to its aggregate or the send queue.
// Called with p.mu held.
func (p *Producer) enqueue(rec *record, m *shardMap) {
	if !p.cfg.Aggregate {
		p.push(p.plainEntry(rec, rec.pk), false)
		return
	}
	shard, ok := "", false
	if m != nil {
		shard, ok = m.lookup(rec.hash)
	}
	if !ok {
		// No open shard holds the key in this map (it changed under us):
		// send the record on its own, Kinesis routes it.
		p.push(p.plainEntry(rec, "key:"+rec.pk), false)
		return
	}
	ur := kpl.Record{PartitionKey: rec.pk, ExplicitHashKey: rec.ehk, Data: rec.data}
	a := p.open[shard]
	if a != nil && !p.fits(a.agg.SizeWith(ur), a.recs[0].pk) {
		p.seal(shard)
		a = nil
	}
	if a == nil {
		var alone kpl.Aggregator
		if !p.fits(alone.SizeWith(ur), rec.pk) {
			p.push(p.plainEntry(rec, shard), false)
			return
		}
		a = &openAgg{shard: shard, shardMap: m}
		p.open[shard] = a
	}
	a.agg.Add(ur)
	a.recs = append(a.recs, rec)
}

// fits reports whether an aggregate of aggSize bytes keyed by pk respects
// both the configured aggregate size and the record limit.
func (p *Producer) fits(aggSize int, pk string) bool {
	return aggSize <= p.cfg.AggregationMaxBytes && aggSize+len(pk) <= maxRecordSize
}

func (p *Producer) plainEntry(rec *record, unit string) *entry {
	return &entry{pk: rec.pk, ehk: rec.ehk, data: rec.data, recs: []*record{rec}, unit: unit, size: rec.size}
}

// seal closes the shard's open aggregate and queues it. Called with p.mu held.
func (p *Producer) seal(shard string) {
	a := p.open[shard]
	if a == nil {
		return
	}
	delete(p.open, shard)
	first := a.recs[0]
	p.push(&entry{
		pk: first.pk, ehk: first.ehk, agg: &a.agg, recs: a.recs,
		shard: shard, shardMap: a.shardMap, unit: shard, size: a.agg.Size() + len(first.pk),
	}, false)
}

// push queues an entry, at the front for one that must go before newer
// entries of its unit. Called with p.mu held.
func (p *Producer) push(e *entry, front bool) {
	p.queued++
	p.queuedBytes += e.size
	if !p.cfg.KeepOrder {
		if front {
			p.fifo.pushFront(e)
		} else {
			p.fifo.push(e)
		}
		return
	}
	q := p.units[e.unit]
	if q == nil {
		q = &entryQueue{}
		p.units[e.unit] = q
	}
	if q.len() == 0 && !p.busy[e.unit] {
		p.ready = append(p.ready, e.unit)
	}
	if front {
		q.pushFront(e)
	} else {
		q.push(e)
	}
}

// cut takes the next batch off the queues. Called with p.mu held.
func (p *Producer) cut() []*entry {
	var batch []*entry
	bytes := 0
	if !p.cfg.KeepOrder {
		for p.fifo.len() > 0 && len(batch) < p.cfg.MaxBatchRecords {
			e := p.fifo.peek()
			if bytes+e.size > maxBatchBytesLimit {
				break
			}
			p.fifo.pop()
			batch = append(batch, e)
			bytes += e.size
		}
	} else {
		var skipped []string
		i := 0
		for ; i < len(p.ready) && len(batch) < p.cfg.MaxBatchRecords; i++ {
			u := p.ready[i]
			q := p.units[u]
			e := q.peek()
			if bytes+e.size > maxBatchBytesLimit {
				skipped = append(skipped, u)
				continue
			}
			q.pop()
			if q.len() == 0 {
				delete(p.units, u)
			}
			p.busy[u] = true
			batch = append(batch, e)
			bytes += e.size
		}
		p.ready = append(skipped, p.ready[i:]...)
	}
	p.queued -= len(batch)
	p.queuedBytes -= bytes
	return batch
}

// release ends an entry's hold on its ordering unit. Called with p.mu held.
func (p *Producer) release(e *entry) {
	if !p.cfg.KeepOrder || !p.busy[e.unit] {
		return
	}
	delete(p.busy, e.unit)
	if q := p.units[e.unit]; q != nil && q.len() > 0 {
		p.ready = append(p.ready, e.unit)
	}
}

// dispatch is the dispatcher goroutine: it seals aggregates and starts
// PutRecords calls when a batch is full, when the oldest record has
// lingered long enough, or when a Flush or Close asks.
func (p *Producer) dispatch() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		p.mu.Lock()
		if p.aborted != nil {
			p.failQueuedLocked(p.aborted)
		}
		now := time.Now()
		force := p.flushers > 0 || p.closing
		due := force || (!p.lingerSince.IsZero() && now.Sub(p.lingerSince) >= p.cfg.Linger)
		if due {
			for shard := range p.open {
				p.seal(shard)
			}
		}
		for p.inFlight < p.cfg.MaxInFlight && p.queued > 0 &&
			(due || p.queued >= p.cfg.MaxBatchRecords || p.queuedBytes >= maxBatchBytesLimit) {
			batch := p.cut()
			if len(batch) == 0 {
				break // KeepOrder: every unit with entries has one in flight
			}
			p.inFlight++
			p.wg.Add(1)
			go p.send(batch)
		}
		if p.queued == 0 && len(p.open) == 0 {
			p.lingerSince = time.Time{}
		}
		exit := p.closing && p.buffered == 0 && p.inFlight == 0
		wait := time.Duration(-1)
		if !due && !p.lingerSince.IsZero() {
			wait = p.lingerSince.Add(p.cfg.Linger).Sub(now)
		}
		p.mu.Unlock()
		if exit {
			return
		}
		if wait >= 0 {
			timer.Reset(wait)
			select {
			case <-p.wake:
			case <-timer.C:
			}
			timer.Stop()
		} else {
			<-p.wake
		}
	}
}

// failQueuedLocked fails every record not in flight. Called with p.mu held.
func (p *Producer) failQueuedLocked(err error) {
	var recs []*record
	for shard, a := range p.open {
		recs = append(recs, a.recs...)
		delete(p.open, shard)
	}
	for p.fifo.len() > 0 {
		recs = append(recs, p.fifo.pop().recs...)
	}
	for u, q := range p.units {
		for q.len() > 0 {
			recs = append(recs, q.pop().recs...)
		}
		delete(p.units, u)
	}
	p.ready = nil
	p.queued, p.queuedBytes = 0, 0
	for _, r := range recs {
		p.resolveLocked(r, Receipt{Attempts: r.attempts}, &PutError{Attempts: r.attempts, Err: err})
	}
	if len(recs) > 0 {
		p.broadcastLocked()
	}
}

// resolveLocked records a record's outcome. Called with p.mu held; the
// caller broadcasts.
func (p *Producer) resolveLocked(r *record, rc Receipt, err error) {
	r.res.receipt, r.res.err = rc, err
	close(r.res.done)
	p.buffered--
	p.bufferedBytes -= r.size
	if p.outstanding[r.epoch]--; p.outstanding[r.epoch] == 0 {
		delete(p.outstanding, r.epoch)
	}
	if err != nil {
		p.stats.failed.Add(1)
	} else {
		p.stats.written.Add(1)
	}
}

// broadcastLocked wakes everyone waiting for outcomes. Called with p.mu
// held.
func (p *Producer) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// outcome is the fate of one entry after a call.
type outcome struct {
	e       *entry
	shard   string
	seq     string
	err     error // final error; nil with seq set: written
	requeue bool  // re-aggregate its records
}

// send performs one PutRecords call and its retries.
func (p *Producer) send(entries []*entry) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
		p.signal()
	}()
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.cfg.backoffInitial),
		backoff.WithMaxInterval(p.cfg.backoffMax),
		backoff.WithMaxElapsedTime(0),
	)
	for len(entries) > 0 {
		now := time.Now()
		for _, e := range entries {
			if e.agg != nil && e.data == nil {
				// An aggregate always has records, the only reason Marshal
				// fails; were it to, Kinesis would refuse the empty entry
				// and the records fail with its error.
				e.data, _ = e.agg.Marshal()
			}
			if e.firstTry.IsZero() {
				e.firstTry = now
			}
			for _, r := range e.recs {
				r.attempts++
			}
		}
		p.stats.requests.Add(1)
		out, err := p.cfg.Client.PutRecords(p.ctx, p.request(entries))
		var results []outcome
		var retry, wrong []*entry
		switch {
		case err != nil && p.ctx.Err() != nil:
			p.finish(p.failAll(entries, p.abortErr()))
			return
		case err != nil && !retryableCall(err):
			p.log.Warn("producer: PutRecords refused; records failed", slog.Int("entries", len(entries)), slog.Any("error", err))
			p.finish(p.failAll(entries, err))
			return
		case err != nil:
			for _, e := range entries {
				e.code, e.message, e.lastErr = "", "", err
			}
			retry = entries
		case len(out.Records) != len(entries):
			err = fmt.Errorf("PutRecords answered %d entries for %d", len(out.Records), len(entries))
			for _, e := range entries {
				e.code, e.message, e.lastErr = "", "", err
			}
			retry = entries
		default:
			for i, res := range out.Records {
				e := entries[i]
				if res.ErrorCode != nil {
					e.code, e.message = aws.ToString(res.ErrorCode), aws.ToString(res.ErrorMessage)
					e.lastErr = &entryError{code: e.code, message: e.message}
					if !retryableEntryCode(e.code) {
						results = append(results, outcome{e: e, err: p.putError(e, fmt.Errorf("%w: %w", ErrRejected, e.lastErr))})
						continue
					}
					retry = append(retry, e)
					continue
				}
				o := outcome{e: e, shard: aws.ToString(res.ShardId), seq: aws.ToString(res.SequenceNumber)}
				if e.agg != nil && e.shard != "" && o.shard != e.shard {
					wrong = append(wrong, e)
				}
				results = append(results, o)
			}
		}
		if len(wrong) > 0 {
			results = p.checkWrongShard(results)
		}
		var again []*entry
		for _, e := range retry {
			if time.Since(e.firstTry) >= p.cfg.RetryTimeout {
				results = append(results, outcome{e: e, err: p.putError(e,
					fmt.Errorf("%w after %v: %w", ErrRetryTimeout, p.cfg.RetryTimeout, e.lastErr))})
				continue
			}
			again = append(again, e)
		}
		p.finish(results)
		if len(again) == 0 {
			return
		}
		p.stats.retried.Add(int64(len(again)))
		delay := bo.NextBackOff()
		p.log.Debug("producer: retrying failed entries", slog.Int("entries", len(again)),
			slog.Duration("backoff", delay), slog.Any("error", again[0].lastErr))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			p.finish(p.failAll(again, p.abortErr()))
			return
		}
		entries = again
	}
}

// checkWrongShard handles aggregates Kinesis stored on another shard than
// predicted: the shard map is refreshed, and an aggregate stays written
// only if every user record in it belongs to the shard it landed on.
// Otherwise consumers drop it (as the KCL does) and its records are
// aggregated again from the fresh map.
func (p *Producer) checkWrongShard(results []outcome) []outcome {
	var stale *shardMap
	for _, o := range results {
		if o.err == nil && o.e.agg != nil && o.e.shard != "" && o.shard != o.e.shard {
			stale = o.e.shardMap
			break
		}
	}
	m, err := p.shards.refresh(p.ctx, stale)
	if err != nil {
		p.log.Warn("producer: shard map refresh failed", slog.Any("error", err))
	}
	for i, o := range results {
		if o.err != nil || o.e.agg == nil || o.e.shard == "" || o.shard == o.e.shard {
			continue
		}
		p.stats.wrongShard.Add(1)
		inRange := false
		if m != nil {
			if r, ok := m.all[o.shard]; ok {
				inRange = true
				for _, rec := range o.e.recs {
					if !r.Contains(rec.hash) {
						inRange = false
						break
					}
				}
			}
		}
		if !inRange {
			p.log.Info("producer: aggregate stored on an unexpected shard; its records are sent again",
				slog.String("predicted", o.e.shard), slog.String("actual", o.shard), slog.Int("records", len(o.e.recs)))
			results[i].requeue = true
		}
	}
	return results
}

// finish applies outcomes: written records get receipts, failed ones their
// errors, requeued ones go back to the aggregators; their units are released.
func (p *Producer) finish(results []outcome) {
	if len(results) == 0 {
		return
	}
	failed := 0
	var firstErr error
	p.mu.Lock()
	for _, o := range results {
		e := o.e
		switch {
		case o.requeue:
			p.requeueLocked(e)
		case o.err != nil:
			for _, r := range e.recs {
				p.resolveLocked(r, Receipt{Attempts: r.attempts}, o.err)
			}
			failed += len(e.recs)
			if firstErr == nil {
				firstErr = o.err
			}
		default:
			if e.agg != nil {
				p.stats.aggregates.Add(1)
				p.stats.aggregated.Add(int64(len(e.recs)))
			}
			for i, r := range e.recs {
				p.resolveLocked(r, Receipt{ShardID: o.shard, SequenceNumber: o.seq, SubSequenceNumber: int64(i),
					Aggregated: e.agg != nil, Attempts: r.attempts}, nil)
			}
		}
		p.release(e)
	}
	p.broadcastLocked()
	p.mu.Unlock()
	if failed > 0 {
		p.log.Warn("producer: records not written", slog.Int("records", failed), slog.Any("error", firstErr))
	}
	p.signal()
}

// requeueLocked aggregates an entry's records again, ahead of newer records
// of the same units. Called with p.mu held.
func (p *Producer) requeueLocked(e *entry) {
	m := p.shards.current()
	var fresh []*entry
	groups := map[string]*openAgg{}
	for _, r := range e.recs {
		if r.requeues++; r.requeues > maxRequeues {
			p.resolveLocked(r, Receipt{Attempts: r.attempts},
				&PutError{Attempts: r.attempts, Err: fmt.Errorf("%w: the shard map keeps disagreeing with where Kinesis stores records", ErrRetryTimeout)})
			continue
		}
		shard, ok := "", false
		if m != nil {
			shard, ok = m.lookup(r.hash)
		}
		if !ok {
			fresh = append(fresh, p.plainEntry(r, "key:"+r.pk))
			continue
		}
		ur := kpl.Record{PartitionKey: r.pk, ExplicitHashKey: r.ehk, Data: r.data}
		a := groups[shard]
		if a != nil && !p.fits(a.agg.SizeWith(ur), a.recs[0].pk) {
			fresh = append(fresh, p.sealed(a))
			a = nil
		}
		if a == nil {
			var alone kpl.Aggregator
			if !p.fits(alone.SizeWith(ur), r.pk) {
				fresh = append(fresh, p.plainEntry(r, shard))
				continue
			}
			a = &openAgg{shard: shard, shardMap: m}
			groups[shard] = a
		}
		a.agg.Add(ur)
		a.recs = append(a.recs, r)
	}
	for _, a := range groups {
		fresh = append(fresh, p.sealed(a))
	}
	// Pushed to the front in reverse, they keep their order ahead of what
	// was queued meanwhile.
	for i := len(fresh) - 1; i >= 0; i-- {
		p.push(fresh[i], true)
	}
	if len(fresh) > 0 && p.lingerSince.IsZero() {
		p.lingerSince = time.Now()
	}
}

// sealed makes an entry of an aggregate.
func (p *Producer) sealed(a *openAgg) *entry {
	first := a.recs[0]
	return &entry{pk: first.pk, ehk: first.ehk, agg: &a.agg, recs: a.recs, shard: a.shard,
		shardMap: a.shardMap, unit: a.shard, size: a.agg.Size() + len(first.pk)}
}

// failAll makes failure outcomes for entries.
func (p *Producer) failAll(entries []*entry, err error) []outcome {
	out := make([]outcome, len(entries))
	for i, e := range entries {
		e.lastErr = err
		out[i] = outcome{e: e, err: p.putError(e, err)}
	}
	return out
}

func (p *Producer) putError(e *entry, err error) error {
	attempts := 0
	if len(e.recs) > 0 {
		attempts = e.recs[0].attempts
	}
	return &PutError{Attempts: attempts, Code: e.code, Message: e.message, Err: err}
}

// abortErr is the error of records still unwritten when Close gave up.
func (p *Producer) abortErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.aborted != nil {
		return p.aborted
	}
	return ErrClosed
}

// request builds a PutRecords call.
func (p *Producer) request(entries []*entry) *kinesis.PutRecordsInput {
	recs := make([]types.PutRecordsRequestEntry, len(entries))
	for i, e := range entries {
		recs[i] = types.PutRecordsRequestEntry{Data: e.data, PartitionKey: aws.String(e.pk)}
		if e.ehk != "" {
			recs[i].ExplicitHashKey = aws.String(e.ehk)
		}
	}
	in := &kinesis.PutRecordsInput{Records: recs}
	if p.cfg.StreamARN != "" {
		in.StreamARN = aws.String(p.cfg.StreamARN)
	} else {
		in.StreamName = aws.String(p.cfg.StreamName)
	}
	return in
}

// Flush sends everything buffered without waiting for Linger and returns
// once every record accepted before the call has its outcome (written or
// failed: check the Results, or Stats.RecordsFailed). If ctx ends first it
// returns ctx's error; the records stay in the producer's hands.
func (p *Producer) Flush(ctx context.Context) error {
	p.mu.Lock()
	target := p.epoch
	p.epoch++
	p.flushers++
	p.mu.Unlock()
	p.signal()
	defer func() {
		p.mu.Lock()
		p.flushers--
		p.mu.Unlock()
	}()
	for {
		p.mu.Lock()
		done := true
		for ep := range p.outstanding {
			if ep <= target {
				done = false
				break
			}
		}
		ch := p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops accepting records (Put returns ErrClosed), sends everything
// buffered, waits for every outcome and stops the producer's goroutines. If
// ctx ends first, in-flight calls are cancelled and every record without an
// outcome fails with an error matching ErrClosed; Close still waits for the
// goroutines and returns ctx's error. Later calls wait for the first one.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		select {
		case <-p.closeDone:
			return p.closeErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.closing = true
	p.broadcastLocked() // Puts waiting for room return ErrClosed
	p.mu.Unlock()
	p.signal()
	joined := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(joined)
	}()
	var err error
	select {
	case <-joined:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		p.aborted = fmt.Errorf("%w before the record was written: %w", ErrClosed, context.Cause(ctx))
		p.mu.Unlock()
		p.cancel()
		p.signal()
		<-joined
	}
	p.cancel()
	p.closeErr = err
	close(p.closeDone)
	return err
}

// Stats returns running totals.
func (p *Producer) Stats() Stats {
	t := p.totals()
	return Stats{Written: t.written, Failed: t.failed, Retried: t.retried, Buffered: t.buffered}
}

// totals returns every running total.
func (p *Producer) totals() totals {
	p.mu.Lock()
	buffered := p.buffered
	p.mu.Unlock()
	p.shards.mu.Lock()
	loads := p.shards.loads
	p.shards.mu.Unlock()
	return totals{
		accepted:      p.stats.accepted.Load(),
		written:       p.stats.written.Load(),
		failed:        p.stats.failed.Load(),
		requests:      p.stats.requests.Load(),
		retried:       p.stats.retried.Load(),
		aggregates:    p.stats.aggregates.Load(),
		aggregated:    p.stats.aggregated.Load(),
		wrongShard:    p.stats.wrongShard.Load(),
		shardMapLoads: loads,
		buffered:      buffered,
	}
}

// entryQueue is a FIFO of entries that can also push at the front.
type entryQueue struct {
	items []*entry
	head  int
}

func (q *entryQueue) len() int     { return len(q.items) - q.head }
func (q *entryQueue) peek() *entry { return q.items[q.head] }
func (q *entryQueue) push(e *entry) {
	q.items = append(q.items, e)
}

func (q *entryQueue) pushFront(e *entry) {
	if q.head > 0 {
		q.head--
		q.items[q.head] = e
		return
	}
	q.items = append([]*entry{e}, q.items...)
}

func (q *entryQueue) pop() *entry {
	e := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 64 && q.head > len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return e
}
