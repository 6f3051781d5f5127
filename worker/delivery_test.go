package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/producer"
	"github.com/shardline/shardline/worker"
)

// deliveryHook records delivery events and stored checkpoints.
type deliveryHook struct {
	mu     sync.Mutex
	events map[worker.EventKind]int // kind -> records
	last   kcl.ExtendedSequenceNumber
}

func (h *deliveryHook) OnEvent(e worker.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch e.Kind {
	case worker.EventRecordsFiltered, worker.EventPartialFailure, worker.EventBisect, worker.EventDeadLetter:
		if h.events == nil {
			h.events = map[worker.EventKind]int{}
		}
		h.events[e.Kind] += e.Records
	case worker.EventCheckpoint:
		if e.Err == nil {
			h.last = e.Position
		}
	}
}

func (h *deliveryHook) count(kind worker.EventKind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events[kind]
}

// failingProcessor fails on the records whose data is in poison: always
// (poisonous) or once (partial), reporting a partial failure at the first.
type failingProcessor struct {
	rec      *recorder
	partial  bool
	mu       sync.Mutex
	failed   map[string]bool
	failedAt map[string]int // data -> index of the call that failed on it
	calls    [][]string     // data per call
}

func (f *failingProcessor) factory(string) (kcl.RecordProcessor, error) {
	return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
		f.mu.Lock()
		var data []string
		for _, r := range in.Records {
			data = append(data, string(r.Data))
		}
		f.calls = append(f.calls, data)
		for i, r := range in.Records {
			if !strings.HasPrefix(string(r.Data), "poison") || (f.partial && f.failed[string(r.Data)]) {
				continue
			}
			f.failed[string(r.Data)] = true
			if f.failedAt == nil {
				f.failedAt = map[string]int{}
			}
			f.failedAt[string(r.Data)] = len(f.calls) - 1
			f.mu.Unlock()
			if f.partial {
				f.rec.take(in.ShardID, in.Records[:i])
				return &kcl.PartialFailureError{Position: r.Position(), Err: errors.New("downstream refused " + string(r.Data))}
			}
			return errors.New("poison " + string(r.Data))
		}
		f.mu.Unlock()
		f.rec.take(in.ShardID, in.Records)
		return in.Checkpointer.Checkpoint(ctx)
	}), nil
}

// take records successfully processed records.
func (r *recorder) take(shard string, recs []kcl.Record) {
	r.mu.Lock()
	r.byShard[shard] = append(r.byShard[shard], recs...)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// putData writes records with the given payloads, in order, to a one-shard
// stream and returns their sequence numbers.
func putData(t *testing.T, kc *kinesis.Client, stream string, data []string) []string {
	t.Helper()
	var seqs []string
	for _, d := range data {
		out, err := kc.PutRecord(t.Context(), &kinesis.PutRecordInput{StreamName: aws.String(stream),
			PartitionKey: aws.String("pk-" + d[len(d)-1:]), Data: []byte(d)})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
	}
	return seqs
}

func payloads(n int, poison ...int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("rec-%03d", i)
		if slices.Contains(poison, i) {
			out[i] = fmt.Sprintf("poison-%03d", i)
		}
	}
	return out
}

// The processor reports partial failures: the records before each failed one
// are never delivered again, the rest is, and every record is processed once.
func TestPartialBatchFailureOnEmulators(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	data := payloads(60, 7, 23, 41)
	seqs := putData(t, kc, stream, data)
	rec := newRecorder()
	f := &failingProcessor{rec: rec, partial: true, failed: map[string]bool{}}
	hook := &deliveryHook{}
	cfg := baseConfig(t, stream, testenv.UniqueName("app"), f.factory)
	cfg.Hooks = []worker.Hook{hook}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitFor(t, 60*time.Second, "60 records", func() bool { return rec.count() >= 60 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, recs := range rec.byShard {
		got := make([]string, len(recs))
		for i, r := range recs {
			got[i] = r.SequenceNumber
		}
		if !slices.Equal(got, seqs) {
			t.Errorf("processed %d records %v, want each of the %d once, in order", len(got), got, len(seqs))
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// After each partial failure the next call starts at the failed record:
	// the records before it are never delivered again.
	for i, c := range f.calls[:len(f.calls)-1] {
		if at := slices.IndexFunc(c, func(d string) bool { return strings.HasPrefix(d, "poison") && f.failedAt[d] == i }); at >= 0 {
			if next := f.calls[i+1]; len(next) == 0 || next[0] != c[at] {
				t.Errorf("call %d failed at %s; the next call starts at %v", i, c[at], next)
			}
		}
	}
	if len(f.failedAt) != 3 {
		t.Errorf("partial failures at %v, want the 3 poison records", f.failedAt)
	}
	if n := hook.count(worker.EventPartialFailure); n == 0 {
		t.Error("no partial_failure event")
	}
	if hook.last.SequenceNumber != seqs[len(seqs)-1] {
		t.Errorf("last checkpoint %v, want the last record %s", hook.last, seqs[len(seqs)-1])
	}
}

// Poison records are isolated by bisection, written to a dead-letter stream
// through the producer once their attempts are spent, and the shard moves on.
func TestPoisonRecordsGoToADeadLetterStreamOnEmulators(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	dlqStream := testenv.CreateStream(t, kc, 1)
	data := payloads(40, 13, 29)
	seqs := putData(t, kc, stream, data)
	dlq, err := producer.New(producer.Config{StreamName: dlqStream, Client: kc, Linger: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dlq.Close(context.Background()) })

	rec := newRecorder()
	f := &failingProcessor{rec: rec, failed: map[string]bool{}}
	hook := &deliveryHook{}
	cfg := baseConfig(t, stream, testenv.UniqueName("app"), f.factory)
	cfg.Hooks = []worker.Hook{hook}
	cfg.Delivery = worker.DeliveryPolicy{BisectOnError: true, MaxAttempts: 3, DeadLetters: dlq}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitFor(t, 60*time.Second, "38 records", func() bool { return rec.count() >= 38 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(seqs)
	want = slices.Delete(want, 29, 30)
	want = slices.Delete(want, 13, 14)
	for _, recs := range rec.byShard {
		var got []string
		for _, r := range recs {
			got = append(got, r.SequenceNumber)
		}
		if !slices.Equal(got, want) {
			t.Errorf("processed %v, want every record but the two poison ones, once, in order", got)
		}
	}
	if hook.count(worker.EventDeadLetter) != 2 || hook.count(worker.EventBisect) == 0 {
		t.Errorf("events %v, want 2 dead letters and some bisects", hook.events)
	}
	if hook.last.SequenceNumber != seqs[len(seqs)-1] {
		t.Errorf("last checkpoint %v, want the last record %s", hook.last, seqs[len(seqs)-1])
	}

	// The dead-letter stream holds exactly the two poison records.
	type letter struct {
		ShardID, SequenceNumber, PartitionKey, Reason, Error string
		Data                                                 []byte
		Attempts                                             int
	}
	var letters []letter
	for _, raw := range readAll(t, kc, dlqStream) {
		var l struct {
			ShardID        string `json:"shard_id"`
			SequenceNumber string `json:"sequence_number"`
			PartitionKey   string `json:"partition_key"`
			Data           []byte `json:"data"`
			Attempts       int    `json:"attempts"`
			Reason         string `json:"reason"`
			Error          string `json:"error"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			t.Fatalf("dead letter %q: %v", raw, err)
		}
		letters = append(letters, letter{l.ShardID, l.SequenceNumber, l.PartitionKey, l.Reason, l.Error, l.Data, l.Attempts})
	}
	if len(letters) != 2 {
		t.Fatalf("dead-letter stream holds %d records %+v, want 2", len(letters), letters)
	}
	for i, idx := range []int{13, 29} {
		l := letters[i]
		if l.SequenceNumber != seqs[idx] || string(l.Data) != data[idx] || l.Attempts != 3 || l.Reason != "max_attempts" ||
			!strings.Contains(l.Error, data[idx]) || l.ShardID == "" || l.PartitionKey == "" {
			t.Errorf("dead letter %d: %+v, want record %d (%s) after 3 attempts", i, l, idx, seqs[idx])
		}
	}
}

// readAll returns the data of every record of a one-shard stream.
func readAll(t *testing.T, kc *kinesis.Client, stream string) [][]byte {
	t.Helper()
	shards, err := kc.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, sh := range shards.Shards {
		it, err := kc.GetShardIterator(t.Context(), &kinesis.GetShardIteratorInput{StreamName: aws.String(stream),
			ShardId: sh.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			res, err := kc.GetRecords(t.Context(), &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Records {
				out = append(out, r.Data)
			}
			if len(res.Records) == 0 {
				break
			}
			iter = res.NextShardIterator
		}
	}
	return out
}

// Per-key lanes with enhanced fan-out, in virtual time: every record of a
// parent shard is processed (the lanes drain) before SHARD_END and before any
// record of its children, each key keeps its order, and filtered records are
// counted and never delivered.
func TestLanesWithFanOutDrainBeforeShardEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const parent = "shardId-000000000000"
		srv, _ := splitFake(t, 60, 10, 10)

		log := &efoLog{ended: map[string][]string{}}
		slow := func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
				time.Sleep(time.Duration(len(in.Records)) * 10 * time.Millisecond)
				p := &efoProc{l: log}
				return p.ProcessRecords(ctx, in)
			}), nil
		}
		store := lease.NewMemoryStore()
		hook := &deliveryHook{}
		cfg := fakeFanOutConfig(t, srv, store, slow)
		cfg.Hooks = []worker.Hook{hook}
		cfg.Delivery = worker.DeliveryPolicy{Parallelism: 4, Filter: func(r kcl.Record) bool { return r.PartitionKey != "pk6" }}
		_, stop := runFake(t, cfg)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		byKey := map[string][]string{}
		for i, r := range log.order {
			if r.PartitionKey == "pk6" {
				t.Errorf("filtered record %s delivered", r.SequenceNumber)
			}
			k := log.shard[i] + "/" + r.PartitionKey
			if prev := byKey[k]; len(prev) > 0 && prev[len(prev)-1] >= r.SequenceNumber {
				t.Errorf("key %s out of order: %s after %s", k, r.SequenceNumber, prev[len(prev)-1])
			}
			byKey[k] = append(byKey[k], r.SequenceNumber)
		}
		_, lastParent, firstChild := log.split(parent)
		// pk6 is every 7th record of each shard: 8 of the parent's 60, 1
		// of each child's 10.
		if got, want := len(log.order), 80-10; got != want {
			t.Errorf("%d records processed, want %d", got, want)
		}
		if hook.count(worker.EventRecordsFiltered) != 10 {
			t.Errorf("filtered %d, want 10", hook.count(worker.EventRecordsFiltered))
		}
		if lastParent > firstChild {
			t.Errorf("a child's record (delivery %d) came before the parent's last one (%d)", firstChild, lastParent)
		}
		if l, _ := leaseOf(t, store, parent); !l.Finished() {
			t.Errorf("parent lease %+v: want SHARD_END", l)
		}
	})
}

// splitFake returns a fan-out fake whose shard 0 split into shards 1 and 2,
// with n[i] records on shard i, and the sequence numbers per shard.
func splitFake(t *testing.T, n ...int) (*efotest.Server, map[string][]string) {
	t.Helper()
	ids := []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002"}
	srv := efotest.NewServer(efotest.ServerOptions{})
	t.Cleanup(srv.Close)
	srv.AddShard(ids[0])
	srv.AddShard(ids[1], ids[0])
	srv.AddShard(ids[2], ids[0])
	seqs := map[string][]string{}
	for i, id := range ids {
		seqs[id] = srv.Put(id, n[i])
	}
	srv.CloseShard(ids[0], ids[1], ids[2])
	return srv, seqs
}

// split returns the records delivered per shard, the index of the parent's
// last delivery and that of the children's first one.
func (l *efoLog) split(parent string) (got map[string][]kcl.Record, lastParent, firstChild int) {
	got = map[string][]kcl.Record{}
	lastParent, firstChild = -1, len(l.order)
	for i, r := range l.order {
		got[l.shard[i]] = append(got[l.shard[i]], r)
		if l.shard[i] == parent {
			lastParent = i
		} else {
			firstChild = min(firstChild, i)
		}
	}
	return got, lastParent, firstChild
}

// A graceful stop with per-key lanes waits for every lane: the final
// checkpoint is the low-water mark, every record up to it was processed, and
// a new worker resumes right after it without losing a record.
func TestLanesDrainOnGracefulStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		srv.AddShard(shard0)
		seqs := srv.Put(shard0, 300)
		log := &efoLog{ended: map[string][]string{}}
		slow := func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
				time.Sleep(time.Duration(len(in.Records)) * 50 * time.Millisecond)
				return (&efoProc{l: log}).ProcessRecords(ctx, in)
			}), nil
		}
		store := lease.NewMemoryStore()
		cfg := fakeFanOutConfig(t, srv, store, slow)
		cfg.Delivery = worker.DeliveryPolicy{Parallelism: 4}
		cfg.MaxRecords, cfg.PrefetchBatches = 20, 1 // few records dispatched ahead
		_, stop := runFake(t, cfg)
		time.Sleep(2 * time.Second) // well before the 300 records are done
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		l, _ := leaseOf(t, store, shard0)
		log.mu.Lock()
		done := map[string]bool{}
		for _, r := range log.order {
			done[r.SequenceNumber] = true
		}
		n := len(log.order)
		log.mu.Unlock()
		at := slices.Index(seqs, l.Checkpoint.SequenceNumber)
		if at < 0 || n == 0 || n == len(seqs) {
			t.Fatalf("checkpoint %v after %d records processed: want a record's position, mid-stream", l.Checkpoint, n)
		}
		for i, s := range seqs[:at+1] {
			if !done[s] {
				t.Fatalf("record %d (%s) at or before the checkpoint was never processed", i, s)
			}
		}
		if at+1 != n {
			t.Errorf("checkpoint at record %d, but %d records were processed: the lanes were not drained to it", at, n)
		}

		// A new worker resumes after the checkpoint: nothing lost.
		cfg.WorkerID = "w2"
		_, stop2 := runFake(t, cfg)
		time.Sleep(time.Minute)
		synctest.Wait()
		if err := stop2(); err != nil {
			t.Fatal(err)
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		for _, r := range log.order {
			done[r.SequenceNumber] = true
		}
		for i, s := range seqs {
			if !done[s] {
				t.Fatalf("record %d (%s) lost across the restart", i, s)
			}
		}
	})
}

// memDLQ is an in-memory dead-letter handler.
type memDLQ struct {
	mu   sync.Mutex
	seqs map[string]bool
}

func (m *memDLQ) HandleDeadLetter(_ context.Context, d kcl.DeadLetter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seqs[d.Record.SequenceNumber] = true
	return nil
}

// Per-key lanes on the emulators with polling, and a processor that fails
// some records for good: nothing is lost (each record processed or
// dead-lettered), each partition key keeps its order, and the checkpoint
// reaches the shard's last record.
func TestLanesWithPoisonRecordsOnEmulators(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	want := put(t, kc, stream, 400, "lane")
	var seqs []string
	for _, s := range want {
		seqs = s
	}
	poison := map[string]bool{seqs[17]: true, seqs[200]: true, seqs[333]: true}
	var mu sync.Mutex
	rec := newRecorder()
	byKey := map[string][]string{}
	processed := map[string]bool{}
	factory := func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			for _, r := range in.Records {
				if poison[r.SequenceNumber] {
					return &kcl.PartialFailureError{Position: r.Position(), Err: errors.New("poison")}
				}
				time.Sleep(time.Millisecond)
				mu.Lock()
				byKey[r.PartitionKey] = append(byKey[r.PartitionKey], r.SequenceNumber)
				processed[r.SequenceNumber] = true
				mu.Unlock()
				rec.take(in.ShardID, []kcl.Record{r})
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}
	dlq := &memDLQ{seqs: map[string]bool{}}
	hook := &deliveryHook{}
	cfg := baseConfig(t, stream, testenv.UniqueName("app"), factory)
	cfg.Hooks = []worker.Hook{hook}
	cfg.Delivery = worker.DeliveryPolicy{Parallelism: 8, MaxAttempts: 2, DeadLetters: dlq}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitFor(t, 60*time.Second, "every healthy record", func() bool { return rec.count() >= len(seqs)-len(poison) })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seqs {
		if processed[s] == dlq.seqs[s] {
			t.Errorf("record %s: processed %v, dead-lettered %v; want exactly one", s, processed[s], dlq.seqs[s])
		}
	}
	if len(dlq.seqs) != len(poison) {
		t.Errorf("%d dead letters, want %d", len(dlq.seqs), len(poison))
	}
	for k, got := range byKey {
		if !slices.IsSortedFunc(got, func(a, b string) int {
			return kcl.ExtendedSequenceNumber{SequenceNumber: a}.Compare(kcl.ExtendedSequenceNumber{SequenceNumber: b})
		}) {
			t.Errorf("key %s out of order: %v", k, got)
		}
	}
	if hook.last.SequenceNumber != seqs[len(seqs)-1] {
		t.Errorf("last checkpoint %v, want the last record %s", hook.last, seqs[len(seqs)-1])
	}
}
