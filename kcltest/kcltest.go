// Package kcltest tests a [kcl.RecordProcessor] in-process, without AWS and
// without servers: a [Shard] hands it batches of records and lifecycle
// events the way a Shardline worker does, and records what it checkpointed.
//
// The checkpointer a processor receives is the worker's own (package
// checkpoint), so the same rules apply: a checkpoint must lie between the
// last stored checkpoint and the last delivered record, and after the lease
// is lost every checkpoint fails with an error matching kcl.ErrLeaseLost.
//
// A typical test:
//
//	sh := kcltest.NewShard("shardId-000000000000", newMyProcessor())
//	if err := sh.Deliver(ctx, sh.Records("a", "b", "c")...); err != nil {
//		t.Fatal(err)
//	}
//	if got, want := sh.Checkpoint(), sh.Delivered(); got != want {
//		t.Errorf("checkpoint %v, want %v", got, want)
//	}
//
// What the worker does on its own is reproduced where a processor can
// observe it: Initialize before the first batch, LeaseLost after a loss
// (once the batch in flight returned), SHARD_END checkpointed by the worker
// for processors that do not handle the shard end. The worker's final
// checkpoint after ShutdownRequested is not: [Shard.Checkpoint] shows only
// what the processor stored.
package kcltest

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

// Errors returned by [Shard] methods. Test with errors.Is.
var (
	// ErrShardEndNotCheckpointed reports a processor whose ShardEnded
	// returned without checkpointing SHARD_END. The worker would call it
	// again; its children would never start.
	ErrShardEndNotCheckpointed = errors.New("kcltest: ShardEnded returned without checkpointing SHARD_END (call in.Checkpointer.Checkpoint)")
	// ErrStopped reports a call on a shard that was ended or shut down: the
	// worker would not call the processor any more.
	ErrStopped = errors.New("kcltest: shard stopped")
	// ErrOutOfOrder reports records passed to Deliver that are not in
	// increasing order after the records delivered before: a test bug, not
	// a processor's.
	ErrOutOfOrder = errors.New("kcltest: records out of order")
)

// Shard drives one processor through the life of one shard lease. Create
// it with [NewShard]. Its methods are safe for concurrent use; in
// particular [Shard.LoseLease] may be called from another goroutine, or
// from inside the processor, while a batch is being processed.
type Shard struct {
	id   string
	proc kcl.RecordProcessor
	cp   *checkpoint.Checkpointer

	initial      kcl.ExtendedSequenceNumber
	pending      kcl.ExtendedSequenceNumber
	pendingState []byte
	baseTime     time.Time

	call sync.Mutex // serializes calls into the processor, as the worker does

	mu          sync.Mutex // guards the fields below
	started     bool
	stopped     error // why the shard stopped: ErrStopped or kcl.ErrLeaseLost
	lost        bool
	lostPending bool               // lost during a call: LeaseLost runs after it
	cancelCall  context.CancelFunc // cancels the call in flight
	writes      []checkpoint.State
	txns        []Transaction // see txn.go
	stored      checkpoint.State
	failWith    error
	nextSeq     int64
	lastBatch   []kcl.Record
	attempt     int
}

// Option configures a [Shard].
type Option func(*Shard)

// WithCheckpoint makes the shard start from a stored checkpoint, as after a
// restart (default: TRIM_HORIZON, a shard never checkpointed).
func WithCheckpoint(pos kcl.ExtendedSequenceNumber) Option {
	return func(s *Shard) { s.initial = pos }
}

// WithPendingCheckpoint makes the shard start with a prepared, uncommitted
// checkpoint and its application state, as after a crash between Prepare
// and Commit. The processor sees them in its InitializeInput.
func WithPendingCheckpoint(pos kcl.ExtendedSequenceNumber, state []byte) Option {
	return func(s *Shard) { s.pending, s.pendingState = pos, slices.Clone(state) }
}

// WithArrivalTime sets the ApproximateArrivalTimestamp of the first record
// made by [Shard.Records]; each next one arrives a millisecond later
// (default 2026-01-01T00:00:00Z).
func WithArrivalTime(t time.Time) Option {
	return func(s *Shard) { s.baseTime = t }
}

// NewShard returns a shard whose records go to p.
func NewShard(shardID string, p kcl.RecordProcessor, opts ...Option) *Shard {
	s := &Shard{
		id:       shardID,
		proc:     p,
		initial:  kcl.TrimHorizon,
		baseTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	s.stored = checkpoint.State{Checkpoint: s.initial, Pending: s.pending, PendingState: slices.Clone(s.pendingState)}
	s.cp = checkpoint.New(shardID, txWriter{s}, s.initial)
	return s
}

// ID returns the shard ID.
func (s *Shard) ID() string { return s.id }

// Records returns plain (non-aggregated) records carrying the given
// payloads, with increasing sequence numbers that continue those of the
// previous call, and arrival times a millisecond apart.
func (s *Shard) Records(data ...string) []kcl.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]kcl.Record, len(data))
	for i, d := range data {
		s.nextSeq++
		out[i] = kcl.Record{
			Data:                        []byte(d),
			PartitionKey:                fmt.Sprintf("pk-%d", s.nextSeq),
			SequenceNumber:              SequenceNumber(s.nextSeq),
			ApproximateArrivalTimestamp: s.baseTime.Add(time.Duration(s.nextSeq-1) * time.Millisecond),
		}
	}
	return out
}

// SequenceNumber returns the n-th sequence number [Shard.Records] hands out
// (from 1): a 56-digit decimal like those of Kinesis.
func SequenceNumber(n int64) string {
	return fmt.Sprintf("4959%052d", n)
}

// Start calls the processor's Initialize, if it has one, with the shard's
// starting checkpoint. Deliver, End and Shutdown call it first if needed;
// call it directly to test initialization alone. An error from Initialize
// is returned and Start may be called again, as the worker retries it.
func (s *Shard) Start(ctx context.Context) error {
	s.call.Lock()
	defer s.call.Unlock()
	return s.startLocked(ctx)
}

func (s *Shard) startLocked(ctx context.Context) error {
	s.mu.Lock()
	started, stopped := s.started, s.stopped
	s.mu.Unlock()
	if stopped != nil {
		return stopped
	}
	if started {
		return nil
	}
	if ini, ok := s.proc.(kcl.Initializer); ok {
		in := kcl.InitializeInput{ShardID: s.id, Checkpoint: s.initial,
			PendingCheckpoint: s.pending, PendingState: slices.Clone(s.pendingState)}
		if err := s.guard(ctx, func(ctx context.Context) error { return ini.Initialize(ctx, in) }); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	return nil
}

// Deliver hands recs to ProcessRecords as one batch (Attempt 1) and returns
// the processor's error. An empty batch is delivered too (the worker does so
// when configured to call processors on empty reads). The records must come
// in order after the records delivered before (and after the starting
// checkpoint), or Deliver returns ErrOutOfOrder.
//
// If the lease is lost during the call ([Shard.LoseLease]), the call's
// context is cancelled, LeaseLost is called once ProcessRecords has
// returned, and Deliver returns an error matching kcl.ErrLeaseLost (joined
// with the processor's). After the lease was lost, or the shard ended or
// was shut down, Deliver does not call the processor and returns an error
// matching kcl.ErrLeaseLost or ErrStopped.
func (s *Shard) Deliver(ctx context.Context, recs ...kcl.Record) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	last := s.cp.Delivered()
	if last.IsZero() && !s.initial.IsSentinel() {
		last = s.initial // the worker never delivers what is checkpointed
	}
	for _, r := range recs {
		p := r.Position()
		if err := p.Validate(); err != nil || p.IsSentinel() || p.SubSequenceNumber < 0 {
			return fmt.Errorf("%w: %q is not a record's position", ErrOutOfOrder, p.String())
		}
		if !last.IsZero() && p.Compare(last) <= 0 {
			return fmt.Errorf("%w: %v is not after %v", ErrOutOfOrder, p, last)
		}
		last = p
	}
	s.mu.Lock()
	s.lastBatch, s.attempt = slices.Clone(recs), 0
	s.mu.Unlock()
	return s.deliverLocked(ctx)
}

// Redeliver hands the last batch to ProcessRecords again with the next
// Attempt number, as the worker does after ProcessRecords returned an error.
func (s *Shard) Redeliver(ctx context.Context) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	return s.deliverLocked(ctx)
}

func (s *Shard) deliverLocked(ctx context.Context) error {
	s.mu.Lock()
	s.attempt++
	in := kcl.ProcessRecordsInput{ShardID: s.id, Records: slices.Clone(s.lastBatch), Attempt: s.attempt, Checkpointer: s.cp}
	s.mu.Unlock()
	if n := len(in.Records); n > 0 {
		s.cp.SetDelivered(in.Records[n-1].Position())
	}
	return s.guard(ctx, func(ctx context.Context) error { return s.proc.ProcessRecords(ctx, in) })
}

// End reads the shard to its end, as after a split or merge whose last
// records were delivered. A processor implementing kcl.ShardEndedHandler
// is called and must checkpoint SHARD_END (otherwise End returns
// ErrShardEndNotCheckpointed); for other processors the worker's own
// SHARD_END checkpoint is stored. The shard is stopped afterwards unless
// End failed, in which case it may be called again, as the worker retries.
func (s *Shard) End(ctx context.Context, childShardIDs ...string) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	s.cp.SetDelivered(kcl.ShardEnd)
	err := s.guard(ctx, func(ctx context.Context) error {
		se, ok := s.proc.(kcl.ShardEndedHandler)
		if !ok {
			return s.cp.Checkpoint(ctx)
		}
		in := kcl.ShardEndedInput{ShardID: s.id, ChildShardIDs: slices.Clone(childShardIDs), Checkpointer: s.cp}
		if err := se.ShardEnded(ctx, in); err != nil {
			return err
		}
		if !s.cp.Last().IsShardEnd() {
			return ErrShardEndNotCheckpointed
		}
		return nil
	})
	if err == nil {
		s.stop(ErrStopped)
	}
	return err
}

// Shutdown asks the processor to finish, as the worker does on a graceful
// stop or a planned hand-over: ShutdownRequested is called with a
// checkpointer that still works. The shard is stopped afterwards.
func (s *Shard) Shutdown(ctx context.Context) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	err := s.guard(ctx, func(ctx context.Context) error {
		if sh, ok := s.proc.(kcl.ShutdownRequestedHandler); ok {
			return sh.ShutdownRequested(ctx, kcl.ShutdownRequestedInput{ShardID: s.id, Checkpointer: s.cp})
		}
		return nil
	})
	s.stop(ErrStopped)
	return err
}

// LoseLease makes the shard's lease lost, as when another worker took it or
// an operator reset its checkpoint: from now on every checkpoint fails with
// an error matching kcl.ErrLeaseLost. If the processor is inside a call, the
// call's context is cancelled and LeaseLost follows when the call returns
// (its error is then returned by the interrupted call); otherwise LeaseLost
// is called now and its error returned.
func (s *Shard) LoseLease(ctx context.Context) error {
	s.mu.Lock()
	if s.lost || s.stopped != nil {
		s.mu.Unlock()
		return nil
	}
	s.lost = true
	if s.cancelCall != nil {
		s.lostPending = true
		s.cancelCall()
		s.mu.Unlock()
		return nil
	}
	s.stopped = fmt.Errorf("kcltest: shard %s: %w", s.id, kcl.ErrLeaseLost)
	s.mu.Unlock()
	s.call.Lock()
	defer s.call.Unlock()
	return s.leaseLostLocked(ctx)
}

// leaseLostLocked stops the shard and tells the processor. s.call is held.
func (s *Shard) leaseLostLocked(ctx context.Context) error {
	s.stop(fmt.Errorf("kcltest: shard %s: %w", s.id, kcl.ErrLeaseLost))
	lh, ok := s.proc.(kcl.LeaseLostHandler)
	if !ok {
		return nil
	}
	return callSafely(func() error { return lh.LeaseLost(ctx, kcl.LeaseLostInput{ShardID: s.id}) })
}

// guard runs one processor call with a context the lease loss cancels,
// turns a panic into a *kcl.ProcessorPanicError and, when the lease was lost
// during the call, calls LeaseLost after it. s.call is held.
func (s *Shard) guard(ctx context.Context, fn func(context.Context) error) error {
	s.mu.Lock()
	if s.stopped != nil {
		err := s.stopped
		s.mu.Unlock()
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	s.cancelCall = cancel
	s.mu.Unlock()

	err := callSafely(func() error { return fn(cctx) })

	s.mu.Lock()
	cancel()
	s.cancelCall = nil
	lostNow := s.lostPending
	s.lostPending = false
	s.mu.Unlock()
	if lostNow {
		lerr := s.leaseLostLocked(context.WithoutCancel(ctx))
		return errors.Join(fmt.Errorf("kcltest: shard %s: %w during the call", s.id, kcl.ErrLeaseLost), err, lerr)
	}
	return err
}

func (s *Shard) stop(why error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped == nil {
		s.stopped = why
	}
}

// write is the checkpointer's writer: it refuses writes after a lease loss
// and records the others.
func (s *Shard) write(_ context.Context, st checkpoint.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost {
		return fmt.Errorf("kcltest: checkpoint refused: %w", kcl.ErrLeaseLost)
	}
	if s.failWith != nil {
		return s.failWith
	}
	st.PendingState = slices.Clone(st.PendingState)
	s.writes = append(s.writes, st)
	s.stored = st
	return nil
}

// FailCheckpoints makes every checkpoint write fail with err (as a
// throttled or unreachable lease table would) until it is called with nil.
func (s *Shard) FailCheckpoints(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWith = err
}

// Checkpoint returns the stored checkpoint: the starting one until the
// processor stores another.
func (s *Shard) Checkpoint() kcl.ExtendedSequenceNumber {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored.Checkpoint
}

// Pending returns the stored pending (prepared, uncommitted) checkpoint and
// its state; a zero position when there is none.
func (s *Shard) Pending() (kcl.ExtendedSequenceNumber, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored.Pending, slices.Clone(s.stored.PendingState)
}

// Writes returns every successful checkpoint write in order: plain
// checkpoints, prepares (Pending set) and commits.
func (s *Shard) Writes() []checkpoint.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]checkpoint.State, len(s.writes))
	for i, w := range s.writes {
		w.PendingState = slices.Clone(w.PendingState)
		out[i] = w
	}
	return out
}

// Delivered returns the position of the last record delivered (SHARD_END
// after End; zero before any record).
func (s *Shard) Delivered() kcl.ExtendedSequenceNumber { return s.cp.Delivered() }

// LeaseLost reports whether the lease was lost.
func (s *Shard) LeaseLost() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// callSafely runs fn, turning a panic into a *kcl.ProcessorPanicError, as
// the worker does.
func callSafely(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &kcl.ProcessorPanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn()
}
