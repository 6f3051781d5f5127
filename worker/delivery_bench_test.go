package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/benchkinesis"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// BenchmarkParallelism measures per-key lanes on an I/O-bound processor:
// one shard of the in-process server (pages of 1,000 records, keys pk-0 to
// pk-999) and a processor that sleeps 10 ms per record, with Parallelism 1,
// 10 and 100. Each run processes about two seconds' worth of records, timed
// from the first call of the processor (the worker's start excluded); the
// figures are records/s, the ratio to N times the same run's single-lane
// rate (goal: at least 0.9), and CPU per record.
func BenchmarkParallelism(b *testing.B) {
	var single float64
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			rate, cpu := benchLanes(b, n, 200*n)
			if n == 1 {
				single = rate
			}
			b.ReportMetric(rate, "records/s")
			if single > 0 {
				b.ReportMetric(rate/(float64(n)*single), "of-N×single")
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(200*n), "cpu-ns/record")
		})
	}
}

func benchLanes(b *testing.B, n, target int) (rate float64, cpu time.Duration) {
	srv := benchkinesis.New(benchkinesis.Options{Shards: 1, RecordSize: 100})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	kc := benchClient(hs.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var count atomic.Int64
	var once sync.Once
	done := make(chan struct{})
	var at, began time.Time
	var cpuAt, cpu0 time.Duration
	var startOnce sync.Once
	cfg := worker.Config{
		StreamName: srv.StreamName(), ApplicationName: "bench", Kinesis: kc,
		InitialPosition: kcl.StartAtTrimHorizon(), IdleTimeBetweenReads: time.Millisecond,
		TakeInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		Delivery: worker.DeliveryPolicy{Parallelism: n},
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
				startOnce.Do(func() { began, cpu0 = time.Now(), processCPU() })
				for range in.Records {
					n := count.Add(1)
					if n > int64(target) {
						// Past the timed part: the stop below drains the
						// lanes (a graceful stop processes every record
						// dispatched), so let it do so at once.
						continue
					}
					time.Sleep(10 * time.Millisecond)
					if n == int64(target) {
						once.Do(func() { at, cpuAt = time.Now(), processCPU(); close(done) })
					}
				}
				return nil
			}), nil
		},
	}
	w, err := worker.New(worker.WithStore(cfg, lease.NewMemoryStore()))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	<-done
	b.StopTimer()
	cancel() // the stop drains the lanes, past the target at once
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		b.Error(err)
	}
	return float64(target) / at.Sub(began).Seconds(), cpuAt - cpu0
}

// BenchmarkPoisonRecord measures what a poison record costs its shard with
// MaxAttempts 3 and the default backoff (200ms, then 400ms, jittered): the time
// from the first failed delivery to the dead-letter handler's acceptance,
// after which the shard moves on.
func BenchmarkPoisonRecord(b *testing.B) {
	srv := benchkinesis.New(benchkinesis.Options{Shards: 1, RecordSize: 100})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	kc := benchClient(hs.URL)
	var total time.Duration
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		var first time.Time
		var took time.Duration
		done := make(chan struct{})
		var once sync.Once
		dlq := deadLetterFunc(func(_ context.Context, d kcl.DeadLetter) error {
			once.Do(func() { took = time.Since(first); close(done) })
			return nil
		})
		cfg := worker.Config{
			StreamName: srv.StreamName(), ApplicationName: "bench", Kinesis: kc,
			InitialPosition: kcl.StartAtTrimHorizon(), IdleTimeBetweenReads: time.Millisecond,
			TakeInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
			Delivery: worker.DeliveryPolicy{MaxAttempts: 3, DeadLetters: dlq},
			ProcessorFactory: func(string) (kcl.RecordProcessor, error) {
				return kcl.RecordProcessorFunc(func(_ context.Context, in kcl.ProcessRecordsInput) error {
					for _, r := range in.Records {
						if r.PartitionKey == "pk-500" {
							if first.IsZero() {
								first = time.Now()
							}
							return &kcl.PartialFailureError{Position: r.Position(), Err: errors.New("poison")}
						}
					}
					return nil
				}), nil
			},
		}
		w, err := worker.New(worker.WithStore(cfg, lease.NewMemoryStore()))
		if err != nil {
			b.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- w.Run(ctx) }()
		<-done
		cancel()
		<-errc
		total += took
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-held/poison")
}

type deadLetterFunc func(context.Context, kcl.DeadLetter) error

func (f deadLetterFunc) HandleDeadLetter(ctx context.Context, d kcl.DeadLetter) error {
	return f(ctx, d)
}
