package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/delivery"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// shardState is one held shard's consumer.
type shardState struct {
	w   *Worker
	h   *lease.Handle
	id  string
	log *slog.Logger

	done chan struct{} // closed when the consumer goroutine ends
	prev *shardState   // an earlier consumer of the same shard still winding down

	m       *shardproc.Machine    // the processor's lifecycle; nil until the factory made one
	d       *delivery.Driver      // delivers batches to m under the delivery policy
	lanes   *delivery.Lanes       // with Parallelism: runs d's batches per key lane
	co      *checkpoint.Coalescer // nil unless Config.CheckpointInterval
	started bool                  // ShardStarted was reported
	stall   *stallWatch           // the stall detector (stall.go)
}

// outcome is why a shard consumer stopped.
type outcome int

const (
	outLost     outcome = iota // lease lost: LeaseLost, no checkpoint
	outGraceful                // planned stop: ShutdownRequested, checkpoint, release
	outHard                    // hard stop: release without callbacks
	outShardEnd                // shard finished: SHARD_END stored, release
	outGiveUp                  // could not start (factory error): release for a later retry
	outHandoff                 // another worker asked for the shard: like graceful, then hand over
)

// startShard launches the consumer goroutine of a newly acquired lease.
func (w *Worker) startShard(base context.Context, h *lease.Handle) {
	s := &shardState{w: w, h: h, id: h.Key(), log: w.log.With("shard", h.Key()), done: make(chan struct{})}
	s.stall = s.newStall()
	w.mu.Lock()
	if old := w.running[s.id]; old != nil {
		// The old consumer lost its lease but its processor has not returned
		// yet. The new one waits for it, so one shard never has two
		// processors running in this worker.
		s.log.Warn("lease acquired again while the previous consumer is still stopping; waiting for it")
		s.prev = old
	}
	w.running[s.id] = s
	w.shards.Add(1)
	w.mu.Unlock()
	go func() {
		defer w.shards.Done()
		defer close(s.done)
		defer func() {
			w.mu.Lock()
			if w.running[s.id] == s {
				delete(w.running, s.id)
			}
			w.mu.Unlock()
		}()
		s.run(base)
	}()
}

// run drives the shard from start to stop and performs the stop's duties.
func (s *shardState) run(base context.Context) {
	ctx, cancel := context.WithCancel(base)
	defer cancel()
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() { // cancel processing as soon as the lease is lost
		defer close(watchDone)
		select {
		case <-s.h.Lost():
			cancel()
		case <-stopWatch:
		}
	}()
	out := outHard
	if s.prev != nil {
		select {
		case <-s.prev.done:
		case <-ctx.Done():
		}
	}
	if ctx.Err() == nil {
		out = s.consume(ctx)
	}
	s.stall.end(time.Now())
	close(stopWatch)
	<-watchDone

	// The duties of a stop must not be cut short by the cancellation that
	// caused it: they get their own bounded context.
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(base), s.w.cfg.LeaseDuration)
	defer dcancel()
	if (s.h.Err() != nil || !s.h.Valid()) && out != outShardEnd {
		out = outLost
	}
	if s.started {
		s.w.hooks.onShard(ShardEvent{ShardID: s.id, Kind: ShardStopped, Reason: out.String()})
	}
	if out == outHard {
		s.flushCheckpoint(dctx, true)
	}
	switch out {
	case outLost:
		s.log.Info("lease lost; shard stopped", "cause", s.h.Err())
		if s.m != nil {
			if err := s.m.LeaseLost(dctx); err != nil {
				s.log.Warn("LeaseLost returned an error", shardproc.ErrAttr(err))
			}
		}
		return
	case outGraceful:
		s.log.Info("shard stopping for a graceful shutdown: final checkpoint, then release")
		s.shutdownRequested(dctx)
	case outHandoff:
		s.log.Info("shard stopping for a hand-over another worker asked for: final checkpoint, then hand-over")
		s.shutdownRequested(dctx)
		s.flushCheckpoint(dctx, true)
		if err := s.retryStop(dctx, "hand-over", func() error { return s.h.HandOver(dctx) }); err != nil {
			s.log.Warn("handing the lease over failed; the requester will take it after its timeout", "err", err)
		}
		return
	case outHard:
		s.log.Info("shard stopped without a final checkpoint (hard stop)")
		if s.m != nil {
			s.m.Stop()
		}
	case outShardEnd, outGiveUp:
	}
	if out == outGraceful {
		s.flushCheckpoint(dctx, true)
	}
	if err := s.retryStop(dctx, "release", func() error { return s.h.Release(dctx) }); err != nil && !errors.Is(err, kcl.ErrLeaseLost) {
		s.log.Warn("releasing lease failed; it will expire instead", "err", err)
	}
}

// shutdownRequested gives the processor a last chance to checkpoint and then
// has the machine store the end of the last successful batch.
func (s *shardState) shutdownRequested(ctx context.Context) {
	if s.m == nil {
		return
	}
	if err := s.m.ShutdownRequested(ctx); err != nil {
		s.log.Warn("ShutdownRequested returned an error", shardproc.ErrAttr(err))
	}
	var pos kcl.ExtendedSequenceNumber
	err := s.retryStop(ctx, "final checkpoint", func() (err error) {
		pos, err = s.m.FinalCheckpoint(ctx)
		return err
	})
	switch {
	case err != nil:
		s.log.Warn("final checkpoint failed", "position", pos, "err", err)
		s.m.Stop()
	case !pos.IsZero():
		s.log.Info("final checkpoint stored", "position", pos)
	}
}

// stopping reports whether the shard should wind down gracefully: the
// worker is shutting down, or another worker asked for the lease.
func (s *shardState) stopping() bool {
	select {
	case <-s.w.graceful:
		return true
	case <-s.h.HandoffRequested():
		return true
	default:
		return false
	}
}

// classify turns a context error into the outcome that caused it.
func (s *shardState) classify(ctx context.Context) outcome {
	if s.h.Err() != nil || !s.h.Valid() {
		return outLost
	}
	if ctx.Err() != nil {
		return outHard
	}
	select {
	case <-s.w.graceful:
		return outGraceful
	case <-s.h.HandoffRequested():
		return outHandoff
	default:
		return outGraceful
	}
}

// gracefulCtx is ctx, also cancelled when a graceful stop begins. It is used
// for waiting (fetching, backoff), never for a processor call, so a batch in
// flight completes.
func (s *shardState) gracefulCtx(ctx context.Context) (context.Context, func()) {
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-s.w.graceful:
			cancel()
		case <-s.h.HandoffRequested():
			cancel()
		case <-gctx.Done():
		}
	}()
	return gctx, func() { cancel(); <-done }
}

func (s *shardState) consume(ctx context.Context) outcome {
	l := s.h.Lease()
	if l.Finished() {
		return outShardEnd
	}
	gctx, gcancel := s.gracefulCtx(ctx)
	defer gcancel()

	if out, ok := s.waitForParents(ctx, gctx, l); !ok {
		return out
	}
	s.stall.begin(time.Now())
	proc, err := s.w.cfg.ProcessorFactory(s.id)
	if err != nil || proc == nil {
		s.log.Error("processor factory failed; releasing the lease for a later retry", shardproc.ErrAttr(err))
		return outGiveUp
	}
	var cw checkpoint.Writer = shardWriter{s}
	if s.w.cfg.CheckpointInterval > 0 {
		s.co = checkpoint.NewCoalescer(cw, s.w.cfg.CheckpointInterval, nil)
		cw = s.co
	}
	s.m = shardproc.NewMachine(shardproc.Config{ShardID: s.id, Processor: proc,
		Writer: cw, Checkpoint: l.Checkpoint,
		PendingCheckpoint: l.PendingCheckpoint, PendingState: l.PendingCheckpointState})
	s.d = s.newDriver()
	if err := s.retry(ctx, gctx, "initialize", func(int) error {
		err := s.m.Initialize(ctx)
		s.observeStall(opOpen, err)
		return err
	}); err != nil {
		return s.classify(ctx)
	}

	var rd reader.Reader
	err = s.retry(ctx, gctx, "open shard", func(int) error {
		var err error
		rd, err = s.w.source.Open(gctx, s.id, reader.StartPosition{After: l.Checkpoint, Initial: s.initialFor(l),
			HashKeyRange: reader.HashKeyRange{StartingHashKey: l.StartingHashKey, EndingHashKey: l.EndingHashKey}})
		if gctx.Err() == nil {
			s.observeStall(opOpen, err)
		}
		if errors.Is(err, kcl.ErrStreamNotFound) {
			return backoff.Permanent(err)
		}
		return err
	})
	if errors.Is(err, kcl.ErrStreamNotFound) && ctx.Err() == nil && gctx.Err() == nil {
		if out, ok := s.shardGone(ctx, gctx, err); ok {
			return out
		}
		s.w.fatal(err)
		return outHard
	}
	if err != nil {
		return s.classify(ctx)
	}
	defer rd.Close()
	s.log.Info("shard started", "checkpoint", l.Checkpoint.String())
	s.started = true
	s.w.hooks.onShard(ShardEvent{ShardID: s.id, Kind: ShardStarted})

	pol := s.w.cfg.Delivery
	g := &gatherer{rd: rd, window: pol.MaxBatchingWindow, size: pol.MaxBatchSize, maxBytes: s.w.cfg.PrefetchBytes}
	if pol.Parallelism > 1 {
		s.lanes = s.startLanes(ctx)
		defer s.lanes.Close()
	}
	for {
		if s.stopping() {
			s.drain(ctx)
			return s.classify(ctx)
		}
		b, err := g.next(gctx)
		s.flushCheckpoint(ctx, false)
		if err != nil {
			if errors.Is(err, io.EOF) {
				if !s.drain(ctx) {
					return s.classify(ctx)
				}
				return s.shardEnded(ctx, gctx, nil)
			}
			if ctx.Err() != nil || gctx.Err() != nil {
				s.drain(ctx) // a graceful stop waits for the lanes
				return s.classify(ctx)
			}
			if errors.Is(err, kcl.ErrStreamNotFound) {
				if out, ok := s.shardGone(ctx, gctx, err); ok {
					return out
				}
				s.w.fatal(err)
				return outHard
			}
			s.log.Error("reading shard failed", "err", err)
			return outHard
		}
		if len(b.Records) == 0 && b.MillisBehindLatest == 0 {
			s.stall.progressed(time.Now()) // at the tip
		}
		if b.Gap {
			s.log.Warn("checkpoint older than the stream's retention: resumed at TRIM_HORIZON; records were lost to retention",
				"checkpoint", l.Checkpoint.String())
		}
		if len(b.Records) > 0 || s.w.cfg.CallProcessorOnEmptyBatches {
			for _, recs := range chunks(b.Records, pol.MaxBatchSize) {
				b.Records = recs
				if out, ok := s.deliver(ctx, gctx, b); !ok {
					return out
				}
				s.stall.progressed(time.Now())
			}
		}
		if b.ShardEnded {
			if !s.drain(ctx) {
				return s.classify(ctx)
			}
			return s.shardEnded(ctx, gctx, b.ChildShardIDs)
		}
	}
}

// initialFor maps a lease's starting sentinel to an initial position (an
// AT_TIMESTAMP checkpoint reset by a replay carries its own timestamp).
func (s *shardState) initialFor(l lease.Lease) kcl.InitialPosition {
	return l.InitialPosition(s.w.cfg.InitialPosition)
}

// deliver hands one batch to the processor, under the delivery policy,
// until every record of it is processed (or filtered out, or
// dead-lettered). It returns ok=false with the reason when the shard must
// stop instead. A graceful stop does not interrupt the retries of a failing
// batch: the shard's records must not be skipped, and the stop's own
// deadline turns into a hard stop if the processor never recovers.
func (s *shardState) deliver(ctx, gctx context.Context, b reader.Batch) (outcome, bool) {
	batch := shardproc.Batch{Records: b.Records, MillisBehindLatest: b.MillisBehindLatest}
	deliver := s.d.Deliver
	if s.lanes != nil {
		deliver = s.lanes.Dispatch
	}
	if err := deliver(ctx, batch); err != nil {
		if ctx.Err() == nil && s.h.Err() == nil {
			s.log.Warn("delivery stopped", "err", err)
		}
		return s.classify(ctx), false
	}
	s.h.RecordLoad(float64(len(b.Records)))
	return 0, true
}

// shardEnded finishes a closed shard. The children the read reported are
// completed from the stream's listing (a reader may report none) and
// recorded on the lease; the processor (or the machine) stores SHARD_END;
// children waiting in this worker are woken; the children's leases are
// created at once, starting at TRIM_HORIZON.
func (s *shardState) shardEnded(ctx, gctx context.Context, children []string) outcome {
	shards, err := s.w.listShards(ctx)
	if err != nil {
		s.log.Warn("listing shards at shard end failed; using the children the read reported", "err", err)
		shards = nil
	}
	children = mergeIDs(children, childrenInListing(shards, s.id))
	if len(children) > 0 {
		// Recorded before SHARD_END, so a finished lease always names its
		// children, even if this worker dies right after.
		if _, err := s.h.UpdateShardInfo(ctx, func(l *lease.Lease) { l.ChildShardIDs = mergeIDs(l.ChildShardIDs, children) }); err != nil {
			s.log.Warn("recording child shards on the lease failed", "err", err)
		}
	}
	err = s.retry(ctx, ctx, "shard end", func(int) error { return s.m.ShardEnded(ctx, children) })
	if err != nil {
		return s.classify(ctx)
	}
	s.log.Info("shard ended", "children", children)
	// SHARD_END is stored: creating the children's leases needs no lease,
	// and must not be cut short by the loss of this one.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.w.cfg.LeaseDuration)
	defer cancel()
	s.w.finishShard(fctx, s.id, children, shards)
	return outShardEnd
}

// waitForParents holds the lease without processing until every parent shard
// whose lease exists has reached SHARD_END, so that records of one partition
// key stay in order across a split or merge. A parent ending in this worker
// wakes the child at once; parents elsewhere are checked every
// parentCheckInterval.
func (s *shardState) waitForParents(ctx, gctx context.Context, l lease.Lease) (outcome, bool) {
	if len(l.ParentShardIDs) == 0 {
		return 0, true
	}
	get := func(key string) (lease.Lease, error) { return s.w.store.Get(gctx, key) }
	var began time.Time
	logged := ""
	for {
		ended := s.w.reshard.ended.wait() // before the check: no end is missed
		pending, err := pendingParent(l.ParentShardIDs, get)
		switch {
		case err == nil && pending == "":
			if logged != "" {
				s.log.Info("parent shards finished; starting", "waited", time.Since(began).Round(time.Millisecond))
			}
			return 0, true
		case err != nil:
			if gctx.Err() == nil {
				s.log.Warn("reading a parent lease failed; will check again", "parent", pending, "err", err)
			}
		case pending != logged:
			if logged == "" {
				began = time.Now()
			}
			s.log.Info("waiting for parent shard to finish", "parent", pending)
			logged = pending
		}
		t := time.NewTimer(s.w.parentCheckInterval())
		select {
		case <-gctx.Done():
			t.Stop()
			return s.classify(ctx), false
		case <-ended:
		case <-t.C:
		}
		t.Stop()
	}
}

// shardGone handles a read refused because the shard does not exist. If the
// stream exists but no longer lists the shard, its records were all trimmed
// by the stream's retention: the shard is finished as if read to its end, so
// that its children do not wait for it forever. ok is false when the stream
// itself is gone (the caller stops the worker).
func (s *shardState) shardGone(ctx, gctx context.Context, cause error) (out outcome, ok bool) {
	shards, err := s.w.listShards(ctx)
	switch {
	case errors.Is(err, kcl.ErrStreamNotFound):
		return 0, false
	case err != nil:
		s.log.Warn("shard not found, and listing the stream's shards failed; releasing it for a later retry", "err", cause, "list_err", err)
		return outHard, true
	case slices.ContainsFunc(shards, func(n shardNode) bool { return n.ID == s.id }):
		s.log.Warn("shard not found although the stream lists it; releasing it for a later retry", "err", cause)
		return outHard, true
	}
	s.log.Warn("shard no longer exists (trimmed by the stream's retention); finishing it so that its children can start", "err", cause)
	return s.shardEnded(ctx, gctx, nil), true
}

// flushCheckpoint writes the checkpoint coalescing holds (see
// Config.CheckpointInterval): the one due while reading, or any (all) when
// the shard stops with its lease. A lost lease cannot be written: the
// held position is then lost to the next owner.
func (s *shardState) flushCheckpoint(ctx context.Context, all bool) {
	if s.co == nil {
		return
	}
	var err error
	if all {
		err = s.retryStop(ctx, "checkpoint flush", func() error { return s.co.Flush(ctx) })
	} else {
		err = s.co.FlushDue(ctx)
	}
	if err != nil && !errors.Is(err, kcl.ErrLeaseLost) {
		s.log.Warn("writing a coalesced checkpoint failed", "err", err)
	}
}

// writeCheckpoint stores a checkpoint through the lease handle.
func (s *shardState) writeCheckpoint(ctx context.Context, st checkpoint.State) (err error) {
	began := time.Now()
	defer func() {
		pos := st.Checkpoint
		if !st.Pending.IsZero() {
			pos = st.Pending
		}
		s.w.hooks.onCheckpoint(CheckpointEvent{ShardID: s.id, Position: pos, Duration: time.Since(began), Err: err})
	}()
	_, err = s.h.UpdateCheckpoint(ctx, checkpointEdit(st))
	s.observeStall(opCheckpoint, err)
	return err
}

// retry calls fn until it succeeds, backing off exponentially with jitter.
// It gives up only when wait (or ctx) ends, or fn returns a permanent error
// or a call the shard's lifecycle refuses. A panic in fn counts as an error.
func (s *shardState) retry(ctx, wait context.Context, what string, fn func(attempt int) error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = s.w.cfg.RetryInitialInterval
	bo.MaxInterval = s.w.cfg.RetryMaxInterval
	bo.MaxElapsedTime = 0
	bo.Reset()
	for attempt := 1; ; attempt++ {
		err := shardproc.Recover(func() error { return fn(attempt) })
		if err == nil {
			return nil
		}
		var perm *backoff.PermanentError
		if errors.As(err, &perm) {
			return perm.Err
		}
		var refused *shardproc.CallError
		if errors.As(err, &refused) {
			return err
		}
		if ctx.Err() != nil || wait.Err() != nil {
			return fmt.Errorf("%s: %w", what, context.Cause(wait))
		}
		if errors.Is(err, kcl.ErrLeaseLost) && s.h.Err() != nil {
			return err
		}
		d := bo.NextBackOff()
		s.log.Warn("retrying", "op", what, "attempt", attempt, "backoff", d, shardproc.ErrAttr(err))
		t := time.NewTimer(d)
		select {
		case <-wait.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, context.Cause(wait))
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// String names the outcome as ShardEvent.Reason does.
func (o outcome) String() string {
	switch o {
	case outLost:
		return "lease_lost"
	case outGraceful:
		return "shutdown"
	case outHard:
		return "stopped"
	case outShardEnd:
		return "shard_end"
	case outGiveUp:
		return "error"
	case outHandoff:
		return "handoff"
	}
	return "unknown"
}

func bytesOf(recs []kcl.Record) int {
	n := 0
	for _, r := range recs {
		n += len(r.Data)
	}
	return n
}

// arrivals returns the records' arrival times (nil for none).
func arrivals(recs []kcl.Record) []time.Time {
	if len(recs) == 0 {
		return nil
	}
	at := make([]time.Time, len(recs))
	for i, r := range recs {
		at[i] = r.ApproximateArrivalTimestamp
	}
	return at
}

func oldestArrival(recs []kcl.Record) time.Time {
	if len(recs) == 0 {
		return time.Time{}
	}
	return recs[0].ApproximateArrivalTimestamp
}
