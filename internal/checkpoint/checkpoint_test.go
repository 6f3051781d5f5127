package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/kcl"
)

const shardID = "shardId-000000000007"

// fakeWriter records the states written to it and fails with err when set.
type fakeWriter struct {
	mu    sync.Mutex
	calls []checkpoint.State // every call, failed or not
	err   error
}

func (w *fakeWriter) WriteCheckpoint(_ context.Context, s checkpoint.State) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, s) // PendingState kept as passed: tests check it is a copy
	return w.err
}

func (w *fakeWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
}

func (w *fakeWriter) written() []checkpoint.State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.calls)
}

func seq(s string) kcl.ExtendedSequenceNumber { return kcl.NewSequence(s) }

func sub(s string, n int64) kcl.ExtendedSequenceNumber {
	return kcl.ExtendedSequenceNumber{SequenceNumber: s, SubSequenceNumber: n}
}

// wantShardError checks that err names the test shard and an operation,
// and matches target.
func wantShardError(t *testing.T, err, target error) {
	t.Helper()
	if err == nil || !strings.HasPrefix(err.Error(), "shardline: shard "+shardID+": ") ||
		strings.HasPrefix(err.Error(), "shardline: shard "+shardID+": :") {
		t.Fatalf("error %v does not name shard %s and an operation", err, shardID)
	}
	if !errors.Is(err, target) {
		t.Errorf("error %v does not match %v", err, target)
	}
}

func TestCheckpointAtRule(t *testing.T) {
	tests := []struct {
		name      string
		last      kcl.ExtendedSequenceNumber
		delivered []kcl.ExtendedSequenceNumber // SetDelivered calls in order
		pos       kcl.ExtendedSequenceNumber
		ok        bool
	}{
		{name: "between last and delivered", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: seq("50"), ok: true},
		{name: "at delivered", last: seq("10"), delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: seq("100"), ok: true},
		{name: "after delivered", last: seq("10"), delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: seq("101")},
		{name: "nothing delivered", last: kcl.TrimHorizon, pos: seq("1")},
		{name: "before last", last: seq("200"), delivered: []kcl.ExtendedSequenceNumber{seq("300")}, pos: seq("150")},
		{name: "numeric, not string, order", last: seq("99"), delivered: []kcl.ExtendedSequenceNumber{seq("1000")}, pos: seq("999"), ok: true},
		{name: "numeric order beyond 64 bits", last: seq("49590338271490256608559692538361571095921575989136588898"),
			delivered: []kcl.ExtendedSequenceNumber{seq("49590338271490256608559692540925702759324208523137515618")},
			pos:       seq("49590338271490256608559692540925702759324208523137515617"), ok: true},
		{name: "delivered only grows", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{seq("100"), seq("50")}, pos: seq("80"), ok: true},
		{name: "TRIM_HORIZON refused", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: kcl.TrimHorizon},
		{name: "LATEST refused", last: kcl.Latest, delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: kcl.Latest},
		{name: "AT_TIMESTAMP refused", last: kcl.AtTimestamp, delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: kcl.AtTimestamp},
		{name: "SHARD_END before the end refused", last: seq("10"), delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: kcl.ShardEnd},
		{name: "SHARD_END at the end", last: seq("10"), delivered: []kcl.ExtendedSequenceNumber{seq("100"), kcl.ShardEnd}, pos: kcl.ShardEnd, ok: true},
		{name: "record at the end", last: seq("10"), delivered: []kcl.ExtendedSequenceNumber{seq("100"), kcl.ShardEnd}, pos: seq("100"), ok: true},
		{name: "after SHARD_END refused", last: kcl.ShardEnd, delivered: []kcl.ExtendedSequenceNumber{kcl.ShardEnd}, pos: seq("100")},
		{name: "malformed", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{seq("100")}, pos: seq("12a")},
		{name: "zero position", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{seq("100")}},
		{name: "negative sub-sequence", last: kcl.TrimHorizon, delivered: []kcl.ExtendedSequenceNumber{sub("100", 3)}, pos: sub("100", -1)},
		{name: "sub-sequence after last", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: sub("100", 3), ok: true},
		{name: "sub-sequence at delivered", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: sub("100", 5), ok: true},
		{name: "sub-sequence before last", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: sub("100", 1)},
		{name: "plain sequence before its sub-records", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: seq("100")},
		{name: "sub-sequence after delivered", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: sub("100", 6)},
		{name: "next sequence after delivered sub-records", last: sub("100", 2), delivered: []kcl.ExtendedSequenceNumber{sub("100", 5)}, pos: seq("101")},
		{name: "later sub-record of a later sequence", last: sub("100", 9), delivered: []kcl.ExtendedSequenceNumber{sub("101", 5)}, pos: sub("101", 0), ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeWriter{}
			c := checkpoint.New(shardID, w, tt.last)
			for _, d := range tt.delivered {
				c.SetDelivered(d)
			}
			err := c.CheckpointAt(t.Context(), tt.pos)
			if !tt.ok {
				if err == nil {
					t.Fatalf("CheckpointAt(%v) succeeded, want kcl.ErrInvalidCheckpoint", tt.pos)
				}
				wantShardError(t, err, kcl.ErrInvalidCheckpoint)
				if got := w.written(); len(got) != 0 {
					t.Errorf("refused checkpoint wrote %v", got)
				}
				if got := c.Last(); got != tt.last {
					t.Errorf("Last() = %v after a refused checkpoint, want %v", got, tt.last)
				}
				return
			}
			if err != nil {
				t.Fatalf("CheckpointAt(%v) = %v", tt.pos, err)
			}
			want := []checkpoint.State{{Checkpoint: tt.pos}}
			if got := w.written(); !reflect.DeepEqual(got, want) {
				t.Errorf("writes = %+v, want %+v", got, want)
			}
			if got := c.Last(); got != tt.pos {
				t.Errorf("Last() = %v, want %v", got, tt.pos)
			}
		})
	}
}

func TestCheckpointNothingDelivered(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, kcl.TrimHorizon)
	if err := c.Checkpoint(t.Context()); err != nil {
		t.Fatalf("Checkpoint with nothing delivered = %v, want nil", err)
	}
	if got := w.written(); len(got) != 0 {
		t.Errorf("Checkpoint with nothing delivered wrote %v", got)
	}
	if got := c.Last(); got != kcl.TrimHorizon {
		t.Errorf("Last() = %v, want TRIM_HORIZON", got)
	}
	if got := c.Delivered(); !got.IsZero() {
		t.Errorf("Delivered() = %v, want zero", got)
	}
}

func TestCheckpointDelivered(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, kcl.TrimHorizon)
	ctx := t.Context()

	c.SetDelivered(sub("100", 4))
	if err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// The same position again writes nothing, by either method.
	if err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckpointAt(ctx, sub("100", 4)); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckpointRecord(ctx, kcl.Record{SequenceNumber: "100", SubSequenceNumber: 4}); err != nil {
		t.Fatal(err)
	}
	c.SetDelivered(seq("150"))
	c.SetDelivered(seq("120")) // older: ignored
	if got := c.Delivered(); got != seq("150") {
		t.Errorf("Delivered() = %v, want 150", got)
	}
	if err := c.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	want := []checkpoint.State{{Checkpoint: sub("100", 4)}, {Checkpoint: seq("150")}}
	if got := w.written(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %+v, want %+v", got, want)
	}
	if got := c.Last(); got != seq("150") {
		t.Errorf("Last() = %v, want 150", got)
	}
}

func TestCheckpointRecord(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, kcl.TrimHorizon)
	recs := []kcl.Record{
		{SequenceNumber: "500", SubSequenceNumber: 0, Aggregated: true},
		{SequenceNumber: "500", SubSequenceNumber: 1, Aggregated: true},
		{SequenceNumber: "500", SubSequenceNumber: 2, Aggregated: true},
	}
	c.SetDelivered(recs[2].Position())
	if err := c.CheckpointRecord(t.Context(), recs[1]); err != nil {
		t.Fatal(err)
	}
	if got := c.Last(); got != sub("500", 1) {
		t.Errorf("Last() = %v, want 500/1", got)
	}
	err := c.CheckpointRecord(t.Context(), recs[0])
	wantShardError(t, err, kcl.ErrInvalidCheckpoint)
	if got := len(w.written()); got != 1 {
		t.Errorf("%d writes, want 1", got)
	}
}

func TestCheckpointShardEnd(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, kcl.TrimHorizon)
	c.SetDelivered(seq("300"))
	c.SetDelivered(kcl.ShardEnd)
	c.SetDelivered(seq("301")) // nothing comes after the end
	if got := c.Delivered(); got != kcl.ShardEnd {
		t.Fatalf("Delivered() = %v, want SHARD_END", got)
	}
	if err := c.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := c.Last(); got != kcl.ShardEnd {
		t.Errorf("Last() = %v, want SHARD_END", got)
	}
	err := c.CheckpointAt(t.Context(), seq("300"))
	wantShardError(t, err, kcl.ErrInvalidCheckpoint)
	if err := c.Checkpoint(t.Context()); err != nil {
		t.Errorf("repeated SHARD_END checkpoint = %v", err)
	}
	want := []checkpoint.State{{Checkpoint: kcl.ShardEnd}}
	if got := w.written(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %+v, want %+v", got, want)
	}
}

func TestPrepareCommit(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, seq("100"))
	c.SetDelivered(seq("200"))
	state := []byte("app-state")
	p, err := c.Prepare(t.Context(), seq("150"), state)
	if err != nil {
		t.Fatal(err)
	}
	state[0] = 'X' // the caller's slice is its own again
	if got := p.Position(); got != seq("150") {
		t.Errorf("Position() = %v, want 150", got)
	}
	if got := c.Last(); got != seq("100") {
		t.Errorf("Last() after Prepare = %v, want 100 (unchanged)", got)
	}
	if err := p.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []checkpoint.State{
		{Checkpoint: seq("100"), Pending: seq("150"), PendingState: []byte("app-state")},
		{Checkpoint: seq("150")},
	}
	if got := w.written(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %+v, want %+v", got, want)
	}
	if got := c.Last(); got != seq("150") {
		t.Errorf("Last() after Commit = %v, want 150", got)
	}
}

func TestPrepareRefused(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, seq("100"))
	c.SetDelivered(seq("200"))
	for _, pos := range []kcl.ExtendedSequenceNumber{seq("99"), seq("201"), kcl.TrimHorizon, kcl.ShardEnd, {}} {
		p, err := c.Prepare(t.Context(), pos, []byte("s"))
		if p != nil {
			t.Errorf("Prepare(%v) returned a prepared checkpoint", pos)
		}
		wantShardError(t, err, kcl.ErrInvalidCheckpoint)
	}
	if got := w.written(); len(got) != 0 {
		t.Errorf("refused Prepare wrote %v", got)
	}
}

// TestCheckpointClearsPending checks that a plain checkpoint at the stored
// position still writes when a prepared checkpoint is pending, to clear it.
func TestCheckpointClearsPending(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, seq("100"))
	c.SetDelivered(seq("200"))
	if _, err := c.Prepare(t.Context(), seq("180"), []byte("s")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckpointAt(t.Context(), seq("100")); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckpointAt(t.Context(), seq("100")); err != nil {
		t.Fatal(err)
	}
	want := []checkpoint.State{
		{Checkpoint: seq("100"), Pending: seq("180"), PendingState: []byte("s")},
		{Checkpoint: seq("100")},
	}
	if got := w.written(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %+v, want %+v", got, want)
	}
}

func TestCommitAfterLaterCheckpoint(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, seq("100"))
	c.SetDelivered(seq("200"))
	p, err := c.Prepare(t.Context(), seq("150"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckpointAt(t.Context(), seq("190")); err != nil {
		t.Fatal(err)
	}
	err = p.Commit(t.Context())
	wantShardError(t, err, kcl.ErrInvalidCheckpoint)
	if got := c.Last(); got != seq("190") {
		t.Errorf("Last() = %v, want 190", got)
	}
	if got := len(w.written()); got != 2 {
		t.Errorf("%d writes, want 2 (prepare, checkpoint)", got)
	}
}

// TestWriterErrors checks that a failed write is returned as a
// *kcl.ShardError wrapping the writer's error, leaves Last where it was,
// and can be retried.
func TestWriterErrors(t *testing.T) {
	lost := fmt.Errorf("conditional write refused: %w", kcl.ErrLeaseLost)
	throttled := fmt.Errorf("slow down: %w", kcl.ErrThrottled)
	ops := []struct {
		name string
		do   func(context.Context, *checkpoint.Checkpointer) error
		want kcl.ExtendedSequenceNumber // Last after success
	}{
		{"Checkpoint", func(ctx context.Context, c *checkpoint.Checkpointer) error { return c.Checkpoint(ctx) }, seq("200")},
		{"CheckpointAt", func(ctx context.Context, c *checkpoint.Checkpointer) error { return c.CheckpointAt(ctx, seq("150")) }, seq("150")},
		{"CheckpointRecord", func(ctx context.Context, c *checkpoint.Checkpointer) error {
			return c.CheckpointRecord(ctx, kcl.Record{SequenceNumber: "170"})
		}, seq("170")},
		{"Prepare", func(ctx context.Context, c *checkpoint.Checkpointer) error {
			p, err := c.Prepare(ctx, seq("160"), []byte("s"))
			if err == nil && p == nil {
				return errors.New("nil prepared checkpoint without an error")
			}
			if err != nil && p != nil {
				return errors.New("prepared checkpoint returned with an error")
			}
			return err
		}, seq("100")},
	}
	for _, op := range ops {
		for _, cause := range []error{lost, throttled} {
			t.Run(op.name+"/"+cause.Error(), func(t *testing.T) {
				w := &fakeWriter{}
				c := checkpoint.New(shardID, w, seq("100"))
				c.SetDelivered(seq("200"))
				w.fail(cause)
				err := op.do(t.Context(), c)
				wantShardError(t, err, cause)
				if errors.Is(err, kcl.ErrInvalidCheckpoint) {
					t.Errorf("writer failure %v reported as an invalid checkpoint", err)
				}
				if got := c.Last(); got != seq("100") {
					t.Errorf("Last() = %v after a failed write, want 100", got)
				}
				w.fail(nil)
				if err := op.do(t.Context(), c); err != nil {
					t.Fatalf("retry: %v", err)
				}
				if got := c.Last(); got != op.want {
					t.Errorf("Last() after the retry = %v, want %v", got, op.want)
				}
				if got := len(w.written()); got != 2 {
					t.Errorf("%d writes, want 2 (failed, retried)", got)
				}
			})
		}
	}
}

func TestCommitWriterError(t *testing.T) {
	w := &fakeWriter{}
	c := checkpoint.New(shardID, w, seq("100"))
	c.SetDelivered(seq("200"))
	p, err := c.Prepare(t.Context(), seq("150"), []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	w.fail(fmt.Errorf("refused: %w", kcl.ErrLeaseLost))
	err = p.Commit(t.Context())
	wantShardError(t, err, kcl.ErrLeaseLost)
	if got := c.Last(); got != seq("100") {
		t.Errorf("Last() after a failed Commit = %v, want 100", got)
	}
	w.fail(nil)
	if err := p.Commit(t.Context()); err != nil {
		t.Fatalf("Commit retry: %v", err)
	}
	if got := c.Last(); got != seq("150") {
		t.Errorf("Last() after Commit = %v, want 150", got)
	}
}

// TestCheckpointConcurrent calls the checkpointer from several goroutines:
// writes must not overlap and the checkpoint must only move forward.
func TestCheckpointConcurrent(t *testing.T) {
	var mu sync.Mutex
	var inFlight atomic.Int32
	var prev kcl.ExtendedSequenceNumber
	w := checkpoint.WriterFunc(func(_ context.Context, s checkpoint.State) error {
		if n := inFlight.Add(1); n != 1 {
			t.Errorf("%d overlapping writes", n)
		}
		defer inFlight.Add(-1)
		mu.Lock()
		defer mu.Unlock()
		if !prev.IsZero() && s.Checkpoint.Compare(prev) < 0 {
			t.Errorf("checkpoint went back from %v to %v", prev, s.Checkpoint)
		}
		prev = s.Checkpoint
		return nil
	})
	c := checkpoint.New(shardID, w, kcl.TrimHorizon)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= 500; i++ {
			c.SetDelivered(seq(fmt.Sprint(i)))
		}
	})
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if err := c.Checkpoint(t.Context()); err != nil {
					t.Errorf("Checkpoint: %v", err)
				}
				_ = c.Last()
			}
		})
	}
	wg.Wait()
	if err := c.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := c.Last(); got != seq("500") {
		t.Errorf("Last() = %v, want 500", got)
	}
}
