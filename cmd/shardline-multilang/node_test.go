package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/multilang"
	"github.com/shardline/shardline/kcl"
)

// TestNodeProcessorCrashIsRetried: an aws-kcl processor that throws dies
// with its stack trace on stderr; the batch fails with that trace, and the
// same batch delivered again goes to a new child, which checkpoints it.
func TestNodeProcessorCrashIsRetried(t *testing.T) {
	appDir := requireNodeKCL(t)
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	f, err := multilang.NewFactory(multilang.Options{
		Command: []string{"node", "processor.js"},
		Dir:     appDir,
		Env: append(os.Environ(), "SHARDLINE_EVENTS="+events, "SHARDLINE_WORKER_ID=w",
			"SHARDLINE_CRASH_ONCE="+filepath.Join(dir, "crashed")),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := f.New("shardId-000000000000")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cp := checkpoint.New("shardId-000000000000",
		checkpoint.WriterFunc(func(context.Context, checkpoint.State) error { return nil }), kcl.TrimHorizon)
	if err := p.(kcl.Initializer).Initialize(ctx, kcl.InitializeInput{ShardID: "shardId-000000000000", Checkpoint: kcl.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	in := kcl.ProcessRecordsInput{ShardID: "shardId-000000000000", Checkpointer: cp, Records: []kcl.Record{
		{Data: []byte("a"), PartitionKey: "pk", SequenceNumber: "100"},
		{Data: []byte("b"), PartitionKey: "pk", SequenceNumber: "200"},
	}}
	cp.SetDelivered(in.Records[1].Position())

	err = p.ProcessRecords(ctx, in)
	if !errors.Is(err, multilang.ErrChildExited) || !strings.Contains(err.Error(), "simulated crash in processRecords") {
		t.Fatalf("first delivery: %v, want the child's exit with its stack trace", err)
	}
	if !cp.Last().IsSentinel() {
		t.Fatalf("checkpoint %s after a crash, want none", cp.Last())
	}
	if err := p.ProcessRecords(ctx, in); err != nil {
		t.Fatalf("second delivery: %v", err)
	}
	if got := cp.Last(); got != kcl.NewSequence("200") {
		t.Errorf("checkpoint %s, want 200", got)
	}
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"type":"initialize"`); n != 2 {
		t.Errorf("%d initialize events, want 2 (the crashed child and its replacement)\n%s", n, b)
	}
}
