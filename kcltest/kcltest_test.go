package kcltest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kcltest"
)

// proc is a configurable processor that implements every lifecycle
// interface and records what it was told.
type proc struct {
	process   func(ctx context.Context, in kcl.ProcessRecordsInput) error
	shardEnd  func(ctx context.Context, in kcl.ShardEndedInput) error
	shutdown  func(ctx context.Context, in kcl.ShutdownRequestedInput) error
	init      kcl.InitializeInput
	inits     int
	lost      int
	attempts  []int
	seen      []string
	ctxErrors []error
}

func (p *proc) Initialize(ctx context.Context, in kcl.InitializeInput) error {
	p.init = in
	p.inits++
	return nil
}

func (p *proc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.attempts = append(p.attempts, in.Attempt)
	for _, r := range in.Records {
		p.seen = append(p.seen, string(r.Data))
	}
	if p.process != nil {
		return p.process(ctx, in)
	}
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *proc) LeaseLost(ctx context.Context, in kcl.LeaseLostInput) error {
	p.lost++
	return nil
}

func (p *proc) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	if p.shardEnd != nil {
		return p.shardEnd(ctx, in)
	}
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *proc) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	if p.shutdown != nil {
		return p.shutdown(ctx, in)
	}
	return in.Checkpointer.Checkpoint(ctx)
}

func TestDeliverAndCheckpoint(t *testing.T) {
	ctx := t.Context()
	p := &proc{}
	sh := kcltest.NewShard("shard-1", p)
	recs := sh.Records("a", "b", "c")
	if err := sh.Deliver(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if p.inits != 1 || p.init.Checkpoint != kcl.TrimHorizon || p.init.ShardID != "shard-1" {
		t.Errorf("Initialize: %d calls with %+v", p.inits, p.init)
	}
	if got := sh.Checkpoint(); got != recs[2].Position() {
		t.Errorf("checkpoint %v, want %v", got, recs[2].Position())
	}
	if err := sh.Deliver(ctx, sh.Records("d")...); err != nil {
		t.Fatal(err)
	}
	if p.inits != 1 {
		t.Errorf("Initialize called %d times", p.inits)
	}
	if !slices.Equal(p.seen, []string{"a", "b", "c", "d"}) {
		t.Errorf("seen %q", p.seen)
	}
	if n := len(sh.Writes()); n != 2 {
		t.Errorf("%d writes, want 2", n)
	}
	// Records made later continue the sequence; older ones are refused.
	if err := sh.Deliver(ctx, recs[0]); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("delivering an old record: %v, want an out-of-order error", err)
	}
}

func TestCheckpointRulesApply(t *testing.T) {
	ctx := t.Context()
	var cpErr error
	p := &proc{process: func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		last := in.Records[len(in.Records)-1].Position()
		cpErr = in.Checkpointer.CheckpointAt(ctx, kcl.NewSequence(last.SequenceNumber+"0")) // after every record delivered
		return nil
	}}
	sh := kcltest.NewShard("shard-1", p)
	if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(cpErr, kcl.ErrInvalidCheckpoint) {
		t.Errorf("checkpoint past the delivered records: %v, want ErrInvalidCheckpoint", cpErr)
	}
	if sh.Checkpoint() != kcl.TrimHorizon {
		t.Errorf("checkpoint moved to %v", sh.Checkpoint())
	}
}

func TestRedeliverAfterError(t *testing.T) {
	ctx := t.Context()
	fail := errors.New("downstream unavailable")
	p := &proc{}
	p.process = func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		if in.Attempt == 1 {
			return fail
		}
		return in.Checkpointer.Checkpoint(ctx)
	}
	sh := kcltest.NewShard("shard-1", p)
	recs := sh.Records("a", "b")
	if err := sh.Deliver(ctx, recs...); !errors.Is(err, fail) {
		t.Fatalf("Deliver: %v, want the processor's error", err)
	}
	if err := sh.Redeliver(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.attempts, []int{1, 2}) || sh.Checkpoint() != recs[1].Position() {
		t.Errorf("attempts %v, checkpoint %v", p.attempts, sh.Checkpoint())
	}
}

func TestLeaseLostBetweenBatches(t *testing.T) {
	ctx := t.Context()
	p := &proc{}
	sh := kcltest.NewShard("shard-1", p)
	if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
		t.Fatal(err)
	}
	before := sh.Checkpoint()
	if err := sh.LoseLease(ctx); err != nil {
		t.Fatal(err)
	}
	if p.lost != 1 {
		t.Errorf("LeaseLost called %d times", p.lost)
	}
	if err := sh.Deliver(ctx, sh.Records("b")...); !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("Deliver after the loss: %v, want ErrLeaseLost", err)
	}
	if len(p.seen) != 1 || sh.Checkpoint() != before {
		t.Errorf("processor called after the loss: seen %q, checkpoint %v", p.seen, sh.Checkpoint())
	}
}

func TestLeaseLostDuringBatch(t *testing.T) {
	ctx := t.Context()
	var sh *kcltest.Shard
	var cpErr, ctxErr error
	p := &proc{}
	p.process = func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		if err := sh.LoseLease(ctx); err != nil { // another worker takes the shard now
			return err
		}
		ctxErr = ctx.Err()
		cpErr = in.Checkpointer.Checkpoint(ctx)
		if p.lost != 0 {
			t.Error("LeaseLost called while ProcessRecords runs")
		}
		return nil
	}
	sh = kcltest.NewShard("shard-1", p)
	err := sh.Deliver(ctx, sh.Records("a")...)
	if !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("Deliver: %v, want ErrLeaseLost", err)
	}
	if !errors.Is(ctxErr, context.Canceled) {
		t.Errorf("context during the loss: %v, want cancelled", ctxErr)
	}
	if !errors.Is(cpErr, kcl.ErrLeaseLost) {
		t.Errorf("checkpoint after the loss: %v, want ErrLeaseLost", cpErr)
	}
	if p.lost != 1 || sh.Checkpoint() != kcl.TrimHorizon {
		t.Errorf("LeaseLost calls %d, checkpoint %v", p.lost, sh.Checkpoint())
	}
}

func TestShardEnd(t *testing.T) {
	ctx := t.Context()
	t.Run("processor checkpoints", func(t *testing.T) {
		var children []string
		p := &proc{shardEnd: func(ctx context.Context, in kcl.ShardEndedInput) error {
			children = in.ChildShardIDs
			return in.Checkpointer.Checkpoint(ctx)
		}}
		sh := kcltest.NewShard("shard-1", p)
		if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
			t.Fatal(err)
		}
		if err := sh.End(ctx, "shard-2", "shard-3"); err != nil {
			t.Fatal(err)
		}
		if !sh.Checkpoint().IsShardEnd() || !slices.Equal(children, []string{"shard-2", "shard-3"}) {
			t.Errorf("checkpoint %v, children %v", sh.Checkpoint(), children)
		}
		if err := sh.Deliver(ctx, sh.Records("b")...); !errors.Is(err, kcltest.ErrStopped) {
			t.Errorf("Deliver after the end: %v, want ErrStopped", err)
		}
	})
	t.Run("processor forgets", func(t *testing.T) {
		p := &proc{shardEnd: func(context.Context, kcl.ShardEndedInput) error { return nil }}
		sh := kcltest.NewShard("shard-1", p)
		if err := sh.End(ctx); !errors.Is(err, kcltest.ErrShardEndNotCheckpointed) {
			t.Errorf("End: %v, want ErrShardEndNotCheckpointed", err)
		}
		if sh.Checkpoint().IsShardEnd() {
			t.Error("SHARD_END stored")
		}
	})
	t.Run("no handler: the worker checkpoints", func(t *testing.T) {
		sh := kcltest.NewShard("shard-1", kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error { return nil }))
		if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
			t.Fatal(err)
		}
		if err := sh.End(ctx); err != nil {
			t.Fatal(err)
		}
		if !sh.Checkpoint().IsShardEnd() {
			t.Errorf("checkpoint %v, want SHARD_END", sh.Checkpoint())
		}
	})
}

func TestShutdownRequested(t *testing.T) {
	ctx := t.Context()
	p := &proc{process: func(context.Context, kcl.ProcessRecordsInput) error { return nil }} // checkpoints only on shutdown
	sh := kcltest.NewShard("shard-1", p)
	recs := sh.Records("a", "b")
	if err := sh.Deliver(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if sh.Checkpoint() != kcl.TrimHorizon {
		t.Fatalf("checkpoint %v before shutdown", sh.Checkpoint())
	}
	if err := sh.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if sh.Checkpoint() != recs[1].Position() {
		t.Errorf("checkpoint %v after shutdown, want %v", sh.Checkpoint(), recs[1].Position())
	}
	if err := sh.Deliver(ctx, sh.Records("c")...); !errors.Is(err, kcltest.ErrStopped) {
		t.Errorf("Deliver after shutdown: %v, want ErrStopped", err)
	}
}

func TestRestartWithPendingCheckpoint(t *testing.T) {
	ctx := t.Context()
	p := &proc{process: func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		pc, err := in.Checkpointer.Prepare(ctx, in.Records[0].Position(), []byte("txn-7"))
		if err != nil {
			return err
		}
		return pc.Commit(ctx)
	}}
	// Every shard numbers its records alike: these are the positions of
	// the shard's first two records.
	ref := kcltest.NewShard("ref", p).Records("x", "y")
	start, pending := ref[0].Position(), ref[1].Position()
	sh := kcltest.NewShard("shard-1", p, kcltest.WithCheckpoint(start), kcltest.WithPendingCheckpoint(pending, []byte("txn-6")))
	recs := sh.Records("x", "y") // at start and pending
	if err := sh.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if p.init.Checkpoint != start || p.init.PendingCheckpoint != pending || string(p.init.PendingState) != "txn-6" {
		t.Errorf("InitializeInput %+v", p.init)
	}
	if err := sh.Deliver(ctx, recs[0]); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("delivering the checkpointed record: %v, want an out-of-order error", err)
	}
	if err := sh.Deliver(ctx, recs[1]); err != nil {
		t.Fatal(err)
	}
	w := sh.Writes()
	if len(w) != 2 || w[0].Pending != recs[1].Position() || string(w[0].PendingState) != "txn-7" || w[1].Checkpoint != recs[1].Position() {
		t.Errorf("writes %+v: want a prepare then a commit of %v", w, recs[1].Position())
	}
	if len(w) == 2 && !w[1].Pending.IsZero() {
		t.Errorf("pending %v after commit", w[1].Pending)
	}
}

func TestFailCheckpoints(t *testing.T) {
	ctx := t.Context()
	throttled := errors.Join(kcl.ErrThrottled)
	sh := kcltest.NewShard("shard-1", &proc{})
	sh.FailCheckpoints(throttled)
	if err := sh.Deliver(ctx, sh.Records("a")...); !errors.Is(err, kcl.ErrThrottled) {
		t.Errorf("Deliver: %v, want the checkpoint error", err)
	}
	sh.FailCheckpoints(nil)
	if err := sh.Redeliver(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sh.Writes()) != 1 {
		t.Errorf("writes %+v", sh.Writes())
	}
}

func TestPanicBecomesError(t *testing.T) {
	sh := kcltest.NewShard("shard-1", kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error {
		panic("boom")
	}))
	var pe *kcl.ProcessorPanicError
	if err := sh.Deliver(t.Context(), sh.Records("a")...); !errors.As(err, &pe) || pe.Value != "boom" {
		t.Errorf("Deliver: %v, want a ProcessorPanicError", err)
	}
}

// After ShutdownRequested the worker stores the end of the last batch that
// succeeded when the processor did not: so does the kit.
func TestShutdownStoresFinalCheckpoint(t *testing.T) {
	ctx := t.Context()
	fail := errors.New("downstream unavailable")
	p := &proc{shutdown: func(context.Context, kcl.ShutdownRequestedInput) error { return nil }}
	p.process = func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		if string(in.Records[0].Data) == "c" {
			return fail
		}
		return nil // never checkpoints
	}
	sh := kcltest.NewShard("shard-1", p)
	done := sh.Records("a", "b")
	if err := sh.Deliver(ctx, done...); err != nil {
		t.Fatal(err)
	}
	if err := sh.Deliver(ctx, sh.Records("c")...); !errors.Is(err, fail) {
		t.Fatalf("Deliver: %v, want the processor's error", err)
	}
	if err := sh.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sh.Checkpoint(); got != done[1].Position() {
		t.Errorf("checkpoint %v after shutdown, want the end of the last batch that succeeded %v", got, done[1].Position())
	}
	if w := sh.Writes(); len(w) != 1 {
		t.Errorf("writes %+v, want the final checkpoint only", w)
	}
}

// The kit refuses what the worker never does: a new batch while the last
// one failed, a redelivery of a batch that succeeded.
func TestCallsTheWorkerNeverMakes(t *testing.T) {
	ctx := t.Context()
	fail := errors.New("downstream unavailable")
	var failing bool
	p := &proc{process: func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		if failing {
			return fail
		}
		return in.Checkpointer.Checkpoint(ctx)
	}}
	sh := kcltest.NewShard("shard-1", p)
	if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
		t.Fatal(err)
	}
	if err := sh.Redeliver(ctx); err == nil || errors.Is(err, fail) {
		t.Errorf("Redeliver after a success: %v, want a refusal", err)
	}
	failing = true
	if err := sh.Deliver(ctx, sh.Records("b")...); !errors.Is(err, fail) {
		t.Fatal(err)
	}
	if err := sh.Deliver(ctx, sh.Records("c")...); err == nil || errors.Is(err, fail) {
		t.Errorf("Deliver after a failed batch: %v, want a refusal", err)
	}
	if err := sh.End(ctx); err == nil || errors.Is(err, kcltest.ErrShardEndNotCheckpointed) {
		t.Errorf("End after a failed batch: %v, want a refusal", err)
	}
	failing = false
	if err := sh.Redeliver(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.seen, []string{"a", "b", "b"}) || !slices.Equal(p.attempts, []int{1, 1, 2}) {
		t.Errorf("seen %q, attempts %v", p.seen, p.attempts)
	}
}

// A lease lost while ShutdownRequested runs: its checkpoints fail, and the
// processor, already asked to finish, gets no LeaseLost (as in the worker).
func TestLeaseLostDuringShutdown(t *testing.T) {
	ctx := t.Context()
	var sh *kcltest.Shard
	var cpErr error
	p := &proc{process: func(context.Context, kcl.ProcessRecordsInput) error { return nil }}
	p.shutdown = func(ctx context.Context, in kcl.ShutdownRequestedInput) error {
		if err := sh.LoseLease(ctx); err != nil {
			return err
		}
		cpErr = in.Checkpointer.Checkpoint(ctx)
		return nil
	}
	sh = kcltest.NewShard("shard-1", p)
	if err := sh.Deliver(ctx, sh.Records("a")...); err != nil {
		t.Fatal(err)
	}
	if err := sh.Shutdown(ctx); !errors.Is(err, kcl.ErrLeaseLost) {
		t.Errorf("Shutdown: %v, want ErrLeaseLost", err)
	}
	if !errors.Is(cpErr, kcl.ErrLeaseLost) || sh.Checkpoint() != kcl.TrimHorizon {
		t.Errorf("checkpoint during the loss: %v, stored %v", cpErr, sh.Checkpoint())
	}
	if p.lost != 0 {
		t.Errorf("LeaseLost called %d times after ShutdownRequested", p.lost)
	}
}

// A partial failure is applied as the worker applies it: the records before
// the failed one are checkpointed and never delivered again.
func TestPartialFailureRedeliversFromTheFailedRecord(t *testing.T) {
	var calls [][]kcl.Record
	var attempts []int
	p := kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		calls = append(calls, in.Records)
		attempts = append(attempts, in.Attempt)
		if len(calls) == 1 {
			return &kcl.PartialFailureError{Position: in.Records[3].Position(), Err: errors.New("downstream")}
		}
		return in.Checkpointer.Checkpoint(ctx)
	})
	sh := kcltest.NewShard("shardId-000000000000", p)
	recs := sh.Records("a", "b", "c", "d", "e")
	var pf *kcl.PartialFailureError
	if err := sh.Deliver(t.Context(), recs...); !errors.As(err, &pf) {
		t.Fatalf("Deliver: %v, want the partial failure", err)
	}
	if got := sh.Checkpoint(); got != recs[2].Position() {
		t.Errorf("checkpoint %v after the partial failure, want just before the failed record %v", got, recs[2].Position())
	}
	if err := sh.Redeliver(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || len(calls[1]) != 2 || calls[1][0].SequenceNumber != recs[3].SequenceNumber || attempts[1] != 2 {
		t.Errorf("second call %v (attempt %v), want records d and e, attempt 2", calls[1:], attempts)
	}
	if got := sh.Checkpoint(); got != recs[4].Position() {
		t.Errorf("checkpoint %v, want %v", got, recs[4].Position())
	}
}
