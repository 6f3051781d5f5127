package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// delivery is one record seen by one worker.
type delivery struct {
	worker string
	shard  string
	seq    string
	at     time.Time
}

// fleetLog records deliveries of several in-process workers.
type fleetLog struct {
	mu  sync.Mutex
	all []delivery
	ch  chan struct{}
}

func (f *fleetLog) factory(workerID string) kcl.ProcessorFactory {
	return func(string) (kcl.RecordProcessor, error) {
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			now := time.Now()
			f.mu.Lock()
			for _, r := range in.Records {
				f.all = append(f.all, delivery{worker: workerID, shard: in.ShardID, seq: r.SequenceNumber, at: now})
			}
			f.mu.Unlock()
			select {
			case f.ch <- struct{}{}:
			default:
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}
}

// startNamed creates and starts worker id on stream for app, delivering
// to log; it returns the worker and its stop function (see start).
func startNamed(t *testing.T, stream, app string, log *fleetLog, id string, hooks ...worker.Hook) (*worker.Worker, func() error) {
	t.Helper()
	cfg := baseConfig(t, stream, app, log.factory(id))
	cfg.WorkerID = id
	cfg.Hooks = hooks
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w, start(t, w)
}

// checkOnce fails t for every record delivered twice and unless n distinct
// records were delivered; it returns the duplicates.
func (f *fleetLog) checkOnce(t *testing.T, n int) int {
	t.Helper()
	seen := map[string]delivery{}
	dups := 0
	for _, d := range f.snapshot() {
		if prev, ok := seen[d.shard+"/"+d.seq]; ok {
			dups++
			t.Errorf("record %s/%s delivered twice (by %s, then %s)", d.shard, d.seq, prev.worker, d.worker)
		}
		seen[d.shard+"/"+d.seq] = d
	}
	if len(seen) != n {
		t.Errorf("delivered %d distinct records, produced %d", len(seen), n)
	}
	return dups
}

// waiter returns a function that waits, checking at every delivery and
// every 100 ms, until cond holds; it fails t once limit has passed since
// waiter was called.
func (f *fleetLog) waiter(t *testing.T, limit time.Duration) func(what string, cond func() bool) {
	deadline := time.Now().Add(limit)
	return func(what string, cond func() bool) {
		t.Helper()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			select {
			case <-f.ch:
			case <-tick.C:
			}
		}
	}
}

func (f *fleetLog) snapshot() []delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]delivery(nil), f.all...)
}

// produce writes one record every interval until ctx ends and returns the
// number written.
func produce(ctx context.Context, t *testing.T, kc *kinesis.Client, stream string, every time.Duration) <-chan int {
	out := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- n
				return
			case <-tick.C:
			}
			var entries []ktypes.PutRecordsRequestEntry
			for i := 0; i < 4; i++ {
				entries = append(entries, ktypes.PutRecordsRequestEntry{
					PartitionKey: aws.String(fmt.Sprintf("k%d-%d", n, i)), Data: []byte("x"),
				})
			}
			res, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
			if err != nil {
				t.Errorf("put: %v", err)
				out <- n
				return
			}
			n += len(res.Records) - int(aws.ToInt32(res.FailedRecordCount))
		}
	}()
	return out
}

// A worker joining a running one gets its share by planned hand-over: every
// record is delivered exactly once (zero duplicates) and each moved shard is
// idle only briefly.
func TestPlannedHandoffHasNoDuplicates(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("app")
	log := &fleetLog{ch: make(chan struct{}, 1)}

	a, stopA := startNamed(t, stream, app, log, "A")

	pctx, stopProducer := context.WithCancel(context.Background())
	produced := produce(pctx, t, kc, stream, 25*time.Millisecond)
	waitUntil := log.waiter(t, 30*time.Second)
	waitUntil("A to hold 4 shards", func() bool { return len(a.HeldShards()) == 4 })

	joined := time.Now()
	b, stopB := startNamed(t, stream, app, log, "B")
	waitUntil("a 2/2 split", func() bool { return len(a.HeldShards()) == 2 && len(b.HeldShards()) == 2 })
	// Let both process a little after the move.
	settled := len(log.snapshot())
	waitUntil("records after the hand-over", func() bool { return len(log.snapshot()) > settled+40 })
	stopProducer()
	n := <-produced
	waitUntil("every record", func() bool { return len(log.snapshot()) >= n })
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}

	all := log.snapshot()
	dups := log.checkOnce(t, n)
	// Idle time of each moved shard: from A's last delivery to B's first.
	var idle []time.Duration
	shards := map[string]bool{}
	for _, d := range all {
		shards[d.shard] = true
	}
	for shard := range shards {
		var lastA, firstB time.Time
		for _, d := range all {
			if d.shard != shard {
				continue
			}
			if d.worker == "A" && d.at.After(lastA) {
				lastA = d.at
			}
			if d.worker == "B" && (firstB.IsZero() || d.at.Before(firstB)) {
				firstB = d.at
			}
		}
		if !lastA.IsZero() && !firstB.IsZero() && firstB.After(lastA) {
			idle = append(idle, firstB.Sub(lastA))
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i] < idle[j] })
	t.Logf("produced %d, delivered %d, duplicates %d; join-to-balanced %v; hand-over idle per moved shard %v",
		n, len(all), dups, time.Since(joined).Round(time.Millisecond), idle)
}

// With BalanceByLoad, each holder measures its shards' records per second
// and stores them on the leases at renewal, where the planner weighs them.
func TestBalanceByLoadRecordsThroughput(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 2)
	app := testenv.UniqueName("app")
	log := &fleetLog{ch: make(chan struct{}, 1)}
	cfg := baseConfig(t, stream, app, log.factory("A"))
	cfg.BalanceByLoad = true
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	pctx, stopProducer := context.WithCancel(context.Background())
	defer stopProducer()
	produced := produce(pctx, t, kc, stream, 20*time.Millisecond)

	store, err := lease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		leases, err := store.List(context.Background())
		if err != nil && !errors.Is(err, kcl.ErrTableNotFound) { // the worker may not have created it yet
			t.Fatal(err)
		}
		loaded := 0
		for _, l := range leases {
			if l.Throughput > 0 {
				loaded++
			}
		}
		if len(leases) == 2 && loaded == 2 {
			t.Logf("stored throughput: %s %.1f/s, %s %.1f/s", leases[0].Key, leases[0].Throughput, leases[1].Key, leases[1].Throughput)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("throughput not stored on the leases: %+v", leases)
		}
		<-tick.C
	}
	stopProducer()
	<-produced
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// leaseLog records the lease events of one worker.
type leaseLog struct {
	mu  sync.Mutex
	evs []worker.Event
}

func (l *leaseLog) OnEvent(e worker.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
}

func (l *leaseLog) acquired() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for _, e := range l.evs {
		if e.Kind == worker.EventLeaseAcquired {
			out[e.ShardID] = e.Reason
		}
	}
	return out
}

// A worker stopping gracefully hands each of its shards to the survivor
// (a hand-over, not a release the survivor takes at its next round): the
// survivor delivers on them without a duplicate.
func TestGracefulStopHandsShardsToSurvivor(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("app")
	log := &fleetLog{ch: make(chan struct{}, 1)}
	leasesB := &leaseLog{}

	a, stopA := startNamed(t, stream, app, log, "A")
	b, stopB := startNamed(t, stream, app, log, "B", leasesB)

	pctx, stopProducer := context.WithCancel(context.Background())
	produced := produce(pctx, t, kc, stream, 25*time.Millisecond)
	waitUntil := log.waiter(t, 60*time.Second)
	waitUntil("a 2/2 split", func() bool { return len(a.HeldShards()) == 2 && len(b.HeldShards()) == 2 })
	handed := a.HeldShards()
	settled := len(log.snapshot())
	waitUntil("records on both workers", func() bool { return len(log.snapshot()) > settled+40 })

	stopped := time.Now()
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	waitUntil("B holding every shard", func() bool { return len(b.HeldShards()) == 4 })
	t.Logf("B held A's shards %v after A's Shutdown began", time.Since(stopped).Round(time.Millisecond))
	how := leasesB.acquired()
	for _, shard := range handed {
		if how[shard] != "handoff" {
			t.Errorf("B acquired %s by %q, want a hand-over from the stopping worker", shard, how[shard])
		}
	}
	stopProducer()
	n := <-produced
	waitUntil("every record", func() bool { return len(log.snapshot()) >= n })
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	log.checkOnce(t, n)
}
