package faults_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// Two in-process workers share four shards while a third of the Kinesis
// calls and a sixth of the DynamoDB calls fail (throttling, 5xx, timeouts,
// some of them applied, expired iterators) and many are delayed. Every path
// must back off: the calls per second of each operation stay within what the
// timings allow (a loop retrying without a pause makes thousands against the
// local emulators). Nothing may be lost, re-ordered or re-delivered from
// before a checkpoint, and the workers start, hand shards over and stop
// without error.
func TestWorkersBackOffUnderFaults(t *testing.T) {
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	const shards = 4
	stream := testenv.CreateStream(t, kc, shards)
	app := testenv.UniqueName("app")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	prod, err := fleet.NewProducer(ctx, kc, stream, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := prod.Put(ctx, 200); err != nil {
		t.Fatal(err)
	}

	m := newMeter()
	cfg := faults.Config{
		Seed:           seed(t, 42),
		Kinesis:        faults.Rates{Any: 0.3, Latency: 20 * time.Millisecond},
		DynamoDB:       faults.Rates{Any: 0.15, Latency: 20 * time.Millisecond},
		TimeoutDelay:   100 * time.Millisecond,
		TimeoutApplied: 0.3,
		Observer:       m.observe,
	}
	kw, err := faults.WrapKinesis(kc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dw, err := faults.WrapDynamoDB(dc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink()
	newWorker := func(id string) *worker.Worker {
		w, err := worker.New(worker.Config{
			StreamName: stream, ApplicationName: app, WorkerID: id,
			Kinesis: kw, DynamoDB: dw,
			ProcessorFactory: s.factory(id, func(ctx context.Context, in kcl.ProcessRecordsInput) {
				m.count("ProcessRecords", time.Now())
			}),
			InitialPosition: kcl.StartAtTrimHorizon(),
			LeaseDuration:   3 * time.Second, RenewInterval: time.Second, TakeInterval: 500 * time.Millisecond,
			IdleTimeBetweenReads: 100 * time.Millisecond, RetryInitialInterval: 50 * time.Millisecond,
			MaxRecords: 25,
			Logger:     quietLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1, w2 := newWorker("w1"), newWorker("w2")
	stop1 := runWorker(t, w1)
	prod.Start(100*time.Millisecond, 4)
	s.waitFor(t, 30*time.Second, "w1 delivering", func() (bool, string) {
		return len(s.events().Records) > 0, "nothing yet"
	})
	stop2 := runWorker(t, w2) // joins: shards move by hand-over, under faults
	s.waitFor(t, 30*time.Second, "both workers delivering", func() (bool, string) {
		by := s.events().DeliveredBy()
		return by["w1"] > 0 && by["w2"] > 0, fmt.Sprint(by)
	})
	// Keep producing a while with both workers up.
	busy := time.NewTimer(8 * time.Second)
	<-busy.C
	if err := prod.Stop(); err != nil {
		t.Fatal(err)
	}
	s.waitFor(t, 60*time.Second, "every record delivered", func() (bool, string) {
		r := fleet.Check(prod.Records(), s.events())
		return len(r.Lost) == 0, fmt.Sprintf("%d of %d not delivered", len(r.Lost), r.Produced)
	})
	if err := stop2(); err != nil {
		t.Errorf("w2: %v", err)
	}
	if err := stop1(); err != nil {
		t.Errorf("w1: %v", err)
	}

	r := fleet.Check(prod.Records(), s.events())
	t.Logf("delivery report:\n%s", r)
	if err := r.Err(); err != nil {
		t.Error(err)
	}
	t.Logf("Kinesis:\n%s", faults.Summary(kw.Stats()))
	t.Logf("DynamoDB:\n%s", faults.Summary(dw.Stats()))
	peaks := m.peaks()
	t.Logf("peak calls per second:%s", formatPeaks(peaks))

	// Every kind of fault was met, so every path was exercised.
	for svc, st := range map[string]map[string]faults.Stats{"Kinesis": kw.Stats(), "DynamoDB": dw.Stats()} {
		met := map[faults.Kind]int64{}
		for _, s := range st {
			for k, n := range s.Faults {
				met[k] += n
			}
		}
		kinds := []faults.Kind{faults.Throttle, faults.ServerError, faults.Timeout}
		if svc == "Kinesis" {
			kinds = append(kinds, faults.ExpiredIterator)
		}
		for _, k := range kinds {
			if met[k] == 0 {
				t.Errorf("%s: no %v injected", svc, k)
			}
		}
	}

	// What the timings allow, per second, for two workers and four shards,
	// with room for bursts: reads at most every 200ms per shard when idle
	// and back to back while records flow (each batch is one checkpoint
	// write), renewals every second per lease, a heartbeat per worker every
	// second, two scans per worker every take interval, hand-over polls every
	// 100ms. A retry loop without backoff exceeds these many times over.
	bounds := map[string]int{
		"GetRecords": 15 * shards, "GetShardIterator": 10 * shards, "ProcessRecords": 15 * shards,
		"ListShards": 10, "DescribeStreamSummary": 10,
		"UpdateItem": 30 * shards, "GetItem": 40, "Scan": 30, "PutItem": 20, "DescribeTable": 10, "CreateTable": 4, "DeleteItem": 10,
	}
	for op, n := range peaks {
		bound, ok := bounds[op]
		if !ok {
			bound = 20
		}
		if n > bound {
			t.Errorf("%s: %d calls in one second, more than the %d the timings allow: a retry loop without backoff?", op, n, bound)
		}
	}
}
