package reader

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kpl"
)

// Shards opens readers on the shards of one stream, all polling or all by
// enhanced fan-out. It is safe for concurrent use.
type Shards struct {
	opts Options
	// newFetcher makes the fetcher of one shard's reader.
	newFetcher func(r *shardReader) fetcher
	// consumer is the enhanced fan-out consumer; nil when polling.
	consumer *consumer
	// newTransform makes the transform of a shard's reader (see
	// RecordOptions.transformer); tests replace it.
	newTransform func(shardID string, start StartPosition, log *slog.Logger) recordTransform
}

var _ Source = (*Shards)(nil)

// NewPolling returns the Source reading shards with GetRecords, sharing each
// shard's read throughput (2 MiB/s, 5 calls/s) with every other polling
// consumer of the stream. Options are validated here; an error wraps
// kcl.ErrInvalidConfig. It does not contact Kinesis.
func NewPolling(client KinesisAPI, opts Options) (*Shards, error) {
	if client == nil {
		return nil, invalid("nil Kinesis client")
	}
	s, err := newShards(opts, false)
	if err != nil {
		return nil, err
	}
	s.newFetcher = func(r *shardReader) fetcher { return &pollFetcher{r: r, client: client} }
	return s, nil
}

// NewFanOut returns the Source reading shards by enhanced fan-out: each
// reader keeps a SubscribeToShard subscription through a registered
// consumer, with the shard's read throughput (2 MiB/s) to itself, records
// pushed as they arrive.
//
// The consumer is registered (or found) once, by [Shards.Prepare] or the
// first Open; if Kinesis stops knowing it (it was deregistered while in
// use), it is looked up, and registered, again. It is never deregistered
// here: see [fanout.DeregisterConsumer]. Options are validated here; an
// error wraps kcl.ErrInvalidConfig. It does not contact Kinesis.
func NewFanOut(client fanout.FanOutAPI, opts Options) (*Shards, error) {
	if client == nil {
		return nil, invalid("nil Kinesis client")
	}
	s, err := newShards(opts, true)
	if err != nil {
		return nil, err
	}
	s.consumer = newConsumer(client, s.opts)
	s.newFetcher = func(r *shardReader) fetcher { return &subscribeFetcher{r: r, c: s.consumer} }
	return s, nil
}

func newShards(opts Options, fanOut bool) (*Shards, error) {
	opts = opts.withDefaults()
	if err := opts.validate(fanOut); err != nil {
		return nil, err
	}
	s := &Shards{opts: opts}
	s.newTransform = func(shardID string, start StartPosition, log *slog.Logger) recordTransform {
		return s.opts.Records.transformer(shardID, start.HashKeyRange, log)
	}
	return s, nil
}

// Prepare makes sure that what reading needs exists before the first Open:
// with fan-out, the consumer, registered (or found) and ACTIVE; nothing when
// polling. A worker calls it at start-up so that a consumer that cannot be
// registered (fanout.ErrConsumerLimit, kcl.ErrStreamNotFound) stops it with
// a clear error. ctx bounds the wait.
func (s *Shards) Prepare(ctx context.Context) error {
	if s.consumer == nil {
		return nil
	}
	_, err := s.consumer.register(ctx)
	return err
}

// Open starts reading shardID from start and returns the shard's reader,
// whose goroutine fetches ahead of the consumer into a bounded queue.
// Errors that retrying cannot fix are returned at once, as an
// error naming the shard: a stream or shard that does not exist (found while
// polling, or while registering the consumer) matches kcl.ErrStreamNotFound.
// A throttled or failed first call is not an error: the reader retries it
// with backoff. ctx bounds Open only; the reader runs until Close.
//
// start.After, when it is a record's position, makes reading begin at that
// record's Kinesis sequence number (AT_SEQUENCE_NUMBER) and skip every
// record at or before it, so a checkpoint inside a KPL aggregate resumes
// with the next user record. If the stream no longer retains it, reading
// resumes at TRIM_HORIZON and the first batch has Gap set. Otherwise reading
// begins at start.Initial. A SHARD_END checkpoint is refused: there is
// nothing left to read.
func (s *Shards) Open(ctx context.Context, shardID string, start StartPosition) (Reader, error) {
	if shardID == "" {
		return nil, invalid("empty shard ID")
	}
	if err := checkStart(start); err != nil {
		return nil, fmt.Errorf("shardline: shard %s: open: %w", shardID, err)
	}
	r := &shardReader{
		opts:    &s.opts,
		shardID: shardID,
		log:     s.opts.Logger.With(slog.String("stream", s.opts.stream()), slog.String("shard", shardID)),
		queue:   newPrefetchQueue(s.opts.PrefetchBatches, s.opts.PrefetchBytes),
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
		start:   start,
		bo: backoff.NewExponentialBackOff(
			backoff.WithInitialInterval(s.opts.BackoffInitial),
			backoff.WithMaxInterval(s.opts.BackoffMax),
			backoff.WithMaxElapsedTime(0),
		),
	}
	r.transform = s.newTransform(shardID, start, r.log)
	if isRecordPosition(start.After) {
		r.after = start.After
	}
	r.fetcher = s.newFetcher(r)
	if err := r.fetcher.open(ctx); err != nil {
		return nil, err
	}
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(fetchCtx)
	return r, nil
}

// checkStart refuses start positions that cannot be read from.
func checkStart(start StartPosition) error {
	switch a := start.After; {
	case a.IsShardEnd():
		return fmt.Errorf("%w: shard already ended (SHARD_END checkpoint)", kcl.ErrInvalidCheckpoint)
	case isRecordPosition(a):
		if err := a.Validate(); err != nil {
			return fmt.Errorf("%w: %w", kcl.ErrInvalidCheckpoint, err)
		}
		return nil
	case !a.IsZero() && !a.IsSentinel():
		return fmt.Errorf("%w: %q is not a sequence number", kcl.ErrInvalidCheckpoint, a.SequenceNumber)
	}
	return start.Initial.Validate()
}

// isRecordPosition reports whether e is the position of a record rather than
// zero or a sentinel.
func isRecordPosition(e kcl.ExtendedSequenceNumber) bool {
	return !e.IsZero() && !e.IsSentinel() && e.SequenceNumber != ""
}

// fetcher is the part of a shard reader that talks to Kinesis one way. It
// hands what it gets to the core ([shardReader.deliver]) and asks it what
// to do about errors ([shardReader.retry], [shardReader.trimmed],
// [shardReader.fatal]).
type fetcher interface {
	// open runs in Open, before the fetch goroutine starts; an error
	// (naming the shard) fails Open.
	open(ctx context.Context) error
	// fetch reads until the shard ends (io.EOF), an error that retrying
	// cannot fix, or ctx ends. It runs in the reader's goroutine.
	fetch(ctx context.Context) error
}

// shardReader is the Reader of every shard, whichever way it reads: the
// core. Fields after the first group belong to the fetch goroutine (and to
// Open before it starts it).
type shardReader struct {
	opts      *Options
	shardID   string
	log       *slog.Logger
	queue     *prefetchQueue
	fetcher   fetcher
	cancel    context.CancelFunc
	done      chan struct{} // closed when the fetch goroutine has returned
	closed    chan struct{} // closed by Close
	closeOnce sync.Once

	start StartPosition
	bo    *backoff.ExponentialBackOff
	// transform makes user records out of Kinesis records.
	transform recordTransform
	// after is the position of the last record delivered (at first the
	// checkpoint): records at or before it are dropped.
	after kcl.ExtendedSequenceNumber
	// resume is the sequence number reading continues from once something
	// was read (the fetcher says whether at or after it); "" before.
	resume string
	// trimHorizon is set when the start position was trimmed: until reading
	// resumes from a record, it starts at TRIM_HORIZON.
	trimHorizon bool
	// latestAt is when reading first started at LATEST. If it has to start
	// again before anything was read, it starts AT_TIMESTAMP latestAt, so
	// that records written meanwhile are not skipped.
	latestAt time.Time
	// expectSeq, after a start AT_SEQUENCE_NUMBER, is the sequence number
	// the first record read must have; a later one means it was trimmed.
	expectSeq string
	// gap is a retention gap not yet reported on a batch.
	gap bool
	// lastIdle is when an empty batch was last queued.
	lastIdle time.Time
}

// Next returns the next batch, waiting until one is ready or ctx ends. After
// the batch with ShardEnded it returns io.EOF; after Close, ErrClosed; after
// an error that retrying cannot fix, that error (naming the shard), again on
// every call.
func (r *shardReader) Next(ctx context.Context) (Batch, error) {
	select {
	case <-r.closed:
		return Batch{}, ErrClosed
	default:
	}
	return r.queue.pop(ctx, r.closed)
}

// Close stops the fetch goroutine (closing a subscription's event stream)
// and waits for it to return. It is safe to call more than once and always
// returns nil.
func (r *shardReader) Close() error {
	r.closeOnce.Do(func() {
		close(r.closed)
		r.cancel()
	})
	<-r.done
	return nil
}

// run is the fetch goroutine.
func (r *shardReader) run(ctx context.Context) {
	defer close(r.done)
	err := r.fetcher.fetch(ctx)
	if ctx.Err() != nil {
		return // closed: nobody reads the queue any more
	}
	r.queue.finish(err)
}

// position is where a read starts.
type position struct {
	typ types.ShardIteratorType
	seq string    // with AT_ and AFTER_SEQUENCE_NUMBER
	at  time.Time // with AT_TIMESTAMP
}

func (p position) String() string {
	if p.seq != "" {
		return string(p.typ) + " " + p.seq
	}
	return string(p.typ)
}

// position returns where reading starts next: from the resume point (of
// type resumeType), else at the start position.
func (r *shardReader) position(resumeType types.ShardIteratorType) position {
	switch {
	case r.resume != "":
		return position{typ: resumeType, seq: r.resume}
	case r.trimHorizon:
		return position{typ: types.ShardIteratorTypeTrimHorizon}
	case isRecordPosition(r.start.After):
		return position{typ: types.ShardIteratorTypeAtSequenceNumber, seq: r.start.After.SequenceNumber}
	}
	switch init := r.start.Initial; init.Sequence() {
	case kcl.TrimHorizon:
		return position{typ: types.ShardIteratorTypeTrimHorizon}
	case kcl.AtTimestamp:
		return position{typ: types.ShardIteratorTypeAtTimestamp, at: init.Timestamp()}
	}
	if r.latestAt.IsZero() {
		return position{typ: types.ShardIteratorTypeLatest}
	}
	return position{typ: types.ShardIteratorTypeAtTimestamp, at: r.latestAt}
}

// begin returns position(resumeType) for a read that starts now, noting
// what its first record must be and when reading first started at LATEST.
func (r *shardReader) begin(resumeType types.ShardIteratorType) position {
	p := r.position(resumeType)
	r.expectSeq = ""
	switch p.typ {
	case types.ShardIteratorTypeAtSequenceNumber:
		r.expectSeq = p.seq
	case types.ShardIteratorTypeLatest:
		r.latestAt = time.Now()
	}
	return p
}

// trimmed handles a start position the stream no longer retains: reading
// resumes at TRIM_HORIZON, and the next batch reports the gap.
func (r *shardReader) trimmed(ctx context.Context, p position, err error) {
	r.log.WarnContext(ctx, "reader: start position no longer retained by the stream, resuming at TRIM_HORIZON: records after it may be lost",
		slog.String("sequence", p.seq), slog.Any("error", err))
	r.gap = true
	r.trimHorizon = true
	r.resume = ""
}

// fetched is what one read returned.
type fetched struct {
	records      []types.Record
	millisBehind int64
	// resume, when set, is where the next read continues from.
	resume string
	// ended is set on the last read of a closed shard, with its children.
	ended    bool
	children []types.ChildShard
	// maxBatch, when positive, caps the records of one batch; more are
	// split into several batches, in order.
	maxBatch int
	// idleEvery, when positive, drops an empty batch that follows the
	// previous one queued by less than this.
	idleEvery time.Duration
}

// deliver turns what one read returned into batches and queues them,
// waiting while the queue is full. It reports whether the shard ended.
func (r *shardReader) deliver(ctx context.Context, f fetched) (bool, error) {
	raw := f.records
	if len(raw) > 0 && r.expectSeq != "" {
		first := aws.ToString(raw[0].SequenceNumber)
		if kcl.NewSequence(first).Compare(kcl.NewSequence(r.expectSeq)) > 0 {
			r.gap = true
			r.log.WarnContext(ctx, "reader: start position no longer retained by the stream: records after it may be lost",
				slog.String("expected", r.expectSeq), slog.String("first", first))
		}
		r.expectSeq = ""
	}
	if f.resume != "" {
		r.resume = f.resume
		r.trimHorizon = false
	}
	maxBatch := r.opts.MaxRecords
	if f.maxBatch > 0 {
		maxBatch = min(maxBatch, f.maxBatch)
	}
	// One KPL aggregate of empty records unpacks into some 175,000 user
	// records (about 36 MiB) per MiB: the records are transformed one
	// aggregate (or one run of plain records) at a time, and queued in
	// batches of at most maxBatch as they fill, so that the queue's bounds
	// hold the memory, whatever a read returned.
	var pending []kcl.Record
	pushed, split := false, false
	push := func(recs []kcl.Record, last bool) error {
		b := Batch{Records: recs, MillisBehindLatest: f.millisBehind, Gap: r.gap}
		if len(recs) == 0 {
			b.Records = nil
		}
		if last && f.ended {
			b.ShardEnded = true
			b.ChildShardIDs = childShardIDs(f.children)
		}
		if err := r.queue.push(ctx, b); err != nil {
			return err
		}
		r.gap, pushed = false, true
		return nil
	}
	for len(raw) > 0 {
		n := r.segment(raw)
		recs := filterAfter(r.transform(ctx, raw[:n]), r.after)
		raw = raw[n:]
		if len(recs) == 0 {
			continue
		}
		r.after = recs[len(recs)-1].Position()
		if len(pending) == 0 {
			pending = recs
		} else {
			pending = append(pending, recs...)
		}
		// The last batch of the read is queued below: it carries the shard's
		// end.
		for len(pending) > maxBatch || len(pending) == maxBatch && len(raw) > 0 {
			// A copy: the queued batch must not keep the whole aggregate's
			// records alive (nor a processor appending to its batch
			// overwrite the next one).
			if err := push(slices.Clone(pending[:maxBatch]), false); err != nil {
				return false, err
			}
			pending = pending[maxBatch:]
			split = true
		}
	}
	if split {
		pending = slices.Clone(pending)
	}
	if !pushed && len(pending) == 0 && !f.ended && f.idleEvery > 0 {
		// An empty batch lets the worker see the lag (and call processors on
		// empty reads, if so configured). At most one per idleEvery; one
		// dropped here loses nothing, the next batch has a fresher lag.
		now := time.Now()
		if !r.lastIdle.IsZero() && now.Sub(r.lastIdle) < f.idleEvery {
			return false, nil
		}
		r.lastIdle = now
	}
	if len(pending) > 0 || !pushed || f.ended {
		if err := push(pending[:len(pending):len(pending)], true); err != nil {
			return false, err
		}
	}
	return f.ended, nil
}

// segment returns how many of raw's first records to transform together:
// one KPL aggregate alone, or a run of plain records (all of them without
// de-aggregation).
func (r *shardReader) segment(raw []types.Record) int {
	if r.opts.Records.DisableDeaggregation {
		return len(raw)
	}
	if kpl.IsAggregated(raw[0].Data) {
		return 1
	}
	n := 1
	for n < len(raw) && !kpl.IsAggregated(raw[n].Data) {
		n++
	}
	return n
}

// retry waits out a backoff after a retryable error, or returns the error
// that ends the reader.
func (r *shardReader) retry(ctx context.Context, op string, err error) error {
	kind := classify(err)
	if !kind.Retryable() {
		return r.fatal(op, err)
	}
	delay := r.nextDelay()
	level := slog.LevelWarn
	if kind == kindThrottled {
		level = slog.LevelInfo // routine on a busy stream, or after a hand-over
	}
	r.log.Log(ctx, level, "reader: "+op+" failed, retrying",
		slog.String("kind", kind.String()), slog.Duration("backoff", delay), slog.Any("error", err))
	return sleep(ctx, delay)
}

// nextDelay is the reader's next backoff: exponential with jitter, never
// below BackoffInitial.
func (r *shardReader) nextDelay() time.Duration {
	return max(r.bo.NextBackOff(), r.opts.BackoffInitial)
}

// observe passes a read to the Observer, if any, unless the reader is
// closing. raw are the Kinesis records the read returned.
func (r *shardReader) observe(ctx context.Context, op string, took time.Duration, raw []types.Record, behind int64, err error) {
	obs := r.opts.Observer
	if obs == nil || ctx.Err() != nil {
		return
	}
	ev := FetchEvent{ShardID: r.shardID, Op: op, Records: len(raw), Duration: took, MillisBehindLatest: behind, Err: err}
	for _, rec := range raw {
		ev.Bytes += len(rec.Data)
	}
	if err != nil {
		ev.ErrorKind = ErrorKind(err)
	}
	obs(ev)
}
