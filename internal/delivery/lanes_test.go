package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// laneRig is a shard whose processor sleeps per record and records, per
// key, the order and the concurrency it saw.
type laneRig struct {
	m        *shardproc.Machine
	perRec   time.Duration
	mu       sync.Mutex
	byKey    map[string][]string
	inFlight map[string]bool
	overlap  []string // keys seen in two calls at once
	running  int
	maxRun   int
	stored   []kcl.ExtendedSequenceNumber
	block    map[string]chan struct{} // a call holding this key's record waits on it
	fail     func(r kcl.Record) bool
	dead     []kcl.DeadLetter
}

func newLaneRig(t *testing.T, perRec time.Duration) *laneRig {
	r := &laneRig{perRec: perRec, byKey: map[string][]string{}, inFlight: map[string]bool{}, block: map[string]chan struct{}{}}
	proc := kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		r.mu.Lock()
		r.running++
		r.maxRun = max(r.maxRun, r.running)
		keys := map[string]bool{}
		var wait []chan struct{}
		for _, rec := range in.Records {
			if r.inFlight[rec.PartitionKey] && !keys[rec.PartitionKey] {
				r.overlap = append(r.overlap, rec.PartitionKey)
			}
			keys[rec.PartitionKey] = true
			if c := r.block[rec.SequenceNumber]; c != nil {
				wait = append(wait, c)
			}
		}
		for k := range keys {
			r.inFlight[k] = true
		}
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.running--
			for k := range keys {
				delete(r.inFlight, k)
			}
			r.mu.Unlock()
		}()
		for _, c := range wait {
			<-c
		}
		for i, rec := range in.Records {
			if r.fail != nil && r.fail(rec) {
				return &kcl.PartialFailureError{Position: rec.Position(), Err: errors.New("poison")}
			}
			time.Sleep(r.perRec)
			r.mu.Lock()
			r.byKey[rec.PartitionKey] = append(r.byKey[rec.PartitionKey], rec.SequenceNumber)
			r.mu.Unlock()
			_ = i
		}
		return in.Checkpointer.Checkpoint(ctx)
	})
	r.m = recordingMachine(t, proc, &r.mu, &r.stored)
	return r
}

func (r *laneRig) HandleDeadLetter(_ context.Context, d kcl.DeadLetter) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead = append(r.dead, d)
	return nil
}

func (r *laneRig) last() kcl.ExtendedSequenceNumber {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.stored) == 0 {
		return kcl.ExtendedSequenceNumber{}
	}
	return r.stored[len(r.stored)-1]
}

// keyed returns n records over keys keys, round robin.
func keyed(from, n, keys int) []kcl.Record {
	out := make([]kcl.Record, n)
	for i := range out {
		out[i] = kcl.Record{SequenceNumber: fmt.Sprintf("%056d", from+i), PartitionKey: fmt.Sprintf("key-%d", (from+i)%keys)}
	}
	return out
}

// runLanes dispatches batches of 100 records and drains; it returns the
// virtual time taken.
func runLanes(t *testing.T, r *laneRig, n int, recs []kcl.Record, p Policy) time.Duration {
	t.Helper()
	d := New(p, Env{ShardID: "shard-0", Machine: r.m})
	l := NewLanes(t.Context(), d, n, 1000, nil)
	defer l.Close()
	began := time.Now()
	for i := 0; i < len(recs); i += 100 {
		if err := l.Dispatch(t.Context(), shardproc.Batch{Records: recs[i:min(i+100, len(recs))]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	return time.Since(began)
}

func TestLanesKeepKeyOrderAndRunInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		recs := keyed(1, 1000, 100)
		single := runLanes(t, newLaneRig(t, 10*time.Millisecond), 1, recs, Policy{})
		r := newLaneRig(t, 10*time.Millisecond)
		took := runLanes(t, r, 10, recs, Policy{})
		if len(r.overlap) > 0 {
			t.Errorf("keys processed by two calls at once: %v", r.overlap)
		}
		for k, got := range r.byKey {
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("key %s out of order: %v", k, got)
				}
			}
		}
		if n := len(r.byKey); n != 100 {
			t.Errorf("%d keys processed, want 100", n)
		}
		if r.maxRun < 2 || r.maxRun > 10 {
			t.Errorf("at most %d calls at once, want 2..10", r.maxRun)
		}
		// Virtual time: the speed-up is the scheduling's alone, but which
		// lane takes which key depends on goroutine order, so the bound is
		// wide (the figure is BenchmarkParallelism's); it catches lanes
		// that do not run in parallel at all.
		t.Logf("1000 records of 10ms over 100 keys: 1 lane %v, 10 lanes %v", single, took)
		if float64(single)/float64(took) < 5 {
			t.Errorf("10 lanes took %v, single lane %v: less than a 5x speed-up", took, single)
		}
		if got, want := r.last(), recs[len(recs)-1].Position(); got != want {
			t.Errorf("last checkpoint %v, want the last record %v", got, want)
		}
	})
}

func TestLanesCheckpointOnlyToTheLowWaterMark(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLaneRig(t, time.Millisecond)
		recs := keyed(1, 40, 8)
		release := make(chan struct{})
		r.block[recs[0].SequenceNumber] = release // the first record's lane stalls
		d := New(Policy{}, Env{ShardID: "shard-0", Machine: r.m})
		l := NewLanes(t.Context(), d, 4, 1000, nil)
		defer l.Close()
		if err := l.Dispatch(t.Context(), shardproc.Batch{Records: recs}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // every other lane finished and asked to checkpoint its batch
		if got := r.last(); !got.IsZero() {
			t.Errorf("checkpoint %v stored while the first record is still in flight", got)
		}
		if _, err := (&laneCheckpointer{l: l}).Prepare(t.Context(), recs[5].Position(), nil); !errors.Is(err, kcl.ErrInvalidCheckpoint) {
			t.Errorf("Prepare beyond the low-water mark: %v, want ErrInvalidCheckpoint", err)
		}
		close(release)
		if err := l.Drain(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, want := r.last(), recs[len(recs)-1].Position(); got != want {
			t.Errorf("checkpoint %v after the drain, want the last record %v", got, want)
		}
		_ = r.m.ShutdownRequested(t.Context())
		if pos, err := r.m.FinalCheckpoint(t.Context()); err != nil || !pos.IsZero() {
			t.Errorf("final checkpoint %v, %v; want nothing left to store", pos, err)
		}
	})
}

func TestLanesDeadLetterAPoisonRecordWhileOtherLanesGoOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLaneRig(t, time.Millisecond)
		recs := keyed(1, 200, 20)
		poison := recs[57]
		r.fail = func(rec kcl.Record) bool { return rec.SequenceNumber == poison.SequenceNumber }
		runLanes(t, r, 8, recs, Policy{MaxAttempts: 3, DeadLetters: r, Filter: func(rec kcl.Record) bool { return rec.PartitionKey != "key-0" }})
		// The last record (key-0) was filtered out: the processor's own
		// checkpoint stops before it, the final one covers it.
		if got, want := r.last(), recs[len(recs)-2].Position(); got != want {
			t.Errorf("checkpoint %v, want the last record processed %v", got, want)
		}
		_ = r.m.ShutdownRequested(t.Context())
		if pos, err := r.m.FinalCheckpoint(t.Context()); err != nil || pos != recs[len(recs)-1].Position() {
			t.Errorf("final checkpoint %v, %v; want the filtered last record %v", pos, err, recs[len(recs)-1].Position())
		}
		if len(r.dead) != 1 || r.dead[0].Record.SequenceNumber != poison.SequenceNumber || r.dead[0].Attempts != 3 {
			t.Errorf("dead letters %+v, want the poison record after 3 attempts", r.dead)
		}
		if _, ok := r.byKey["key-0"]; ok {
			t.Error("filtered key delivered")
		}
		if got := len(r.byKey[poison.PartitionKey]); got != 9 {
			t.Errorf("the poison key processed %d records, want its 9 others", got)
		}
	})
}
