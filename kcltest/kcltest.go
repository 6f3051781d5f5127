// Package kcltest tests a [kcl.RecordProcessor] in-process, without AWS and
// without servers: a [Shard] hands it batches of records and lifecycle
// events the way a Shardline worker does, and records what it checkpointed.
//
// A Shard drives the processor through the worker's own per-shard lifecycle
// (the same code, not a copy) with the worker's own checkpointer, so the
// same rules apply: Initialize before the first batch; a failed batch is
// delivered again before anything else; a checkpoint must lie between the
// last stored checkpoint and the last delivered record; after the lease is
// lost every checkpoint fails with an error matching kcl.ErrLeaseLost and
// LeaseLost follows once the call in flight returned; SHARD_END is
// checkpointed by the worker for processors that do not handle the shard
// end; after ShutdownRequested the worker stores the end of the last batch
// that succeeded if the processor did not. A call the worker would never
// make in the shard's state is refused with an error.
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
package kcltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/delivery"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// Errors returned by [Shard] methods. Test with errors.Is. A call the
// worker would not make in the shard's state (for example a new batch while
// the last one failed) is refused with an error naming the call and the
// state.
var (
	// ErrShardEndNotCheckpointed reports a processor whose ShardEnded
	// returned without checkpointing SHARD_END. The worker would call it
	// again; its children would never start.
	ErrShardEndNotCheckpointed = shardproc.ErrShardEndNotCheckpointed
	// ErrStopped reports a call on a shard that was ended or shut down: the
	// worker would not call the processor any more.
	ErrStopped = shardproc.ErrStopped
)

// errOutOfOrder reports records passed to Deliver that are not in
// increasing order after the records delivered before: a test bug, not a
// processor's.
var errOutOfOrder = errors.New("kcltest: records out of order")

// CheckpointWrite is one successful checkpoint write: a plain checkpoint
// or a commit (Pending zero), a prepare (Pending set, with PendingState), or
// a transaction of the public checkpoint package's Transact (Items set).
type CheckpointWrite struct {
	// Checkpoint is the stored checkpoint.
	Checkpoint kcl.ExtendedSequenceNumber
	// Pending is the prepared, uncommitted checkpoint; zero when none.
	Pending kcl.ExtendedSequenceNumber
	// PendingState is the application state stored with Pending.
	PendingState []byte
	// Items are the application's writes committed with Checkpoint in one
	// transaction, as passed. A transaction is refused like a checkpoint:
	// with kcl.ErrLeaseLost after [Shard.LoseLease], with the error of
	// [Shard.FailCheckpoints]; nothing is recorded then. The shard checks
	// the limits of one transaction as the worker does, but not the writes'
	// conditions: test those against DynamoDB Local.
	Items []types.TransactWriteItem
}

// Shard drives one processor through the life of one shard lease. Create
// it with [NewShard]. Its methods are safe for concurrent use; in
// particular [Shard.LoseLease] may be called from another goroutine, or
// from inside the processor, while a batch is being processed.
type Shard struct {
	id      string
	m       *shardproc.Machine
	initial kcl.ExtendedSequenceNumber

	call sync.Mutex // serializes the methods that call the processor

	mu          sync.Mutex // guards the fields below
	lost        bool
	lostPending bool               // lost during a call: LeaseLost runs after it
	cancelCall  context.CancelFunc // cancels the call in flight
	writes      []CheckpointWrite
	stored      CheckpointWrite
	failWith    error
	nextSeq     int64
}

// Option configures a [Shard].
type Option func(*shardOptions)

type shardOptions struct {
	checkpoint   kcl.ExtendedSequenceNumber
	pending      kcl.ExtendedSequenceNumber
	pendingState []byte
}

// WithCheckpoint makes the shard start from a stored checkpoint, as after a
// restart (default: TRIM_HORIZON, a shard never checkpointed).
func WithCheckpoint(pos kcl.ExtendedSequenceNumber) Option {
	return func(o *shardOptions) { o.checkpoint = pos }
}

// WithPendingCheckpoint makes the shard start with a prepared, uncommitted
// checkpoint and its application state, as after a crash between Prepare
// and Commit. The processor sees them in its InitializeInput.
func WithPendingCheckpoint(pos kcl.ExtendedSequenceNumber, state []byte) Option {
	return func(o *shardOptions) { o.pending, o.pendingState = pos, slices.Clone(state) }
}

// NewShard returns a shard whose records go to p.
func NewShard(shardID string, p kcl.RecordProcessor, opts ...Option) *Shard {
	o := shardOptions{checkpoint: kcl.TrimHorizon}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	s := &Shard{
		id:      shardID,
		initial: o.checkpoint,
		stored:  CheckpointWrite{Checkpoint: o.checkpoint, Pending: o.pending, PendingState: slices.Clone(o.pendingState)},
	}
	s.m = shardproc.NewMachine(shardproc.Config{ShardID: shardID, Processor: p, Writer: txWriter{s},
		Checkpoint: o.checkpoint, PendingCheckpoint: o.pending, PendingState: o.pendingState})
	return s
}

// arrivalBase is the ApproximateArrivalTimestamp of the first record made
// by [Shard.Records].
var arrivalBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Records returns plain (non-aggregated) records carrying the given
// payloads, with increasing sequence numbers that continue those of the
// previous call (every shard numbers its records alike), and arrival times
// a millisecond apart from 2026-01-01T00:00:00Z.
func (s *Shard) Records(data ...string) []kcl.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]kcl.Record, len(data))
	for i, d := range data {
		s.nextSeq++
		out[i] = kcl.Record{
			Data:                        []byte(d),
			PartitionKey:                fmt.Sprintf("pk-%d", s.nextSeq),
			SequenceNumber:              sequenceNumber(s.nextSeq),
			ApproximateArrivalTimestamp: arrivalBase.Add(time.Duration(s.nextSeq-1) * time.Millisecond),
		}
	}
	return out
}

// sequenceNumber returns the n-th sequence number [Shard.Records] hands out
// (from 1): a 56-digit decimal like those of Kinesis. Every shard numbers
// its records alike.
func sequenceNumber(n int64) string {
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
	if s.m.State() != shardproc.New {
		return nil
	}
	return s.guard(ctx, s.m.Initialize)
}

// Deliver hands recs to ProcessRecords as one batch (Attempt 1) and returns
// the processor's error. An empty batch is delivered too (the worker does so
// when configured to call processors on empty reads). The records must come
// in order after the records delivered before (and after the starting
// checkpoint), or Deliver returns an error saying they are out of order (a
// bug of the test). After a batch failed, the
// worker delivers it again before anything else: use [Shard.Redeliver];
// Deliver refuses a new batch.
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
	if err := s.m.Check(shardproc.CallDeliver); err != nil {
		return err
	}
	last := s.m.Checkpointer().Delivered()
	if last.IsZero() && !s.initial.IsSentinel() {
		last = s.initial // the worker never delivers what is checkpointed
	}
	for _, r := range recs {
		p := r.Position()
		if err := p.Validate(); err != nil || p.IsSentinel() || p.SubSequenceNumber < 0 {
			return fmt.Errorf("%w: %q is not a record's position", errOutOfOrder, p.String())
		}
		if !last.IsZero() && p.Compare(last) <= 0 {
			return fmt.Errorf("%w: %v is not after %v", errOutOfOrder, p, last)
		}
		last = p
	}
	b := shardproc.Batch{Records: slices.Clone(recs)}
	return s.guard(ctx, func(ctx context.Context) error { return s.partial(ctx, s.m.Deliver(ctx, b)) })
}

// partial applies a partial failure as the worker does: the records
// before the failed one count as processed and are checkpointed.
func (s *Shard) partial(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, serr := delivery.SettlePartial(ctx, s.m, err); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// Redeliver hands the batch that failed to ProcessRecords again with the
// next Attempt number, as the worker does after ProcessRecords returned an
// error (or panicked). With no failed batch it is refused. After a
// *kcl.PartialFailureError naming a record of the batch, the worker (and
// so Redeliver) delivers only the records from that one on: those before it
// count as processed, and the checkpoint was stored just before it when the
// failing call returned.
func (s *Shard) Redeliver(ctx context.Context) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	return s.guard(ctx, func(ctx context.Context) error { return s.partial(ctx, s.m.Redeliver(ctx)) })
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
	children := slices.Clone(childShardIDs)
	return s.guard(ctx, func(ctx context.Context) error { return s.m.ShardEnded(ctx, children) })
}

// Shutdown asks the processor to finish, as the worker does on a graceful
// stop or a planned hand-over: ShutdownRequested is called with a
// checkpointer that still works, then the end of the last batch that
// succeeded is checkpointed unless the processor stored it. The shard is
// stopped afterwards.
func (s *Shard) Shutdown(ctx context.Context) error {
	s.call.Lock()
	defer s.call.Unlock()
	if err := s.startLocked(ctx); err != nil {
		return err
	}
	err := s.guard(ctx, s.m.ShutdownRequested)
	if s.m.State() != shardproc.ShuttingDown {
		return err // refused, or the lease was lost during the call
	}
	if _, ferr := s.m.FinalCheckpoint(ctx); ferr != nil {
		err = errors.Join(err, ferr)
		s.m.Stop() // the worker gives up too, once its retries end
	}
	return err
}

// LoseLease makes the shard's lease lost, as when another worker took it or
// an operator reset its checkpoint: from now on every checkpoint fails with
// an error matching kcl.ErrLeaseLost. If the processor is inside a call, the
// call's context is cancelled and LeaseLost follows when the call returns
// (its error is then returned by the interrupted call); otherwise LeaseLost
// is called now and its error returned. On a shard that ended or stopped it
// does nothing.
func (s *Shard) LoseLease(ctx context.Context) error {
	s.mu.Lock()
	if s.lost || s.m.State().Final() {
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
	s.mu.Unlock()
	s.call.Lock()
	defer s.call.Unlock()
	return s.m.LeaseLost(ctx)
}

// guard runs one transition of the machine with a context the lease loss
// cancels and, when the lease was lost during the call, makes the machine
// call LeaseLost after it. s.call is held.
func (s *Shard) guard(ctx context.Context, transition func(context.Context) error) error {
	s.mu.Lock()
	if s.lost {
		s.mu.Unlock()
		if err := s.m.Check(shardproc.CallLeaseLost); err != nil {
			return err // the loss was handled: the machine says why it refuses
		}
		return fmt.Errorf("kcltest: shard %s: %w", s.id, kcl.ErrLeaseLost) // LeaseLost is on its way
	}
	cctx, cancel := context.WithCancel(ctx)
	s.cancelCall = cancel
	s.mu.Unlock()

	err := transition(cctx)

	s.mu.Lock()
	cancel()
	s.cancelCall = nil
	lostNow := s.lostPending
	s.lostPending = false
	s.mu.Unlock()
	if lostNow {
		lerr := s.m.LeaseLost(context.WithoutCancel(ctx))
		return errors.Join(fmt.Errorf("kcltest: shard %s: %w during the call", s.id, kcl.ErrLeaseLost), err, lerr)
	}
	return err
}

// write is the checkpointer's writer: it refuses writes after a lease loss
// and records the others.
func (s *Shard) write(_ context.Context, st checkpoint.State, items []types.TransactWriteItem) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost {
		return fmt.Errorf("kcltest: checkpoint refused: %w", kcl.ErrLeaseLost)
	}
	if s.failWith != nil {
		return s.failWith
	}
	w := CheckpointWrite{Checkpoint: st.Checkpoint, Pending: st.Pending, PendingState: slices.Clone(st.PendingState),
		Items: slices.Clone(items)}
	s.writes = append(s.writes, w)
	s.stored = CheckpointWrite{Checkpoint: w.Checkpoint, Pending: w.Pending, PendingState: w.PendingState}
	return nil
}

// FailCheckpoints makes every checkpoint write fail with err (as a
// throttled or unreachable lease table would) until it is called with nil.
func (s *Shard) FailCheckpoints(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWith = err
}

// Checkpoint returns the stored checkpoint: the starting one until another
// is stored.
func (s *Shard) Checkpoint() kcl.ExtendedSequenceNumber {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored.Checkpoint
}

// Writes returns every successful checkpoint write in order: plain
// checkpoints, prepares (Pending set), commits and transactions (Items
// set).
func (s *Shard) Writes() []CheckpointWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CheckpointWrite, len(s.writes))
	for i, w := range s.writes {
		w.PendingState = slices.Clone(w.PendingState)
		w.Items = slices.Clone(w.Items)
		out[i] = w
	}
	return out
}

// Delivered returns the position of the last record delivered (SHARD_END
// after End; zero before any record).
func (s *Shard) Delivered() kcl.ExtendedSequenceNumber { return s.m.Checkpointer().Delivered() }
