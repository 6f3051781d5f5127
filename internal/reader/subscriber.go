package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/shardline/shardline/fanout"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/schemas"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/kcl"
)

// Defaults of [SubscriberOptions].
const (
	// DefaultEventTimeout is the default longest wait for the next event of a
	// subscription. Kinesis sends an event every few seconds even when a
	// shard is idle, so a longer silence means a dead (half-open) connection.
	// The Java KCL gives up after 35 seconds too.
	DefaultEventTimeout = 35 * time.Second
	// DefaultMaxBatchRecords is the default cap on the records of one batch:
	// the most records one event can carry, so events are not split.
	DefaultMaxBatchRecords = 10000

	// minSubscribeInterval is the least time between two SubscribeToShard
	// calls of one consumer on one shard (the API allows one per second).
	minSubscribeInterval = time.Second
	// streamCloseWait bounds the wait, after an event stream is closed, for
	// the SDK's goroutines reading it to end.
	streamCloseWait = 5 * time.Second
)

// SubscriberOptions configures a [Subscriber]. Zero values select the
// defaults.
type SubscriberOptions struct {
	// StreamName names the stream. StreamName or StreamARN is required; with
	// the name only, the ARN is looked up once (DescribeStreamSummary).
	StreamName string
	// StreamARN identifies the stream.
	StreamARN string
	// ConsumerName names the enhanced fan-out consumer, registered on the
	// stream on first use unless it exists. Required unless ConsumerARN is
	// set.
	ConsumerName string
	// ConsumerARN, if set, is an existing consumer to subscribe through: no
	// registration is attempted.
	ConsumerARN string
	// EventTimeout is the longest wait for the next event of a subscription
	// (default 35s). After it the subscription is taken for dead (a
	// half-open connection) and replaced. Time spent waiting for the
	// consumer of the batches (backpressure) does not count.
	EventTimeout time.Duration
	// MaxBatchRecords caps the records of one batch (default 10000). A
	// larger event is split into several batches, in order.
	MaxBatchRecords int
	// PrefetchBatches bounds the number of batches received ahead of the
	// consumer (default 3). When the queue is full, reading the subscription
	// stops, and Kinesis stops sending (HTTP/2 flow control).
	PrefetchBatches int
	// PrefetchBytes bounds the record data received ahead of the consumer
	// (default 16 MiB). One batch larger than this is still accepted when
	// nothing else is waiting.
	PrefetchBytes int64
	// BackoffInitial is the first delay before subscribing again after an
	// error (default 100ms); delays grow exponentially with jitter. Whatever
	// the backoff, calls for one shard are at least one second apart.
	BackoffInitial time.Duration
	// BackoffMax bounds the delay between attempts (default 10s). Attempts go
	// on until they succeed or the reader is closed.
	BackoffMax time.Duration
	// Logger receives the consumer's registration, resubscriptions, gaps and
	// retried errors (default slog.Default()).
	Logger *slog.Logger
	// Observer, if set, is told about every SubscribeToShard call (Op
	// "SubscribeToShard", also when a subscription ends with an error) and
	// every event received (Op "SubscribeToShardEvent").
	Observer Observer
	// Records says how Kinesis records become user records: KPL
	// de-aggregation (on by default), a decoder, anomaly counts. Applied
	// exactly as by the Poller.
	Records RecordOptions
}

func (o SubscriberOptions) withDefaults() SubscriberOptions {
	if o.EventTimeout == 0 {
		o.EventTimeout = DefaultEventTimeout
	}
	if o.MaxBatchRecords == 0 {
		o.MaxBatchRecords = DefaultMaxBatchRecords
	}
	o.shared().setDefaults()
	return o
}

// shared points at the options every reader has.
func (o *SubscriberOptions) shared() readerOptions {
	return readerOptions{&o.StreamName, &o.StreamARN, &o.PrefetchBatches, &o.PrefetchBytes,
		&o.BackoffInitial, &o.BackoffMax, &o.Logger}
}

func (o SubscriberOptions) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: fanout subscriber: %s", kcl.ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if err := o.shared().validate(bad); err != nil {
		return err
	}
	switch {
	case o.ConsumerARN != "" && !strings.HasPrefix(o.ConsumerARN, "arn:"):
		return bad("ConsumerARN %q is not an ARN", o.ConsumerARN)
	case o.ConsumerARN == "" && fanout.ValidateConsumerName(o.ConsumerName) != nil:
		return bad("ConsumerName %q must be 1-128 of a-z A-Z 0-9 _ . - (or set ConsumerARN)", o.ConsumerName)
	case o.EventTimeout < 0:
		return bad("EventTimeout %v is negative", o.EventTimeout)
	case o.MaxBatchRecords < 1:
		return bad("MaxBatchRecords %d must be positive", o.MaxBatchRecords)
	}
	return nil
}

// Subscriber reads shards by enhanced fan-out: each [Reader] it opens keeps a
// SubscribeToShard subscription through a registered consumer, with the
// shard's read throughput (2 MiB/s) to itself, records pushed as they
// arrive. Readers yield the same batches as a [Poller]'s, with the same
// start, filtering and shard-end semantics, so the two are interchangeable.
//
// The consumer is registered (or found) once per Subscriber, by
// [Subscriber.Register] or the first Open; if Kinesis stops knowing it (it
// was deregistered while in use), it is looked up, and registered, again.
// It is never deregistered by the Subscriber: see [DeregisterConsumer].
//
// A Subscriber is safe for concurrent use.
type Subscriber struct {
	client fanout.FanOutAPI
	opts   SubscriberOptions
	// newTransform makes the transform of a shard's reader (see
	// RecordOptions.transformer), exactly as for the Poller; tests replace
	// it.
	newTransform func(shardID string, start StartPosition, log *slog.Logger) recordTransform

	regSem chan struct{} // one registration at a time; ctx-aware mutex

	mu       sync.Mutex
	consumer fanout.Consumer // zero until registered
	// nextSubscribe is, per shard, the earliest time of the next
	// SubscribeToShard call (one per second per shard and consumer). It
	// holds one entry per shard ever read.
	nextSubscribe map[string]time.Time
}

var _ Source = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber reading through client. Options are
// validated here; an error wraps kcl.ErrInvalidConfig. It does not contact
// Kinesis.
func NewSubscriber(client fanout.FanOutAPI, opts SubscriberOptions) (*Subscriber, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: fanout subscriber: nil Kinesis client", kcl.ErrInvalidConfig)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	s := &Subscriber{
		client:        client,
		opts:          opts,
		regSem:        make(chan struct{}, 1),
		nextSubscribe: map[string]time.Time{},
	}
	s.newTransform = func(shardID string, start StartPosition, log *slog.Logger) recordTransform {
		return s.opts.Records.transformer(shardID, start.HashKeyRange, log)
	}
	return s, nil
}

// Register makes sure the consumer exists and is ACTIVE (see
// [fanout.RegisterConsumer]) and returns it; with SubscriberOptions.ConsumerARN set
// it returns that consumer without any call. The result is kept: later
// calls return at once. Open calls it; a worker calls it at start-up so that
// a consumer that cannot be registered (fanout.ErrConsumerLimit,
// kcl.ErrStreamNotFound) stops it with a clear error. ctx bounds the wait.
func (s *Subscriber) Register(ctx context.Context) (fanout.Consumer, error) {
	select {
	case s.regSem <- struct{}{}:
	case <-ctx.Done():
		return fanout.Consumer{}, fmt.Errorf("fanout: register consumer: %w", ctx.Err())
	}
	defer func() { <-s.regSem }()
	s.mu.Lock()
	c := s.consumer
	s.mu.Unlock()
	if c.ARN != "" {
		return c, nil
	}
	if s.opts.ConsumerARN != "" {
		c = fanout.Consumer{Name: s.opts.ConsumerName, ARN: s.opts.ConsumerARN, Status: fanout.ConsumerActive}
	} else {
		streamARN := s.opts.StreamARN
		if streamARN == "" {
			var err error
			if streamARN, err = fanout.StreamARN(ctx, s.client, s.opts.StreamName); err != nil {
				return fanout.Consumer{}, err
			}
		}
		var err error
		if c, err = fanout.RegisterConsumer(ctx, s.client, streamARN, s.opts.ConsumerName); err != nil {
			return fanout.Consumer{}, err
		}
		s.opts.Logger.InfoContext(ctx, "fanout: enhanced fan-out consumer ready",
			slog.String("consumer", c.Name), slog.String("arn", c.ARN))
	}
	s.mu.Lock()
	s.consumer = c
	s.mu.Unlock()
	return c, nil
}

// forget drops the registered consumer arn, which Kinesis no longer knows,
// so that the next Register looks it up (and registers it) again. It reports
// whether that can help: not with a fixed ConsumerARN.
func (s *Subscriber) forget(arn string) bool {
	if s.opts.ConsumerARN != "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.consumer.ARN == arn {
		s.consumer = fanout.Consumer{}
	}
	return true
}

// waitTurn waits until shardID may be subscribed to again, and books the
// following turn.
func (s *Subscriber) waitTurn(ctx context.Context, shardID string) error {
	s.mu.Lock()
	at := time.Now()
	if next, ok := s.nextSubscribe[shardID]; ok && next.After(at) {
		at = next
	}
	s.nextSubscribe[shardID] = at.Add(minSubscribeInterval)
	s.mu.Unlock()
	return sleep(ctx, time.Until(at))
}

// stream returns the stream's name or ARN for logs.
func (s *Subscriber) stream() string {
	if s.opts.StreamARN != "" {
		return s.opts.StreamARN
	}
	return s.opts.StreamName
}

// Open starts reading shardID from start by enhanced fan-out. It registers
// the consumer first if that was not done yet (an error is returned as a
// *kcl.ShardError, matching kcl.ErrStreamNotFound for a missing stream);
// then subscribing and every resubscription happen in the reader's
// goroutine, and errors that retrying cannot fix are reported by Next.
//
// ctx bounds Open only; the reader runs until Close.
//
// Positions follow the Poller's rules: a checkpoint that is a record's
// position starts the first subscription AT_SEQUENCE_NUMBER of it, and
// records at or before it are dropped (so a checkpoint inside a KPL
// aggregate resumes with the next user record); if the stream no longer
// retains it, reading resumes at TRIM_HORIZON and the first batch has Gap
// set. Without one, reading begins at start.Initial. Later subscriptions
// start AFTER_SEQUENCE_NUMBER the ContinuationSequenceNumber of the last
// event. A SHARD_END checkpoint is refused.
func (s *Subscriber) Open(ctx context.Context, shardID string, start StartPosition) (Reader, error) {
	if shardID == "" {
		return nil, fmt.Errorf("%w: fanout: empty shard ID", kcl.ErrInvalidConfig)
	}
	if err := checkStart(start); err != nil {
		return nil, &kcl.ShardError{ShardID: shardID, Op: "open", Err: err}
	}
	if _, err := s.Register(ctx); err != nil {
		return nil, &kcl.ShardError{ShardID: shardID, Op: "register consumer", Err: err}
	}
	r := &subReader{
		s:       s,
		shardID: shardID,
		log:     s.opts.Logger.With(slog.String("stream", s.stream()), slog.String("shard", shardID)),
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
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	go r.run(fetchCtx)
	return r, nil
}

// ownEventStreamCodec gives one SubscribeToShard call an event-stream codec
// of its own. The SDK's default awsJson protocol keeps a single codec per
// client, with unsynchronised scratch state, and uses it from the goroutine
// of every open event stream: concurrent subscriptions on one client race
// (aws/smithy-go#714; the race detector reports it). A protocol replaced
// per call is not shared. A protocol set by the caller (any other type) is
// left alone.
func ownEventStreamCodec(o *kinesis.Options) {
	if _, ok := o.Protocol.(*awsjson.Protocol); ok {
		o.Protocol = awsjson.New11(schemas.Kinesis_20131202)
	}
}

// errNoEvent ends a subscription that sent nothing for EventTimeout.
var errNoEvent = errors.New("fanout: no event within the event timeout (half-open subscription)")

// subReader is the Reader of a Subscriber. Fields after the first group
// belong to the subscription goroutine.
type subReader struct {
	s         *Subscriber
	shardID   string
	log       *slog.Logger
	queue     *prefetchQueue
	cancel    context.CancelFunc
	done      chan struct{} // closed when the subscription goroutine has returned
	closed    chan struct{} // closed by Close
	closeOnce sync.Once

	start StartPosition
	bo    *backoff.ExponentialBackOff
	// transform makes user records out of an event's Kinesis records.
	transform recordTransform
	// after is the position of the last record delivered (at first the
	// checkpoint): records at or before it are dropped.
	after kcl.ExtendedSequenceNumber
	// continuation is the ContinuationSequenceNumber of the last event; the
	// next subscription starts after it.
	continuation string
	// trimHorizon is set when the start position was trimmed: until an
	// event arrives, subscriptions start at TRIM_HORIZON.
	trimHorizon bool
	// latestAt is when the first LATEST subscription was asked for. A
	// subscription replacing it before any event starts AT_TIMESTAMP
	// latestAt, so that records written meanwhile are not skipped.
	latestAt time.Time
	// expectSeq, after an AT_SEQUENCE_NUMBER start at the checkpoint, is the
	// sequence number the first record must have; a later one means it was
	// trimmed.
	expectSeq string
	// gap is a retention gap not yet reported on a batch.
	gap bool
	// notFound counts ResourceNotFound errors since the last event.
	notFound int
}

// Next returns the next batch, waiting until one is ready or ctx ends. After
// the batch with ShardEnded it returns io.EOF; after Close, ErrClosed; after
// an error that retrying cannot fix, that error (a *kcl.ShardError), again on
// every call.
func (r *subReader) Next(ctx context.Context) (Batch, error) {
	select {
	case <-r.closed:
		return Batch{}, ErrClosed
	default:
	}
	return r.queue.pop(ctx, r.closed)
}

// Close cancels the subscription, closes its event stream and waits for the
// reader's goroutine (and the SDK's, within a few seconds) to end. It is safe
// to call more than once and always returns nil.
func (r *subReader) Close() error {
	r.closeOnce.Do(func() {
		close(r.closed)
		r.cancel()
	})
	<-r.done
	return nil
}

// run is the subscription goroutine.
func (r *subReader) run(ctx context.Context) {
	defer close(r.done)
	err := r.subscribeLoop(ctx)
	if ctx.Err() != nil {
		return // closed: nobody reads the queue any more
	}
	r.queue.finish(err)
}

// subscribeLoop subscribes and resubscribes until the shard ends (io.EOF),
// an error that retrying cannot fix, or ctx ends.
func (r *subReader) subscribeLoop(ctx context.Context) error {
	for {
		c, err := r.s.Register(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.fatal("register consumer", err)
		}
		if err := r.s.waitTurn(ctx, r.shardID); err != nil {
			return err
		}
		in := &kinesis.SubscribeToShardInput{
			ConsumerARN:      aws.String(c.ARN),
			ShardId:          aws.String(r.shardID),
			StartingPosition: r.startingPosition(),
		}
		callStart := time.Now()
		out, err := r.s.client.SubscribeToShard(ctx, in, ownEventStreamCodec)
		r.observe(ctx, FetchEvent{Op: "SubscribeToShard", Duration: time.Since(callStart), Err: err})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := r.recover(ctx, "subscribe to shard", in, err); err != nil {
				return err
			}
			continue
		}
		events, ended, err := r.read(ctx, out.GetStream())
		switch {
		case ended:
			return io.EOF
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			r.observe(ctx, FetchEvent{Op: "SubscribeToShard", Duration: time.Since(callStart), Err: err})
			if err := r.recover(ctx, "read subscription", in, err); err != nil {
				return err
			}
		case events == 0:
			// Ended cleanly without a single event: not the five-minute end.
			// Do not spin on a server that keeps doing that.
			r.log.InfoContext(ctx, "fanout: subscription ended without events; subscribing again")
			if err := sleep(ctx, r.bo.NextBackOff()); err != nil {
				return err
			}
		default:
			// The subscription's five minutes are up: carry on from the
			// continuation.
			r.log.DebugContext(ctx, "fanout: subscription ended; subscribing again", slog.String("after", r.continuation))
		}
	}
}

// startingPosition is where the next subscription starts: after the last
// event, else at the start position.
func (r *subReader) startingPosition() *types.StartingPosition {
	r.expectSeq = ""
	switch {
	case r.continuation != "":
		return &types.StartingPosition{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: aws.String(r.continuation)}
	case r.trimHorizon:
		return &types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon}
	case isRecordPosition(r.start.After):
		r.expectSeq = r.start.After.SequenceNumber
		return &types.StartingPosition{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: aws.String(r.start.After.SequenceNumber)}
	}
	switch init := r.start.Initial; init.Type {
	case kcl.PositionTrimHorizon:
		return &types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon}
	case kcl.PositionAtTimestamp:
		return &types.StartingPosition{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: aws.Time(init.Timestamp)}
	}
	if r.latestAt.IsZero() {
		r.latestAt = time.Now()
		return &types.StartingPosition{Type: types.ShardIteratorTypeLatest}
	}
	return &types.StartingPosition{Type: types.ShardIteratorTypeAtTimestamp, Timestamp: aws.Time(r.latestAt)}
}

// read consumes one subscription's events until it ends, ctx ends, no event
// comes within EventTimeout (errNoEvent) or the shard ends. It always closes
// the event stream; err is the stream's error (nil when the subscription
// ended normally).
func (r *subReader) read(ctx context.Context, es *kinesis.SubscribeToShardEventStream) (events int, ended bool, err error) {
	defer func() {
		if cerr := r.closeStream(es); cerr != nil && err == nil && !ended && ctx.Err() == nil {
			err = cerr
		}
	}()
	timer := time.NewTimer(r.s.opts.EventTimeout)
	defer timer.Stop()
	ch := es.Events()
	for {
		select {
		case <-ctx.Done():
			return events, false, ctx.Err()
		case <-timer.C:
			return events, false, errNoEvent
		case ev, ok := <-ch:
			if !ok {
				return events, false, es.Err()
			}
			events++
			if e, isEvent := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent); isEvent {
				r.bo.Reset()
				r.notFound = 0
				ended, err := r.deliver(ctx, e.Value)
				if err != nil || ended {
					return events, ended, err
				}
			} else {
				r.log.DebugContext(ctx, "fanout: ignoring an unknown event", slog.String("type", fmt.Sprintf("%T", ev)))
			}
			// Time blocked in deliver (a full queue) does not count.
			timer.Reset(r.s.opts.EventTimeout)
		}
	}
}

// closeStream closes an event stream, waits (boundedly) for the SDK's
// goroutines reading it to end, and returns the stream's error.
func (r *subReader) closeStream(es *kinesis.SubscribeToShardEventStream) error {
	err := es.Close()
	if c, ok := es.Reader.(interface{ Closed() <-chan struct{} }); ok {
		t := time.NewTimer(streamCloseWait)
		defer t.Stop()
		select {
		case <-c.Closed():
		case <-t.C:
			r.log.Warn("fanout: the closed event stream's reader did not stop in time")
		}
	}
	return err
}

// deliver turns an event into batches (several if it has more than
// MaxBatchRecords records) and queues them, waiting while the queue is full.
// It reports whether the shard ended.
func (r *subReader) deliver(ctx context.Context, ev types.SubscribeToShardEvent) (bool, error) {
	raw := ev.Records
	behind := aws.ToInt64(ev.MillisBehindLatest)
	var size int
	for _, rec := range raw {
		size += len(rec.Data)
	}
	r.observe(ctx, FetchEvent{Op: "SubscribeToShardEvent", Records: len(raw), Bytes: size, MillisBehindLatest: behind})
	if len(raw) > 0 && r.expectSeq != "" {
		first := aws.ToString(raw[0].SequenceNumber)
		if kcl.CompareSequenceNumbers(first, r.expectSeq) > 0 {
			r.gap = true
			r.log.WarnContext(ctx, "fanout: start position no longer retained by the stream: records after it may be lost",
				slog.String("expected", r.expectSeq), slog.String("first", first))
		}
		r.expectSeq = ""
	}
	cont := aws.ToString(ev.ContinuationSequenceNumber)
	ended := cont == "" && len(ev.ChildShards) > 0
	switch {
	case cont != "":
		r.continuation = cont
		r.trimHorizon = false
	case !ended:
		r.log.WarnContext(ctx, "fanout: event without a continuation sequence number or child shards; ignoring")
	}
	recs := filterAfter(r.transform(ctx, raw), r.after)
	if len(recs) > 0 {
		r.after = recs[len(recs)-1].Position()
	}
	var children []string
	if ended {
		children = childShardIDs(ev.ChildShards)
	}
	for first := true; first || len(recs) > 0; first = false {
		n := min(len(recs), r.s.opts.MaxBatchRecords)
		// A full slice expression: a processor appending to its batch must
		// not overwrite the next one.
		b := Batch{Records: recs[:n:n], MillisBehindLatest: behind, Gap: r.gap}
		recs = recs[n:]
		if n == 0 {
			b.Records = nil
		}
		if len(recs) == 0 && ended {
			b.ShardEnded = true
			b.ChildShardIDs = children
		}
		if err := r.queue.push(ctx, b); err != nil {
			return false, err
		}
		r.gap = false
	}
	return ended, nil
}

// recover decides what follows a failed subscription: nil to subscribe again
// (after a backoff when that helps), or the error that ends the reader.
func (r *subReader) recover(ctx context.Context, op string, in *kinesis.SubscribeToShardInput, err error) error {
	kind := classify(err)
	if errors.Is(err, errNoEvent) {
		r.log.WarnContext(ctx, "fanout: no event within the event timeout: subscribing again",
			slog.Duration("timeout", r.s.opts.EventTimeout), slog.String("after", r.continuation))
		return sleep(ctx, r.bo.NextBackOff())
	}
	switch kind {
	case kindTrimmed:
		if t := in.StartingPosition.Type; t == types.ShardIteratorTypeAtSequenceNumber || t == types.ShardIteratorTypeAfterSequenceNumber {
			r.log.WarnContext(ctx, "fanout: start position no longer retained by the stream, resuming at TRIM_HORIZON: records after it may be lost",
				slog.String("sequence", aws.ToString(in.StartingPosition.SequenceNumber)), slog.Any("error", err))
			r.gap = true
			r.trimHorizon = true
			r.continuation = ""
			return nil
		}
	case kindNotFound:
		// The consumer may have been deregistered (its ARN is then unknown):
		// look it up, or register it, once. Still not found: the stream or
		// the shard is gone.
		r.notFound++
		if r.notFound == 1 && r.s.forget(aws.ToString(in.ConsumerARN)) {
			r.log.WarnContext(ctx, "fanout: consumer, stream or shard not found; checking the consumer", slog.Any("error", err))
			return nil
		}
	}
	if !kind.Retryable() {
		return r.fatal(op, err)
	}
	delay := r.bo.NextBackOff()
	level := slog.LevelWarn
	if kind == kindThrottled {
		level = slog.LevelInfo // ResourceInUse after a hand-over, or a busy account: routine
	}
	r.log.Log(ctx, level, "fanout: "+op+" failed, subscribing again",
		slog.String("kind", kind.String()), slog.Duration("backoff", delay), slog.Any("error", err))
	return sleep(ctx, delay)
}

// fatal wraps an error that ends the reader.
func (r *subReader) fatal(op string, err error) error {
	if classify(err) == kindNotFound && !errors.Is(err, kcl.ErrStreamNotFound) {
		err = fmt.Errorf("%w: %w", kcl.ErrStreamNotFound, err)
	}
	return &kcl.ShardError{ShardID: r.shardID, Op: op, Err: err}
}

// observe passes ev to the Observer, if any, unless the reader is closing.
func (r *subReader) observe(ctx context.Context, ev FetchEvent) {
	obs := r.s.opts.Observer
	if obs == nil || ctx.Err() != nil {
		return
	}
	ev.ShardID = r.shardID
	if ev.Err != nil {
		ev.ErrorKind = ErrorKind(ev.Err)
	}
	obs(ev)
}
