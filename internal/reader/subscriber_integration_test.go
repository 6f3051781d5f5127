package reader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"

	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// Enhanced fan-out against kinesis-mock, through the test-only client
// wrapper that supplies the initial-response event the emulator omits.

func integrationSubscriber(t *testing.T, opts Options) *Shards {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	if opts.ConsumerName == "" {
		opts.ConsumerName = testenv.UniqueName("consumer")
	}
	s, err := NewFanOut(efotest.EmulatorKinesis(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readSub reads batches from r until n records arrived.
func readSub(t *testing.T, r Reader, n int) []kcl.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var recs []kcl.Record
	for len(recs) < n {
		b, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d records: %v", len(recs), err)
		}
		if b.Gap {
			t.Error("unexpected Gap")
		}
		recs = append(recs, b.Records...)
	}
	return recs
}

func TestIntegrationSubscriberReadsAllShards(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	stream, want := twoShards(t, kc, "efo")
	s := integrationSubscriber(t, Options{StreamName: stream, MaxRecords: 30})
	readers := map[string]Reader{}
	for shardID := range want {
		r, err := s.Open(t.Context(), shardID, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		if err != nil {
			t.Fatalf("Open %s: %v", shardID, err)
		}
		t.Cleanup(func() { _ = r.Close() })
		readers[shardID] = r
	}
	var wg sync.WaitGroup
	got := map[string][]kcl.Record{}
	var mu sync.Mutex
	for shardID, r := range readers {
		wg.Go(func() {
			recs := readSub(t, r, len(want[shardID]))
			mu.Lock()
			got[shardID] = recs
			mu.Unlock()
		})
	}
	wg.Wait()
	for shardID, recs := range want {
		sameRecords(t, got[shardID], recs)
	}
	// Records written now are pushed on the open subscriptions.
	more := put(t, kc, stream, "pushed", 20)
	for shardID, recs := range more {
		sameRecords(t, readSub(t, readers[shardID], len(recs)), recs)
	}
}

func TestIntegrationSubscriberResumesAfterCheckpoint(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	recs := put(t, kc, stream, "resume", 50)["shardId-000000000000"]
	s := integrationSubscriber(t, Options{StreamName: stream})
	r, err := s.Open(t.Context(), "shardId-000000000000", StartPosition{After: recs[19].Position(), Initial: kcl.StartAtTrimHorizon()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sameRecords(t, readSub(t, r, 30), recs[20:])

	// Nothing else comes: only empty batches (one per event, about one a
	// second) until the deadline.
	wantNoMoreRecords(t, r, 1500*time.Millisecond)
}

func TestIntegrationConsumerRegistration(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	arn, err := awsx.Stream{Name: stream}.ResolveARN(ctx, kc)
	if err != nil {
		t.Fatal(err)
	}
	// Five workers starting together register the consumer once.
	const workers = 5
	got := make([]fanout.Consumer, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { got[i], errs[i] = fanout.RegisterConsumer(ctx, kc, arn, "app") })
	}
	wg.Wait()
	for i := range workers {
		if errs[i] != nil || got[i].ARN != got[0].ARN || got[i].Status != types.ConsumerStatusActive {
			t.Fatalf("worker %d: %+v, %v (worker 0: %+v)", i, got[i], errs[i], got[0])
		}
	}
	list, err := fanout.ListConsumers(ctx, kc, arn)
	if err != nil || len(list) != 1 || list[0].ARN != got[0].ARN {
		t.Fatalf("ListConsumers: %+v, %v", list, err)
	}

	// The stream's limit (20 consumers) gives a clear error.
	for i := 1; i < 20; i++ {
		if _, err := fanout.RegisterConsumer(ctx, kc, arn, fmt.Sprintf("c%02d", i)); err != nil {
			t.Fatalf("consumer %d: %v", i, err)
		}
	}
	if _, err := fanout.RegisterConsumer(ctx, kc, arn, "one-too-many"); !errors.Is(err, fanout.ErrConsumerLimit) {
		t.Fatalf("21st consumer: %v, want fanout.ErrConsumerLimit", err)
	}

	if err := fanout.DeregisterConsumer(ctx, kc, arn, "app"); err != nil {
		t.Fatalf("DeregisterConsumer: %v", err)
	}
	list, err = fanout.ListConsumers(ctx, kc, arn)
	if err != nil || len(list) != 19 {
		t.Fatalf("after deregistering: %d consumers, %v; want 19", len(list), err)
	}
	for _, c := range list {
		if c.Name == "app" {
			t.Fatalf("deregistered consumer still listed: %+v", c)
		}
	}
}

func TestIntegrationSubscriberStreamNotFound(t *testing.T) {
	s := integrationSubscriber(t, Options{StreamName: testenv.UniqueName("missing")})
	_, err := s.Open(t.Context(), "shardId-000000000000", StartPosition{Initial: kcl.StartAtTrimHorizon()})
	if !errors.Is(err, kcl.ErrStreamNotFound) {
		t.Fatalf("Open = %v, want kcl.ErrStreamNotFound", err)
	}
}
