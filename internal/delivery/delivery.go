// Package delivery is the layer between a shard's reads and its
// [shardproc.Machine]: the delivery policies a worker can turn on, each off
// by default. A [Driver] filters a batch, hands it to the machine, and when
// the processor fails it applies the policies in this order:
//
//   - partial failure: a *kcl.PartialFailureError names the first record
//     that failed; the records before it count as processed (the
//     checkpoint moves just before it) and only the rest is delivered again;
//   - bisect: a failing part of more than one record is split in halves,
//     delivered one after the other, to isolate the failing records;
//   - poison records: a part whose first record failed MaxAttempts times,
//     or is older than MaxRecordAge, goes to the dead-letter handler record
//     by record; once the handler accepted them they count as processed and
//     the checkpoint moves past them;
//   - otherwise the part is delivered again after a backoff, until it
//     succeeds or the shard stops.
//
// Per-key parallelism ([Lanes]) runs several drivers' worth of batches of
// one shard at once. The worker and the test kit (kcltest) both use this
// package, so a policy behaves the same in tests as in production.
package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// Policy holds the delivery knobs; the zero value is today's behaviour: a
// failing batch is delivered again, whole, until it succeeds.
type Policy struct {
	// MaxAttempts, when positive, is how many failed deliveries a record
	// (or an isolated failing part) gets before it goes to DeadLetters.
	MaxAttempts int
	// MaxRecordAge, when positive, sends a failing record older than this
	// (by its arrival time) to DeadLetters at once.
	MaxRecordAge time.Duration
	// DeadLetters takes the records given up on. Required with
	// MaxAttempts or MaxRecordAge.
	DeadLetters kcl.DeadLetterHandler
	// Bisect splits a failing part of several records in halves.
	Bisect bool
	// Filter, when set, keeps the records for which it returns true; the
	// others are never delivered and count as processed.
	Filter func(kcl.Record) bool
}

// Limited reports whether records can be given up on.
func (p Policy) Limited() bool { return p.MaxAttempts > 0 || p.MaxRecordAge > 0 }

// Validate reports a policy that cannot be used.
func (p Policy) Validate() error {
	var errs []error
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("MaxAttempts %d is negative", p.MaxAttempts))
	}
	if p.MaxRecordAge < 0 {
		errs = append(errs, fmt.Errorf("MaxRecordAge %v is negative", p.MaxRecordAge))
	}
	if p.Limited() && p.DeadLetters == nil {
		errs = append(errs, errors.New("MaxAttempts and MaxRecordAge need a dead-letter handler: records are never dropped silently"))
	}
	return errors.Join(errs...)
}

// EventKind names what a policy did.
type EventKind string

// The events of a [Driver].
const (
	// Filtered: Records records were filtered out.
	Filtered EventKind = "filtered"
	// PartialFailure: the processor reported a partial failure; Records
	// records before the failed one counted as processed.
	PartialFailure EventKind = "partial_failure"
	// Bisected: a failing part of Records records was split in halves.
	Bisected EventKind = "bisect"
	// DeadLettered: Records records went to the dead-letter handler.
	DeadLettered EventKind = "dead_letter"
)

// Event is one action of a policy.
type Event struct {
	Kind    EventKind
	Records int
	// Err is the processor's error behind the action, if any.
	Err error
}

// Call describes one processor call made by a [Driver].
type Call struct {
	Records  []kcl.Record
	Attempt  int   // deliveries of this batch so far, this one included
	Behind   int64 // the batch's MillisBehindLatest
	Duration time.Duration
	Err      error
}

// Env is what a [Driver] needs from its host (the worker, or the test kit).
// Only Machine is required.
type Env struct {
	ShardID string
	Machine *shardproc.Machine
	// Before is called before each processor call; an error gives up.
	Before func() error
	// Wait pauses before the next attempt after failures failed deliveries
	// (the last of which failed with err)
	// in a row (or failed dead-letter writes); an error gives up. Nil: no
	// pause.
	Wait func(ctx context.Context, failures int, err error) error
	// Observe is told of every processor call.
	Observe func(Call)
	// Event is told of every policy action.
	Event func(Event)
	// Now is the clock (for MaxRecordAge and dead letters); default
	// time.Now.
	Now func() time.Time
	// Log receives the policies' log lines; default: discarded.
	Log *slog.Logger
}

// Driver delivers the batches of one shard under a [Policy]. It is used from
// one goroutine.
type Driver struct {
	p   Policy
	env Env
}

// New returns a driver.
func New(p Policy, env Env) *Driver {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	return &Driver{p: p, env: env}
}

func (d *Driver) event(e Event) {
	if d.env.Event != nil {
		d.env.Event(e)
	}
}

// Filter returns the records the policy's filter keeps (all without one)
// and reports the others.
func (d *Driver) Filter(recs []kcl.Record) []kcl.Record {
	if d.p.Filter == nil {
		return recs
	}
	kept := make([]kcl.Record, 0, len(recs))
	for _, r := range recs {
		if d.p.Filter(r) {
			kept = append(kept, r)
		}
	}
	if n := len(recs) - len(kept); n > 0 {
		d.env.Log.Debug("records filtered out", "records", n)
		d.event(Event{Kind: Filtered, Records: n})
	}
	return kept
}

// target is what a driver delivers to: the shard's machine, or one lane.
type target interface {
	// first delivers a new batch.
	first(ctx context.Context, b shardproc.Batch) error
	// pending returns the records of the failed batch not yet processed.
	pending() []kcl.Record
	// part delivers the first n pending records again; on success they
	// are processed.
	part(ctx context.Context, n int) error
	// settle counts the first n pending records as processed without the
	// processor, and lets the checkpoint move past them.
	settle(ctx context.Context, n int) error
	// whole delivers the (empty) failed batch again.
	whole(ctx context.Context) error
}

// machineTarget delivers to the machine itself, one batch at a time.
type machineTarget struct{ d *Driver }

func (t machineTarget) first(ctx context.Context, b shardproc.Batch) error {
	return t.d.env.Machine.Deliver(ctx, b)
}
func (t machineTarget) pending() []kcl.Record { return t.d.env.Machine.Pending() }
func (t machineTarget) part(ctx context.Context, n int) error {
	return t.d.env.Machine.RedeliverPart(ctx, n)
}
func (t machineTarget) whole(ctx context.Context) error { return t.d.env.Machine.Redeliver(ctx) }
func (t machineTarget) settle(ctx context.Context, n int) error {
	m := t.d.env.Machine
	pend := m.Pending()
	if err := m.Settle(n); err != nil || n == 0 {
		return err
	}
	return t.d.checkpoint(ctx, pend[n-1].Position())
}

// Deliver hands one batch to the processor and applies the policy until
// every record of it is processed, filtered out or dead-lettered. It
// returns an error only when the shard must stop (ctx ended, Before or Wait
// gave up, or the machine refused a call); the machine then stays as the
// last call left it.
func (d *Driver) Deliver(ctx context.Context, b shardproc.Batch) error {
	all := b.Records
	if n := len(all); n > 0 && b.Through.IsZero() {
		b.Through = all[n-1].Position()
	}
	b.Records = d.Filter(all)
	if len(all) > 0 && len(b.Records) == 0 {
		return d.env.Machine.Pass(b.Through)
	}
	return d.run(ctx, machineTarget{d}, b)
}

// run delivers b (already filtered) to t under the policy.
func (d *Driver) run(ctx context.Context, t target, b shardproc.Batch) error {
	attempt := 0
	call := func(recs []kcl.Record, fn func() error) error {
		if d.env.Before != nil {
			if err := d.env.Before(); err != nil {
				return &stop{err}
			}
		}
		attempt++
		began := time.Now()
		err := fn()
		if d.env.Observe != nil {
			d.env.Observe(Call{Records: recs, Attempt: attempt, Behind: b.MillisBehindLatest, Duration: time.Since(began), Err: err})
		}
		return err
	}
	err := call(b.Records, func() error { return t.first(ctx, b) })
	if err == nil {
		return nil
	}
	if isStop(err) {
		return err
	}
	if len(b.Records) == 0 { // an empty batch (CallProcessorOnEmptyBatches) fails as a whole
		for failures := 1; err != nil; failures++ {
			if isStop(err) {
				return err
			}
			if werr := d.wait(ctx, failures, err); werr != nil {
				return werr
			}
			err = call(nil, func() error { return t.whole(ctx) })
		}
		return nil
	}
	parts := []int{len(b.Records)} // consecutive parts of the pending records, front first
	failures := 1                  // failed deliveries of the front part
	for len(parts) > 0 {
		if err != nil {
			var next []int
			var dropped bool
			next, failures, dropped, err = d.recover(ctx, t, err, parts, failures)
			if err != nil {
				return err
			}
			parts = next
			if dropped || len(parts) == 0 {
				continue
			}
		}
		recs := t.pending()
		if len(recs) < parts[0] {
			return fmt.Errorf("delivery: %d records pending, fewer than the part of %d", len(recs), parts[0])
		}
		n := parts[0]
		err = call(recs[:n], func() error { return t.part(ctx, n) })
		if isStop(err) {
			return err
		}
		if err == nil {
			parts, failures = parts[1:], 0
			continue
		}
		failures++
	}
	return nil
}

// recover applies the policy after the front part failed with perr. It
// returns the parts left, the failures of the new front part, and whether
// the front part was disposed of without a delivery (dead-lettered).
func (d *Driver) recover(ctx context.Context, t target, perr error, parts []int, failures int) ([]int, int, bool, error) {
	pend := t.pending()
	if len(pend) < parts[0] {
		return nil, 0, false, fmt.Errorf("delivery: %d records pending, fewer than the part of %d", len(pend), parts[0])
	}
	if ctx.Err() != nil {
		return nil, 0, false, &stop{context.Cause(ctx)}
	}
	n := parts[0]
	partial := false  // records before the failed one were settled
	isolated := false // the processor named the front record as the one failing
	var pf *kcl.PartialFailureError
	if errors.As(perr, &pf) {
		i := indexOf(pend[:n], pf.Position)
		isolated = i >= 0
		if i > 0 {
			partial = true
			d.env.Log.Info("partial batch failure: records before the failed one count as processed",
				"processed", i, "failed_at", pf.Position.String(), shardproc.ErrAttr(pf.Err))
			if err := t.settle(ctx, i); err != nil {
				return nil, 0, false, err
			}
			d.event(Event{Kind: PartialFailure, Records: i, Err: perr})
			parts = append([]int{n - i}, parts[1:]...)
			pend, n, failures = pend[i:], n-i, 1
		}
	}
	if d.p.Bisect && n > 1 && !partial {
		h := n / 2
		d.env.Log.Info("batch failed: bisecting", "records", n, shardproc.ErrAttr(perr))
		d.event(Event{Kind: Bisected, Records: n, Err: perr})
		return append([]int{h, n - h}, parts[1:]...), 0, false, nil
	}
	if reason := d.exhausted(failures, pend[0]); reason != "" {
		if isolated && n > 1 { // only the record named goes; the rest is delivered again
			if err := d.deadLetter(ctx, pend[:1], failures, perr, reason); err != nil {
				return nil, 0, false, err
			}
			if err := t.settle(ctx, 1); err != nil {
				return nil, 0, false, err
			}
			return append([]int{n - 1}, parts[1:]...), 0, false, nil
		}
		if err := d.deadLetter(ctx, pend[:n], failures, perr, reason); err != nil {
			return nil, 0, false, err
		}
		if err := t.settle(ctx, n); err != nil {
			return nil, 0, false, err
		}
		return parts[1:], 0, true, nil
	}
	if err := d.wait(ctx, failures, perr); err != nil {
		return nil, 0, false, err
	}
	return parts, failures, false, nil
}

// exhausted returns why r (at the front of a part that failed failures
// times) is given up on, or "".
func (d *Driver) exhausted(failures int, r kcl.Record) string {
	switch {
	case d.p.MaxAttempts > 0 && failures >= d.p.MaxAttempts:
		return "max_attempts"
	case d.p.MaxRecordAge > 0 && !r.ApproximateArrivalTimestamp.IsZero() &&
		d.env.Now().Sub(r.ApproximateArrivalTimestamp) > d.p.MaxRecordAge:
		return "max_record_age"
	}
	return ""
}

// deadLetter hands recs to the handler, one by one, each until accepted.
func (d *Driver) deadLetter(ctx context.Context, recs []kcl.Record, attempts int, cause error, reason string) error {
	for _, r := range recs {
		dl := kcl.DeadLetter{ShardID: d.env.ShardID, Record: r, Attempts: attempts, Err: cause, Reason: reason}
		for tries := 1; ; tries++ {
			err := shardproc.Recover(func() error { return d.p.DeadLetters.HandleDeadLetter(ctx, dl) })
			if err == nil {
				break
			}
			d.env.Log.Warn("dead-letter handler failed; trying again", "sequence", r.SequenceNumber, "tries", tries, shardproc.ErrAttr(err))
			if werr := d.wait(ctx, tries, err); werr != nil {
				return werr
			}
		}
		d.env.Log.Warn("record given up on and sent to the dead-letter handler", "sequence", r.SequenceNumber,
			"sub_sequence", r.SubSequenceNumber, "partition_key", r.PartitionKey, "attempts", attempts, "reason", reason, shardproc.ErrAttr(cause))
	}
	d.event(Event{Kind: DeadLettered, Records: len(recs), Err: cause})
	return nil
}

// checkpoint stores pos once the records up to it are done. Only a lost
// lease stops the shard: any other failure is logged, and a later
// checkpoint covers it.
func (d *Driver) checkpoint(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	cp := d.env.Machine.Checkpointer()
	if pos.Compare(cp.Last()) <= 0 {
		return nil
	}
	err := cp.CheckpointAt(ctx, pos)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kcl.ErrLeaseLost):
		return &stop{err}
	}
	d.env.Log.Warn("checkpoint after a partial failure or dead letter failed; a later one covers it", "position", pos.String(), "err", err)
	return nil
}

func (d *Driver) wait(ctx context.Context, failures int, cause error) error {
	if d.env.Wait == nil {
		return ctx.Err()
	}
	if err := d.env.Wait(ctx, failures, cause); err != nil {
		return &stop{err}
	}
	return nil
}

func indexOf(recs []kcl.Record, pos kcl.ExtendedSequenceNumber) int {
	for i, r := range recs {
		if r.SequenceNumber == pos.SequenceNumber && r.SubSequenceNumber == pos.SubSequenceNumber {
			return i
		}
	}
	return -1
}

// stop marks an error that ends the delivery (as opposed to a processor's).
type stop struct{ err error }

func (s *stop) Error() string { return s.err.Error() }
func (s *stop) Unwrap() error { return s.err }

// isStop reports an error that ends the delivery: a stop, or a call the
// machine refused.
func isStop(err error) bool {
	var s *stop
	var refused *shardproc.CallError
	return errors.As(err, &s) || errors.As(err, &refused)
}

// SettlePartial applies a partial failure to a machine whose batch just
// failed with err, as a [Driver] does: when err is (or wraps) a
// *kcl.PartialFailureError naming a pending record other than the first,
// the records before it count as processed and the checkpoint is stored
// just before it; the machine then delivers again from it. It returns how
// many records were settled (0 when err is no such partial failure).
func SettlePartial(ctx context.Context, m *shardproc.Machine, err error) (int, error) {
	var pf *kcl.PartialFailureError
	if !errors.As(err, &pf) {
		return 0, nil
	}
	pend := m.Pending()
	i := indexOf(pend, pf.Position)
	if i <= 0 {
		return 0, nil
	}
	if err := m.Settle(i); err != nil {
		return 0, err
	}
	return i, m.Checkpointer().CheckpointAt(ctx, pend[i-1].Position())
}
