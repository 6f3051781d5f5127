package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shardline/shardline/internal/delivery"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// DeliveryPolicy holds the controls over how a shard's records reach its
// processor, in the manner of AWS Lambda's Kinesis event source mapping.
// Every control is off in the zero value: one batch per read, delivered
// again whole after a failure until it succeeds. A processor can always
// return a *kcl.PartialFailureError to have only the records from the
// failed one on delivered again.
type DeliveryPolicy struct {
	// MaxBatchSize, when positive, caps the records of one batch: a read
	// (or a gathered batch) holding more is delivered as several batches,
	// in order. With MaxBatchingWindow it also ends the gathering early.
	MaxBatchSize int
	// MaxBatchingWindow, when positive, gathers records across reads
	// before calling the processor: from the first record read, for at
	// most this long, until MaxBatchSize records or PrefetchBytes bytes are
	// gathered, or the shard ends. The reads ahead stay bounded by
	// PrefetchBatches and PrefetchBytes.
	MaxBatchingWindow time.Duration

	// Filter, when set, is applied to every record after de-aggregation
	// and decoding; records for which it returns false are never passed to
	// the processor, are reported (EventRecordsFiltered) and count as
	// processed for checkpoints. It must be quick and safe for concurrent
	// use (shards run in parallel).
	Filter func(kcl.Record) bool

	// BisectOnError splits a failing batch in halves, delivered one after
	// the other (each split again while it fails), to isolate the failing
	// records.
	BisectOnError bool

	// MaxAttempts, when positive, gives a record (or the failing part
	// isolated by BisectOnError, or a whole failing batch without it) this
	// many failed deliveries; then it goes to DeadLetters.
	MaxAttempts int
	// MaxRecordAge, when positive, sends a failing record older than this
	// (by its arrival time) to DeadLetters without further attempts.
	MaxRecordAge time.Duration
	// DeadLetters takes the records given up on. Required with MaxAttempts
	// or MaxRecordAge (records are never dropped silently); the checkpoint
	// moves past a record only once the handler accepted it. A
	// *producer.Producer writing to another stream is one.
	DeadLetters kcl.DeadLetterHandler

	// Parallelism, when above 1, runs up to this many batches of one
	// shard at once: each record goes to a lane chosen by a hash of its
	// partition key, so the records of one key stay in order and are never
	// processed concurrently. The processor must then be safe for
	// concurrent use. Checkpoints advance only to the low-water mark (the
	// position below which every record read was processed), whatever the
	// processor asks: a checkpoint beyond it is stored once the mark reaches
	// it, and Prepare beyond it is refused. Up to MaxRecords ×
	// PrefetchBatches records wait in the lanes. A graceful stop, a hand-over and
	// the shard's end wait for every lane to finish first. Empty batches
	// (CallProcessorOnEmptyBatches) are not delivered in this mode.
	Parallelism int
}

func (p DeliveryPolicy) validate() error {
	var errs []string
	if p.MaxBatchSize < 0 || p.MaxBatchingWindow < 0 || p.Parallelism < 0 {
		errs = append(errs, "MaxBatchSize, MaxBatchingWindow and Parallelism must not be negative")
	}
	if err := p.internal().Validate(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("Delivery: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (p DeliveryPolicy) internal() delivery.Policy {
	return delivery.Policy{MaxAttempts: p.MaxAttempts, MaxRecordAge: p.MaxRecordAge, DeadLetters: p.DeadLetters,
		Bisect: p.BisectOnError, Filter: p.Filter}
}

// deliveryKinds maps the delivery policies' actions to event kinds.
var deliveryKinds = map[delivery.EventKind]EventKind{
	delivery.Filtered:       EventRecordsFiltered,
	delivery.PartialFailure: EventPartialFailure,
	delivery.Bisected:       EventBisect,
	delivery.DeadLettered:   EventDeadLetter,
}

// newDriver returns the delivery driver of the shard's machine.
func (s *shardState) newDriver() *delivery.Driver {
	return delivery.New(s.w.cfg.Delivery.internal(), delivery.Env{
		ShardID: s.id,
		Machine: s.m,
		Before: func() error {
			// Checked synchronously: after a pause (GC, SIGSTOP) past the
			// lease, the expiry timer may not have run yet, but no batch
			// may start.
			if !s.h.Valid() {
				return fmt.Errorf("%w: lease not valid before delivery", kcl.ErrLeaseLost)
			}
			return nil
		},
		Wait:    s.backoffWait,
		Observe: s.observeCall,
		Event: func(e delivery.Event) {
			s.w.hooks.emit(Event{Kind: deliveryKinds[e.Kind], ShardID: s.id, Records: e.Records, Err: e.Err})
		},
		Log: s.log,
	})
}

// backoffWait waits before the next attempt after failures failures (see
// Worker.retryDelay).
func (s *shardState) backoffWait(ctx context.Context, failures int, cause error) error {
	if err := s.h.Err(); err != nil {
		return err
	}
	d := s.w.retryDelay(failures)
	s.log.Warn("retrying", "op", "process records", "attempt", failures, "backoff", d, shardproc.ErrAttr(cause))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("process records: %w", context.Cause(ctx))
	case <-s.h.Lost():
		return fmt.Errorf("process records: %w", kcl.ErrLeaseLost)
	case <-t.C:
		return nil
	}
}

func (s *shardState) observeCall(c delivery.Call) {
	s.observeStall(opProcess, c.Err)
	if c.Err == nil {
		s.stall.progressed(time.Now())
	}
	if s.w.hooks.none() {
		return
	}
	s.w.hooks.emit(Event{
		Kind: EventBatchProcessed, ShardID: s.id, Records: len(c.Records), Bytes: bytesOf(c.Records),
		Attempt: c.Attempt, Duration: c.Duration, Err: c.Err, MillisBehindLatest: c.Behind, Arrivals: arrivals(c.Records),
	})
}

// gatherer reads a shard's batches, gathering several reads into one batch
// for MaxBatchingWindow after the first record (bounded by MaxBatchSize and
// PrefetchBytes); without a window it passes reads through.
type gatherer struct {
	rd       reader.Reader
	window   time.Duration
	size     int // MaxBatchSize; 0: no bound
	maxBytes int // PrefetchBytes
	err      error
}

// next returns the next batch. An error met while gathering is returned by
// the call after the one returning the records gathered before it.
func (g *gatherer) next(ctx context.Context) (reader.Batch, error) {
	if g.err != nil {
		err := g.err
		g.err = nil
		return reader.Batch{}, err
	}
	b, err := g.rd.Next(ctx)
	if err != nil || g.window <= 0 || b.ShardEnded || len(b.Records) == 0 {
		return b, err
	}
	wctx, cancel := context.WithTimeout(ctx, g.window)
	defer cancel()
	bytes := reader.RecordsMemory(b.Records)
	for (g.size == 0 || len(b.Records) < g.size) && bytes < int64(g.maxBytes) {
		more, err := g.rd.Next(wctx)
		if err != nil {
			if wctx.Err() == nil || ctx.Err() != nil {
				g.err = err // delivered next time, after what was gathered
			}
			break
		}
		b.Records = append(b.Records, more.Records...)
		b.MillisBehindLatest = more.MillisBehindLatest
		b.Gap = b.Gap || more.Gap
		bytes += reader.RecordsMemory(more.Records)
		if more.ShardEnded {
			b.ShardEnded, b.ChildShardIDs = true, more.ChildShardIDs
			break
		}
	}
	return b, nil
}

// chunks cuts recs into batches of at most size records (size 0: one).
func chunks(recs []kcl.Record, size int) [][]kcl.Record {
	if size <= 0 || len(recs) <= size {
		return [][]kcl.Record{recs}
	}
	var out [][]kcl.Record
	for len(recs) > 0 {
		n := min(size, len(recs))
		out = append(out, recs[:n:n])
		recs = recs[n:]
	}
	return out
}

// startLanes starts the shard's per-key lanes.
func (s *shardState) startLanes(ctx context.Context) *delivery.Lanes {
	n := s.w.cfg.Delivery.Parallelism
	s.log.Info("delivering with per-key lanes", "parallelism", n)
	// Records wait in the lanes as they would in the read-ahead queue.
	limit := s.w.cfg.MaxRecords * s.w.cfg.PrefetchBatches
	return delivery.NewLanes(ctx, s.d, n, limit, func(busy int) {
		s.w.hooks.emit(Event{Kind: EventLanesBusy, ShardID: s.id, LanesBusy: busy})
	})
}

// drain waits for every lane to finish what was dispatched (no-op without
// lanes). It returns false when a lane had to stop or ctx ended.
func (s *shardState) drain(ctx context.Context) bool {
	if s.lanes == nil {
		return true
	}
	began := time.Now()
	if err := s.lanes.Drain(ctx); err != nil {
		s.log.Warn("draining the lanes failed", "err", err)
		return false
	}
	s.log.Info("lanes drained", "took", time.Since(began).Round(time.Millisecond))
	return true
}
