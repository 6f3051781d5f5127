package worker_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// Fan-out through a whole worker, against the in-process fake
// SubscribeToShard server and an in-memory lease table, in virtual time.

// efoLog records deliveries in order, across shards, and shard ends.
type efoLog struct {
	mu    sync.Mutex
	order []kcl.Record // every record delivered, in delivery order
	shard []string     // the shard of each
	ended map[string][]string
}

func (l *efoLog) factory(string) (kcl.RecordProcessor, error) { return &efoProc{l: l}, nil }

type efoProc struct{ l *efoLog }

func (p *efoProc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.l.mu.Lock()
	for _, r := range in.Records {
		p.l.order = append(p.l.order, r)
		p.l.shard = append(p.l.shard, in.ShardID)
	}
	p.l.mu.Unlock()
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *efoProc) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	p.l.mu.Lock()
	p.l.ended[in.ShardID] = in.ChildShardIDs
	p.l.mu.Unlock()
	return in.Checkpointer.Checkpoint(ctx)
}

func fakeFanOutConfig(t *testing.T, srv *efotest.Server, store lease.Store, f kcl.ProcessorFactory) worker.Config {
	return worker.WithStore(worker.Config{
		StreamName:        srv.StreamName(),
		ApplicationName:   "app",
		WorkerID:          "w1",
		Kinesis:           srv.Client(),
		ProcessorFactory:  f,
		FanOut:            &fanout.Options{},
		InitialPosition:   kcl.StartAtTrimHorizon(),
		LeaseDuration:     3 * time.Second,
		RenewInterval:     time.Second,
		TakeInterval:      500 * time.Millisecond,
		ShardSyncInterval: time.Hour, // children's leases must come from the parent's end
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}, store)
}

// The last event of a closed shard (child shards, no continuation) ends it
// as polling does: SHARD_END is stored, the children are recorded on the
// lease and read next, after every record of the parent.
func TestFanOutShardEndStartsChildren(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const parent, childA, childB = "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"
		srv, want := splitFake(t, 4, 2, 3)

		log := &efoLog{ended: map[string][]string{}}
		store := lease.NewMemoryStore()
		_, stop := runFake(t, fakeFanOutConfig(t, srv, store, log.factory))
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		log.mu.Lock()
		defer log.mu.Unlock()
		got, lastParent, firstChild := log.split(parent)
		checkOrder(t, got, want)
		if lastParent > firstChild {
			t.Errorf("a child's record (delivery %d) came before the parent's last one (%d)", firstChild, lastParent)
		}
		if !slices.Equal(log.ended[parent], []string{childA, childB}) {
			t.Errorf("ShardEnded(%s) children %v, want [%s %s]", parent, log.ended[parent], childA, childB)
		}
		if l, _ := leaseOf(t, store, parent); !l.Finished() || !slices.Equal(l.ChildShardIDs, []string{childA, childB}) {
			t.Errorf("parent lease %+v: want SHARD_END with both children", l)
		}
		if calls := srv.Calls(); len(calls) != 3 {
			t.Errorf("%d subscriptions, want one per shard: %+v", len(calls), calls)
		}
	})
}

// A worker that finds its lease taken closes the shard's subscription at
// once, and the shard's new owner resumes after its checkpoint.
func TestFanOutLeaseLostClosesSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const shard = "shardId-000000000000"
		srv := efotest.NewServer(efotest.ServerOptions{})
		defer srv.Close()
		srv.AddShard(shard)
		first := srv.Put(shard, 3)
		log := &efoLog{ended: map[string][]string{}}
		store := lease.NewMemoryStore()
		cfg := fakeFanOutConfig(t, srv, store, log.factory)
		w1, stop1 := runFake(t, cfg)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := srv.Active(); n != 1 || len(w1.HeldShards()) != 1 {
			t.Fatalf("%d subscriptions, %d shards held; want 1 and 1", n, len(w1.HeldShards()))
		}

		// Another worker fences w1 (as when w1's heartbeat stood still) and
		// takes the lease.
		l, ok := leaseOf(t, store, shard)
		if !ok {
			t.Fatal("no lease")
		}
		fl, err := store.ReadFleet(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Fence(t.Context(), "w1", fl.Members["w1"]); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Take(t.Context(), l, "w2"); err != nil {
			t.Fatal(err)
		}
		taken := time.Now()
		for srv.Active() > 0 && time.Since(taken) < cfg.LeaseDuration {
			time.Sleep(10 * time.Millisecond)
			synctest.Wait()
		}
		if n := srv.Active(); n != 0 {
			t.Fatalf("subscription still open %v after the lease was taken", time.Since(taken))
		}
		if d := time.Since(taken); d > cfg.RenewInterval+100*time.Millisecond {
			t.Errorf("subscription closed %v after the lease was taken; want by the next renewal (%v)", d, cfg.RenewInterval)
		}

		if err := stop1(); err != nil {
			t.Fatal(err)
		}

		// A new worker takes the lease once it expires and resumes after
		// w1's checkpoint.
		second := srv.Put(shard, 2)
		cfg3 := cfg
		cfg3.WorkerID = "w3"
		w3, stop3 := runFake(t, cfg3)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if len(w3.HeldShards()) != 1 {
			t.Fatalf("w3 holds %v", w3.HeldShards())
		}
		if err := stop3(); err != nil {
			t.Fatal(err)
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		checkOrder(t, map[string][]kcl.Record{shard: log.order}, map[string][]string{shard: append(first, second...)})
		if calls := srv.Calls(); len(calls) != 2 || calls[1].Type != "AT_SEQUENCE_NUMBER" || calls[1].SequenceNumber != first[2] {
			t.Errorf("calls %+v: want w3 to subscribe at the checkpoint %s", calls, first[2])
		}
	})
}
