package worker_test

import (
	"bytes"
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
	"github.com/shardline/shardline/kpl"
	"github.com/shardline/shardline/producer"
	"github.com/shardline/shardline/worker"
)

// kplLog collects what processors did with each user record.
type kplLog struct {
	mu        sync.Mutex
	processed map[string][]kcl.Record // per shard, in delivery order
	changed   chan struct{}
}

func newKPLLog() *kplLog {
	return &kplLog{processed: map[string][]kcl.Record{}, changed: make(chan struct{}, 1)}
}

func (l *kplLog) add(shard string, recs ...kcl.Record) {
	l.mu.Lock()
	l.processed[shard] = append(l.processed[shard], recs...)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *kplLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.processed {
		n += len(r)
	}
	return n
}

// TestAggregatedRecordsResumeInsideAggregate produces KPL aggregates (with a
// record encoder) to kinesis-mock, lets a worker checkpoint at a user record
// in the middle of an aggregate and die there without a final checkpoint,
// and checks that a second worker resumes with the next user record:
// nothing repeated, nothing skipped, every record decoded.
func TestAggregatedRecordsResumeInsideAggregate(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	ctx := t.Context()

	// Produce: about 50 user records per aggregate.
	p, err := producer.New(producer.Config{
		StreamName: stream, Client: kc, Aggregate: true, AggregationMaxBytes: 1024,
		Encoder: producer.Encoder(func(_ context.Context, pk string, data []byte) ([]byte, error) {
			return append([]byte("enc:"), data...), nil
		}),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	var results []*producer.Result
	for i := range n {
		r, err := p.Put(ctx, fmt.Sprintf("pk-%d", i%23), []byte(fmt.Sprintf("rec-%04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	aggregates := map[string]bool{}
	for i, r := range results {
		rc, err := r.Wait(ctx)
		if err != nil || !rc.Aggregated {
			t.Fatalf("record %d: %+v, %v", i, rc, err)
		}
		aggregates[rc.ShardID+"/"+rc.SequenceNumber] = true
	}
	if len(aggregates) < 6 {
		t.Fatalf("%d records in %d aggregates, want at least 6", n, len(aggregates))
	}
	// Then, on the first shard: an aggregate holding a user record of the
	// other shard (as a producer with a stale shard map writes), which
	// consumers drop, and a Kinesis record that looks like an aggregate but
	// is not, which they deliver raw.
	mixed, err := kpl.Marshal([]kpl.Record{
		{PartitionKey: "x", ExplicitHashKey: "0", Data: []byte("enc:stale-1")},
		{PartitionKey: "x", ExplicitHashKey: "340282366920938463463374607431768211455", Data: []byte("enc:stale-2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{0xF3, 0x89, 0x9A, 0xC2}, bytes.Repeat([]byte{7}, 40)...)
	if _, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream),
		Records: []ktypes.PutRecordsRequestEntry{
			{Data: mixed, PartitionKey: aws.String("x"), ExplicitHashKey: aws.String("0")},
			{Data: bad, PartitionKey: aws.String("pk-bad"), ExplicitHashKey: aws.String("0")},
		}}); err != nil {
		t.Fatal(err)
	}

	store := lease.NewMemoryStore()
	app := testenv.UniqueName("kpl-app")
	decoder := kcl.RecordDecoder(func(_ context.Context, _ string, data []byte) ([]byte, error) {
		if !bytes.HasPrefix(data, []byte("enc:")) {
			return nil, errors.New("not encoded")
		}
		return data[4:], nil
	})
	config := func(id string, f kcl.ProcessorFactory) worker.Config {
		cfg := baseConfig(t, stream, app, f)
		cfg.WorkerID = id
		cfg = worker.WithStore(cfg, store)
		cfg.RecordDecoder = decoder
		return cfg
	}

	// First worker: processes and checkpoints every record up to the fourth
	// user record of the first aggregate it meets on each shard (sub-sequence
	// 3), then hangs there until it is killed, without processing the rest
	// of that batch.
	first := newKPLLog()
	targets := map[string]kcl.ExtendedSequenceNumber{}
	var targetsMu sync.Mutex
	checkpointed := make(chan string, 2)
	w1, err := worker.New(config("w1", func(shardID string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			for i, r := range in.Records {
				if r.Aggregated && r.SubSequenceNumber == 3 {
					first.add(in.ShardID, in.Records[:i+1]...)
					if err := in.Checkpointer.CheckpointRecord(ctx, r); err != nil {
						return err
					}
					targetsMu.Lock()
					targets[in.ShardID] = r.Position()
					targetsMu.Unlock()
					checkpointed <- in.ShardID
					<-ctx.Done() // the process dies here
					return ctx.Err()
				}
			}
			first.add(in.ShardID, in.Records...)
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	run1 := make(chan error, 1)
	go func() { run1 <- w1.Run(context.Background()) }()
	for range 2 {
		select {
		case <-checkpointed:
		case <-time.After(60 * time.Second):
			t.Fatal("the first worker did not reach a record inside an aggregate on both shards")
		}
	}
	// Kill: the graceful stop cannot finish (the processors hang), so the
	// processors are cancelled and no final checkpoint is written.
	killCtx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := w1.Shutdown(killCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want a hard stop", err)
	}
	if err := <-run1; err != nil {
		t.Fatalf("first worker: %v", err)
	}
	for shard, want := range targets {
		l, err := store.Get(ctx, shard)
		if err != nil {
			t.Fatal(err)
		}
		if l.Checkpoint != want {
			t.Fatalf("shard %s: stored checkpoint %s, want %s (inside an aggregate)", shard, l.Checkpoint, want)
		}
	}

	// Second worker: resumes from the checkpoints.
	second := newKPLLog()
	var countsMu sync.Mutex
	counts := map[worker.EventKind][2]int{} // kind -> aggregates, records
	cfg2 := config("w2", func(shardID string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			second.add(in.ShardID, in.Records...)
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	})
	cfg2.Hooks = []worker.Hook{worker.HookFunc(func(e worker.Event) {
		countsMu.Lock()
		defer countsMu.Unlock()
		c := counts[e.Kind]
		counts[e.Kind] = [2]int{c[0] + e.Aggregates, c[1] + e.Records}
	})}
	w2, err := worker.New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w2)
	deadline := time.After(60 * time.Second)
	for first.total()+second.total() < n+1 {
		select {
		case <-second.changed:
		case <-deadline:
			t.Fatalf("delivered %d+%d records, want %d", first.total(), second.total(), n+1)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Every record exactly once, in order per shard, the restart starting
	// right after the checkpoint.
	seen := map[string]int{}
	malformed := 0
	for shard, recs := range second.processed {
		want := targets[shard]
		want.SubSequenceNumber++
		if len(recs) == 0 || recs[0].Position() != want {
			t.Errorf("shard %s: restart began at %v, want the next user record %s", shard, recs[0].Position(), want)
		}
		all := append(append([]kcl.Record(nil), first.processed[shard]...), recs...)
		for i, r := range all {
			if i > 0 && r.Position().Compare(all[i-1].Position()) <= 0 {
				t.Errorf("shard %s: %s delivered after %s", shard, r.Position(), all[i-1].Position())
			}
		}
	}
	for _, l := range []*kplLog{first, second} {
		for _, recs := range l.processed {
			for _, r := range recs {
				if r.DecodeErr != nil {
					if !errors.Is(r.DecodeErr, kcl.ErrMalformedAggregate) || !bytes.Equal(r.Data, bad) {
						t.Errorf("record %s: %v", r.Position(), r.DecodeErr)
					}
					malformed++
					continue
				}
				seen[string(r.Data)]++
			}
		}
	}
	for i := range n {
		if c := seen[fmt.Sprintf("rec-%04d", i)]; c != 1 {
			t.Errorf("rec-%04d delivered %d times", i, c)
		}
	}
	if len(seen) != n || malformed != 1 {
		t.Errorf("%d distinct records and %d malformed, want %d and 1", len(seen), malformed, n)
	}
	countsMu.Lock()
	defer countsMu.Unlock()
	if counts[worker.EventAggregatesMalformed][0] != 1 || counts[worker.EventAggregatesDropped] != [2]int{1, 2} ||
		counts[worker.EventDecodeFailed][1] != 0 || counts[worker.EventAggregatesUnpacked][0] == 0 {
		t.Errorf("second worker's record events %v", counts)
	}
}
