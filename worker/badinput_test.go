package worker_test

import (
	"context"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// leaseEvents counts the lease events of each kind and shard.
type leaseEvents struct {
	mu sync.Mutex
	n  map[string]int // kind/shard -> count
}

func (e *leaseEvents) OnEvent(ev worker.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[string(ev.Kind)+"/"+ev.ShardID]++
}

func (e *leaseEvents) count(kind worker.EventKind, shard string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[string(kind)+"/"+shard]
}

// badInputWorker starts a worker on stream and app whose lease table was
// prepared by the caller, with its logs and lease events recorded.
func badInputWorker(t *testing.T, stream, app string, rec *recorder) (*testenv.Logs, *leaseEvents) {
	t.Helper()
	logs := testenv.NewLogs(t)
	events := &leaseEvents{}
	cfg := baseConfig(t, stream, app, rec.factory)
	cfg.Logger = logs.Logger()
	cfg.RetryMaxInterval = 2 * time.Second
	cfg.Hooks = []worker.Hook{events}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	return logs, events
}

func newLeaseStore(t *testing.T, app string) *lease.DynamoStore {
	t.Helper()
	store, err := lease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.EnsureTable(t.Context()); err != nil {
		t.Fatal(err)
	}
	return store
}

// A stored checkpoint that is a sequence number of another shard (written by
// an older version, or by hand) does not make the shard loop release/re-take
// without pause (before: 49 times in 25 s): the shard keeps its lease,
// reports the reason once, retries with backoff, and resumes once an
// operator resets the checkpoint. Nothing is lost.
func TestStoredCheckpointOfAnotherShard(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	want := put(t, kc, stream, 40, "x")
	const shard0, shard1 = "shardId-000000000000", "shardId-000000000001"
	if len(want[shard0]) == 0 || len(want[shard1]) < 2 {
		t.Fatalf("records per shard %d/%d: need both shards", len(want[shard0]), len(want[shard1]))
	}
	app := testenv.UniqueName("app")
	store := newLeaseStore(t, app)
	if err := store.Create(t.Context(), lease.Lease{Key: shard0, Checkpoint: kcl.NewSequence(want[shard1][1])}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	logs, events := badInputWorker(t, stream, app, rec)

	rec.waitFor(t, 60*time.Second, "the shard retrying its refused checkpoint a few times", func() bool {
		return logs.Count(slog.LevelDebug, "shard still stalled", "shard", shard0) >= 3
	})
	if n := logs.Count(slog.LevelWarn, "stored checkpoint cannot be read from", "shard", shard0, "reason", "bad-checkpoint"); n != 1 {
		t.Errorf("%d WARNs for the refused checkpoint, want 1", n)
	}
	if n := events.count(worker.EventLeaseAcquired, shard0); n != 1 {
		t.Errorf("shard 0 acquired %d times while stalled, want 1 (no release/re-take loop)", n)
	}
	if n := events.count(worker.EventShardStalled, shard0); n != 1 {
		t.Errorf("%d EventShardStalled for the refused checkpoint, want 1", n)
	}
	if n := logs.Count(slog.LevelWarn, "shard stalled", "shard", shard0); n != 0 {
		t.Errorf("%d more WARNs 'shard stalled' besides the checkpoint's, want none", n)
	}
	if got := logs.Records(slog.LevelWarn, "stored checkpoint cannot be read from"); len(got) > 0 && !hasAttr(got[0], "checkpoint_of_shard", shard1) {
		t.Errorf("the WARN does not say the checkpoint is one of %s", shard1)
	}

	// The operator resets the checkpoint: the shard resumes from it.
	cur, err := store.Get(t.Context(), shard0)
	if err != nil {
		t.Fatal(err)
	}
	cur.Checkpoint = kcl.TrimHorizon
	if _, err := store.ResetCheckpoint(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 60*time.Second, "every record", func() bool { return rec.count() >= 40 })
	checkOrder(t, rec.byShard, want)
	if n := events.count(worker.EventShardRecovered, shard0); n != 1 {
		t.Errorf("%d EventShardRecovered after the repair, want 1", n)
	}
}

func hasAttr(r slog.Record, key, value string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = found || a.Key == key && a.Value.String() == value
		return !found
	})
	return found
}

// A stored checkpoint that is no position at all (an unknown sentinel, a
// 300,000-digit number) is found when the lease is read: reported once,
// cut short, with no processor made for it and no open retried forever;
// the shard keeps its lease and re-reads the row with backoff, and resumes
// once the row is repaired, even by hand (the counter unchanged).
func TestUnusableStoredCheckpoint(t *testing.T) {
	for _, tc := range []struct{ name, checkpoint string }{
		{"unknown sentinel", "AT_THE_END"},
		{"huge number", strings.Repeat("9", 300_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := testenv.Kinesis(t)
			stream := testenv.CreateStream(t, kc, 1)
			want := put(t, kc, stream, 10, "y")
			const shard = "shardId-000000000000"
			app := testenv.UniqueName("app")
			store := newLeaseStore(t, app)
			if err := store.Create(t.Context(), lease.Lease{Key: shard, Checkpoint: kcl.NewSequence(tc.checkpoint)}); err != nil {
				t.Fatal(err)
			}
			rec := newRecorder()
			logs, events := badInputWorker(t, stream, app, rec)
			rec.waitFor(t, 60*time.Second, "the stall re-checked a few times", func() bool {
				return logs.Count(slog.LevelDebug, "shard still stalled", "shard", shard) >= 3
			})
			warns := logs.Records(slog.LevelWarn, "")
			for _, r := range warns {
				size := len(r.Message)
				r.Attrs(func(a slog.Attr) bool { size += len(a.Key) + len(a.Value.String()); return true })
				if size > 2000 {
					t.Errorf("a WARN of %d bytes: %.200s", size, r.Message)
				}
			}
			if n := logs.Count(slog.LevelWarn, "stored checkpoint cannot be read from", "shard", shard, "reason", "bad-checkpoint"); n != 1 {
				t.Errorf("%d WARNs for the unusable checkpoint, want 1", n)
			}
			if n := logs.Count(slog.LevelInfo, "shard started"); n != 0 {
				t.Errorf("shard started %d times on an unusable checkpoint", n)
			}
			if n := events.count(worker.EventLeaseAcquired, shard); n != 1 {
				t.Errorf("acquired %d times while stalled, want 1", n)
			}

			// Repaired by hand: the checkpoint attribute rewritten, nothing else.
			_, err := testenv.DynamoDB(t).UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
				TableName:                 aws.String(app),
				Key:                       map[string]dtypes.AttributeValue{"leaseKey": &dtypes.AttributeValueMemberS{Value: shard}},
				UpdateExpression:          aws.String("SET checkpoint = :c"),
				ExpressionAttributeValues: map[string]dtypes.AttributeValue{":c": &dtypes.AttributeValueMemberS{Value: "TRIM_HORIZON"}},
			})
			if err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, 60*time.Second, "every record after the repair", func() bool { return rec.count() >= 10 })
			checkOrder(t, rec.byShard, want)
		})
	}
}

// Rows written by hand or another tool: one without leaseCounter is taken
// and processed (before: refused at every round, silently); one with
// leaseCounter stored as a string does not stop the worker (before: Run
// failed at once) and is named once; once repaired, its shard is processed
// too. Nothing is lost.
func TestWorkerWithHandWrittenRows(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 3)
	want := put(t, kc, stream, 60, "z")
	const noCounter, mistyped = "shardId-000000000001", "shardId-000000000002"
	app := testenv.UniqueName("app")
	newLeaseStore(t, app)
	ddb := testenv.DynamoDB(t)
	putItem := func(item map[string]dtypes.AttributeValue) {
		t.Helper()
		if _, err := ddb.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(app), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	s := func(v string) dtypes.AttributeValue { return &dtypes.AttributeValueMemberS{Value: v} }
	putItem(map[string]dtypes.AttributeValue{"leaseKey": s(noCounter), "checkpoint": s("TRIM_HORIZON")})
	putItem(map[string]dtypes.AttributeValue{"leaseKey": s(mistyped), "checkpoint": s("TRIM_HORIZON"), "leaseCounter": s("5")})

	rec := newRecorder()
	logs, events := badInputWorker(t, stream, app, rec)
	others := len(want["shardId-000000000000"]) + len(want[noCounter])
	rec.waitFor(t, 60*time.Second, "the records of the readable rows", func() bool { return rec.count() >= others })
	if n := logs.Count(slog.LevelWarn, "lease row cannot be read", "shard", mistyped); n != 1 {
		t.Errorf("%d WARNs naming the mistyped row, want 1", n)
	}
	if n := events.count(worker.EventLeaseUnreadable, mistyped); n != 1 {
		t.Errorf("%d unreadable events for the mistyped row, want 1", n)
	}

	putItem(map[string]dtypes.AttributeValue{"leaseKey": s(mistyped), "checkpoint": s("TRIM_HORIZON"),
		"leaseCounter": &dtypes.AttributeValueMemberN{Value: "5"}})
	rec.waitFor(t, 60*time.Second, "every record once the row is repaired", func() bool { return rec.count() >= 60 })
	checkOrder(t, rec.byShard, want)
}

// A processor cannot store a sequence number of another shard, even one
// between its stored checkpoint and the last record it was given (before:
// stored, and after a restart the shard could not be read from it).
func TestCheckpointOfAnotherShardRefused(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	want := put(t, kc, stream, 40, "c")
	const shard0, shard1 = "shardId-000000000000", "shardId-000000000001"
	if len(want[shard0]) < 2 || len(want[shard1]) == 0 {
		t.Fatalf("records per shard %d/%d: need both shards", len(want[shard0]), len(want[shard1]))
	}
	// Shard 0's first sequence number with shard 1's number in it (bits 4
	// and up): a sequence number of shard 1 between shard 0's first and
	// last records, which the range rule alone accepts.
	first0, _ := new(big.Int).SetString(want[shard0][0], 10)
	foreign := kcl.NewSequence(new(big.Int).Add(first0, big.NewInt(1<<4)).String())
	last0 := kcl.NewSequence(want[shard0][len(want[shard0])-1])
	if foreign.Compare(last0) >= 0 {
		t.Fatalf("made-up sequence number %s not before shard 0's last %s", foreign, last0)
	}
	if other, ok := checkpoint.OtherShard(shard0, foreign.SequenceNumber); !ok || other != shard1 {
		t.Fatalf("%s does not read as a sequence number of %s: %q", foreign, shard1, other)
	}
	var mu sync.Mutex
	var cpErr error
	tried := make(chan struct{})
	var once sync.Once
	rec := newRecorder()
	factory := func(id string) (kcl.RecordProcessor, error) {
		inner, _ := rec.factory(id)
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			if id == shard0 && in.Records[len(in.Records)-1].Position().Compare(last0) == 0 {
				once.Do(func() {
					err := in.Checkpointer.CheckpointAt(ctx, foreign)
					mu.Lock()
					cpErr = err
					mu.Unlock()
					close(tried)
				})
			}
			return inner.ProcessRecords(ctx, in)
		}), nil
	}
	cfg := baseConfig(t, stream, testenv.UniqueName("app"), factory)
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	select {
	case <-tried:
	case <-time.After(60 * time.Second):
		t.Fatal("shard 0's last record never delivered")
	}
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(cpErr, kcl.ErrInvalidCheckpoint) {
		t.Fatalf("checkpoint at shard 1's %s from shard 0: %v, want ErrInvalidCheckpoint", foreign, cpErr)
	}
	rec.waitFor(t, 60*time.Second, "every record", func() bool { return rec.count() >= 40 })
	checkOrder(t, rec.byShard, want)
}
