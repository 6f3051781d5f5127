package faults_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// kinesisVia returns a Kinesis client for the emulator whose HTTP calls go
// through fc. The SDK retries as it does by default.
func kinesisVia(fc *faults.Client) *kinesis.Client {
	return kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(testenv.KinesisEndpoint())
		o.HTTPClient = fc
	})
}

// dynamoVia returns a DynamoDB client for the emulator whose HTTP calls go
// through fc. The SDK retries as it does by default.
func dynamoVia(fc *faults.Client) *dynamodb.Client {
	return dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(testenv.DynamoDBEndpoint())
		o.DisableValidateResponseChecksum = true
		o.HTTPClient = fc
	})
}

// sink collects what in-process processors saw, as the events the example
// consumer writes to its events file, so that fleet.Check can judge it.
type sink struct {
	mu      sync.Mutex
	evs     []fleet.Event
	changed chan struct{} // a token after every event
}

func newSink() *sink { return &sink{changed: make(chan struct{}, 1)} }

func (s *sink) add(e fleet.Event) {
	e.Time = time.Now()
	e.Incarnation = 1
	s.mu.Lock()
	s.evs = append(s.evs, e)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *sink) events() fleet.Events {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fleet.Events{Records: slices.Clone(s.evs)}
}

// factory makes processors for worker id; before, if set, runs at the start
// of every ProcessRecords call, and the function it returns, if any, at the
// end (after the checkpoint).
func (s *sink) factory(id string, before func(ctx context.Context, in kcl.ProcessRecordsInput) (after func())) kcl.ProcessorFactory {
	return func(shard string) (kcl.RecordProcessor, error) {
		return &proc{s: s, worker: id, shard: shard, before: before}, nil
	}
}

// proc records everything and checkpoints after every batch, like the
// example consumer.
type proc struct {
	s             *sink
	worker, shard string
	before        func(ctx context.Context, in kcl.ProcessRecordsInput) (after func())
}

func (p *proc) Initialize(ctx context.Context, in kcl.InitializeInput) error {
	p.s.add(fleet.Event{Type: fleet.EventInitialize, Worker: p.worker, Shard: p.shard, Checkpoint: in.Checkpoint.String()})
	return nil
}

func (p *proc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	if p.before != nil {
		if after := p.before(ctx, in); after != nil {
			defer after()
		}
	}
	for _, r := range in.Records {
		p.s.add(fleet.Event{Type: fleet.EventRecord, Worker: p.worker, Shard: p.shard, Seq: r.Position().String(),
			PK: r.PartitionKey, Data: string(r.Data), Attempt: in.Attempt})
	}
	if len(in.Records) > 0 {
		p.checkpoint(ctx, in.Checkpointer)
	}
	return nil
}

func (p *proc) checkpoint(ctx context.Context, c kcl.Checkpointer) {
	if err := c.Checkpoint(ctx); err == nil {
		p.s.add(fleet.Event{Type: fleet.EventCheckpoint, Worker: p.worker, Shard: p.shard, Position: c.Last().String()})
	}
}

func (p *proc) LeaseLost(ctx context.Context, in kcl.LeaseLostInput) error {
	p.s.add(fleet.Event{Type: fleet.EventLeaseLost, Worker: p.worker, Shard: p.shard})
	return nil
}

func (p *proc) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	p.s.add(fleet.Event{Type: fleet.EventShutdownRequested, Worker: p.worker, Shard: p.shard})
	p.checkpoint(ctx, in.Checkpointer)
	return nil
}

// hotLoop bounds the calls of one operation in one second: a loop retrying
// without a pause makes thousands against the local emulators, backing off
// makes tens, and the bound stays far from both.
const hotLoop = 500

// meter counts calls per operation in one-second buckets.
type meter struct {
	t0 time.Time
	mu sync.Mutex
	n  map[string]map[int]int
}

func newMeter() *meter { return &meter{t0: time.Now(), n: map[string]map[int]int{}} }

func (m *meter) count(op string, at time.Time) {
	sec := int(at.Sub(m.t0) / time.Second)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n[op] == nil {
		m.n[op] = map[int]int{}
	}
	m.n[op][sec]++
}

func (m *meter) observe(c faults.Call) { m.count(c.Op, c.Start) }

// peaks returns, per operation, the most calls seen in one second.
func (m *meter) peaks() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for op, secs := range m.n {
		for _, n := range secs {
			out[op] = max(out[op], n)
		}
	}
	return out
}

func formatPeaks(p map[string]int) string {
	ops := make([]string, 0, len(p))
	for op := range p {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, " %s=%d/s", op, p[op])
	}
	return b.String()
}

// runWorker runs w until the test ends or the returned stop function is
// called; stop shuts it down gracefully and returns Run's error.
func runWorker(t *testing.T, w *worker.Worker) func() error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if serr := w.Shutdown(ctx); serr != nil {
				err = fmt.Errorf("shutdown: %w", serr)
			}
			if rerr := <-errc; rerr != nil && err == nil {
				err = rerr
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor re-checks cond whenever the sink changes (and at least every
// 100ms) until it holds; it fails the test after d.
func (s *sink) waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s (%s)", d, what, state)
		}
	}
}

// seed returns SHARDLINE_FAULT_SEED if set (to explore other fault
// sequences), else def.
func seed(t *testing.T, def uint64) uint64 {
	if v := os.Getenv("SHARDLINE_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SHARDLINE_FAULT_SEED: %v", err)
		}
		def = n
	}
	t.Logf("fault seed %d", def)
	return def
}

// quietLogger logs errors only (or from SHARDLINE_TEST_LOG_LEVEL: debug,
// info, warn), to the test log.
func quietLogger(t *testing.T) *slog.Logger {
	level := slog.LevelError
	if v := os.Getenv("SHARDLINE_TEST_LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			t.Fatalf("SHARDLINE_TEST_LOG_LEVEL: %v", err)
		}
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
