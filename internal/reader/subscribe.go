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
	"github.com/aws/aws-sdk-go-v2/service/kinesis/schemas"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"
)

const (
	// minSubscribeInterval is the least time between two SubscribeToShard
	// calls of one consumer on one shard (the API allows one per second).
	minSubscribeInterval = time.Second
	// streamCloseWait bounds the wait, after an event stream is closed, for
	// the SDK's goroutines reading it to end.
	streamCloseWait = 5 * time.Second
)

// consumer is the enhanced fan-out consumer the readers of one [Shards]
// subscribe through, with the per-shard pacing of their subscribe calls.
// It is safe for concurrent use.
type consumer struct {
	client fanout.FanOutAPI
	opts   Options

	regSem chan struct{} // one registration at a time; ctx-aware mutex

	mu      sync.Mutex
	current fanout.Consumer // zero until registered
	// nextSubscribe is, per shard, the earliest time of the next
	// SubscribeToShard call (one per second per shard and consumer). It
	// holds one entry per shard ever read.
	nextSubscribe map[string]time.Time
}

func newConsumer(client fanout.FanOutAPI, opts Options) *consumer {
	return &consumer{client: client, opts: opts, regSem: make(chan struct{}, 1), nextSubscribe: map[string]time.Time{}}
}

// register makes sure the consumer exists and is ACTIVE (see
// [fanout.RegisterConsumer]) and returns it; with Options.ConsumerARN set it
// returns that consumer without any call. The result is kept: later calls
// return at once.
func (c *consumer) register(ctx context.Context) (fanout.Consumer, error) {
	select {
	case c.regSem <- struct{}{}:
	case <-ctx.Done():
		return fanout.Consumer{}, fmt.Errorf("reader: register consumer: %w", ctx.Err())
	}
	defer func() { <-c.regSem }()
	c.mu.Lock()
	got := c.current
	c.mu.Unlock()
	if got.ARN != "" {
		return got, nil
	}
	if c.opts.ConsumerARN != "" {
		got = fanout.Consumer{Name: c.opts.ConsumerName, ARN: c.opts.ConsumerARN, Status: types.ConsumerStatusActive}
	} else {
		streamARN := c.opts.StreamARN
		if streamARN == "" {
			var err error
			if streamARN, err = (awsx.Stream{Name: c.opts.StreamName}).ResolveARN(ctx, c.client); err != nil {
				return fanout.Consumer{}, err
			}
		}
		var err error
		if got, err = fanout.RegisterConsumer(ctx, c.client, streamARN, c.opts.ConsumerName); err != nil {
			return fanout.Consumer{}, err
		}
		c.opts.Logger.InfoContext(ctx, "reader: enhanced fan-out consumer ready",
			slog.String("consumer", got.Name), slog.String("arn", got.ARN))
	}
	c.mu.Lock()
	c.current = got
	c.mu.Unlock()
	return got, nil
}

// forget drops the registered consumer arn, which Kinesis no longer knows,
// so that the next register looks it up (and registers it) again. It
// reports whether that can help: not with a fixed ConsumerARN.
func (c *consumer) forget(arn string) bool {
	if c.opts.ConsumerARN != "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current.ARN == arn {
		c.current = fanout.Consumer{}
	}
	return true
}

// waitTurn waits until shardID may be subscribed to again, and books the
// following turn.
func (c *consumer) waitTurn(ctx context.Context, shardID string) error {
	c.mu.Lock()
	at := time.Now()
	if next, ok := c.nextSubscribe[shardID]; ok && next.After(at) {
		at = next
	}
	c.nextSubscribe[shardID] = at.Add(minSubscribeInterval)
	c.mu.Unlock()
	return sleep(ctx, time.Until(at))
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
var errNoEvent = errors.New("reader: no event within the event timeout (half-open subscription)")

// subscribeFetcher reads a shard by SubscribeToShard, subscribing again
// (AFTER_SEQUENCE_NUMBER the last event's ContinuationSequenceNumber) when
// a subscription ends.
type subscribeFetcher struct {
	r *shardReader
	c *consumer
	// notFound counts ResourceNotFound errors since the last event.
	notFound int
}

// open registers the consumer if that was not done yet.
func (s *subscribeFetcher) open(ctx context.Context) error {
	if _, err := s.c.register(ctx); err != nil {
		return fmt.Errorf("shardline: shard %s: register consumer: %w", s.r.shardID, err)
	}
	return nil
}

// fetch subscribes and resubscribes until the shard ends (io.EOF), an error
// that retrying cannot fix, or ctx ends.
func (s *subscribeFetcher) fetch(ctx context.Context) error {
	r := s.r
	for {
		c, err := s.c.register(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.fatal("register consumer", err)
		}
		if err := s.c.waitTurn(ctx, r.shardID); err != nil {
			return err
		}
		pos := r.begin(types.ShardIteratorTypeAfterSequenceNumber)
		in := &kinesis.SubscribeToShardInput{
			ConsumerARN:      aws.String(c.ARN),
			ShardId:          aws.String(r.shardID),
			StartingPosition: &types.StartingPosition{Type: pos.typ},
		}
		if pos.seq != "" {
			in.StartingPosition.SequenceNumber = aws.String(pos.seq)
		}
		if !pos.at.IsZero() {
			in.StartingPosition.Timestamp = aws.Time(pos.at)
		}
		callStart := time.Now()
		out, err := s.c.client.SubscribeToShard(ctx, in, ownEventStreamCodec)
		r.observe(ctx, "SubscribeToShard", time.Since(callStart), nil, 0, err)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := s.recover(ctx, "subscribe to shard", in, pos, err); err != nil {
				return err
			}
			continue
		}
		events, ended, err := s.read(ctx, out.GetStream())
		switch {
		case ended:
			return io.EOF
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			r.observe(ctx, "SubscribeToShard", time.Since(callStart), nil, 0, err)
			if err := s.recover(ctx, "read subscription", in, pos, err); err != nil {
				return err
			}
		case events == 0:
			// Ended cleanly without a single event: not the five-minute end.
			// Do not spin on a server that keeps doing that.
			r.log.InfoContext(ctx, "reader: subscription ended without events; subscribing again")
			if err := sleep(ctx, r.nextDelay()); err != nil {
				return err
			}
		default:
			// The subscription's five minutes are up: carry on from the
			// continuation.
			r.log.DebugContext(ctx, "reader: subscription ended; subscribing again", slog.String("after", r.resume))
		}
	}
}

// read consumes one subscription's events until it ends, ctx ends, no event
// comes within EventTimeout (errNoEvent) or the shard ends. It always closes
// the event stream; err is the stream's error (nil when the subscription
// ended normally).
//
// Each event is observed with the time waited for it: since the previous
// event was handed over, or since the subscribe call returned.
func (s *subscribeFetcher) read(ctx context.Context, es *kinesis.SubscribeToShardEventStream) (events int, ended bool, err error) {
	r := s.r
	defer func() {
		if cerr := s.closeStream(es); cerr != nil && err == nil && !ended && ctx.Err() == nil {
			err = cerr
		}
	}()
	timeout := r.opts.EventTimeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	waitStart := time.Now()
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
				s.notFound = 0
				ended, err := s.deliver(ctx, e.Value, time.Since(waitStart))
				if err != nil || ended {
					return events, ended, err
				}
			} else {
				r.log.DebugContext(ctx, "reader: ignoring an unknown event", slog.String("type", fmt.Sprintf("%T", ev)))
			}
			// Time blocked in deliver (a full queue) does not count.
			timer.Reset(timeout)
			waitStart = time.Now()
		}
	}
}

// deliver observes one event and hands it to the core. It reports whether
// the shard ended.
func (s *subscribeFetcher) deliver(ctx context.Context, ev types.SubscribeToShardEvent, waited time.Duration) (bool, error) {
	r := s.r
	behind := aws.ToInt64(ev.MillisBehindLatest)
	r.observe(ctx, "SubscribeToShardEvent", waited, ev.Records, behind, nil)
	cont := aws.ToString(ev.ContinuationSequenceNumber)
	f := fetched{
		records:      ev.Records,
		millisBehind: behind,
		resume:       cont,
		ended:        cont == "" && len(ev.ChildShards) > 0,
		maxBatch:     r.opts.MaxRecords,
	}
	if f.ended {
		f.children = ev.ChildShards
	} else if cont == "" {
		r.log.WarnContext(ctx, "reader: event without a continuation sequence number or child shards; ignoring")
	}
	return r.deliver(ctx, f)
}

// closeStream closes an event stream, waits (boundedly) for the SDK's
// goroutines reading it to end, and returns the stream's error.
func (s *subscribeFetcher) closeStream(es *kinesis.SubscribeToShardEventStream) error {
	err := es.Close()
	if c, ok := es.Reader.(interface{ Closed() <-chan struct{} }); ok {
		t := time.NewTimer(streamCloseWait)
		defer t.Stop()
		select {
		case <-c.Closed():
		case <-t.C:
			s.r.log.Warn("reader: the closed event stream's reader did not stop in time")
		}
	}
	return err
}

// recover decides what follows a failed subscription that started at pos:
// nil to subscribe again (after a backoff when that helps), or the error
// that ends the reader.
func (s *subscribeFetcher) recover(ctx context.Context, op string, in *kinesis.SubscribeToShardInput, pos position, err error) error {
	r := s.r
	if errors.Is(err, errNoEvent) {
		r.log.WarnContext(ctx, "reader: no event within the event timeout: subscribing again",
			slog.Duration("timeout", r.opts.EventTimeout), slog.String("after", r.resume))
		return sleep(ctx, r.nextDelay())
	}
	switch classify(err) {
	case kindTrimmed:
		if pos.seq != "" {
			r.trimmed(ctx, pos, err)
			return nil
		}
	case kindNotFound:
		// The consumer may have been deregistered (its ARN is then unknown):
		// look it up, or register it, once. Still not found: the stream or
		// the shard is gone.
		s.notFound++
		if s.notFound == 1 && s.c.forget(aws.ToString(in.ConsumerARN)) {
			r.log.WarnContext(ctx, "reader: consumer, stream or shard not found; checking the consumer", slog.Any("error", err))
			return nil
		}
	}
	return r.retry(ctx, op, err)
}
