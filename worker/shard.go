package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/delivery"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// shardState is one held shard's consumer.
type shardState struct {
	w     *Worker
	h     *lease.Handle
	st    *streamState // the shard's stream
	id    string       // the lease key
	shard string       // the shard ID
	log   *slog.Logger
	// caughtUp is set once a removed stream's shard, draining, has read
	// up to the stream's tip.
	caughtUp bool

	done chan struct{} // closed when the consumer goroutine ends
	prev *shardState   // an earlier consumer of the same shard still winding down

	m       *shardproc.Machine    // the processor's lifecycle; nil until the factory made one
	d       *delivery.Driver      // delivers batches to m under the delivery policy
	lanes   *delivery.Lanes       // with Parallelism: runs d's batches per key lane
	co      *checkpoint.Coalescer // nil unless Config.CheckpointInterval
	started bool                  // ShardStarted was reported

	stall *stallWatch // the stall detector (stall.go)

	// For a stop that passes its bound (see Worker.abandon), read from
	// another goroutine: whether the goroutine is in user code, and the
	// reader to close for it.
	inFactory atomic.Bool
	mach      atomic.Pointer[shardproc.Machine]
	rdMu      sync.Mutex
	rd        reader.Reader
}

// maxLoggedCheckpoint caps a stored checkpoint quoted in a log line: one
// written by hand may be of any length.
const maxLoggedCheckpoint = 64

// outcome is why a shard consumer stopped.
type outcome int

const (
	outLost     outcome = iota // lease lost: LeaseLost, no checkpoint
	outGraceful                // planned stop: ShutdownRequested, checkpoint, hand to the planned survivor
	outHard                    // hard stop: release without callbacks
	outShardEnd                // shard finished: SHARD_END stored, release
	outGiveUp                  // the stored row changed under a shard that could not open (untilOpen): release; EventShardStopped reason "error"
	outHandoff                 // another worker asked for the shard: like graceful, then hand over
)

// startShard launches the consumer goroutine of a newly acquired lease.
func (w *Worker) startShard(base context.Context, h *lease.Handle) {
	st := w.streamFor(h.Key())
	if st == nil {
		// A stream removed meanwhile (the manager plans only with the
		// leases of streams this worker consumes).
		w.releases.Add(1)
		go func() {
			defer w.releases.Done()
			// Bounded like the stop duties: a bounded stop cancels it.
			ctx, cancel := context.WithTimeout(w.dutyCtx, w.cfg.LeaseDuration)
			defer cancel()
			if err := h.Release(ctx); err != nil {
				w.log.Warn("releasing the lease of a stream not consumed failed; it will expire instead", "lease", h.Key(), "err", err)
			}
		}()
		return
	}
	s := &shardState{w: w, h: h, st: st, id: h.Key(), shard: lease.ShardIDOf(h.Key()), done: make(chan struct{})}
	s.log = w.log.With("shard", s.shard)
	if st.id != "" {
		s.log = s.log.With("stream", st.name)
	}
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
	w.live[s] = struct{}{}
	w.mu.Unlock()
	go func() {
		defer close(s.done)
		defer func() {
			w.mu.Lock()
			if w.running[s.id] == s {
				delete(w.running, s.id)
			}
			delete(w.live, s)
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
	// caused it: they get their own context, bounded by the lease duration
	// and ended when a bounded stop passes its bound.
	dctx, dcancel := context.WithTimeout(s.w.dutyCtx, s.w.cfg.LeaseDuration)
	defer dcancel()
	if (s.h.Err() != nil || !s.h.Valid()) && out != outShardEnd {
		out = outLost
	}
	if s.started {
		s.w.hooks.emit(Event{Kind: EventShardStopped, ShardID: s.id, Reason: out.String()})
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
		s.log.Info("shard stopping for a graceful shutdown: final checkpoint, then hand-over")
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
	case outGiveUp:
		if s.m != nil {
			s.m.Stop() // released to restart from a repaired checkpoint
		}
	case outShardEnd:
	}
	if out == outGraceful {
		s.flushCheckpoint(dctx, true)
	}
	give, how := s.h.Release, "release"
	if out == outGraceful {
		// To the worker planned to take it, which needs no taking round.
		give, how = s.h.Pass, "hand-over"
	}
	if err := s.retryStop(dctx, how, func() error { return give(dctx) }); err != nil && !errors.Is(err, kcl.ErrLeaseLost) {
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
// worker is shutting down, another worker asked for the lease, or the
// stream was removed from the configuration (and, when draining, the shard
// has caught up).
func (s *shardState) stopping() bool {
	if removed, drain := s.st.removed(); removed && (!drain || s.caughtUp) {
		return true
	}
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
		stopped := s.st.stopped
		for {
			select {
			case <-s.w.graceful:
				cancel()
			case <-s.h.HandoffRequested():
				cancel()
			case <-stopped:
				if _, drain := s.st.removed(); drain {
					stopped = nil // read on until caught up (see stopping)
					continue
				}
				cancel()
			case <-gctx.Done():
			}
			return
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
	// A stored checkpoint that is no position is found before a processor
	// is made for it; the shard then waits for its repair.
	if err := storedCheckpointError(l); err != nil {
		if out, ok := s.untilOpen(ctx, gctx, l, err, func() error { return nil }); !ok {
			return out
		}
	}
	proc, ok := s.newProcessor(gctx)
	if !ok {
		return s.classify(ctx)
	}
	var cw checkpoint.Writer = shardWriter{s}
	if s.w.cfg.CheckpointInterval > 0 {
		s.co = checkpoint.NewCoalescer(cw, s.w.cfg.CheckpointInterval, nil)
		cw = s.co
	}
	s.m = shardproc.NewMachine(shardproc.Config{ShardID: s.shard, Processor: proc,
		Writer: cw, Checkpoint: l.Checkpoint,
		PendingCheckpoint: l.PendingCheckpoint, PendingState: l.PendingCheckpointState})
	s.mach.Store(s.m)
	s.d = s.newDriver()
	if err := s.retry(ctx, gctx, "initialize", func(int) error {
		err := s.m.Initialize(ctx)
		s.observeStall(opOpen, err)
		return err
	}); err != nil {
		return s.classify(ctx)
	}

	rd, out, ok := s.open(ctx, gctx, l, nil)
	if !ok {
		return out
	}
	defer func() { // the reader open at the end, if any
		if rd != nil {
			rd.Close()
		}
	}()
	s.setReader(rd)
	s.log.Info("shard started", "checkpoint", l.Checkpoint.String())
	s.started = true
	s.w.hooks.emit(Event{Kind: EventShardStarted, ShardID: s.id})

	pol := s.w.cfg.Delivery
	g := &gatherer{rd: rd, window: pol.MaxBatchingWindow, size: pol.MaxBatchSize, maxBytes: s.w.cfg.PrefetchBytes}
	if pol.Parallelism > 1 {
		s.lanes = s.startLanes(ctx)
		defer s.lanes.Close()
	}
	read := false // a batch came: the start position was accepted
	for {
		if s.stopping() {
			s.drain(ctx)
			return s.classify(ctx)
		}
		b, err := g.next(gctx)
		s.flushCheckpoint(ctx, false)
		if err != nil && !read && ctx.Err() == nil && gctx.Err() == nil &&
			(s.checkpointRefused(err, l) || errors.Is(err, kcl.ErrStreamNotFound) && recordCheckpoint(l)) {
			// A subscription reports a refused start position on its
			// stream, not when it opens.
			rd.Close()
			if rd, out, ok = s.open(ctx, gctx, l, err); !ok {
				return out
			}
			s.setReader(rd)
			g.rd = rd
			continue
		}
		read = read || err == nil
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
				return s.streamGone(err)
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
		// Caught up: a read found nothing more (MillisBehindLatest alone
		// is a time: records written together read as 0 behind).
		if removed, drain := s.st.removed(); removed && drain && len(b.Records) == 0 && b.MillisBehindLatest == 0 && !b.ShardEnded {
			s.caughtUp = true
			s.log.Info("stream removed, and its shard read up to its tip: stopping")
		}
		if b.ShardEnded {
			if !s.drain(ctx) {
				return s.classify(ctx)
			}
			return s.shardEnded(ctx, gctx, b.ChildShardIDs)
		}
	}
}

// open opens the shard's reader at the lease's checkpoint; prev, when set,
// is the error of a reader opened before whose first read failed. See
// untilOpen for what happens while it fails.
// setReader records the shard's open reader for closeReader.
func (s *shardState) setReader(rd reader.Reader) {
	s.rdMu.Lock()
	s.rd = rd
	s.rdMu.Unlock()
}

func (s *shardState) open(ctx, gctx context.Context, l lease.Lease, prev error) (rd reader.Reader, out outcome, ok bool) {
	out, ok = s.untilOpen(ctx, gctx, l, prev, func() (err error) {
		rd, err = s.st.source.Open(gctx, s.shard, reader.StartPosition{After: l.Checkpoint, Initial: s.initialFor(l),
			HashKeyRange: reader.HashKeyRange{StartingHashKey: l.StartingHashKey, EndingHashKey: l.EndingHashKey}})
		return err
	})
	return rd, out, ok
}

// untilOpen calls try (after checking the stored checkpoint, and first
// taking prev, if set, as its failure) until it succeeds. Meanwhile the
// shard keeps its lease and is stalled: the failure is reported once per
// reason (by the stall detector: "bad-checkpoint" at once, "open-failing"
// after a few failures in a row), and try is called again with backoff, from
// RetryInitialInterval doubling up to RetryMaxInterval, so that no
// take/release cycle of the shard repeats without pause in the fleet. While
// the stored checkpoint is what fails, the lease is read again at each
// step: once the row changed (the checkpoint was repaired, or the lease
// reset or deleted) the shard stops with outGiveUp, and its lease is
// released so that it starts again from the row as it is. ok is false, with
// the outcome, when the shard stops.
func (s *shardState) untilOpen(ctx, gctx context.Context, l lease.Lease, prev error, try func() error) (outcome, bool) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = s.w.cfg.RetryInitialInterval
	bo.MaxInterval = s.w.cfg.RetryMaxInterval
	bo.MaxElapsedTime = 0
	bo.Reset()
	for {
		err := prev
		prev = nil
		if err == nil {
			err = storedCheckpointError(l)
		}
		if err == nil {
			if err = shardproc.Recover(try); err == nil {
				s.observeStall(opBadCheckpoint, nil)
				s.observeStall(opOpen, nil)
				return 0, true
			}
		}
		if ctx.Err() != nil || gctx.Err() != nil {
			return s.classify(ctx), false
		}
		op := opOpen
		switch {
		case s.checkpointRefused(err, l):
			op = opBadCheckpoint
		case errors.Is(err, kcl.ErrStreamNotFound):
			shards, lerr := s.w.listShards(ctx, s.st)
			if lerr != nil || !slices.ContainsFunc(shards, func(n shardNode) bool { return n.ID == s.shard }) {
				if out, ok := s.shardGone(ctx, gctx, err); ok {
					return out, false
				}
				return s.streamGone(err), false
			}
			// The stream lists the shard: what was not found is the
			// checkpoint's record (kinesis-mock's answer to a sequence
			// number of another shard).
			if recordCheckpoint(l) {
				op = opBadCheckpoint
			}
		}
		prev := s.stall.current()
		s.observeStall(op, err)
		switch now := s.stall.current(); {
		case now != "" && now == prev:
			s.log.Debug("shard still stalled", "reason", now, shardproc.ErrAttr(err))
		case now == "":
			s.log.Debug("opening the shard failed; retrying with backoff", shardproc.ErrAttr(err))
		}
		if awsx.Sleep(gctx, bo.NextBackOff()) != nil {
			return s.classify(ctx), false
		}
		if op == opBadCheckpoint && s.rowChanged(gctx, l) {
			return outGiveUp, false
		}
	}
}

// recordCheckpoint reports whether the lease's checkpoint is a record's
// position (not a sentinel).
func recordCheckpoint(l lease.Lease) bool {
	return !l.Checkpoint.IsZero() && !l.Checkpoint.IsSentinel()
}

// storedCheckpointError returns why the lease's stored checkpoint is no
// position to read from (an unknown word, a number of more than 128
// digits, a negative sub-sequence number), nil if it is one. The value is
// quoted cut short.
func storedCheckpointError(l lease.Lease) error {
	if err := l.Checkpoint.Validate(); err == nil || l.Checkpoint.IsZero() {
		return nil
	}
	return fmt.Errorf("%w: stored checkpoint %q (sub-sequence %d) is neither a sentinel nor a sequence number",
		kcl.ErrInvalidCheckpoint, shardproc.Truncate(l.Checkpoint.SequenceNumber, maxLoggedCheckpoint), l.Checkpoint.SubSequenceNumber)
}

// checkpointRefused reports whether err says that the stored checkpoint
// cannot be read from: malformed, or refused by Kinesis as a starting
// sequence number of this shard.
func (s *shardState) checkpointRefused(err error, l lease.Lease) bool {
	return errors.Is(err, kcl.ErrInvalidCheckpoint) || recordCheckpoint(l) && awsx.InvalidArgument(err)
}

// rowChanged reads the lease again and reports whether it is no longer as
// the shard took it: another checkpoint, owner or counter, or deleted.
func (s *shardState) rowChanged(ctx context.Context, l lease.Lease) bool {
	cur, err := s.w.store.Get(ctx, s.id)
	if err != nil && !errors.Is(err, lease.ErrNotFound) {
		return false // look again at the next step
	}
	held := s.h.Lease()
	if err == nil && cur.Checkpoint == l.Checkpoint && cur.CheckpointTimestamp.Equal(l.CheckpointTimestamp) &&
		cur.Owner == held.Owner && cur.Counter == held.Counter {
		return false
	}
	s.log.Info("the lease row changed while the shard was stalled on its checkpoint; releasing the lease to start again from the row",
		"checkpoint", shardproc.Truncate(cur.Checkpoint.String(), maxLoggedCheckpoint), "err", err)
	return true
}

// initialFor maps a lease's starting sentinel to an initial position (an
// AT_TIMESTAMP checkpoint reset by a replay carries its own timestamp).
func (s *shardState) initialFor(l lease.Lease) kcl.InitialPosition {
	return l.InitialPosition(s.st.initial)
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
	shards, err := s.w.listShards(ctx, s.st)
	if err != nil {
		s.log.Warn("listing shards at shard end failed; using the children the read reported", "err", err)
		shards = nil
	}
	children = mergeIDs(children, childrenInListing(shards, s.shard))
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
	fctx, cancel := context.WithTimeout(s.w.dutyCtx, s.w.cfg.LeaseDuration)
	defer cancel()
	s.w.finishShard(fctx, s.st, s.shard, children, shards)
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
	get := func(shard string) (lease.Lease, error) { return s.w.store.Get(gctx, s.st.leaseKey(shard)) }
	var began time.Time
	logged := ""
	failing := false // a failed read was reported at WARN; repeats go to DEBUG
	for {
		ended := s.st.reshard.ended.wait() // before the check: no end is missed
		pending, err := pendingParent(l.ParentShardIDs, get)
		failing = failing && err != nil
		switch {
		case err == nil && pending == "":
			if logged != "" {
				s.log.Info("parent shards finished; starting", "waited", time.Since(began).Round(time.Millisecond))
			}
			return 0, true
		case err != nil && failing:
			s.log.Debug("reading a parent lease failed again", "parent", pending, "err", err)
		case err != nil:
			if gctx.Err() == nil {
				s.log.Warn("reading a parent lease failed; will check again", "parent", pending, "err", err)
				failing = true
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
	shards, err := s.w.listShards(ctx, s.st)
	switch {
	case errors.Is(err, kcl.ErrStreamNotFound):
		return 0, false
	case err != nil:
		s.log.Warn("shard not found, and listing the stream's shards failed; releasing it for a later retry", "err", cause, "list_err", err)
		return outHard, true
	case slices.ContainsFunc(shards, func(n shardNode) bool { return n.ID == s.shard }):
		s.log.Warn("shard not found although the stream lists it; releasing it for a later retry", "err", cause)
		return outHard, true
	}
	s.log.Warn("shard no longer exists (trimmed by the stream's retention); finishing it so that its children can start", "err", cause)
	return s.shardEnded(ctx, gctx, nil), true
}

// streamGone stops the shard of a stream found deleted: a single-stream
// worker stops with the error; a multi-stream worker stops the shard
// without callbacks and lets a shard sync remove the stream.
func (s *shardState) streamGone(err error) outcome {
	if s.st.id == "" {
		s.w.fatal(err)
	} else {
		s.log.Warn("stream deleted; stopping the shard", "err", err)
		s.w.requestSync()
	}
	return outHard
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
		s.w.hooks.emit(Event{Kind: EventCheckpoint, ShardID: s.id, Position: pos, Duration: time.Since(began), Err: err})
	}()
	_, err = s.h.UpdateCheckpoint(ctx, checkpointEdit(st))
	s.observeStall(opCheckpoint, err)
	return err
}

// retry calls fn until it succeeds, backing off (Worker.retryDelay). It
// gives up only when wait (or ctx) ends, or fn returns a permanent error or
// a call the shard's lifecycle refuses. A panic in fn counts as an error.
func (s *shardState) retry(ctx, wait context.Context, what string, fn func(attempt int) error) error {
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
		d := s.w.retryDelay(attempt)
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

// String names the outcome as the Reason of EventShardStopped does.
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
