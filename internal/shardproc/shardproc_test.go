package shardproc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

var errFail = errors.New("processor failed")

// fakeProc implements every lifecycle interface and records its calls.
type fakeProc struct {
	mu        sync.Mutex
	calls     []string
	attempts  []int
	init      kcl.InitializeInput
	fail      error // returned by every call while set
	panicWith any   // panicked by every call while set
	forgetEnd bool  // ShardEnded does not checkpoint
	noCP      bool  // ProcessRecords does not checkpoint
	block     chan struct{}
	inBatch   chan struct{}
}

func (p *fakeProc) enter(name string) error {
	p.mu.Lock()
	p.calls = append(p.calls, name)
	fail, pv := p.fail, p.panicWith
	p.mu.Unlock()
	if pv != nil {
		panic(pv)
	}
	return fail
}

func (p *fakeProc) set(f func(p *fakeProc)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *fakeProc) callList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

func (p *fakeProc) Initialize(_ context.Context, in kcl.InitializeInput) error {
	p.mu.Lock()
	p.init = in
	p.mu.Unlock()
	return p.enter("Initialize")
}

func (p *fakeProc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.mu.Lock()
	p.attempts = append(p.attempts, in.Attempt)
	block, inBatch, noCP := p.block, p.inBatch, p.noCP
	p.mu.Unlock()
	if err := p.enter("ProcessRecords"); err != nil {
		return err
	}
	if inBatch != nil {
		inBatch <- struct{}{}
	}
	if block != nil {
		<-block
		p.enter("ProcessRecords returns")
	}
	if noCP {
		return nil
	}
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *fakeProc) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	if err := p.enter("ShardEnded"); err != nil {
		return err
	}
	p.mu.Lock()
	forget := p.forgetEnd
	p.mu.Unlock()
	if forget {
		return nil
	}
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *fakeProc) ShutdownRequested(context.Context, kcl.ShutdownRequestedInput) error {
	return p.enter("ShutdownRequested")
}

func (p *fakeProc) LeaseLost(context.Context, kcl.LeaseLostInput) error {
	return p.enter("LeaseLost")
}

// store is a checkpoint writer that records writes and can fail.
type store struct {
	mu     sync.Mutex
	writes []checkpoint.State
	fail   error
}

func (s *store) WriteCheckpoint(_ context.Context, st checkpoint.State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.writes = append(s.writes, st)
	return nil
}

func (s *store) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

func (s *store) list() []checkpoint.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.writes)
}

func rec(n int) kcl.Record {
	return kcl.Record{Data: []byte{byte(n)}, SequenceNumber: fmt.Sprintf("4959%052d", n)}
}

func newMachine(p kcl.RecordProcessor) (*Machine, *store) {
	st := &store{}
	return NewMachine(Config{ShardID: "shard-1", Processor: p, Writer: st, Checkpoint: kcl.TrimHorizon}), st
}

var allStates = []State{New, Initialized, Processing, Retrying, Ending, ShuttingDown, Ended, Lost, Stopped}

// reach returns a machine brought to state s through valid calls.
func reach(t *testing.T, s State) (*Machine, *fakeProc, *store) {
	t.Helper()
	ctx := t.Context()
	p := &fakeProc{}
	m, st := newMachine(p)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("reaching %s: %v", s, err)
		}
	}
	if s != New && s != Lost {
		must(m.Initialize(ctx))
	}
	switch s {
	case Processing:
		must(m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1)}}))
	case Retrying:
		p.set(func(p *fakeProc) { p.fail = errFail })
		if err := m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1)}}); !errors.Is(err, errFail) {
			t.Fatalf("reaching %s: %v", s, err)
		}
		p.set(func(p *fakeProc) { p.fail = nil })
	case Ending:
		p.set(func(p *fakeProc) { p.forgetEnd = true })
		if err := m.ShardEnded(ctx, nil); !errors.Is(err, ErrShardEndNotCheckpointed) {
			t.Fatalf("reaching %s: %v", s, err)
		}
		p.set(func(p *fakeProc) { p.forgetEnd = false })
	case ShuttingDown:
		must(m.ShutdownRequested(ctx))
	case Ended:
		must(m.ShardEnded(ctx, nil))
	case Lost:
		must(m.LeaseLost(ctx))
	case Stopped:
		m.Stop()
	}
	if got := m.State(); got != s {
		t.Fatalf("reached %s, want %s", got, s)
	}
	return m, p, st
}

// TestTransitions checks every call in every state: the calls the state
// allows lead to the next state; the others are refused with the right
// sentinel, without calling the processor or changing the state.
func TestTransitions(t *testing.T) {
	allowed := map[State][]Call{
		New:          {CallInitialize, CallShutdownRequested, CallLeaseLost},
		Initialized:  {CallDeliver, CallShardEnded, CallShutdownRequested, CallLeaseLost},
		Processing:   {CallDeliver, CallShardEnded, CallShutdownRequested, CallLeaseLost},
		Retrying:     {CallRedeliver, CallShutdownRequested, CallLeaseLost},
		Ending:       {CallShardEnded, CallLeaseLost},
		ShuttingDown: {CallFinalCheckpoint, CallLeaseLost},
	}
	next := map[Call]State{
		CallInitialize: Initialized, CallDeliver: Processing, CallRedeliver: Processing, CallShardEnded: Ended,
		CallShutdownRequested: ShuttingDown, CallFinalCheckpoint: Stopped, CallLeaseLost: Lost,
	}
	refusedWith := func(s State) error {
		switch s {
		case Lost:
			return kcl.ErrLeaseLost
		case Ended, Stopped:
			return ErrStopped
		}
		return ErrInvalidCall
	}
	do := func(ctx context.Context, m *Machine, c Call) error {
		switch c {
		case CallInitialize:
			return m.Initialize(ctx)
		case CallDeliver:
			return m.Deliver(ctx, Batch{Records: []kcl.Record{rec(7)}})
		case CallRedeliver:
			return m.Redeliver(ctx)
		case CallShardEnded:
			return m.ShardEnded(ctx, []string{"shard-2"})
		case CallShutdownRequested:
			return m.ShutdownRequested(ctx)
		case CallFinalCheckpoint:
			_, err := m.FinalCheckpoint(ctx)
			return err
		case CallLeaseLost:
			return m.LeaseLost(ctx)
		}
		panic(c)
	}
	for _, s := range allStates {
		for c := CallInitialize; c <= CallLeaseLost; c++ {
			t.Run(fmt.Sprintf("%s/%s", s, c), func(t *testing.T) {
				m, p, _ := reach(t, s)
				before := len(p.callList())
				checkErr := m.Check(c)
				err := do(t.Context(), m, c)
				if slices.Contains(allowed[s], c) {
					if err != nil || checkErr != nil {
						t.Fatalf("allowed call failed: %v (Check: %v)", err, checkErr)
					}
					if got := m.State(); got != next[c] {
						t.Errorf("state %s after %s, want %s", got, c, next[c])
					}
					return
				}
				var ce *CallError
				if !errors.As(err, &ce) || ce.Call != c || ce.State != s || ce.Reason == "" {
					t.Fatalf("refused call: %v, want a *CallError for %s in %s", err, c, s)
				}
				if want := refusedWith(s); !errors.Is(err, want) {
					t.Errorf("refused with %v, want an error matching %v", err, want)
				}
				if checkErr == nil || checkErr.Error() != err.Error() {
					t.Errorf("Check said %v, the call %v", checkErr, err)
				}
				if got := m.State(); got != s {
					t.Errorf("state moved to %s", got)
				}
				if calls := p.callList(); len(calls) != before {
					t.Errorf("processor called: %q", calls[before:])
				}
			})
		}
	}
}

func TestStop(t *testing.T) {
	for _, s := range allStates {
		t.Run(s.String(), func(t *testing.T) {
			m, p, _ := reach(t, s)
			before := len(p.callList())
			m.Stop()
			want := Stopped
			if s.Final() {
				want = s
			}
			if got := m.State(); got != want {
				t.Errorf("state %s after Stop, want %s", got, want)
			}
			if len(p.callList()) != before {
				t.Error("Stop called the processor")
			}
		})
	}
}

// A panic in any processor call comes back as a *kcl.ProcessorPanicError,
// and the state is the one an error leaves.
func TestPanics(t *testing.T) {
	cases := []struct {
		from  State
		call  func(ctx context.Context, m *Machine) error
		after State
	}{
		{New, func(ctx context.Context, m *Machine) error { return m.Initialize(ctx) }, New},
		{Initialized, func(ctx context.Context, m *Machine) error {
			return m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1)}})
		}, Retrying},
		{Retrying, func(ctx context.Context, m *Machine) error { return m.Redeliver(ctx) }, Retrying},
		{Processing, func(ctx context.Context, m *Machine) error { return m.ShardEnded(ctx, nil) }, Ending},
		{Processing, func(ctx context.Context, m *Machine) error { return m.ShutdownRequested(ctx) }, ShuttingDown},
		{Processing, func(ctx context.Context, m *Machine) error { return m.LeaseLost(ctx) }, Lost},
	}
	for _, c := range cases {
		m, p, _ := reach(t, c.from)
		p.set(func(p *fakeProc) { p.panicWith = "boom" })
		err := c.call(t.Context(), m)
		var pe *kcl.ProcessorPanicError
		if !errors.As(err, &pe) || pe.Value != "boom" || len(pe.Stack) == 0 {
			t.Errorf("from %s: %v, want a ProcessorPanicError with a stack", c.from, err)
		}
		if got := m.State(); got != c.after {
			t.Errorf("from %s: state %s after the panic, want %s", c.from, got, c.after)
		}
	}
}

func TestDeliverAttempts(t *testing.T) {
	ctx := t.Context()
	m, p, st := reach(t, Initialized)
	p.set(func(p *fakeProc) { p.fail = errFail })
	if err := m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1), rec(2)}}); !errors.Is(err, errFail) {
		t.Fatal(err)
	}
	if err := m.Redeliver(ctx); !errors.Is(err, errFail) {
		t.Fatal(err)
	}
	p.set(func(p *fakeProc) { p.fail = nil })
	if err := m.Redeliver(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Deliver(ctx, Batch{Records: []kcl.Record{rec(3)}}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.attempts, []int{1, 2, 3, 1}) {
		t.Errorf("attempts %v, want [1 2 3 1]", p.attempts)
	}
	if w := st.list(); len(w) != 2 || w[0].Checkpoint != rec(2).Position() || w[1].Checkpoint != rec(3).Position() {
		t.Errorf("writes %+v", w)
	}
}

func TestInitialize(t *testing.T) {
	ctx := t.Context()
	p := &fakeProc{fail: errFail}
	start, pending := rec(4).Position(), rec(6).Position()
	m := NewMachine(Config{ShardID: "shard-1", Processor: p, Writer: &store{},
		Checkpoint: start, PendingCheckpoint: pending, PendingState: []byte("txn")})
	if err := m.Initialize(ctx); !errors.Is(err, errFail) || m.State() != New {
		t.Fatalf("failing Initialize: %v, state %s", err, m.State())
	}
	p.set(func(p *fakeProc) { p.fail = nil })
	if err := m.Initialize(ctx); err != nil || m.State() != Initialized {
		t.Fatalf("Initialize again: %v, state %s", err, m.State())
	}
	if in := p.init; in.ShardID != "shard-1" || in.Checkpoint != start || in.PendingCheckpoint != pending || string(in.PendingState) != "txn" {
		t.Errorf("InitializeInput %+v", in)
	}
	if m.Checkpointer().Last() != start {
		t.Errorf("checkpointer starts at %v, want %v", m.Checkpointer().Last(), start)
	}
	// A processor without Initialize is initialized at once.
	plain, _ := newMachine(kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error { return nil }))
	if err := plain.Initialize(ctx); err != nil || plain.State() != Initialized {
		t.Errorf("plain processor: %v, state %s", err, plain.State())
	}
}

func TestShardEnd(t *testing.T) {
	ctx := t.Context()
	t.Run("handler forgets, then checkpoints", func(t *testing.T) {
		m, p, st := reach(t, Ending) // ShardEnded already returned without SHARD_END once
		if len(st.list()) != 0 {
			t.Fatalf("writes %+v before SHARD_END", st.list())
		}
		if err := m.ShardEnded(ctx, nil); err != nil || m.State() != Ended {
			t.Fatalf("ShardEnded again: %v, state %s", err, m.State())
		}
		if w := st.list(); len(w) != 1 || !w[0].Checkpoint.IsShardEnd() {
			t.Errorf("writes %+v, want SHARD_END", w)
		}
		if n := len(p.callList()); n != 3 { // Initialize, ShardEnded twice
			t.Errorf("calls %q", p.callList())
		}
	})
	t.Run("no handler: the machine stores SHARD_END", func(t *testing.T) {
		m, st := newMachine(kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error { return nil }))
		if err := m.Initialize(ctx); err != nil {
			t.Fatal(err)
		}
		st.setFail(kcl.ErrThrottled)
		if err := m.ShardEnded(ctx, nil); !errors.Is(err, kcl.ErrThrottled) || m.State() != Ending {
			t.Fatalf("ShardEnded with a failing store: %v, state %s", err, m.State())
		}
		st.setFail(nil)
		if err := m.ShardEnded(ctx, nil); err != nil || m.State() != Ended {
			t.Fatalf("ShardEnded: %v, state %s", err, m.State())
		}
		if w := st.list(); len(w) != 1 || !w[0].Checkpoint.IsShardEnd() {
			t.Errorf("writes %+v, want SHARD_END", w)
		}
	})
}

// The final checkpoint stores the end of the last batch that succeeded,
// only when the processor did not store it.
func TestFinalCheckpoint(t *testing.T) {
	ctx := t.Context()
	deliver := func(t *testing.T, m *Machine, fail bool, p *fakeProc, recs ...kcl.Record) {
		t.Helper()
		p.set(func(p *fakeProc) { p.noCP, p.fail = true, nil })
		if fail {
			p.set(func(p *fakeProc) { p.fail = errFail })
		}
		if err := m.Deliver(ctx, Batch{Records: recs}); (err != nil) != fail {
			t.Fatalf("Deliver: %v", err)
		}
		p.set(func(p *fakeProc) { p.fail = nil })
	}
	t.Run("stores the last successful batch", func(t *testing.T) {
		m, p, st := reach(t, Initialized)
		deliver(t, m, false, p, rec(1), rec(2))
		deliver(t, m, false, p, rec(3))
		if err := m.ShutdownRequested(ctx); err != nil {
			t.Fatal(err)
		}
		pos, err := m.FinalCheckpoint(ctx)
		if err != nil || pos != rec(3).Position() || m.State() != Stopped {
			t.Fatalf("FinalCheckpoint: %v %v, state %s", pos, err, m.State())
		}
		if w := st.list(); len(w) != 1 || w[0].Checkpoint != rec(3).Position() {
			t.Errorf("writes %+v", w)
		}
	})
	t.Run("not a failed batch", func(t *testing.T) {
		m, p, st := reach(t, Initialized)
		deliver(t, m, false, p, rec(1))
		p.set(func(p *fakeProc) { p.fail = errFail })
		if err := m.Deliver(ctx, Batch{Records: []kcl.Record{rec(2)}}); !errors.Is(err, errFail) {
			t.Fatal(err)
		}
		if err := m.ShutdownRequested(ctx); !errors.Is(err, errFail) {
			t.Fatalf("ShutdownRequested: %v, want the processor's error", err)
		}
		pos, err := m.FinalCheckpoint(ctx)
		if err != nil || pos != rec(1).Position() {
			t.Fatalf("FinalCheckpoint: %v %v, want %v", pos, err, rec(1).Position())
		}
		if w := st.list(); len(w) != 1 || w[0].Checkpoint != rec(1).Position() {
			t.Errorf("writes %+v", w)
		}
	})
	t.Run("processor already stored it", func(t *testing.T) {
		m, p, st := reach(t, Processing) // the fake checkpoints its batch
		_ = p
		if err := m.ShutdownRequested(ctx); err != nil {
			t.Fatal(err)
		}
		if pos, err := m.FinalCheckpoint(ctx); err != nil || !pos.IsZero() || m.State() != Stopped {
			t.Fatalf("FinalCheckpoint: %v %v, state %s", pos, err, m.State())
		}
		if n := len(st.list()); n != 1 {
			t.Errorf("%d writes, want only the processor's", n)
		}
	})
	t.Run("a failed write may be retried", func(t *testing.T) {
		m, p, st := reach(t, Initialized)
		deliver(t, m, false, p, rec(1))
		if err := m.ShutdownRequested(ctx); err != nil {
			t.Fatal(err)
		}
		st.setFail(kcl.ErrThrottled)
		if _, err := m.FinalCheckpoint(ctx); !errors.Is(err, kcl.ErrThrottled) || m.State() != ShuttingDown {
			t.Fatalf("FinalCheckpoint: %v, state %s", err, m.State())
		}
		st.setFail(nil)
		if pos, err := m.FinalCheckpoint(ctx); err != nil || pos != rec(1).Position() {
			t.Fatalf("FinalCheckpoint again: %v %v", pos, err)
		}
	})
}

// LeaseLost in ShuttingDown does not call the processor again.
func TestLeaseLostWhileShuttingDown(t *testing.T) {
	m, p, _ := reach(t, ShuttingDown)
	if err := m.LeaseLost(t.Context()); err != nil || m.State() != Lost {
		t.Fatalf("LeaseLost: %v, state %s", err, m.State())
	}
	if calls := p.callList(); slices.Contains(calls, "LeaseLost") {
		t.Errorf("calls %q: LeaseLost after ShutdownRequested", calls)
	}
}

// LeaseLost made during a batch waits for the batch to return.
func TestLeaseLostAfterBatchInFlight(t *testing.T) {
	ctx := t.Context()
	m, p, _ := reach(t, Initialized)
	block, inBatch := make(chan struct{}), make(chan struct{})
	p.set(func(p *fakeProc) { p.block, p.inBatch = block, inBatch })
	delivered := make(chan error, 1)
	go func() { delivered <- m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1)}}) }()
	<-inBatch
	lost := make(chan error, 1)
	calling := make(chan struct{})
	go func() {
		close(calling)
		lost <- m.LeaseLost(ctx)
	}()
	<-calling
	for range 1000 { // give an eager LeaseLost every chance to run now
		runtime.Gosched()
	}
	if m.State() != Initialized {
		t.Errorf("state %s while the batch runs", m.State())
	}
	close(block)
	if err := <-delivered; err != nil {
		t.Fatal(err)
	}
	if err := <-lost; err != nil {
		t.Fatal(err)
	}
	want := []string{"Initialize", "ProcessRecords", "ProcessRecords returns", "LeaseLost"}
	if calls := p.callList(); !slices.Equal(calls, want) {
		t.Errorf("calls %q, want %q", calls, want)
	}
}

func TestNames(t *testing.T) {
	for _, s := range allStates {
		if s.String() == "" || s.String()[0] == 'S' {
			t.Errorf("state %d has no name", s)
		}
	}
	for c := CallInitialize; c <= CallLeaseLost; c++ {
		if c.String() == "" || c.String()[:4] == "Call" {
			t.Errorf("call %d has no name", c)
		}
	}
	if State(99).String() != "State(99)" || Call(99).String() != "Call(99)" {
		t.Error("unknown values are not shown as numbers")
	}
}

// BenchmarkDeliver measures what the machine adds to one batch of 100
// records whose processor does nothing: the state check, the delivered
// position and the panic guard.
func BenchmarkDeliver(b *testing.B) {
	ctx := b.Context()
	m, _ := newMachine(kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error { return nil }))
	if err := m.Initialize(ctx); err != nil {
		b.Fatal(err)
	}
	recs := make([]kcl.Record, 100)
	for i := range recs {
		recs[i] = rec(i + 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Deliver(ctx, Batch{Records: recs}); err != nil {
			b.Fatal(err)
		}
	}
}

// ownCheckpoints is a processor that stores every checkpoint itself.
type ownCheckpoints struct{ *fakeProc }

func (ownCheckpoints) OwnCheckpoints() bool { return true }

func TestNoFinalCheckpointForProcessorsThatOwnTheirs(t *testing.T) {
	ctx := t.Context()
	p := &fakeProc{}
	p.set(func(p *fakeProc) { p.noCP = true })
	m, st := newMachine(ownCheckpoints{p})
	if err := m.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Deliver(ctx, Batch{Records: []kcl.Record{rec(1), rec(2)}}); err != nil {
		t.Fatal(err)
	}
	if err := m.ShutdownRequested(ctx); err != nil {
		t.Fatal(err)
	}
	pos, err := m.FinalCheckpoint(ctx)
	if err != nil || !pos.IsZero() || m.State() != Stopped {
		t.Fatalf("FinalCheckpoint: %v %v, state %s; want nothing stored", pos, err, m.State())
	}
	if w := st.list(); len(w) != 0 {
		t.Errorf("writes %+v, want none", w)
	}
}
