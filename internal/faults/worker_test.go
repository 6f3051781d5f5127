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
// HTTP calls and a sixth of the DynamoDB calls fail (throttling, 5xx,
// timeouts, some of them applied, expired iterators), some connections are
// reset, and many calls are delayed; the SDK sees them as it sees the real
// ones and retries as it does by default. Every path must back off (no
// operation runs hot). Nothing may be lost, re-ordered or re-delivered from
// before a checkpoint, and the workers start, hand shards over and stop
// without error.
func TestWorkersBackOffUnderFaults(t *testing.T) {
	kc := testenv.Kinesis(t)
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
		Kinesis:        faults.Rates{Any: 0.3, Reset: 0.02, Latency: 20 * time.Millisecond},
		DynamoDB:       faults.Rates{Any: 0.15, Reset: 0.02, Latency: 20 * time.Millisecond},
		TimeoutDelay:   100 * time.Millisecond,
		TimeoutApplied: 0.3,
		Observer:       m.observe,
	}
	kw, err := faults.NewKinesis(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	dw, err := faults.NewDynamoDB(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fkc, fdc := kinesisVia(kw), dynamoVia(dw)
	s := newSink()
	newWorker := func(id string) *worker.Worker {
		w, err := worker.New(worker.Config{
			StreamName: stream, ApplicationName: app, WorkerID: id,
			Kinesis: fkc, DynamoDB: fdc,
			ProcessorFactory: s.factory(id, func(ctx context.Context, in kcl.ProcessRecordsInput) func() {
				m.count("ProcessRecords", time.Now())
				return nil
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
		kinds := []faults.Kind{faults.Throttle, faults.ServerError, faults.Timeout, faults.Reset}
		if svc == "Kinesis" {
			kinds = append(kinds, faults.ExpiredIterator)
		}
		for _, k := range kinds {
			if met[k] == 0 {
				t.Errorf("%s: no %v injected", svc, k)
			}
		}
	}

	// A retry loop without a pause makes thousands of calls a second
	// against the local emulators; backing off keeps every operation far
	// below hotLoop, a bound wide enough that a loaded machine never fails
	// a correct build.
	for op, n := range peaks {
		if n > hotLoop {
			t.Errorf("%s: %d calls in one second: a retry loop without backoff?", op, n)
		}
	}
}
