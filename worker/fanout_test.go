package worker_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// pollingOnly is a Kinesis client offering only the polling calls.
type pollingOnly struct{ reader.KinesisAPI }

func TestFanOutConfigIsValidated(t *testing.T) {
	kc := testenv.NewKinesisClient("http://127.0.0.1:1")
	base := worker.WithStore(worker.Config{
		StreamName: "s", ApplicationName: "app", Kinesis: kc, ProcessorFactory: func(string) (kcl.RecordProcessor, error) { return nil, errors.New("unused") },
		FanOut: &fanout.Options{},
	}, lease.NewMemoryStore())
	if _, err := worker.New(base); err != nil {
		t.Fatalf("fan-out with a *kinesis.Client refused: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*worker.Config)
	}{
		{"client without fan-out calls", "fanout.FanOutAPI", func(c *worker.Config) { c.Kinesis = pollingOnly{kc} }},
		{"bad consumer name", "ConsumerName", func(c *worker.Config) { c.FanOut = &fanout.Options{ConsumerName: "my consumer"} }},
		{"bad default consumer name", "ConsumerName", func(c *worker.Config) { c.ApplicationName = strings.Repeat("a", 129); c.TableName = "t12" }},
		{"event timeout", "EventTimeout", func(c *worker.Config) { c.FanOut = &fanout.Options{EventTimeout: time.Millisecond} }},
	} {
		cfg := base
		tc.edit(&cfg)
		_, err := worker.New(cfg)
		if !errors.Is(err, kcl.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming %s", tc.name, err, tc.want)
		}
	}
	// Polling does not need the fan-out calls.
	cfg := base
	cfg.FanOut = nil
	cfg.Kinesis = pollingOnly{kc}
	if _, err := worker.New(cfg); err != nil {
		t.Errorf("polling with a polling-only client refused: %v", err)
	}
}

// fanOutConfig is baseConfig reading by enhanced fan-out through the
// emulator client wrapper.
func fanOutConfig(t *testing.T, stream, app string, f kcl.ProcessorFactory) worker.Config {
	cfg := baseConfig(t, stream, app, f)
	cfg.Kinesis = efotest.EmulatorKinesis(t)
	cfg.FanOut = &fanout.Options{}
	return cfg
}

// checkAtLeastOnceInOrder checks, per shard, that every wanted record was
// delivered and that records delivered for the first time came in sequence
// order. Re-deliveries (after a lease moved before a checkpoint) are
// allowed; their number is returned.
func checkAtLeastOnceInOrder(t *testing.T, got map[string][]kcl.Record, want map[string][]string) (dups int) {
	t.Helper()
	for shard, seqs := range want {
		seen := map[string]bool{}
		next := 0
		for _, r := range got[shard] {
			if seen[r.SequenceNumber] {
				dups++
				continue
			}
			if next >= len(seqs) || r.SequenceNumber != seqs[next] {
				t.Errorf("shard %s: new record %d is %s, want %s", shard, next, r.SequenceNumber, seqs[min(next, len(seqs)-1)])
				return dups
			}
			seen[r.SequenceNumber] = true
			next++
		}
		if next != len(seqs) {
			t.Errorf("shard %s: %d of %d records delivered", shard, next, len(seqs))
		}
	}
	return dups
}

func merge(a, b map[string][]string) map[string][]string {
	out := map[string][]string{}
	for _, m := range []map[string][]string{a, b} {
		for k, v := range m {
			out[k] = append(out[k], v...)
		}
	}
	return out
}

// uniqueCount counts distinct records delivered.
func (r *recorder) uniqueCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, recs := range r.byShard {
		seen := map[string]bool{}
		for _, rec := range recs {
			if !seen[rec.SequenceNumber] {
				seen[rec.SequenceNumber] = true
				n++
			}
		}
	}
	return n
}

func TestFanOutTwoWorkersConsumeInOrder(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	stream := testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("app")
	want := put(t, kc, stream, 200, "efo")
	rec := newRecorder() // both workers' processors record here
	var ws []*worker.Worker
	var stops []func() error
	for range 2 {
		w, err := worker.New(fanOutConfig(t, stream, app, rec.factory))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
		stops = append(stops, start(t, w))
	}
	rec.waitFor(t, 60*time.Second, "200 records with both workers holding shards", func() bool {
		return rec.uniqueCount() >= 200 && len(ws[0].HeldShards()) > 0 && len(ws[1].HeldShards()) > 0
	})
	// Records written now are pushed to the subscriptions already open.
	more := put(t, kc, stream, 40, "pushed")
	rec.waitFor(t, 30*time.Second, "240 records", func() bool { return rec.uniqueCount() >= 240 })
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	dups := checkAtLeastOnceInOrder(t, rec.byShard, merge(want, more))
	t.Logf("%d re-deliveries while the two workers balanced the shards", dups)

	// One consumer for the application, registered by whichever came first.
	arn, err := awsx.Stream{Name: stream}.ResolveARN(t.Context(), kc)
	if err != nil {
		t.Fatal(err)
	}
	consumers, err := fanout.ListConsumers(t.Context(), kc, arn)
	if err != nil || len(consumers) != 1 || consumers[0].Name != app {
		t.Fatalf("consumers %+v, %v; want one named %s", consumers, err, app)
	}
}

// A worker cut off from the lease table stops its subscriptions when its
// leases run out, and the other worker takes its shards over after the
// lease duration and subscribes from the checkpoints (kinesis-mock refuses
// a new subscription for a few seconds after the old one closed: the
// Subscriber backs off).
func TestFanOutSurvivesDeadWorker(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	app := testenv.UniqueName("app")
	first := put(t, kc, stream, 100, "before")
	rec := newRecorder()

	cfg1 := fanOutConfig(t, stream, app, rec.factory)
	// Worker 1's lease-table calls go through fault injection; cut off,
	// they fail as with connections refused.
	cut, err := faults.NewDynamoDB(faults.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg1.DynamoDB = testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint(), func(o *dynamodb.Options) { o.HTTPClient = cut })
	cfg1.ShutdownTimeout = time.Second
	w1, err := worker.New(cfg1)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := worker.New(fanOutConfig(t, stream, app, rec.factory))
	if err != nil {
		t.Fatal(err)
	}
	stop1 := start(t, w1)
	stop2 := start(t, w2)
	rec.waitFor(t, 60*time.Second, "100 records with each worker holding a shard", func() bool {
		return rec.uniqueCount() >= 100 && len(w1.HeldShards()) == 1 && len(w2.HeldShards()) == 1
	})

	cut.Outage(faults.Refuse) // worker 1 is gone, as far as the fleet can tell
	died := time.Now()
	second := put(t, kc, stream, 100, "after")
	rec.waitFor(t, 60*time.Second, "200 records with worker 2 holding both shards", func() bool {
		return rec.uniqueCount() >= 200 && len(w2.HeldShards()) == 2
	})
	t.Logf("worker 2 processed everything %v after worker 1 was cut off", time.Since(died).Round(time.Millisecond))
	if n := len(w1.HeldShards()); n != 0 {
		t.Errorf("cut-off worker still processes %d shards", n)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	_ = stop1() // cannot release its leases: they expired

	rec.mu.Lock()
	defer rec.mu.Unlock()
	dups := checkAtLeastOnceInOrder(t, rec.byShard, merge(first, second))
	t.Logf("%d repeated deliveries (batches retried while worker 1 could not checkpoint, and records after the last checkpoint)", dups)
}

// latencyRun puts records one by one at a steady pace with the put time in
// the payload and returns the put-to-process latencies seen by a worker.
func latencyRun(t *testing.T, cfg worker.Config, putData func(data []byte) error, n int, every time.Duration) []time.Duration {
	t.Helper()
	var mu sync.Mutex
	var lat []time.Duration
	ready := make(chan struct{})
	var readyOnce sync.Once
	got := make(chan struct{}, n)
	cfg.CallProcessorOnEmptyBatches = true
	cfg.InitialPosition = kcl.StartAtLatest()
	cfg.ProcessorFactory = func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			now := time.Now()
			readyOnce.Do(func() { close(ready) }) // reading: the first (empty) batch arrived
			for _, r := range in.Records {
				if len(r.Data) != 8 {
					continue
				}
				sent := time.Unix(0, int64(binary.BigEndian.Uint64(r.Data)))
				mu.Lock()
				lat = append(lat, now.Sub(sent))
				mu.Unlock()
				got <- struct{}{}
			}
			return nil
		}), nil
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not start reading")
	}
	tick := time.NewTicker(every) // pacing the producer, not synchronisation
	defer tick.Stop()
	for range n {
		<-tick.C
		if err := putData(binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.After(30 * time.Second)
	for range n {
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("records missing after 30s")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// roundLatency rounds d for a report: to the microsecond below 10ms, else
// to the millisecond.
func roundLatency(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestFanOutLatencyVersusPolling reports (does not assert) the put-to-process
// latency of fan-out and polling on the emulator, and of fan-out against the
// in-process fake server, which pushes records the moment they are written
// (kinesis-mock sends an event about once a second, so on the emulator its
// cadence, not the framework, sets fan-out's latency). Every record must
// arrive.
func TestFanOutLatencyVersusPolling(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	const n, every = 60, 50 * time.Millisecond
	quiet := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	report := func(name string, lat []time.Duration) {
		t.Helper()
		if len(lat) != n {
			t.Fatalf("%s: %d latencies for %d records", name, len(lat), n)
		}
		t.Logf("put->process latency, %s: p50 %v, p99 %v (%d records, one per %v)",
			name, roundLatency(percentile(lat, 0.50)), roundLatency(percentile(lat, 0.99)), n, every)
	}
	for _, mode := range []struct {
		name   string
		fanOut bool
		idle   time.Duration
	}{
		{"kinesis-mock, polling, IdleTimeBetweenReads 1s (default)", false, time.Second},
		{"kinesis-mock, polling, IdleTimeBetweenReads 200ms", false, 200 * time.Millisecond},
		{"kinesis-mock, enhanced fan-out", true, 0},
	} {
		stream := testenv.CreateStream(t, kc, 1)
		cfg := baseConfig(t, stream, testenv.UniqueName("app"), nil)
		cfg.Kinesis = kc
		if mode.fanOut {
			cfg.FanOut = &fanout.Options{}
		}
		cfg.IdleTimeBetweenReads = mode.idle
		cfg.Logger = quiet
		report(mode.name, latencyRun(t, cfg, func(data []byte) error {
			_, err := kc.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(stream), PartitionKey: aws.String("k"), Data: data})
			return err
		}, n, every))
	}

	srv := efotest.NewServer(efotest.ServerOptions{})
	defer srv.Close()
	srv.AddShard("shardId-000000000000")
	cfg := worker.WithStore(worker.Config{
		StreamName: srv.StreamName(), ApplicationName: "latency", Kinesis: srv.Client(), FanOut: &fanout.Options{}, LeaseDuration: 3 * time.Second, Logger: quiet,
	}, lease.NewMemoryStore())
	report("in-process fake server, enhanced fan-out (the framework's own cost)", latencyRun(t, cfg, func(data []byte) error {
		srv.PutData("shardId-000000000000", data)
		return nil
	}, n, every))
}
