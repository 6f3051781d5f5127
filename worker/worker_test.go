package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// recorder is a processor factory that records every delivery.
type recorder struct {
	mu         sync.Mutex
	byShard    map[string][]kcl.Record // successful deliveries, in order
	deliveries int
	changed    chan struct{}
	// failFirst makes the first n deliveries of each batch fail.
	failFirst int
	attempts  map[string]int // first sequence number of a batch -> calls
	noCheckpt bool
}

func newRecorder() *recorder {
	return &recorder{byShard: map[string][]kcl.Record{}, attempts: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) factory(shardID string) (kcl.RecordProcessor, error) {
	return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		r.mu.Lock()
		r.deliveries++
		key := in.ShardID + "/" + in.Records[0].SequenceNumber
		r.attempts[key]++
		if r.attempts[key] <= r.failFirst {
			r.mu.Unlock()
			return fmt.Errorf("injected failure %d", r.attempts[key])
		}
		r.byShard[in.ShardID] = append(r.byShard[in.ShardID], in.Records...)
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
		if r.noCheckpt {
			return nil
		}
		return in.Checkpointer.Checkpoint(ctx)
	}), nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, recs := range r.byShard {
		n += len(recs)
	}
	return n
}

// waitFor blocks until cond holds, the recorder changes being the event that
// re-checks it, or fails the test after d.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	waitOn(t, r.changed, d, what, cond)
}

// waitOn blocks until cond holds, a value on changed being the event that
// re-checks it (it is also re-checked every 200ms), or fails the test
// after d.
func waitOn(t *testing.T, changed <-chan struct{}, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond) // re-check also without events (e.g. lease changes)
	defer tick.Stop()
	for !cond() {
		select {
		case <-changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// put writes n records spread over partition keys and returns, per shard, the
// sequence numbers in the order Kinesis assigned them.
func put(t *testing.T, kc *kinesis.Client, stream string, n int, tag string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for start := 0; start < n; start += 250 {
		var entries []ktypes.PutRecordsRequestEntry
		for i := start; i < min(n, start+250); i++ {
			entries = append(entries, ktypes.PutRecordsRequestEntry{
				PartitionKey: aws.String(fmt.Sprintf("pk-%d", i%37)),
				Data:         []byte(fmt.Sprintf("%s-%d", tag, i)),
			})
		}
		res, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			t.Fatalf("put records: %v", err)
		}
		for _, e := range res.Records {
			if e.ErrorCode != nil {
				t.Fatalf("put record failed: %s", aws.ToString(e.ErrorMessage))
			}
			out[aws.ToString(e.ShardId)] = append(out[aws.ToString(e.ShardId)], aws.ToString(e.SequenceNumber))
		}
	}
	return out
}

func baseConfig(t *testing.T, stream, app string, f kcl.ProcessorFactory) worker.Config {
	return worker.Config{
		StreamName:           stream,
		ApplicationName:      app,
		Kinesis:              testenv.Kinesis(t),
		DynamoDB:             testenv.DynamoDB(t),
		ProcessorFactory:     f,
		InitialPosition:      kcl.StartAtTrimHorizon(),
		LeaseDuration:        3 * time.Second,
		RenewInterval:        time.Second,
		TakeInterval:         500 * time.Millisecond,
		IdleTimeBetweenReads: 100 * time.Millisecond,
		RetryInitialInterval: 50 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p[:len(p)-1])); return len(p), nil }

// start runs w in the background and returns a function that shuts it down
// gracefully and reports Run's result.
func start(t *testing.T, w *worker.Worker) func() error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := w.Shutdown(ctx); err != nil {
				runErr = fmt.Errorf("shutdown: %w", err)
			}
			if err := <-errc; err != nil && runErr == nil {
				runErr = err
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func checkOrder(t *testing.T, got map[string][]kcl.Record, want map[string][]string) {
	t.Helper()
	for shard, seqs := range want {
		recs := got[shard]
		if len(recs) != len(seqs) {
			t.Errorf("shard %s: got %d records, want %d", shard, len(recs), len(seqs))
			continue
		}
		for i := range seqs {
			if recs[i].SequenceNumber != seqs[i] {
				t.Errorf("shard %s: record %d has sequence %s, want %s", shard, i, recs[i].SequenceNumber, seqs[i])
				break
			}
		}
	}
}

// Test 1: one worker consumes every record of a 4-shard stream, in order
// within each shard.
func TestOneWorkerConsumesEverythingInOrder(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 4)
	want := put(t, kc, stream, 400, "a")
	rec := newRecorder()
	w, err := worker.New(baseConfig(t, stream, testenv.UniqueName("app"), rec.factory))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitFor(t, 30*time.Second, "400 records", func() bool { return rec.count() >= 400 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(want) != 4 {
		t.Fatalf("records landed on %d shards, want 4", len(want))
	}
	checkOrder(t, rec.byShard, want)
}

// Test 4: stop and restart resumes from the stored checkpoint: nothing
// before it is delivered again, nothing after it is missed.
func TestRestartResumesFromCheckpoint(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	app := testenv.UniqueName("app")
	first := put(t, kc, stream, 100, "first")

	rec1 := newRecorder()
	w1, err := worker.New(baseConfig(t, stream, app, rec1.factory))
	if err != nil {
		t.Fatal(err)
	}
	stop1 := start(t, w1)
	rec1.waitFor(t, 30*time.Second, "first 100 records", func() bool { return rec1.count() >= 100 })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, rec1.byShard, first)

	// The checkpoints are in the table.
	store, err := lease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	leases, err := store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		seqs := first[l.Key]
		if len(seqs) > 0 && l.Checkpoint.SequenceNumber != seqs[len(seqs)-1] {
			t.Errorf("lease %s checkpoint %s, want last record %s", l.Key, l.Checkpoint, seqs[len(seqs)-1])
		}
		if l.Owner != "" {
			t.Errorf("lease %s still owned by %q after graceful shutdown", l.Key, l.Owner)
		}
	}

	second := put(t, kc, stream, 100, "second")
	rec2 := newRecorder()
	w2, err := worker.New(baseConfig(t, stream, app, rec2.factory))
	if err != nil {
		t.Fatal(err)
	}
	stop2 := start(t, w2)
	rec2.waitFor(t, 30*time.Second, "second 100 records", func() bool { return rec2.count() >= 100 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, rec2.byShard, second) // exactly the new records: none re-delivered, none missed
}

// Test 6: a processor that fails twice gets the same batch three times and
// nothing is skipped.
func TestProcessorErrorRetriesSameBatch(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	want := put(t, kc, stream, 50, "r")
	rec := newRecorder()
	rec.failFirst = 2
	w, err := worker.New(baseConfig(t, stream, testenv.UniqueName("app"), rec.factory))
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitFor(t, 30*time.Second, "50 records", func() bool { return rec.count() >= 50 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkOrder(t, rec.byShard, want)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for key, n := range rec.attempts {
		if n != 3 {
			t.Errorf("batch %s delivered %d times, want 3", key, n)
		}
	}
	if len(rec.attempts) == 0 {
		t.Fatal("no batch delivered")
	}
}

// A panicking processor is retried like a failing one.
func TestProcessorPanicIsRetried(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	want := put(t, kc, stream, 20, "p")
	var mu sync.Mutex
	calls := 0
	var got []kcl.Record
	done := make(chan struct{})
	f := func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				panic("processor bug")
			}
			got = append(got, in.Records...)
			if len(got) == 20 {
				close(done)
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}
	runUntil(t, baseConfig(t, stream, testenv.UniqueName("app"), f), done, "the records after a panic")
	mu.Lock()
	defer mu.Unlock()
	checkOrder(t, map[string][]kcl.Record{"": got}, map[string][]string{"": firstShard(want)})
}

func firstShard(m map[string][]string) []string {
	for _, v := range m {
		return v
	}
	return nil
}

// Test 7: bad input gives a clear error and no hang.
func TestInvalidConfigIsRefused(t *testing.T) {
	f := func(string) (kcl.RecordProcessor, error) { return nil, nil }
	valid := func() worker.Config {
		return worker.WithStore(worker.Config{
			StreamName: "s", ApplicationName: "app", Kinesis: testenv.NewKinesisClient("http://127.0.0.1:1"),
			ProcessorFactory: f,
		}, lease.NewMemoryStore())
	}
	if _, err := worker.New(valid()); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]func(*worker.Config){
		"no stream":         func(c *worker.Config) { c.StreamName = "" },
		"bad arn":           func(c *worker.Config) { c.StreamName = ""; c.StreamARN = "stream/x" },
		"no app":            func(c *worker.Config) { c.ApplicationName = "" },
		"bad table name":    func(c *worker.Config) { c.TableName = "a b" },
		"no kinesis":        func(c *worker.Config) { c.Kinesis = nil },
		"no store":          func(c *worker.Config) { *c = worker.WithStore(*c, nil) },
		"no factory":        func(c *worker.Config) { c.ProcessorFactory = nil },
		"short lease":       func(c *worker.Config) { c.LeaseDuration = 100 * time.Millisecond },
		"slow renewal":      func(c *worker.Config) { c.LeaseDuration = 4 * time.Second; c.RenewInterval = 3 * time.Second },
		"max records":       func(c *worker.Config) { c.MaxRecords = 10001 },
		"timestamp missing": func(c *worker.Config) { c.InitialPosition = kcl.StartAtTimestamp(time.Time{}) },
		"negative idle":     func(c *worker.Config) { c.IdleTimeBetweenReads = -time.Second },
		"tiny prefetch":     func(c *worker.Config) { c.PrefetchBytes = 10 },
		"retry range":       func(c *worker.Config) { c.RetryInitialInterval = time.Minute; c.RetryMaxInterval = time.Second },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := valid()
			mutate(&c)
			_, err := worker.New(c)
			if !errors.Is(err, kcl.ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestMissingStreamFailsClearly(t *testing.T) {
	rec := newRecorder()
	c := baseConfig(t, testenv.UniqueName("missing"), testenv.UniqueName("app"), rec.factory)
	w, err := worker.New(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if !errors.Is(err, kcl.ErrStreamNotFound) {
		t.Fatalf("Run on a missing stream: got %v, want ErrStreamNotFound", err)
	}
}

func TestUnreachableEndpointFailsWithoutHanging(t *testing.T) {
	rec := newRecorder()
	c := baseConfig(t, "s", "app-unreachable", rec.factory)
	c.Kinesis = testenv.NewKinesisClient("http://127.0.0.1:1") // nothing listens on port 1
	c.StartupTimeout = 10 * time.Second
	w, err := worker.New(c)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Run against an unreachable endpoint returned nil")
		}
		t.Logf("error: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run hung on an unreachable endpoint")
	}
}
