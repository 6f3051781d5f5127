package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/benchkinesis"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// BenchmarkPolling measures the framework's own cost: records delivered per
// second (and allocations per record) by a worker reading with GetRecords,
// against a bare loop of GetRecords calls made with the same SDK client, both
// reading the same fast in-process Kinesis server (responses of 1000 records
// built in advance). One benchmark op is one record. Every reader's first
// GetRecords call is held until all are waiting, so start-up (lease taking,
// iterators) is outside the timing and no reader gets a head start; the
// timing ends when b.N records have been delivered.
//
// Allocation and CPU figures count the whole process, so they include the
// in-process server's share (a few allocations per response, under 0.01 per
// record; its CPU is mostly copying prebuilt responses). CPU per record is
// the steadier figure on a shared machine: other load slows the wall clock
// but not this process's CPU accounting.
//
// Run: go test -run '^$' -bench BenchmarkPolling -benchtime 200000x ./worker
func BenchmarkPolling(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"1KiB", 1024}, {"100B", 100}} {
		for _, shards := range []int{1, 16} {
			for _, loop := range []string{"bare", "worker"} {
				b.Run(fmt.Sprintf("size=%s/shards=%d/loop=%s", size.name, shards, loop), func(b *testing.B) {
					benchPolling(b, loop, size.bytes, shards)
				})
			}
		}
	}
}

// benchDelivery counts records and notes when the target is reached.
type benchDelivery struct {
	target  int64
	n       atomic.Int64
	once    sync.Once
	done    chan struct{}
	at      time.Time
	final   int64
	mallocs uint64
	bytes   uint64
	cpu     time.Duration

	failOnce sync.Once
	failed   chan struct{} // closed by fail
	err      error
}

func newBenchDelivery(target int) *benchDelivery {
	return &benchDelivery{target: int64(target), done: make(chan struct{}), failed: make(chan struct{})}
}

// fail ends the benchmark with err: a reader that stops before the target
// is reached would otherwise leave it waiting for ever.
func (d *benchDelivery) fail(err error) {
	d.failOnce.Do(func() {
		d.err = err
		close(d.failed)
	})
}

// wait waits until the target is reached, and fails b if a reader failed
// first.
func (d *benchDelivery) wait(b *testing.B) {
	select {
	case <-d.done:
	case <-d.failed:
		b.Fatalf("reader failed: %v", d.err)
	}
}

// add counts n records; the call that reaches the target reads the
// allocation counters before anything else runs on, and closes done.
func (d *benchDelivery) add(n int) {
	if v := d.n.Add(int64(n)); v >= d.target {
		d.once.Do(func() {
			d.at = time.Now()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			d.final, d.mallocs, d.bytes, d.cpu = v, ms.Mallocs, ms.TotalAlloc, processCPU()
			close(d.done)
		})
	}
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (d *benchDelivery) reached() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func benchClient(url string) *kinesis.Client {
	return kinesis.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	}, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(url) })
}

func benchPolling(b *testing.B, loop string, size, shards int) {
	srv := benchkinesis.New(benchkinesis.Options{Shards: shards, RecordSize: size})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	kc := benchClient(hs.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newBenchDelivery(b.N)
	srv.Hold()
	defer srv.Release()

	var stop func()
	switch loop {
	case "bare":
		stop = startBenchBare(ctx, b, kc, srv.StreamName(), shards, d)
	case "worker":
		stop = startBenchWorker(ctx, b, kc, srv.StreamName(), d)
	}
	if err := srv.WaitHeld(ctx, shards); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	cpu0 := processCPU()
	began := time.Now()
	srv.Release()
	d.wait(b)
	b.StopTimer()
	stop()

	secs := d.at.Sub(began).Seconds()
	b.ReportMetric(float64(d.final)/secs, "records/s")
	b.ReportMetric(float64(d.mallocs-ms.Mallocs)/float64(d.final), "allocs/record")
	b.ReportMetric(float64(d.bytes-ms.TotalAlloc)/float64(d.final), "B/record")
	b.ReportMetric(float64(d.cpu-cpu0)/float64(d.final), "cpu-ns/record")
}

// startBenchBare runs one goroutine per shard that calls GetRecords in a loop and
// counts the records: the least any consumer has to do.
func startBenchBare(ctx context.Context, b *testing.B, kc *kinesis.Client, stream string, shards int, d *benchDelivery) (stop func()) {
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
				StreamName: aws.String(stream), ShardId: aws.String(benchkinesis.ShardID(i)),
				ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon,
			})
			if err != nil {
				d.fail(err)
				return
			}
			iter := it.ShardIterator
			failures := 0
			for !d.reached() {
				out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
				if err != nil {
					// Retried with the same iterator, as the worker retries:
					// on a loaded machine the SDK sometimes fails a read.
					if ctx.Err() != nil {
						return
					}
					if failures++; failures == 10 {
						d.fail(err)
						return
					}
					continue
				}
				failures = 0
				d.add(len(out.Records))
				iter = out.NextShardIterator
			}
		}()
	}
	return func() { wg.Wait() }
}

// startBenchWorker runs a worker with an in-memory lease store whose processor
// only counts the records.
func startBenchWorker(ctx context.Context, b *testing.B, kc *kinesis.Client, stream string, d *benchDelivery) (stop func()) {
	w, err := worker.New(worker.WithStore(worker.Config{
		StreamName:           stream,
		ApplicationName:      "bench",
		Kinesis:              kc,
		InitialPosition:      kcl.StartAtTrimHorizon(),
		IdleTimeBetweenReads: time.Millisecond,
		TakeInterval:         10 * time.Millisecond,
		Logger:               slog.New(slog.DiscardHandler),
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
				d.add(len(in.Records))
				return nil
			}), nil
		},
	}, lease.NewMemoryStore()))
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Shutdown(sctx); err != nil {
			b.Error(err)
		}
		if err := <-errc; err != nil {
			b.Error(err)
		}
	}
}

// BenchmarkFanOut is BenchmarkPolling for enhanced fan-out: a worker with
// FanOut against a bare loop reading SubscribeToShard events with the same
// SDK client, both subscribed to the same in-process fake (efotest: events
// of 1000 records, encoded when sent, over in-memory connections). Records
// are added to the shards once every reader has subscribed, and the timing
// covers adding them too, alike for both. The fake encodes events with
// encoding/json, so its CPU weighs more than benchkinesis's and the ratio is
// diluted towards 1.
//
// Run: go test -run '^$' -bench BenchmarkFanOut -benchtime 200000x ./worker
func BenchmarkFanOut(b *testing.B) {
	for _, size := range []struct {
		name  string
		bytes int
	}{{"1KiB", 1024}, {"100B", 100}} {
		for _, shards := range []int{1, 16} {
			for _, loop := range []string{"bare", "worker"} {
				b.Run(fmt.Sprintf("size=%s/shards=%d/loop=%s", size.name, shards, loop), func(b *testing.B) {
					benchFanOut(b, loop, size.bytes, shards)
				})
			}
		}
	}
}

func benchFanOut(b *testing.B, loop string, size, shards int) {
	srv := efotest.NewServer(efotest.ServerOptions{EventRecords: 1000})
	defer srv.Close()
	for i := range shards {
		srv.AddShard(benchkinesis.ShardID(i))
	}
	subscribed := make(chan struct{}, shards)
	srv.OnSubscribe(func(efotest.SubscribeCall) efotest.Fault {
		subscribed <- struct{}{}
		return efotest.Fault{}
	})
	kc := srv.Client()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newBenchDelivery(b.N)

	var stop func()
	switch loop {
	case "bare":
		stop = startBenchBareFanOut(ctx, b, kc, srv.RegisterConsumer("bare"), shards, d)
	case "worker":
		stop = startBenchFanOutWorker(ctx, b, kc, srv.StreamName(), d)
	}
	for range shards {
		select {
		case <-subscribed:
		case <-time.After(time.Minute):
			b.Fatal("readers did not subscribe")
		}
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	per := (b.N + shards - 1) / shards
	payloads := make([][]byte, per)
	for i := range payloads {
		payloads[i] = data
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ResetTimer()
	cpu0 := processCPU()
	began := time.Now()
	for i := range shards {
		srv.PutData(benchkinesis.ShardID(i), payloads...)
	}
	d.wait(b)
	b.StopTimer()
	stop()

	secs := d.at.Sub(began).Seconds()
	b.ReportMetric(float64(d.final)/secs, "records/s")
	b.ReportMetric(float64(d.mallocs-ms.Mallocs)/float64(d.final), "allocs/record")
	b.ReportMetric(float64(d.bytes-ms.TotalAlloc)/float64(d.final), "B/record")
	b.ReportMetric(float64(d.cpu-cpu0)/float64(d.final), "cpu-ns/record")
}

// startBenchBareFanOut subscribes to every shard and counts the records of
// the events.
func startBenchBareFanOut(ctx context.Context, b *testing.B, kc *kinesis.Client, consumerARN string, shards int, d *benchDelivery) (stop func()) {
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := kc.SubscribeToShard(ctx, &kinesis.SubscribeToShardInput{
				ConsumerARN: aws.String(consumerARN), ShardId: aws.String(benchkinesis.ShardID(i)),
				StartingPosition: &ktypes.StartingPosition{Type: ktypes.ShardIteratorTypeTrimHorizon},
			})
			if err != nil {
				d.fail(err)
				return
			}
			es := out.GetStream()
			defer es.Close()
			for ev := range es.Events() {
				if e, ok := ev.(*ktypes.SubscribeToShardEventStreamMemberSubscribeToShardEvent); ok {
					d.add(len(e.Value.Records))
				}
				if d.reached() {
					return
				}
			}
			if ctx.Err() == nil {
				d.fail(fmt.Errorf("subscription ended: %v", es.Err()))
			}
		}()
	}
	return func() { wg.Wait() }
}

// startBenchFanOutWorker runs a worker with FanOut and an in-memory lease
// store whose processor only counts the records.
func startBenchFanOutWorker(ctx context.Context, b *testing.B, kc *kinesis.Client, stream string, d *benchDelivery) (stop func()) {
	w, err := worker.New(worker.WithStore(worker.Config{
		StreamName:      stream,
		ApplicationName: "bench",
		Kinesis:         kc,
		FanOut:          &fanout.Options{},
		InitialPosition: kcl.StartAtTrimHorizon(),
		TakeInterval:    10 * time.Millisecond,
		Logger:          slog.New(slog.DiscardHandler),
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
				d.add(len(in.Records))
				return nil
			}), nil
		},
	}, lease.NewMemoryStore()))
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Shutdown(sctx); err != nil {
			b.Error(err)
		}
		if err := <-errc; err != nil {
			b.Error(err)
		}
	}
}
