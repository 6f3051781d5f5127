package multilang

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardline/shardline/kcl"
)

// fakeCheckpointer records the checkpoints asked for and fails them with err.
type fakeCheckpointer struct {
	mu     sync.Mutex
	last   kcl.ExtendedSequenceNumber
	calls  []string
	err    error
	onCall func()
}

func (c *fakeCheckpointer) Checkpoint(ctx context.Context) error {
	return c.store("latest", kcl.ExtendedSequenceNumber{SequenceNumber: "LATEST-DELIVERED"})
}

func (c *fakeCheckpointer) CheckpointAt(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	return c.store(pos.String(), pos)
}

func (c *fakeCheckpointer) CheckpointRecord(ctx context.Context, r kcl.Record) error {
	return c.CheckpointAt(ctx, r.Position())
}

func (c *fakeCheckpointer) Prepare(context.Context, kcl.ExtendedSequenceNumber, []byte) (kcl.PreparedCheckpoint, error) {
	return nil, errors.New("not supported")
}

func (c *fakeCheckpointer) Last() kcl.ExtendedSequenceNumber {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (c *fakeCheckpointer) store(call string, pos kcl.ExtendedSequenceNumber) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
	if c.onCall != nil {
		c.onCall()
	}
	if c.err != nil {
		return c.err
	}
	c.last = pos
	return nil
}

func (c *fakeCheckpointer) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// harness runs processors whose child is this test binary in a fake mode.
type harness struct {
	t       *testing.T
	log     string
	logs    *bytes.Buffer
	factory *Factory
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func newHarness(t *testing.T, mode string, timeout time.Duration) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, log: filepath.Join(dir, "received.jsonl")}
	var logs syncBuffer
	f, err := NewFactory(Options{
		Command: []string{os.Args[0]},
		// GORACE: a -race child would otherwise linger 1s at exit.
		Env: append(os.Environ(), "GORACE=atexit_sleep_ms=0", "MULTILANG_FAKE_CHILD="+mode, "MULTILANG_FAKE_LOG="+h.log,
			"MULTILANG_FAKE_MARKER="+filepath.Join(dir, "marker")),
		Timeout:       timeout,
		ShutdownGrace: 30 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.factory = f
	t.Cleanup(f.Close)
	return h
}

func (h *harness) processor(shard string) *Processor {
	h.t.Helper()
	p, err := h.factory.New(shard)
	if err != nil {
		h.t.Fatal(err)
	}
	return p.(*Processor)
}

// started returns a processor of shard-1 whose child was initialized at
// TRIM_HORIZON.
func (h *harness) started() *Processor {
	h.t.Helper()
	p := h.processor("shard-1")
	if err := p.Initialize(context.Background(), kcl.InitializeInput{ShardID: "shard-1", Checkpoint: kcl.TrimHorizon}); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// received returns the messages the children received, in order.
func (h *harness) received() []map[string]any {
	h.t.Helper()
	b, err := os.ReadFile(h.log)
	if err != nil && !os.IsNotExist(err) {
		h.t.Fatal(err)
	}
	var out []map[string]any
	for line := range bytes.Lines(b) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			h.t.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func (h *harness) actions() []string {
	var acts []string
	for _, m := range h.received() {
		acts = append(acts, fmt.Sprint(m["action"]))
	}
	return acts
}

func batch(cp kcl.Checkpointer, seqs ...string) kcl.ProcessRecordsInput {
	in := kcl.ProcessRecordsInput{ShardID: "shard-1", MillisBehindLatest: 42, Checkpointer: cp}
	for i, s := range seqs {
		in.Records = append(in.Records, kcl.Record{
			Data: []byte("data-" + s), PartitionKey: fmt.Sprintf("pk-%d", i), SequenceNumber: s,
			ApproximateArrivalTimestamp: time.UnixMilli(1700000000123),
		})
	}
	return in
}

func TestProcessorSpeaksTheProtocol(t *testing.T) {
	h := newHarness(t, modeOK, 0)
	ctx := context.Background()
	cp := &fakeCheckpointer{}
	p := h.started()
	if err := p.ProcessRecords(ctx, batch(cp, "100", "200")); err != nil {
		t.Fatal(err)
	}
	if err := p.ShutdownRequested(ctx, kcl.ShutdownRequestedInput{ShardID: "shard-1", Checkpointer: cp}); err != nil {
		t.Fatal(err)
	}
	if p.child != nil {
		t.Error("the child still runs after shutdownRequested")
	}
	if got, want := strings.Join(cp.Calls(), ","), "200,latest"; got != want {
		t.Errorf("checkpoints %s, want %s", got, want)
	}
	msgs := h.received()
	if got, want := strings.Join(h.actions(), ","), "initialize,processRecords,checkpoint,shutdownRequested,checkpoint,leaseLost,checkpoint"; got != want {
		t.Fatalf("child received %s, want %s", got, want)
	}
	if init := msgs[0]; init["shardId"] != "shard-1" || init["sequenceNumber"] != "TRIM_HORIZON" || init["subSequenceNumber"] != 0.0 {
		t.Errorf("initialize = %v", init)
	}
	pr := msgs[1]
	if pr["millisBehindLatest"] != 42.0 {
		t.Errorf("millisBehindLatest = %v", pr["millisBehindLatest"])
	}
	recs := pr["records"].([]any)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	r0 := recs[0].(map[string]any)
	if r0["data"] != base64.StdEncoding.EncodeToString([]byte("data-100")) || r0["partitionKey"] != "pk-0" ||
		r0["sequenceNumber"] != "100" || r0["subSequenceNumber"] != 0.0 ||
		r0["approximateArrivalTimestamp"] != 1700000000123.0 || r0["action"] != "record" {
		t.Errorf("record = %v", r0)
	}
	reply := msgs[2]
	if reply["sequenceNumber"] != "200" || reply["error"] != nil {
		t.Errorf("checkpoint reply = %v", reply)
	}
	if _, ok := reply["error"]; !ok {
		t.Error("checkpoint reply has no error field (the Java daemon writes null)")
	}
}

func TestProcessorCheckpointErrorsKeepJavaNames(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("write: %w", kcl.ErrLeaseLost), "ShutdownException"},
		{kcl.ErrShutdown, "ShutdownException"},
		{fmt.Errorf("x: %w", kcl.ErrInvalidCheckpoint), "IllegalArgumentException"},
		{kcl.ErrThrottled, "ThrottlingException"},
		{kcl.ErrTableNotFound, "InvalidStateException"},
		{errors.New("connection reset"), "KinesisClientLibDependencyException"},
	} {
		if got := exceptionName(tc.err); got != tc.want {
			t.Errorf("exceptionName(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}

	// End to end: the failed checkpoint's name reaches the child, and the
	// batch still succeeds (the child decides what to do).
	h := newHarness(t, modeOK, 0)
	ctx := context.Background()
	cp := &fakeCheckpointer{err: fmt.Errorf("conditional write: %w", kcl.ErrLeaseLost)}
	p := h.started()
	if err := p.ProcessRecords(ctx, batch(cp, "100")); err != nil {
		t.Fatal(err)
	}
	// leaseLost: no checkpointer, as in the Java daemon.
	if err := p.LeaseLost(ctx, kcl.LeaseLostInput{ShardID: "shard-1"}); err != nil {
		t.Fatal(err)
	}
	var errs []any
	for _, m := range h.received() {
		if m["action"] == "checkpoint" {
			errs = append(errs, m["error"])
		}
	}
	if fmt.Sprint(errs) != "[ShutdownException InvalidStateException]" {
		t.Errorf("checkpoint replies carried %v", errs)
	}
	if n := len(cp.Calls()); n != 1 {
		t.Errorf("%d checkpoint calls, want 1 (none during leaseLost)", n)
	}
}

// TestProcessorGivesUpOnABrokenChild: whatever way the child fails, the
// call returns an error (so the worker retries the batch), nothing is
// checkpointed, the child is gone, and the error quotes its stderr.
func TestProcessorGivesUpOnABrokenChild(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		wantErr error
		stderr  string
	}{
		{modeDie, ErrChildExited, "boom: processor crashed"},
		{modeExitZero, ErrChildExited, ""},
		{modeHang, ErrChildTimeout, ""},
		{modeGarbage, ErrProtocol, ""},
		{modeWrongStatus, ErrProtocol, ""},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tc.mode, time.Second)
			ctx := context.Background()
			cp := &fakeCheckpointer{}
			p := h.started()
			err := p.ProcessRecords(ctx, batch(cp, "100"))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("ProcessRecords error %v, want %v", err, tc.wantErr)
			}
			if tc.stderr != "" && !strings.Contains(err.Error(), tc.stderr) {
				t.Errorf("error %q does not quote the child's stderr %q", err, tc.stderr)
			}
			if p.child != nil {
				t.Error("the broken child was kept")
			}
			if calls := cp.Calls(); len(calls) != 0 {
				t.Errorf("checkpoints %v although the child asked for none", calls)
			}
		})
	}
}

func TestProcessorRestartsAChildAtTheCheckpoint(t *testing.T) {
	h := newHarness(t, modeDieOnce, 0)
	ctx := context.Background()
	p := h.processor("shard-1")
	cp := &fakeCheckpointer{last: kcl.NewSequence("50")}
	if err := p.Initialize(ctx, kcl.InitializeInput{ShardID: "shard-1", Checkpoint: kcl.NewSequence("50")}); err != nil {
		t.Fatal(err)
	}
	if err := p.ProcessRecords(ctx, batch(cp, "100", "200")); !errors.Is(err, ErrChildExited) {
		t.Fatalf("first delivery: %v, want the child's death", err)
	}
	// The worker delivers the same batch again: a new child starts at the
	// stored checkpoint and gets it.
	if err := p.ProcessRecords(ctx, batch(cp, "100", "200")); err != nil {
		t.Fatalf("second delivery: %v", err)
	}
	got := strings.Join(h.actions(), ",")
	if want := "initialize,processRecords,initialize,processRecords,checkpoint"; got != want {
		t.Fatalf("child received %s, want %s", got, want)
	}
	if seq := h.received()[2]["sequenceNumber"]; seq != "50" {
		t.Errorf("restarted child initialized at %v, want 50", seq)
	}
	if calls := strings.Join(cp.Calls(), ","); calls != "200" {
		t.Errorf("checkpoints %s, want 200", calls)
	}
}

func TestProcessorInitializeFailure(t *testing.T) {
	h := newHarness(t, modeBadInit, 0)
	p := h.processor("shard-1")
	err := p.Initialize(context.Background(), kcl.InitializeInput{ShardID: "shard-1", Checkpoint: kcl.TrimHorizon})
	if !errors.Is(err, ErrChildExited) || !strings.Contains(err.Error(), "missing configuration") {
		t.Fatalf("Initialize error %v, want the child's exit with its stderr", err)
	}
}

func TestProcessorShardEnded(t *testing.T) {
	h := newHarness(t, modeOK, 0)
	ctx := context.Background()
	cp := &fakeCheckpointer{}
	p := h.started()
	if err := p.ShardEnded(ctx, kcl.ShardEndedInput{ShardID: "shard-1", Checkpointer: cp}); err != nil {
		t.Fatal(err)
	}
	if calls := strings.Join(cp.Calls(), ","); calls != "latest" {
		t.Errorf("checkpoints %s, want latest (SHARD_END)", calls)
	}
	if p.child != nil {
		t.Error("the child still runs after shardEnded")
	}
}

// TestProcessorCancelledCallLetsTheChildFinish: when the worker stops
// waiting (the lease was lost), the child is not killed mid-batch; LeaseLost
// waits for its status (refusing its checkpoints) before sending leaseLost.
func TestProcessorCancelledCallLetsTheChildFinish(t *testing.T) {
	h := newHarness(t, modeOK, 0)
	p := h.started()
	ctx, cancel := context.WithCancel(context.Background())
	// The lease is lost while the child checkpoints.
	cp := &fakeCheckpointer{onCall: cancel, err: kcl.ErrLeaseLost}
	if err := p.ProcessRecords(ctx, batch(cp, "100")); !errors.Is(err, context.Canceled) {
		t.Fatalf("ProcessRecords: %v, want the cancellation", err)
	}
	if p.child == nil || p.child.ended() {
		t.Fatal("the child was killed in the middle of its batch")
	}
	if err := p.LeaseLost(context.Background(), kcl.LeaseLostInput{ShardID: "shard-1"}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(h.actions(), ","), "initialize,processRecords,checkpoint,leaseLost,checkpoint"; got != want {
		t.Fatalf("child received %s, want %s", got, want)
	}
	if p.child != nil {
		t.Error("the child still runs after leaseLost")
	}
}

func TestProcessorCancelledHangingChildIsKilledAtLeaseLost(t *testing.T) {
	h := newHarness(t, modeHang, 0)
	p := h.started()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ProcessRecords(ctx, batch(&fakeCheckpointer{}, "1")) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("ProcessRecords after cancel: %v", err)
	}
	c := p.child
	// LeaseLost's own context bounds the wait for the hanging child.
	lctx, lcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer lcancel()
	if err := p.LeaseLost(lctx, kcl.LeaseLostInput{ShardID: "shard-1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LeaseLost: %v, want its deadline", err)
	}
	if p.child != nil || !c.ended() {
		t.Error("the hanging child still runs")
	}
}

func TestFactoryCloseKillsChildren(t *testing.T) {
	h := newHarness(t, modeOK, 0)
	p := h.started()
	c := p.child
	// A new processor of the same shard (after a hard stop) replaces it.
	p2 := h.started()
	if !c.ended() {
		t.Fatal("the replaced processor's child still runs")
	}
	c2 := p2.child
	h.factory.Close()
	if !c2.ended() {
		t.Fatal("Close left a child running")
	}
	if _, err := h.factory.New("shard-2"); !errors.Is(err, kcl.ErrShutdown) {
		t.Errorf("New after Close: %v", err)
	}
}
