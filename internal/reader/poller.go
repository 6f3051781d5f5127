package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/kcl"
)

// Defaults and limits of [PollerOptions].
const (
	// DefaultMaxRecords is the default GetRecords limit, the API's maximum.
	DefaultMaxRecords = 10000
	// DefaultIdleTimeBetweenReads is the default pause after a read that
	// returned no records.
	DefaultIdleTimeBetweenReads = time.Second
	// DefaultPrefetchBatches is the default number of batches a reader keeps
	// ready ahead of the consumer.
	DefaultPrefetchBatches = 3
	// DefaultPrefetchBytes is the default bound on the record data a reader
	// keeps ready ahead of the consumer.
	DefaultPrefetchBytes = 16 << 20
	// DefaultBackoffInitial is the default first retry delay after an error.
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax is the default longest retry delay after errors.
	DefaultBackoffMax = 10 * time.Second
	// DefaultCallTimeout is the default bound on one GetRecords or
	// GetShardIterator call.
	DefaultCallTimeout = 30 * time.Second

	// maxGetRecordsLimit is the largest Limit GetRecords accepts.
	maxGetRecordsLimit = 10000
	// minEmptyReadInterval keeps empty reads of one shard at most 5 per
	// second (the GetRecords limit per shard), whatever IdleTimeBetweenReads
	// says.
	minEmptyReadInterval = 200 * time.Millisecond
)

// PollerOptions configures a [Poller]. Zero values select the defaults.
type PollerOptions struct {
	// StreamName names the stream. StreamName or StreamARN is required.
	StreamName string
	// StreamARN identifies the stream; when set, it is passed on every API
	// call instead of StreamName.
	StreamARN string
	// MaxRecords is the GetRecords limit per call, 1 to 10000 (default
	// 10000).
	MaxRecords int
	// IdleTimeBetweenReads is the pause after a read that returned no records
	// (default 1s; a negative value means no pause). Whatever its value,
	// calls that return no records are at least 200ms apart, the per-shard
	// limit of 5 GetRecords calls per second. After a read with records the
	// next call follows at once; the prefetch bound is the brake.
	IdleTimeBetweenReads time.Duration
	// PrefetchBatches bounds the number of batches fetched ahead of the
	// consumer (default 3).
	PrefetchBatches int
	// PrefetchBytes bounds the record data fetched ahead of the consumer
	// (default 16 MiB). One batch larger than this is still fetched when
	// nothing else is waiting.
	PrefetchBytes int64
	// BackoffInitial is the first delay before retrying after a throttled or
	// failed call (default 100ms). Delays grow exponentially with jitter.
	BackoffInitial time.Duration
	// BackoffMax bounds the delay between retries (default 10s). Retries go
	// on until they succeed or the reader is closed.
	BackoffMax time.Duration
	// CallTimeout bounds each GetRecords and GetShardIterator call (default
	// 30s; a negative value means no bound beyond the reader's life). A call
	// still unanswered then (a black-holed connection, say) is abandoned and
	// counts as a transient error: the reader backs off and calls again,
	// with a new shard iterator if the old one expired meanwhile. Keep it
	// above the client's own retry budget; a GetRecords call normally
	// answers within a few seconds.
	CallTimeout time.Duration
	// Logger receives warnings about retention gaps and retried errors
	// (default slog.Default()).
	Logger *slog.Logger
	// Observer, if set, is told about every GetRecords call.
	Observer Observer
	// Records says how Kinesis records become user records: KPL
	// de-aggregation (on by default), a decoder, anomaly counts.
	Records RecordOptions
}

// withDefaults returns o with every zero field set to its default.
func (o PollerOptions) withDefaults() PollerOptions {
	if o.MaxRecords == 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.IdleTimeBetweenReads == 0 {
		o.IdleTimeBetweenReads = DefaultIdleTimeBetweenReads
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	o.shared().setDefaults()
	return o
}

// shared points at the options every reader has.
func (o *PollerOptions) shared() readerOptions {
	return readerOptions{&o.StreamName, &o.StreamARN, &o.PrefetchBatches, &o.PrefetchBytes,
		&o.BackoffInitial, &o.BackoffMax, &o.Logger}
}

// validate checks options after withDefaults.
func (o PollerOptions) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: fanout poller: %s", kcl.ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if o.MaxRecords < 1 || o.MaxRecords > maxGetRecordsLimit {
		return bad("MaxRecords %d is outside 1..%d", o.MaxRecords, maxGetRecordsLimit)
	}
	return o.shared().validate(bad)
}

// Poller reads shards with GetRecords, sharing the shard's read throughput
// (2 MiB/s, 5 calls/s) with every other polling consumer of the stream. Each
// [Reader] it opens runs one goroutine that fetches ahead of the consumer into
// a bounded queue.
//
// A Poller is safe for concurrent use; it holds no per-shard state.
type Poller struct {
	client KinesisAPI
	opts   PollerOptions
	// newTransform makes the transform of a shard's reader (see
	// RecordOptions.transformer); tests replace it.
	newTransform func(shardID string, start StartPosition, log *slog.Logger) recordTransform
}

var _ Source = (*Poller)(nil)

// NewPoller returns a Poller reading through client. Options are validated
// here; an error wraps kcl.ErrInvalidConfig.
func NewPoller(client KinesisAPI, opts PollerOptions) (*Poller, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: fanout poller: nil Kinesis client", kcl.ErrInvalidConfig)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	p := &Poller{client: client, opts: opts}
	p.newTransform = func(shardID string, start StartPosition, log *slog.Logger) recordTransform {
		return p.opts.Records.transformer(shardID, start.HashKeyRange, log)
	}
	return p, nil
}

// stream returns the name of the stream for logs and errors.
func (p *Poller) stream() string {
	if p.opts.StreamARN != "" {
		return p.opts.StreamARN
	}
	return p.opts.StreamName
}

// callContext returns the context of one Kinesis call: ctx bounded by
// CallTimeout. A call that runs out of it fails with an error that classify
// takes for transient (context.DeadlineExceeded), while ctx itself is still
// live, so the caller retries.
func (p *Poller) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.opts.CallTimeout < 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, p.opts.CallTimeout)
}

// emptyReadInterval is the least time between the starts of two GetRecords
// calls when the first returned no records, and between two empty batches.
func (p *Poller) emptyReadInterval() time.Duration {
	return max(p.opts.IdleTimeBetweenReads, minEmptyReadInterval)
}

// Open gets the first shard iterator for shardID at start, then starts the
// reader's fetch goroutine. Errors that retrying cannot fix are returned at
// once, as a *kcl.ShardError: a stream or shard that does not exist matches
// kcl.ErrStreamNotFound. A throttled or failed first call is not an error:
// the reader retries it with backoff.
//
// ctx bounds Open only; the reader runs until Close.
//
// start.After, when it is a record's position, makes reading begin at that
// record's Kinesis sequence number (AT_SEQUENCE_NUMBER) and skip every
// record at or before it, so a checkpoint inside a KPL aggregate resumes
// with the next user record. If the stream no longer retains it, reading
// resumes at TRIM_HORIZON and the first batch has Gap set. Otherwise reading
// begins at start.Initial. A SHARD_END checkpoint is refused: there is
// nothing left to read.
func (p *Poller) Open(ctx context.Context, shardID string, start StartPosition) (Reader, error) {
	if shardID == "" {
		return nil, fmt.Errorf("%w: fanout: empty shard ID", kcl.ErrInvalidConfig)
	}
	if err := checkStart(start); err != nil {
		return nil, &kcl.ShardError{ShardID: shardID, Op: "open", Err: err}
	}
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.opts.BackoffInitial),
		backoff.WithMaxInterval(p.opts.BackoffMax),
		backoff.WithMaxElapsedTime(0),
	)
	r := &pollReader{
		p:       p,
		shardID: shardID,
		log:     p.opts.Logger.With(slog.String("stream", p.stream()), slog.String("shard", shardID)),
		queue:   newPrefetchQueue(p.opts.PrefetchBatches, p.opts.PrefetchBytes),
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
		start:   start,
		bo:      bo,
	}
	r.transform = p.newTransform(shardID, start, r.log)
	if isRecordPosition(start.After) {
		r.after = start.After
	}
	var pending error
	if err := r.getIterator(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, &kcl.ShardError{ShardID: shardID, Op: "get shard iterator", Err: ctx.Err()}
		}
		if !classify(err).Retryable() {
			return nil, r.fatal("get shard iterator", err)
		}
		pending = err // retried by the fetch goroutine, after a backoff
	}
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(fetchCtx, pending)
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

// pollReader is the Reader of a Poller. Fields after the first group belong
// to the fetch goroutine (and to Open before it starts it).
type pollReader struct {
	p         *Poller
	shardID   string
	log       *slog.Logger
	queue     *prefetchQueue
	cancel    context.CancelFunc
	done      chan struct{} // closed when the fetch goroutine has returned
	closed    chan struct{} // closed by Close
	closeOnce sync.Once

	start StartPosition
	bo    *backoff.ExponentialBackOff
	// transform makes user records out of a response's Kinesis records.
	transform recordTransform
	// iterator is the shard iterator for the next GetRecords; "" when a new
	// one must be got.
	iterator string
	// after is the position of the last record delivered (at first the
	// checkpoint): records at or before it are dropped.
	after kcl.ExtendedSequenceNumber
	// lastSeq is the sequence number of the last Kinesis record fetched; a
	// new iterator starts there (AT_SEQUENCE_NUMBER, the filter drops the
	// repeat).
	lastSeq string
	// trimHorizon is set when the checkpoint was trimmed: until a record is
	// fetched, iterators start at TRIM_HORIZON.
	trimHorizon bool
	// latestAt is when the first LATEST iterator was got. If it has to be
	// replaced before any record was fetched, the new one starts AT_TIMESTAMP
	// latestAt, so that records written meanwhile are not skipped.
	latestAt time.Time
	// expectSeq, after an AT_SEQUENCE_NUMBER iterator, is the sequence number
	// the first record fetched must have; a later one means it was trimmed.
	expectSeq string
	// gap is a retention gap not yet reported on a batch.
	gap bool
	// lastIdle is when an empty batch was last queued.
	lastIdle time.Time
	// expiredInARow counts iterator expiries without a successful read.
	expiredInARow int
}

// Next returns the next batch, waiting until one is ready or ctx ends. After
// the batch with ShardEnded it returns io.EOF; after Close, ErrClosed; after
// an error that retrying cannot fix, that error (a *kcl.ShardError), again on
// every call.
func (r *pollReader) Next(ctx context.Context) (Batch, error) {
	select {
	case <-r.closed:
		return Batch{}, ErrClosed
	default:
	}
	return r.queue.pop(ctx, r.closed)
}

// Close stops the fetch goroutine and waits for it to return. It is safe to
// call more than once and always returns nil.
func (r *pollReader) Close() error {
	r.closeOnce.Do(func() {
		close(r.closed)
		r.cancel()
	})
	<-r.done
	return nil
}

// run is the fetch goroutine.
func (r *pollReader) run(ctx context.Context, pending error) {
	defer close(r.done)
	err := r.fetch(ctx, pending)
	if ctx.Err() != nil {
		return // closed: nobody reads the queue any more
	}
	r.queue.finish(err)
}

// fetch loops GetRecords until the shard ends (io.EOF), an error that
// retrying cannot fix, or ctx ends.
func (r *pollReader) fetch(ctx context.Context, pending error) error {
	if pending != nil {
		if err := r.retry(ctx, "get shard iterator", pending); err != nil {
			return err
		}
	}
	for {
		if r.iterator == "" {
			if err := r.getIterator(ctx); err != nil {
				if err := r.retry(ctx, "get shard iterator", err); err != nil {
					return err
				}
				continue
			}
		}
		callStart := time.Now()
		cctx, cancel := r.p.callContext(ctx)
		out, err := r.p.client.GetRecords(cctx, &kinesis.GetRecordsInput{
			ShardIterator: aws.String(r.iterator),
			Limit:         aws.Int32(int32(r.p.opts.MaxRecords)),
			StreamARN:     optional(r.p.opts.StreamARN),
		})
		cancel()
		if obs := r.p.opts.Observer; obs != nil && ctx.Err() == nil {
			ev := FetchEvent{ShardID: r.shardID, Op: "GetRecords", Duration: time.Since(callStart), Err: err, ErrorKind: ErrorKind(err)}
			if out != nil {
				ev.Records = len(out.Records)
				for _, rec := range out.Records {
					ev.Bytes += len(rec.Data)
				}
				ev.MillisBehindLatest = aws.ToInt64(out.MillisBehindLatest)
			}
			obs(ev)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if classify(err) == kindExpired {
				r.iterator = ""
				r.expiredInARow++
				r.log.InfoContext(ctx, "fanout: shard iterator expired, getting a new one",
					slog.String("from", r.resumeDescription()))
				if r.expiredInARow > 1 { // a fresh iterator expired: do not spin
					if err := sleep(ctx, r.bo.NextBackOff()); err != nil {
						return err
					}
				}
				continue
			}
			if err := r.retry(ctx, "get records", err); err != nil {
				return err
			}
			continue
		}
		r.bo.Reset()
		r.expiredInARow = 0
		ended, err := r.deliver(ctx, out)
		if err != nil {
			return err
		}
		if ended {
			return io.EOF
		}
		if len(out.Records) == 0 {
			pause := max(r.p.opts.IdleTimeBetweenReads, minEmptyReadInterval-time.Since(callStart))
			if err := sleep(ctx, pause); err != nil {
				return err
			}
		}
	}
}

// deliver turns a GetRecords response into a batch and queues it. It reports
// whether the shard ended.
func (r *pollReader) deliver(ctx context.Context, out *kinesis.GetRecordsOutput) (bool, error) {
	raw := out.Records
	if len(raw) > 0 {
		if r.expectSeq != "" {
			first := aws.ToString(raw[0].SequenceNumber)
			if kcl.CompareSequenceNumbers(first, r.expectSeq) > 0 {
				r.gap = true
				r.log.WarnContext(ctx, "fanout: start position no longer retained by the stream: records after it may be lost",
					slog.String("expected", r.expectSeq), slog.String("first", first))
			}
			r.expectSeq = ""
		}
		r.lastSeq = aws.ToString(raw[len(raw)-1].SequenceNumber)
	}
	recs := filterAfter(r.transform(ctx, raw), r.after)
	if len(recs) > 0 {
		r.after = recs[len(recs)-1].Position()
	}
	b := Batch{Records: recs, MillisBehindLatest: aws.ToInt64(out.MillisBehindLatest)}
	if next := aws.ToString(out.NextShardIterator); next == "" {
		b.ShardEnded = true
		b.ChildShardIDs = childShardIDs(out.ChildShards)
	} else {
		r.iterator = next
	}
	if isIdle(b) {
		// An empty batch lets the worker see the lag (and call processors on
		// empty reads, if so configured). At most one per idle interval;
		// one dropped here loses nothing, the next batch has a fresher lag.
		now := time.Now()
		if !r.lastIdle.IsZero() && now.Sub(r.lastIdle) < r.p.emptyReadInterval() {
			return false, nil
		}
		r.lastIdle = now
	}
	b.Gap = r.gap
	if err := r.queue.push(ctx, b); err != nil {
		return false, err
	}
	r.gap = false
	return b.ShardEnded, nil
}

// getIterator gets a shard iterator where reading must resume: after the
// last record fetched, else at the start position. If an AT_SEQUENCE_NUMBER
// position was trimmed, it falls back to TRIM_HORIZON and notes the gap.
func (r *pollReader) getIterator(ctx context.Context) error {
	for {
		in := r.iteratorInput()
		asked := time.Now()
		cctx, cancel := r.p.callContext(ctx)
		out, err := r.p.client.GetShardIterator(cctx, in)
		cancel()
		if err == nil && aws.ToString(out.ShardIterator) == "" {
			err = errors.New("GetShardIterator returned no iterator")
		}
		if err != nil {
			if in.ShardIteratorType == types.ShardIteratorTypeAtSequenceNumber && ctx.Err() == nil && classify(err) == kindTrimmed {
				r.log.WarnContext(ctx, "fanout: start position no longer retained by the stream, resuming at TRIM_HORIZON: records after it may be lost",
					slog.String("sequence", aws.ToString(in.StartingSequenceNumber)), slog.Any("error", err))
				r.gap = true
				r.trimHorizon = true
				r.lastSeq = ""
				continue
			}
			return err
		}
		r.iterator = aws.ToString(out.ShardIterator)
		r.expectSeq = ""
		switch in.ShardIteratorType {
		case types.ShardIteratorTypeAtSequenceNumber:
			r.expectSeq = aws.ToString(in.StartingSequenceNumber)
		case types.ShardIteratorTypeLatest:
			r.latestAt = asked
		}
		return nil
	}
}

// iteratorInput builds the GetShardIterator request for the resume position.
func (r *pollReader) iteratorInput() *kinesis.GetShardIteratorInput {
	in := &kinesis.GetShardIteratorInput{ShardId: aws.String(r.shardID)}
	if r.p.opts.StreamARN != "" {
		in.StreamARN = aws.String(r.p.opts.StreamARN)
	} else {
		in.StreamName = aws.String(r.p.opts.StreamName)
	}
	switch {
	case r.lastSeq != "":
		in.ShardIteratorType = types.ShardIteratorTypeAtSequenceNumber
		in.StartingSequenceNumber = aws.String(r.lastSeq)
	case r.trimHorizon:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	case isRecordPosition(r.start.After):
		in.ShardIteratorType = types.ShardIteratorTypeAtSequenceNumber
		in.StartingSequenceNumber = aws.String(r.start.After.SequenceNumber)
	default:
		switch init := r.start.Initial; init.Type {
		case kcl.PositionTrimHorizon:
			in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
		case kcl.PositionAtTimestamp:
			in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
			in.Timestamp = aws.Time(init.Timestamp)
		default: // kcl.PositionLatest
			if r.latestAt.IsZero() {
				in.ShardIteratorType = types.ShardIteratorTypeLatest
			} else {
				in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
				in.Timestamp = aws.Time(r.latestAt)
			}
		}
	}
	return in
}

// resumeDescription says where a new iterator would start, for logs.
func (r *pollReader) resumeDescription() string {
	in := r.iteratorInput()
	if in.StartingSequenceNumber != nil {
		return string(in.ShardIteratorType) + " " + *in.StartingSequenceNumber
	}
	return string(in.ShardIteratorType)
}

// retry waits out a backoff after a retryable error, or returns the error
// that ends the reader.
func (r *pollReader) retry(ctx context.Context, op string, err error) error {
	kind := classify(err)
	if !kind.Retryable() {
		return r.fatal(op, err)
	}
	delay := r.bo.NextBackOff()
	level := slog.LevelWarn
	if kind == kindThrottled {
		level = slog.LevelInfo // routine on a busy stream
	}
	r.log.Log(ctx, level, "fanout: "+op+" failed, retrying",
		slog.String("kind", kind.String()), slog.Duration("backoff", delay), slog.Any("error", err))
	return sleep(ctx, delay)
}

// fatal wraps an error that ends the reader.
func (r *pollReader) fatal(op string, err error) error {
	if classify(err) == kindNotFound {
		err = fmt.Errorf("%w: %w", kcl.ErrStreamNotFound, err)
	}
	return &kcl.ShardError{ShardID: r.shardID, Op: op, Err: err}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// optional returns nil for "", else a pointer to s.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
