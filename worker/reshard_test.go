package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// keyDelivery is one record handed to a processor.
type keyDelivery struct {
	worker, shard, pk string
	n                 int // the record's number among its key's records
	at                time.Time
}

// keyLog records deliveries in the order they happen (across workers) and
// can hold a shard's first batch until released.
type keyLog struct {
	mu     sync.Mutex
	all    []keyDelivery
	ended  map[string][]string  // shard -> children passed to ShardEnded
	endAt  map[string]time.Time // shard -> when ShardEnded was called
	holds  map[string]chan struct{}
	killed map[string]bool // workers whose deliveries no longer count
}

func newKeyLog() *keyLog {
	return &keyLog{ended: map[string][]string{}, endAt: map[string]time.Time{}, holds: map[string]chan struct{}{}, killed: map[string]bool{}}
}

// hold makes every batch of shard from now on wait until the returned
// function is called.
func (k *keyLog) hold(shard string) func() {
	ch := make(chan struct{})
	k.mu.Lock()
	k.holds[shard] = ch
	k.mu.Unlock()
	return func() { close(ch) }
}

// keyProc is the processor keyLog makes: it records and checkpoints every
// batch, and reports ShardEnded.
type keyProc struct {
	k      *keyLog
	worker string
	shard  string
}

func (k *keyLog) factory(workerID string) kcl.ProcessorFactory {
	return func(shard string) (kcl.RecordProcessor, error) {
		return &keyProc{k: k, worker: workerID, shard: shard}, nil
	}
}

func (p *keyProc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.k.mu.Lock()
	hold := p.k.holds[in.ShardID]
	p.k.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := time.Now()
	p.k.mu.Lock()
	if p.k.killed[p.worker] {
		p.k.mu.Unlock()
		return fmt.Errorf("worker %s is dead", p.worker)
	}
	for _, r := range in.Records {
		pk, num, _ := strings.Cut(string(r.Data), ":")
		n, _ := strconv.Atoi(num)
		p.k.all = append(p.k.all, keyDelivery{worker: p.worker, shard: in.ShardID, pk: pk, n: n, at: now})
	}
	p.k.mu.Unlock()
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *keyProc) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	p.k.mu.Lock()
	p.k.ended[in.ShardID] = slices.Clone(in.ChildShardIDs)
	p.k.endAt[in.ShardID] = time.Now()
	p.k.mu.Unlock()
	return in.Checkpointer.Checkpoint(ctx)
}

func (k *keyLog) deliveries() []keyDelivery {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.all)
}

// first returns when shard delivered its first record (zero if never).
func (k *keyLog) first(shard string) time.Time {
	for _, d := range k.deliveries() {
		if d.shard == shard {
			return d.at
		}
	}
	return time.Time{}
}

// checkKeys reports records lost and records of one partition key whose
// first delivery came after that of a later record of the key: the order a
// key's records must keep across parent and child shards.
func (k *keyLog) checkKeys(t *testing.T, produced map[string]int) {
	t.Helper()
	next := map[string]int{} // per key: the number the next first delivery must have
	seen := map[string]bool{}
	disorder := 0
	for _, d := range k.deliveries() {
		id := d.pk + ":" + strconv.Itoa(d.n)
		if seen[id] {
			continue // a duplicate: allowed (at-least-once)
		}
		seen[id] = true
		if d.n != next[d.pk]+1 && disorder < 5 {
			t.Errorf("key %s: record %d delivered (shard %s, worker %s) after record %d: out of order or a record skipped",
				d.pk, d.n, d.shard, d.worker, next[d.pk])
		}
		if d.n != next[d.pk]+1 {
			disorder++
		}
		next[d.pk] = max(next[d.pk], d.n)
	}
	lost := 0
	for pk, n := range produced {
		for i := 1; i <= n; i++ {
			if !seen[pk+":"+strconv.Itoa(i)] {
				lost++
			}
		}
	}
	if lost > 0 || disorder > 0 {
		t.Errorf("%d records lost, %d delivered out of key order (of %d keys)", lost, disorder, len(produced))
	}
}

// fakeWorkerConfig is a worker on a fakeStream with an in-memory lease
// table, timed for a synctest bubble.
func fakeWorkerConfig(t *testing.T, fs *fakeStream, store lease.Store, id string, k *keyLog) worker.Config {
	return worker.WithStore(worker.Config{
		StreamName:           fs.name,
		ApplicationName:      "app",
		WorkerID:             id,
		Kinesis:              fs,
		ProcessorFactory:     k.factory(id),
		InitialPosition:      kcl.StartAtTrimHorizon(),
		LeaseDuration:        3 * time.Second,
		RenewInterval:        time.Second,
		TakeInterval:         700 * time.Millisecond,
		ShardSyncInterval:    time.Hour, // child leases must not wait for a sync
		IdleTimeBetweenReads: 100 * time.Millisecond,
		RetryInitialInterval: 50 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}, store)
}

// runFake runs a worker inside the bubble and returns a function that stops
// it and reports Run's error.
func runFake(t *testing.T, cfg worker.Config) (*worker.Worker, func() error) {
	t.Helper()
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- w.Run(context.Background()) }()
	return w, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.Shutdown(ctx); err != nil {
			return err
		}
		return <-errc
	}
}

// leaseOf reads one lease; ok is false when there is none.
func leaseOf(t *testing.T, store lease.Store, key string) (lease.Lease, bool) {
	t.Helper()
	l, err := store.Get(context.Background(), key)
	if err != nil {
		return l, false
	}
	return l, true
}

const (
	shard0 = "shardId-000000000000"
	shard1 = "shardId-000000000001"
)

// A merge child waits for both parents, and is woken by the end of the
// second one in the same worker at once, not at its next periodic check. Its
// lease was created at the first parent's end, an hour before any shard
// sync.
func TestMergeChildWokenByParentEndInSameWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 2)
		fs.putKeys(16, 3)
		child := fs.merge(shard0, shard1)
		fs.putKeys(16, 2)
		k := newKeyLog()
		release := k.hold(shard1)
		store := lease.NewMemoryStore()
		_, stop := runFake(t, fakeWorkerConfig(t, fs, store, "w1", k))

		time.Sleep(10*time.Second + 333*time.Millisecond)
		synctest.Wait()
		l, ok := leaseOf(t, store, child)
		if !ok || l.Owner != "w1" || !slices.Equal(l.ParentShardIDs, []string{shard0, shard1}) {
			t.Fatalf("merge child lease %+v (exists %v): want it created at the first parent's end, held by w1, with both parents", l, ok)
		}
		if p0, _ := leaseOf(t, store, shard0); !p0.Finished() {
			t.Fatalf("first parent not finished: %+v", p0)
		}
		if !k.first(child).IsZero() {
			t.Fatal("merge child delivered records before its second parent finished")
		}

		at := time.Now()
		release()
		synctest.Wait()
		if got := k.first(child); got.IsZero() {
			t.Errorf("merge child delivered nothing right after its second parent ended; want it woken by the parent's end")
		} else if !got.Equal(at) {
			t.Errorf("merge child's first record %v after its second parent's release; want at once (woken by the parent's end)", got.Sub(at))
		}
		for _, p := range []string{shard0, shard1} {
			if l, _ := leaseOf(t, store, p); !l.Finished() || !slices.Equal(l.ChildShardIDs, []string{child}) {
				t.Errorf("parent %s: %+v, want SHARD_END with child %s recorded", p, l, child)
			}
			k.mu.Lock()
			got := k.ended[p]
			k.mu.Unlock()
			if !slices.Equal(got, []string{child}) {
				t.Errorf("ShardEnded(%s) got children %v, want [%s]", p, got, child)
			}
		}
		k.checkKeys(t, fs.produced())
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// Finished leases are deleted once their children have progressed: at once
// when the stream no longer lists the shard, after the stream's retention
// period otherwise, and never earlier. A closed shard whose lease was
// deleted is never leased again.
func TestFinishedLeaseCleanup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 2)
		fs.retention = 1 // hour
		fs.putKeys(32, 2)
		a1, a2 := fs.split(shard0)
		b1, b2 := fs.split(shard1)
		perShard := fs.putKeys(32, 2)
		for _, c := range []string{a1, a2, b1, b2} {
			if perShard[c] == 0 {
				t.Fatalf("test setup: no record in child %s (%v)", c, perShard)
			}
		}
		k := newKeyLog()
		store := lease.NewMemoryStore()
		cfg := fakeWorkerConfig(t, fs, store, "w1", k)
		cfg.ShardSyncInterval = 10 * time.Minute
		cfg.IdleTimeBetweenReads = 5 * time.Second
		_, stop := runFake(t, cfg)

		time.Sleep(time.Minute)
		synctest.Wait()
		for _, p := range []string{shard0, shard1} {
			if l, ok := leaseOf(t, store, p); !ok || !l.Finished() {
				t.Fatalf("lease %s: %+v (exists %v), want finished", p, l, ok)
			}
		}
		k.checkKeys(t, fs.produced())

		// shard0 leaves the stream: its lease goes at the next sync.
		fs.trim(shard0)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if _, ok := leaseOf(t, store, shard0); ok {
			t.Error("lease of a finished shard gone from the stream survived a shard sync")
		}
		// shard1 is still listed: kept for the retention period (1h) after
		// the first sync that saw its children progressed (at 10 min).
		time.Sleep(50 * time.Minute)
		synctest.Wait()
		if _, ok := leaseOf(t, store, shard1); !ok {
			t.Fatal("lease of a finished, still listed shard deleted before the stream's retention period")
		}
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		if _, ok := leaseOf(t, store, shard1); ok {
			t.Fatal("lease of a finished shard kept past the retention period")
		}
		// Never leased again, though still listed.
		before := len(k.deliveries())
		time.Sleep(time.Hour)
		synctest.Wait()
		if _, ok := leaseOf(t, store, shard1); ok {
			t.Error("closed shard leased again after its lease was cleaned up")
		}
		if after := len(k.deliveries()); after != before {
			t.Errorf("%d records delivered again after the cleanup", after-before)
		}
		for _, c := range []string{a1, a2, b1, b2} {
			if l, ok := leaseOf(t, store, c); !ok || l.Finished() {
				t.Errorf("child lease %s: %+v (exists %v), want open and progressing", c, l, ok)
			}
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// Finished leases are kept with a negative FinishedLeaseRetention.
func TestKeepFinishedLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 1)
		fs.retention = 1
		fs.putKeys(32, 1)
		fs.split(shard0)
		fs.putKeys(32, 1)
		fs.trim(shard0)
		store := lease.NewMemoryStore()
		// A lease left from before the trim, already finished.
		if err := store.Create(context.Background(), lease.Lease{Key: shard0, Checkpoint: kcl.ShardEnd}); err != nil {
			t.Fatal(err)
		}
		cfg := fakeWorkerConfig(t, fs, store, "w1", newKeyLog())
		cfg.FinishedLeaseRetention = -1
		cfg.ShardSyncInterval = 10 * time.Minute
		cfg.IdleTimeBetweenReads = 5 * time.Second
		_, stop := runFake(t, cfg)
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if _, ok := leaseOf(t, store, shard0); !ok {
			t.Error("finished lease deleted although FinishedLeaseRetention is negative")
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// A parent whose lease exists but whose shard was trimmed before it was
// read does not block its children: its reader finds no shard, the worker
// finishes it (SHARD_END) instead of stopping, and the children start.
func TestTrimmedParentDoesNotBlockChildren(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 1)
		fs.putKeys(16, 2)
		c1, c2 := fs.split(shard0)
		fs.putKeys(16, 2)
		store := lease.NewMemoryStore()
		if err := store.Create(context.Background(), lease.Lease{Key: shard0, Checkpoint: kcl.TrimHorizon}); err != nil {
			t.Fatal(err)
		}
		fs.trim(shard0)
		k := newKeyLog()
		_, stop := runFake(t, fakeWorkerConfig(t, fs, store, "w1", k))
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if l, _ := leaseOf(t, store, shard0); !l.Finished() || !slices.Equal(l.ChildShardIDs, []string{c1, c2}) {
			t.Errorf("trimmed parent's lease %+v, want SHARD_END with children %s %s", l, c1, c2)
		}
		for _, c := range []string{c1, c2} {
			if k.first(c).IsZero() {
				t.Errorf("child %s of a trimmed parent never delivered", c)
			}
		}
		if slices.ContainsFunc(k.deliveries(), func(d keyDelivery) bool { return d.shard == shard0 }) {
			t.Error("records delivered from a trimmed shard")
		}
		if err := stop(); err != nil {
			t.Fatalf("worker stopped with %v; a trimmed shard must not stop it", err)
		}
	})
}
