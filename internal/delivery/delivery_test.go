package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// rig is one shard: a machine over a recording writer, a processor that
// fails as told, and a recording dead-letter handler.
type rig struct {
	t  *testing.T
	m  *shardproc.Machine
	mu sync.Mutex
	// fail decides a call's error from its records; nil succeeds.
	fail     func(in kcl.ProcessRecordsInput) error
	calls    [][]string // sequence numbers per call
	done     []string   // sequence numbers of records in successful calls
	stored   []kcl.ExtendedSequenceNumber
	dead     []kcl.DeadLetter
	events   []Event
	dlqFails int // the handler's next failures
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t}
	proc := kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, seqs(in.Records))
		if r.fail != nil {
			if err := r.fail(in); err != nil {
				return err
			}
		}
		r.done = append(r.done, seqs(in.Records)...)
		return nil
	})
	r.m = recordingMachine(t, proc, &r.mu, &r.stored)
	return r
}

// recordingMachine returns an initialized machine over proc whose
// checkpoint writes are appended to *stored, under mu.
func recordingMachine(t *testing.T, proc kcl.RecordProcessor, mu *sync.Mutex, stored *[]kcl.ExtendedSequenceNumber) *shardproc.Machine {
	m := shardproc.NewMachine(shardproc.Config{ShardID: "shard-0", Processor: proc, Checkpoint: kcl.TrimHorizon,
		Writer: checkpoint.WriterFunc(func(_ context.Context, s checkpoint.State) error {
			mu.Lock()
			defer mu.Unlock()
			*stored = append(*stored, s.Checkpoint)
			return nil
		})})
	if err := m.Initialize(t.Context()); err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *rig) HandleDeadLetter(_ context.Context, d kcl.DeadLetter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dlqFails > 0 {
		r.dlqFails--
		return errors.New("dead-letter store unavailable")
	}
	r.dead = append(r.dead, d)
	return nil
}

func (r *rig) driver(p Policy, wait func(context.Context, int, error) error) *Driver {
	return New(p, Env{ShardID: "shard-0", Machine: r.m, Wait: wait,
		Event: func(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }})
}

func (r *rig) count(k EventKind) (n int) {
	for _, e := range r.events {
		if e.Kind == k {
			n += e.Records
		}
	}
	return n
}

func records(from, n int, arrival time.Time) []kcl.Record {
	out := make([]kcl.Record, n)
	for i := range out {
		out[i] = kcl.Record{SequenceNumber: fmt.Sprintf("%056d", from+i), PartitionKey: fmt.Sprintf("k%d", (from+i)%3),
			Data: []byte{byte(from + i)}, ApproximateArrivalTimestamp: arrival}
	}
	return out
}

func seqs(recs []kcl.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.SequenceNumber
	}
	return out
}

func has(recs []kcl.Record, r kcl.Record) bool {
	return slices.ContainsFunc(recs, func(x kcl.Record) bool { return x.SequenceNumber == r.SequenceNumber })
}

// sleepWait backs off 100ms per failure, in virtual time.
func sleepWait(ctx context.Context, failures int, _ error) error {
	select {
	case <-time.After(time.Duration(failures) * 100 * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestPartialFailureRedeliversFromTheFailedRecordOnly(t *testing.T) {
	r := newRig(t)
	recs := records(1, 6, time.Time{})
	failed := false
	r.fail = func(in kcl.ProcessRecordsInput) error {
		if !failed && has(in.Records, recs[3]) {
			failed = true
			return fmt.Errorf("wrapped: %w", &kcl.PartialFailureError{Position: recs[3].Position(), Err: errors.New("downstream said no")})
		}
		return nil
	}
	if err := r.driver(Policy{}, nil).Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
		t.Fatal(err)
	}
	if got, want := r.calls, [][]string{seqs(recs), seqs(recs[3:])}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("calls %v, want %v", got, want)
	}
	if got, want := r.stored, []kcl.ExtendedSequenceNumber{recs[2].Position()}; !slices.Equal(got, want) {
		t.Errorf("checkpoints %v, want just before the failed record %v", got, want)
	}
	if got := r.count(PartialFailure); got != 3 {
		t.Errorf("partial_failure event counted %d records, want 3", got)
	}
	if s := r.m.State(); s != shardproc.Processing {
		t.Errorf("state %v, want processing", s)
	}
}

func TestPartialFailureAtAnUnknownPositionFailsTheWholeBatch(t *testing.T) {
	r := newRig(t)
	recs := records(1, 3, time.Time{})
	n := 0
	r.fail = func(in kcl.ProcessRecordsInput) error {
		if n++; n == 1 {
			return &kcl.PartialFailureError{Position: kcl.ExtendedSequenceNumber{SequenceNumber: "42"}}
		}
		return nil
	}
	if err := r.driver(Policy{}, nil).Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
		t.Fatal(err)
	}
	if got, want := r.calls, [][]string{seqs(recs), seqs(recs)}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("calls %v, want the whole batch twice", got)
	}
}

func TestBisectIsolatesThePoisonRecordForTheDeadLetterHandler(t *testing.T) {
	r := newRig(t)
	recs := records(1, 8, time.Time{})
	poison := recs[5]
	r.fail = func(in kcl.ProcessRecordsInput) error {
		if has(in.Records, poison) {
			return errors.New("poison")
		}
		return nil
	}
	p := Policy{Bisect: true, MaxAttempts: 2, DeadLetters: r}
	if err := r.driver(p, nil).Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
		t.Fatal(err)
	}
	want := seqs(slices.Delete(slices.Clone(recs), 5, 6))
	if got := r.done; !slices.Equal(got, want) {
		t.Errorf("processed %v, want every record but the poison one, in order", got)
	}
	if len(r.dead) != 1 || r.dead[0].Record.SequenceNumber != poison.SequenceNumber || r.dead[0].Attempts != 2 ||
		r.dead[0].Reason != "max_attempts" || r.dead[0].ShardID != "shard-0" || r.dead[0].Err == nil {
		t.Errorf("dead letters %+v, want the poison record once after 2 attempts", r.dead)
	}
	if got := r.count(Bisected); got != 8+4+2 {
		t.Errorf("bisected %d records, want 8+4+2 (halves of 8, 4, 2)", got)
	}
	if got := r.count(DeadLettered); got != 1 {
		t.Errorf("dead_letter events counted %d, want 1", got)
	}
	if last := r.stored[len(r.stored)-1]; last != poison.Position() {
		t.Errorf("last checkpoint %v, want the poison record %v once dead-lettered", last, poison.Position())
	}
	pos, err := func() (kcl.ExtendedSequenceNumber, error) {
		_ = r.m.ShutdownRequested(t.Context())
		return r.m.FinalCheckpoint(t.Context())
	}()
	if err != nil || pos != recs[7].Position() {
		t.Errorf("final checkpoint %v, %v; want the batch's end %v", pos, err, recs[7].Position())
	}
}

func TestPoisonBatchCostsTheBackoffOfMaxAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		recs := records(1, 4, time.Time{})
		r.fail = func(in kcl.ProcessRecordsInput) error {
			if has(in.Records, recs[2]) {
				return errors.New("poison")
			}
			return nil
		}
		began := time.Now()
		if err := r.driver(Policy{MaxAttempts: 3, DeadLetters: r}, sleepWait).Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
			t.Fatal(err)
		}
		// Without bisect the failing batch is the part given up on: three
		// deliveries, two waits (100ms + 200ms), then the dead letters.
		if took := time.Since(began); took != 300*time.Millisecond {
			t.Errorf("the poison batch held the shard %v, want the two backoffs (300ms)", took)
		}
		if len(r.calls) != 3 || len(r.dead) != 4 {
			t.Errorf("%d calls and %d dead letters, want 3 and the batch's 4", len(r.calls), len(r.dead))
		}
	})
}

func TestMaxRecordAgeGivesUpOnOldFailingRecordsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		old := records(1, 1, time.Now().Add(-time.Hour))
		fresh := records(2, 1, time.Now())
		r.fail = func(kcl.ProcessRecordsInput) error { return errors.New("always") }
		d := r.driver(Policy{MaxRecordAge: time.Minute, DeadLetters: r}, sleepWait)
		if err := d.Deliver(t.Context(), shardproc.Batch{Records: old}); err != nil {
			t.Fatal(err)
		}
		if len(r.calls) != 1 || len(r.dead) != 1 || r.dead[0].Reason != "max_record_age" {
			t.Fatalf("%d calls, dead letters %+v; want one call then the record dead-lettered for its age", len(r.calls), r.dead)
		}
		// A fresh failing record is retried until it is too old.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		err := d.Deliver(ctx, shardproc.Batch{Records: fresh})
		if err == nil || len(r.dead) != 1 || len(r.calls) < 3 {
			t.Errorf("fresh record: err %v, %d dead letters, %d calls; want retries until the deadline", err, len(r.dead), len(r.calls))
		}
	})
}

func TestCheckpointMovesPastADeadLetterOnlyOnceTheHandlerAcceptedIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t)
		recs := records(1, 1, time.Time{})
		r.fail = func(kcl.ProcessRecordsInput) error { return errors.New("poison") }
		r.dlqFails = 2
		var during []kcl.ExtendedSequenceNumber
		wait := func(ctx context.Context, n int, _ error) error {
			r.mu.Lock()
			during = append(during, r.stored...)
			r.mu.Unlock()
			return sleepWait(ctx, n, nil)
		}
		if err := r.driver(Policy{MaxAttempts: 1, DeadLetters: r}, wait).Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
			t.Fatal(err)
		}
		if len(during) != 0 {
			t.Errorf("checkpoints %v stored while the handler was failing", during)
		}
		if len(r.dead) != 1 || !slices.Equal(r.stored, []kcl.ExtendedSequenceNumber{recs[0].Position()}) {
			t.Errorf("dead letters %d, checkpoints %v; want 1 and the record's position", len(r.dead), r.stored)
		}
	})
}

func TestFilteredRecordsAreNeverDeliveredButCountAsProcessed(t *testing.T) {
	r := newRig(t)
	recs := records(1, 6, time.Time{})
	keep := func(rec kcl.Record) bool { return rec.PartitionKey != "k0" } // drops 3 and 6
	d := r.driver(Policy{Filter: keep}, nil)
	if err := d.Deliver(t.Context(), shardproc.Batch{Records: recs}); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.calls {
		for _, s := range c {
			if s == recs[2].SequenceNumber || s == recs[5].SequenceNumber {
				t.Errorf("filtered record %s delivered", s)
			}
		}
	}
	if got := r.count(Filtered); got != 2 {
		t.Errorf("filtered %d, want 2", got)
	}
	// The batch's last record was filtered out: the checkpointer may still
	// store it, and the final checkpoint does.
	if got := r.m.Checkpointer().Delivered(); got != recs[5].Position() {
		t.Errorf("delivered %v, want the filtered last record %v", got, recs[5].Position())
	}
	// A batch filtered out entirely makes no call.
	calls := len(r.calls)
	all := []kcl.Record{records(9, 1, time.Time{})[0], records(12, 1, time.Time{})[0]} // keys k0
	if err := d.Deliver(t.Context(), shardproc.Batch{Records: all}); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != calls {
		t.Errorf("a batch filtered out entirely called the processor")
	}
	_ = r.m.ShutdownRequested(t.Context())
	if pos, err := r.m.FinalCheckpoint(t.Context()); err != nil || pos != all[1].Position() {
		t.Errorf("final checkpoint %v, %v; want past the filtered records, %v", pos, err, all[1].Position())
	}
}

func TestLimitsWithoutHandlerAreRefused(t *testing.T) {
	if err := (Policy{MaxAttempts: 3}).Validate(); err == nil {
		t.Error("MaxAttempts without a dead-letter handler accepted")
	}
	if err := (Policy{MaxRecordAge: time.Minute}).Validate(); err == nil {
		t.Error("MaxRecordAge without a dead-letter handler accepted")
	}
	if err := (Policy{MaxAttempts: 3, DeadLetters: newRig(t)}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestDeliveryStopsWhenTheWaitGivesUp(t *testing.T) {
	r := newRig(t)
	r.fail = func(kcl.ProcessRecordsInput) error { return errors.New("down") }
	lost := errors.New("lease lost")
	err := r.driver(Policy{}, func(context.Context, int, error) error { return lost }).Deliver(t.Context(), shardproc.Batch{Records: records(1, 2, time.Time{})})
	if !errors.Is(err, lost) || r.m.State() != shardproc.Retrying {
		t.Errorf("err %v, state %v; want the wait's error and the batch still pending", err, r.m.State())
	}
}
