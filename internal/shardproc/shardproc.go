// Package shardproc is the processor side of one shard lease: one explicit
// state machine that calls a [kcl.RecordProcessor] through its lifecycle
// (Initialize, batches and their retries, ShutdownRequested with the final
// checkpoint, LeaseLost, the shard end) and owns the shard's checkpointer.
//
// The worker drives it for every processor call, and so does the public test
// kit (kcltest): a rule written here holds for both, so the kit cannot drift
// from the worker. Leases, reading, back-off and timing stay with the
// driver; the machine decides only which call is valid now and what a call
// does around the processor.
//
// The states and the calls each accepts:
//
//	state          Initialize Deliver Redeliver ShardEnded ShutdownRequested FinalCheckpoint LeaseLost
//	New            yes        -       -         -          yes               -               yes
//	Initialized    -          yes     -         yes        yes               -               yes
//	Processing     -          yes     -         yes        yes               -               yes
//	Retrying       -          -       yes       -          yes               -               yes
//	Ending         -          -       -         yes        -                 -               yes
//	ShuttingDown   -          -       -         -          -                 yes             yes (silent)
//	Ended, Lost, Stopped: final; every call is refused.
//
// Deliver's variants count as Deliver (Pass: records filtered out;
// DeliverShared: one of several batches of per-key lanes, run at once), and
// Redeliver's as Redeliver (RedeliverPart: the first records of the failed
// batch; Settle: records a delivery policy disposed of without the
// processor).
//
// A refused call returns a *[CallError] and changes nothing. Stop is valid
// in every state (a hard stop, or giving up a shutdown; no processor call).
package shardproc

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

// State is where a shard's processor is in its lifecycle.
type State int32

// The states of a [Machine]. Ended, Lost and Stopped are final.
const (
	// New: the processor was made; Initialize has not succeeded yet.
	New State = iota
	// Initialized: Initialize succeeded (or the processor has none); no
	// batch was delivered yet.
	Initialized
	// Processing: the last batch succeeded; the next one may come.
	Processing
	// Retrying: the last batch failed (or panicked); it must be delivered
	// again before anything else is read: records are never skipped.
	Retrying
	// Ending: the shard was read to its end; SHARD_END is not stored yet.
	Ending
	// ShuttingDown: ShutdownRequested was called; the final checkpoint
	// follows.
	ShuttingDown
	// Ended: SHARD_END is stored.
	Ended
	// Lost: the lease was lost; LeaseLost was called.
	Lost
	// Stopped: the shard stopped on purpose (shutdown or hard stop).
	Stopped
)

var stateNames = [...]string{"new", "initialized", "processing", "retrying", "ending", "shutting down", "ended", "lost", "stopped"}

// String names the state.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Final reports whether no call is valid any more.
func (s State) Final() bool { return s == Ended || s == Lost || s == Stopped }

// Call names a transition of a [Machine].
type Call int

// The calls of a [Machine].
const (
	CallInitialize Call = iota
	CallDeliver
	CallRedeliver
	CallShardEnded
	CallShutdownRequested
	CallFinalCheckpoint
	CallLeaseLost
)

var callNames = [...]string{"Initialize", "Deliver", "Redeliver", "ShardEnded", "ShutdownRequested", "FinalCheckpoint", "LeaseLost"}

// String names the call.
func (c Call) String() string {
	if c >= 0 && int(c) < len(callNames) {
		return callNames[c]
	}
	return fmt.Sprintf("Call(%d)", int(c))
}

// Errors of a [Machine]. Test with errors.Is.
var (
	// ErrInvalidCall reports a call that the state does not allow (a bug in
	// the driver, or in a test).
	ErrInvalidCall = errors.New("call not valid in this state")
	// ErrStopped reports a call after the shard ended or stopped: the
	// processor is not called any more.
	ErrStopped = errors.New("shard stopped")
	// ErrShardEndNotCheckpointed reports a ShardEnded that returned without
	// storing SHARD_END: it is called again, and the shard's children do not
	// start until it is stored.
	ErrShardEndNotCheckpointed = errors.New("ShardEnded returned without checkpointing SHARD_END (call in.Checkpointer.Checkpoint)")
)

// CallError is a call refused in the machine's state. Err is
// [ErrInvalidCall], [ErrStopped] or kcl.ErrLeaseLost.
type CallError struct {
	// ShardID is the machine's shard.
	ShardID string
	// Call is the call refused.
	Call Call
	// State is the state that refused it.
	State State
	// Reason says why the call is not valid now.
	Reason string
	// Err is the sentinel the refusal matches.
	Err error
}

// Error says which call was refused, in which state, and why.
func (e *CallError) Error() string {
	return fmt.Sprintf("shard %s: %s refused in state %s: %s", e.ShardID, e.Call, e.State, e.Reason)
}

// Unwrap returns Err.
func (e *CallError) Unwrap() error { return e.Err }

// refusal returns why call c is not valid in state s, or "" when it is.
func refusal(c Call, s State) (reason string, err error) {
	switch s {
	case Lost:
		return "the lease was lost", kcl.ErrLeaseLost
	case Ended:
		return "the shard ended", ErrStopped
	case Stopped:
		return "the shard stopped", ErrStopped
	}
	invalid := func(why string) (string, error) { return why, ErrInvalidCall }
	switch c {
	case CallLeaseLost:
		return "", nil // every live state
	case CallFinalCheckpoint:
		if s != ShuttingDown {
			return invalid("the final checkpoint follows ShutdownRequested")
		}
		return "", nil
	}
	switch s {
	case ShuttingDown:
		return invalid("the shard is shutting down")
	case Ending:
		if c != CallShardEnded {
			return invalid("the shard was read to its end: only ShardEnded may follow until SHARD_END is stored")
		}
	case New:
		switch c {
		case CallDeliver, CallRedeliver, CallShardEnded:
			return invalid("Initialize must succeed first")
		}
	case Initialized, Processing:
		switch c {
		case CallInitialize:
			return invalid("already initialized")
		case CallRedeliver:
			return invalid("no failed batch to deliver again")
		}
	case Retrying:
		switch c {
		case CallInitialize:
			return invalid("already initialized")
		case CallDeliver, CallShardEnded:
			return invalid("the last batch failed and must be delivered again (Redeliver): records are never skipped")
		}
	}
	return "", nil
}

// Batch is what one delivery hands to ProcessRecords.
type Batch struct {
	Records            []kcl.Record
	MillisBehindLatest int64
	// Through, when set, is the position the batch covers: records
	// after the last of Records up to Through were filtered out and count
	// as delivered (and, once the batch succeeded, processed) too.
	Through kcl.ExtendedSequenceNumber
}

// Config describes the shard a [Machine] runs.
type Config struct {
	// ShardID is the shard.
	ShardID string
	// Processor is the shard's processor, made by the application.
	Processor kcl.RecordProcessor
	// Writer stores the shard's checkpoints; it must refuse writes once the
	// lease is lost (with an error matching kcl.ErrLeaseLost).
	Writer checkpoint.Writer
	// Checkpoint is the stored checkpoint (a sentinel when none).
	Checkpoint kcl.ExtendedSequenceNumber
	// PendingCheckpoint is a prepared, uncommitted checkpoint found at
	// start; zero when there is none.
	PendingCheckpoint kcl.ExtendedSequenceNumber
	// PendingState is the application state stored with PendingCheckpoint.
	PendingState []byte
}

// Machine is the lifecycle of one processor on one shard lease. Its calls
// are serialized: a call made while another runs waits for it, so LeaseLost
// comes after the batch in flight returned. A processor must therefore never
// call back into its own Machine. State may be read at any time.
type Machine struct {
	id   string
	proc kcl.RecordProcessor
	cp   *checkpoint.Checkpointer
	init kcl.InitializeInput

	state atomic.Int32 // a State; written only with call held

	call          sync.RWMutex // held for a whole transition, processor call included; read-held by DeliverShared
	batch         kcl.ProcessRecordsInput
	lastProcessed kcl.ExtendedSequenceNumber // end of the last batch that succeeded; under shared calls, also lpMu
	lpMu          sync.Mutex
	through       kcl.ExtendedSequenceNumber // end of the current batch, filtered records included
}

// NewMachine returns the machine of one shard, in state New. It calls nothing.
func NewMachine(c Config) *Machine {
	return &Machine{
		id:   c.ShardID,
		proc: c.Processor,
		cp:   checkpoint.New(c.ShardID, c.Writer, c.Checkpoint),
		init: kcl.InitializeInput{ShardID: c.ShardID, Checkpoint: c.Checkpoint,
			PendingCheckpoint: c.PendingCheckpoint, PendingState: slices.Clone(c.PendingState)},
	}
}

// State returns the current state (during a call: the state before it).
func (m *Machine) State() State { return State(m.state.Load()) }

// Busy reports whether a call is running now (a processor call, lanes'
// shared deliveries included). It does not wait.
func (m *Machine) Busy() bool {
	if m.call.TryLock() {
		m.call.Unlock()
		return false
	}
	return true
}

// Checkpointer returns the shard's checkpointer, the one every processor
// call receives.
func (m *Machine) Checkpointer() *checkpoint.Checkpointer { return m.cp }

// Check returns the *CallError that call c would return now, or nil when
// the state allows it.
func (m *Machine) Check(c Call) error { return m.refuse(c, m.State()) }

func (m *Machine) refuse(c Call, s State) error {
	reason, err := refusal(c, s)
	if err == nil {
		return nil
	}
	return &CallError{ShardID: m.id, Call: c, State: s, Reason: reason, Err: err}
}

// begin takes the call lock for transition c and returns the current state,
// or the refusal (with the lock released).
func (m *Machine) begin(c Call) (State, error) {
	m.call.Lock()
	s := m.State()
	if err := m.refuse(c, s); err != nil {
		m.call.Unlock()
		return s, err
	}
	return s, nil
}

func (m *Machine) set(s State) { m.state.Store(int32(s)) }

// Initialize calls the processor's Initialize (if it has one) with where
// the shard resumes: valid once, in state New. On success the state is
// Initialized; on an error (or panic) it stays New and may be retried.
func (m *Machine) Initialize(ctx context.Context) error {
	if _, err := m.begin(CallInitialize); err != nil {
		return err
	}
	defer m.call.Unlock()
	if ini, ok := m.proc.(kcl.Initializer); ok {
		in := m.init
		in.PendingState = slices.Clone(in.PendingState)
		if err := Recover(func() error { return ini.Initialize(ctx, in) }); err != nil {
			return err
		}
	}
	m.set(Initialized)
	return nil
}

// Deliver hands a new batch to ProcessRecords (Attempt 1). Its records must
// follow those delivered before; the checkpointer may then store any of
// them. On success the state is Processing and the batch's end becomes the
// final checkpoint's candidate; on an error (or a panic, returned as a
// *kcl.ProcessorPanicError) the state is Retrying and only Redeliver may
// follow.
func (m *Machine) Deliver(ctx context.Context, b Batch) error {
	if _, err := m.begin(CallDeliver); err != nil {
		return err
	}
	defer m.call.Unlock()
	m.through = b.Through
	if n := len(b.Records); n > 0 && (m.through.IsZero() || m.through.Compare(b.Records[n-1].Position()) < 0) {
		m.through = b.Records[n-1].Position()
	}
	switch {
	case len(b.Records) > 0:
		m.cp.SetDeliveredBatch(b.Records[0].Position(), m.through)
	case !m.through.IsZero():
		m.cp.SetDelivered(m.through)
	}
	m.batch = kcl.ProcessRecordsInput{ShardID: m.id, Records: b.Records, MillisBehindLatest: b.MillisBehindLatest, Checkpointer: m.cp}
	return m.process(ctx, len(b.Records))
}

// DeliverShared hands a batch to ProcessRecords alongside other shared
// deliveries: per-key parallelism runs several batches of one shard at once,
// each record in exactly one of them. It is valid where Deliver is, and
// holds the call lock shared: the other calls (LeaseLost, ShutdownRequested,
// ShardEnded...) wait for every shared delivery in flight. The state does
// not change on failure: the caller retries its batch itself, and must have
// called SetDelivered on the checkpointer for its records. cp is the
// checkpointer the processor receives (it must clamp what the processor
// asks to the records every lane has processed).
func (m *Machine) DeliverShared(ctx context.Context, b Batch, attempt int, cp kcl.Checkpointer) error {
	m.call.RLock()
	defer m.call.RUnlock()
	if err := m.refuse(CallDeliver, m.State()); err != nil {
		return err
	}
	in := kcl.ProcessRecordsInput{ShardID: m.id, Records: b.Records, MillisBehindLatest: b.MillisBehindLatest,
		Attempt: attempt, Checkpointer: cp}
	if err := Recover(func() error { return m.proc.ProcessRecords(ctx, in) }); err != nil {
		return err
	}
	m.state.CompareAndSwap(int32(Initialized), int32(Processing))
	return nil
}

// Processed records that every record up to pos was processed (by shared
// deliveries): the final checkpoint stores it. It only grows.
func (m *Machine) Processed(pos kcl.ExtendedSequenceNumber) {
	m.call.RLock()
	defer m.call.RUnlock()
	m.lpMu.Lock()
	defer m.lpMu.Unlock()
	if m.lastProcessed.IsZero() || pos.Compare(m.lastProcessed) > 0 {
		m.lastProcessed = pos
	}
}

// Pass counts records up to through as delivered and processed without
// calling the processor: a delivery policy filtered every one of them out.
// Valid where Deliver is.
func (m *Machine) Pass(through kcl.ExtendedSequenceNumber) error {
	if _, err := m.begin(CallDeliver); err != nil {
		return err
	}
	defer m.call.Unlock()
	m.cp.SetDelivered(through)
	if m.lastProcessed.IsZero() || through.Compare(m.lastProcessed) > 0 {
		m.lastProcessed = through
	}
	m.set(Processing)
	return nil
}

// Redeliver hands the batch that failed to ProcessRecords again, with the
// next Attempt number. Valid in state Retrying only.
func (m *Machine) Redeliver(ctx context.Context) error {
	if _, err := m.begin(CallRedeliver); err != nil {
		return err
	}
	defer m.call.Unlock()
	return m.process(ctx, len(m.batch.Records))
}

// Pending returns the records of the failed batch still to be delivered
// again (state Retrying); nil otherwise.
func (m *Machine) Pending() []kcl.Record {
	m.call.Lock()
	defer m.call.Unlock()
	if m.State() != Retrying {
		return nil
	}
	return slices.Clone(m.batch.Records)
}

// RedeliverPart is Redeliver for the first n pending records only (the
// delivery policies isolate failing records this way). On success those n
// records are processed: the state is Processing when none is left, and
// stays Retrying otherwise, for the rest. Valid in state Retrying, with
// 1 <= n <= len(Pending()).
func (m *Machine) RedeliverPart(ctx context.Context, n int) error {
	if err := m.beginPart(n, 1); err != nil {
		return err
	}
	defer m.call.Unlock()
	return m.process(ctx, n)
}

// beginPart is begin(CallRedeliver) for the first n pending records, at
// least least of them.
func (m *Machine) beginPart(n, least int) error {
	if _, err := m.begin(CallRedeliver); err != nil {
		return err
	}
	if n < least || n > len(m.batch.Records) {
		m.call.Unlock()
		return &CallError{ShardID: m.id, Call: CallRedeliver, State: Retrying,
			Reason: fmt.Sprintf("%d records out of %d pending", n, len(m.batch.Records)), Err: ErrInvalidCall}
	}
	return nil
}

// Settle counts the first n pending records as processed without calling
// the processor: it reported them done before failing (a
// kcl.PartialFailureError), or a dead-letter handler took them. The state
// becomes Processing when no record is left pending. Valid in state
// Retrying, with 0 <= n <= len(Pending()).
func (m *Machine) Settle(n int) error {
	if err := m.beginPart(n, 0); err != nil {
		return err
	}
	defer m.call.Unlock()
	m.done(n)
	return nil
}

// process makes one attempt at the first n records of the current batch.
// call is held.
func (m *Machine) process(ctx context.Context, n int) error {
	m.batch.Attempt++
	in := m.batch
	in.Records = in.Records[:n:n]
	if err := Recover(func() error { return m.proc.ProcessRecords(ctx, in) }); err != nil {
		m.set(Retrying)
		return err
	}
	m.done(n)
	return nil
}

// done counts the first n records of the current batch as processed. call
// is held.
func (m *Machine) done(n int) {
	if n > 0 {
		m.lastProcessed = m.batch.Records[n-1].Position()
	}
	m.batch.Records = m.batch.Records[n:]
	if len(m.batch.Records) > 0 {
		return
	}
	if !m.through.IsZero() {
		m.lastProcessed = m.through
	}
	m.batch = kcl.ProcessRecordsInput{}
	m.set(Processing)
}

// ShardEnded finishes a shard read to its end, once its last batch
// succeeded: SHARD_END becomes deliverable and the state Ending. A processor
// implementing kcl.ShardEndedHandler is called and must checkpoint SHARD_END
// (otherwise ErrShardEndNotCheckpointed); for other processors the machine
// stores SHARD_END itself. On success the state is Ended; on an error it
// stays Ending and ShardEnded may be called again.
func (m *Machine) ShardEnded(ctx context.Context, children []string) error {
	if _, err := m.begin(CallShardEnded); err != nil {
		return err
	}
	defer m.call.Unlock()
	m.set(Ending)
	m.cp.SetDelivered(kcl.ShardEnd)
	err := Recover(func() error {
		se, ok := m.proc.(kcl.ShardEndedHandler)
		if !ok {
			return m.cp.Checkpoint(ctx)
		}
		if err := se.ShardEnded(ctx, kcl.ShardEndedInput{ShardID: m.id, ChildShardIDs: children, Checkpointer: m.cp}); err != nil {
			return err
		}
		if !m.cp.Last().IsShardEnd() {
			return ErrShardEndNotCheckpointed
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.set(Ended)
	return nil
}

// ShutdownRequested tells the processor (if it implements
// kcl.ShutdownRequestedHandler) that the shard is given up on purpose; its
// checkpointer still works. The state becomes ShuttingDown whatever the
// processor returns, and FinalCheckpoint follows. A processor never
// initialized is told too: it may hold resources from its making.
func (m *Machine) ShutdownRequested(ctx context.Context) error {
	if _, err := m.begin(CallShutdownRequested); err != nil {
		return err
	}
	defer m.call.Unlock()
	m.set(ShuttingDown)
	sh, ok := m.proc.(kcl.ShutdownRequestedHandler)
	if !ok {
		return nil
	}
	return Recover(func() error {
		return sh.ShutdownRequested(ctx, kcl.ShutdownRequestedInput{ShardID: m.id, Checkpointer: m.cp})
	})
}

// FinalCheckpoint stores the end of the last batch that succeeded, if the
// processor did not store it (or more) itself, and returns that position
// (zero when there was nothing to store). On success the state is Stopped;
// on an error it stays ShuttingDown, for the driver to try again or to
// Stop.
func (m *Machine) FinalCheckpoint(ctx context.Context) (kcl.ExtendedSequenceNumber, error) {
	if _, err := m.begin(CallFinalCheckpoint); err != nil {
		return kcl.ExtendedSequenceNumber{}, err
	}
	defer m.call.Unlock()
	pos := m.lastProcessed
	if own, ok := m.proc.(OwnCheckpoints); ok && own.OwnCheckpoints() {
		pos = kcl.ExtendedSequenceNumber{}
	}
	if pos.IsZero() || pos.Compare(m.cp.Last()) <= 0 {
		m.set(Stopped)
		return kcl.ExtendedSequenceNumber{}, nil
	}
	if err := m.cp.CheckpointAt(ctx, pos); err != nil {
		return pos, err
	}
	m.set(Stopped)
	return pos, nil
}

// OwnCheckpoints is implemented by processors that store every checkpoint
// themselves and must not get the worker's final checkpoint after
// ShutdownRequested (the MultiLang daemon's: a child's checkpoints are only
// those it asks for, as with the Java daemon).
type OwnCheckpoints interface {
	OwnCheckpoints() bool
}

// LeaseLost tells the processor (if it implements kcl.LeaseLostHandler)
// that the lease is lost, after the call in flight returned; the state
// becomes Lost whatever it returns. In state ShuttingDown the processor,
// already asked to finish, is not called again: the state just becomes
// Lost.
func (m *Machine) LeaseLost(ctx context.Context) error {
	s, err := m.begin(CallLeaseLost)
	if err != nil {
		return err
	}
	defer m.call.Unlock()
	m.set(Lost)
	lh, ok := m.proc.(kcl.LeaseLostHandler)
	if !ok || s == ShuttingDown {
		return nil
	}
	return Recover(func() error { return lh.LeaseLost(ctx, kcl.LeaseLostInput{ShardID: m.id}) })
}

// Stop ends the lifecycle without calling the processor: a hard stop, or a
// shutdown whose final checkpoint could not be stored. In a final state it
// does nothing.
func (m *Machine) Stop() {
	m.call.Lock()
	defer m.call.Unlock()
	if !m.State().Final() {
		m.set(Stopped)
	}
}

// Recover runs fn, turning a panic into a *kcl.ProcessorPanicError.
func Recover(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &kcl.ProcessorPanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return fn()
}

// ErrorType names the type of an error from application code for the logs:
// the error's type, or for a recovered panic "panic(T)" with T the type of
// the panic value. It never includes the value itself.
func ErrorType(err error) string {
	var pe *kcl.ProcessorPanicError
	if errors.As(err, &pe) {
		return fmt.Sprintf("panic(%T)", pe.Value)
	}
	return fmt.Sprintf("%T", err)
}
