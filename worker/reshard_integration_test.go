package worker_test

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/worker"
)

// reshardEnv is one resharding test on kinesis-mock: a stream, a producer
// writing per-partition-key counters ("pk-3:17"), and in-process workers
// sharing a DynamoDB Local lease table, all recording into one keyLog.
type reshardEnv struct {
	t      *testing.T
	kc     *kinesis.Client
	stream string
	app    string
	store  *lease.DynamoStore
	prod   *fleet.Producer
	log    *keyLog
	stops  map[string]func() error
}

func newReshardEnv(t *testing.T, shards int) *reshardEnv {
	t.Helper()
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, shards)
	app := testenv.UniqueName("app")
	store, err := lease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, err := fleet.NewProducer(ctx, kc, stream, 8)
	if err != nil {
		t.Fatal(err)
	}
	e := &reshardEnv{t: t, kc: kc, stream: stream, app: app, store: store, prod: prod, log: newKeyLog(), stops: map[string]func() error{}}
	t.Cleanup(func() {
		_ = prod.Stop()
		for _, stop := range e.stops {
			_ = stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, testenv.DynamoDB(t), app)
	})
	return e
}

// startWorkers starts in-process workers with the given IDs.
func (e *reshardEnv) startWorkers(ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		cfg := baseConfig(e.t, e.stream, e.app, e.log.factory(id))
		cfg.WorkerID = id
		w, err := worker.New(cfg)
		if err != nil {
			e.t.Fatal(err)
		}
		e.stops[id] = start(e.t, w)
	}
}

// poll calls cond every 100ms until it holds or ctx ends.
func (e *reshardEnv) poll(ctx context.Context, what string, cond func() error) {
	e.t.Helper()
	err := fleet.Poll(ctx, 100*time.Millisecond, what, func(context.Context) (bool, error) {
		err := cond()
		return err == nil, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// listShards lists the stream's shards.
func (e *reshardEnv) listShards(ctx context.Context) []ktypes.Shard {
	e.t.Helper()
	out, err := e.kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(e.stream)})
	if err != nil {
		e.t.Fatal(err)
	}
	return out.Shards
}

func openIDs(shards []ktypes.Shard) []string {
	var ids []string
	for _, s := range shards {
		if s.SequenceNumberRange.EndingSequenceNumber == nil {
			ids = append(ids, aws.ToString(s.ShardId))
		}
	}
	return ids
}

// waitDelivering waits until every open shard has delivered a record since
// now: the fleet is in steady state.
func (e *reshardEnv) waitDelivering(ctx context.Context) {
	e.t.Helper()
	open := openIDs(e.listShards(ctx))
	since := time.Now()
	e.poll(ctx, "records on every open shard", func() error {
		got := map[string]bool{}
		for _, d := range e.log.deliveries() {
			if !d.at.Before(since) {
				got[d.shard] = true
			}
		}
		for _, s := range open {
			if !got[s] {
				return fmt.Errorf("shard %s not delivering yet", s)
			}
		}
		return nil
	})
}

// reshard runs op and waits until the stream is ACTIVE again.
func (e *reshardEnv) reshard(ctx context.Context, what string, op func(context.Context) error) {
	e.t.Helper()
	if err := op(ctx); err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
	if err := testenv.WaitStreamActive(ctx, e.kc, e.stream); err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("%s done; open shards now %v", what, openIDs(e.listShards(ctx)))
}

// produceMore waits until the producer has written n more records.
func (e *reshardEnv) produceMore(ctx context.Context, n int) {
	e.t.Helper()
	target := e.prod.Count() + n
	e.poll(ctx, "more records produced", func() error {
		if got := e.prod.Count(); got < target {
			return fmt.Errorf("%d of %d records produced", got, target)
		}
		return nil
	})
}

// holdParent stops shard's processing (its next batch waits) and returns
// once a record was written to it after that, so that the shard cannot be
// finished until the returned function is called. That function first lets
// the producer write n more records, then checks that none of children
// delivered a record meanwhile.
func (e *reshardEnv) holdParent(ctx context.Context, shard string) (release func(children []string, n int)) {
	e.t.Helper()
	free := e.log.hold(shard)
	from := e.prod.Count()
	e.poll(ctx, "a record written to the held shard "+shard, func() error {
		if !slices.ContainsFunc(e.prod.Records()[from:], func(p fleet.Produced) bool { return p.Shard == shard }) {
			return fmt.Errorf("no record in %s yet", shard)
		}
		return nil
	})
	return func(children []string, n int) {
		e.t.Helper()
		e.produceMore(ctx, n)
		for _, d := range e.log.deliveries() {
			if slices.Contains(children, d.shard) {
				e.t.Errorf("child %s delivered %s:%d while its parent %s was held", d.shard, d.pk, d.n, shard)
				break
			}
		}
		free()
	}
}

// childrenOf returns the shards listing parent as a parent.
func childrenOf(shards []ktypes.Shard, parent string) []string {
	var out []string
	for _, s := range shards {
		if aws.ToString(s.ParentShardId) == parent || aws.ToString(s.AdjacentParentShardId) == parent {
			out = append(out, aws.ToString(s.ShardId))
		}
	}
	return out
}

// waitLeaseOwned waits until shard's lease exists and is owned.
func (e *reshardEnv) waitLeaseOwned(ctx context.Context, shard string) {
	e.t.Helper()
	e.poll(ctx, "lease of "+shard+" held", func() error {
		l, err := e.store.Get(ctx, shard)
		if err != nil {
			return err
		}
		if l.Owner == "" {
			return fmt.Errorf("lease %s not taken yet", shard)
		}
		return nil
	})
}

// produced returns the number of records written per partition key.
func (e *reshardEnv) produced() map[string]int {
	n := map[string]int{}
	for _, p := range e.prod.Records() {
		n[p.PK] = max(n[p.PK], p.N)
	}
	return n
}

// finish stops the producer once it has written more records, waits until
// every record was delivered, stops the workers and checks: nothing lost,
// every partition key in order across parents and children, every closed
// shard's lease at SHARD_END with its children recorded, every open shard
// leased and unfinished, with its parents recorded.
func (e *reshardEnv) finish(ctx context.Context, more int) {
	e.t.Helper()
	e.produceMore(ctx, more)
	if err := e.prod.Stop(); err != nil {
		e.t.Fatal(err)
	}
	want := e.produced()
	e.poll(ctx, "every record delivered", func() error {
		seen := map[string]bool{}
		for _, d := range e.log.deliveries() {
			seen[fmt.Sprintf("%s:%d", d.pk, d.n)] = true
		}
		missing := 0
		for pk, n := range want {
			for i := 1; i <= n; i++ {
				if !seen[fmt.Sprintf("%s:%d", pk, i)] {
					missing++
				}
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d records not delivered", missing, e.prod.Count())
		}
		return nil
	})
	for id, stop := range e.stops {
		if err := stop(); err != nil {
			e.t.Errorf("worker %s: %v", id, err)
		}
	}
	e.log.checkKeys(e.t, want)
	e.checkLeases(ctx)

	perShard := map[string]int{}
	for _, d := range e.log.deliveries() {
		perShard[d.shard]++
	}
	e.t.Logf("%d records produced, %d deliveries, per shard %v", e.prod.Count(), len(e.log.deliveries()), perShard)
}

// checkLeases compares the lease table with the stream's shards.
func (e *reshardEnv) checkLeases(ctx context.Context) {
	e.t.Helper()
	shards := e.listShards(ctx)
	leases, err := e.store.List(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	byKey := map[string]lease.Lease{}
	for _, l := range leases {
		byKey[l.Key] = l
	}
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		l, ok := byKey[id]
		if !ok {
			e.t.Errorf("shard %s has no lease", id)
			continue
		}
		var children []string
		for _, c := range shards {
			if aws.ToString(c.ParentShardId) == id || aws.ToString(c.AdjacentParentShardId) == id {
				children = append(children, aws.ToString(c.ShardId))
			}
		}
		slices.Sort(children)
		if s.SequenceNumberRange.EndingSequenceNumber != nil {
			if !l.Finished() || !slices.Equal(l.ChildShardIDs, children) {
				e.t.Errorf("closed shard %s: lease checkpoint %s children %v; want SHARD_END with children %v", id, l.Checkpoint, l.ChildShardIDs, children)
			}
			continue
		}
		if l.Finished() {
			e.t.Errorf("open shard %s: lease at SHARD_END", id)
		}
		var parents []string
		for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
			if p != nil {
				parents = append(parents, *p)
			}
		}
		slices.Sort(parents)
		if !slices.Equal(l.ParentShardIDs, parents) {
			e.t.Errorf("shard %s: lease parents %v, want %v", id, l.ParentShardIDs, parents)
		}
	}
}

// midpoint returns the hash key in the middle of a shard's range.
func midpoint(s ktypes.Shard) string {
	a, _ := new(big.Int).SetString(aws.ToString(s.HashKeyRange.StartingHashKey), 10)
	b, _ := new(big.Int).SetString(aws.ToString(s.HashKeyRange.EndingHashKey), 10)
	return new(big.Int).Rsh(new(big.Int).Add(a, b), 1).String()
}

// SplitShard while two workers consume: the parent is read to its end
// before either child, the children's leases appear at its end (shard syncs
// are a minute apart), and nothing is lost or re-ordered per key.
func TestSplitShardMidStream(t *testing.T) {
	e := newReshardEnv(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.prod.Start(100*time.Millisecond, 5)
	e.startWorkers("w1", "w2")
	e.waitDelivering(ctx)

	parent := e.listShards(ctx)[0]
	pid := aws.ToString(parent.ShardId)
	release := e.holdParent(ctx, pid)
	e.reshard(ctx, "split "+pid, func(ctx context.Context) error {
		_, err := e.kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(e.stream),
			ShardToSplit: parent.ShardId, NewStartingHashKey: aws.String(midpoint(parent))})
		return err
	})
	children := childrenOf(e.listShards(ctx), pid)
	release(children, 50)
	e.waitDelivering(ctx)
	e.log.mu.Lock()
	ended := e.log.endAt[pid]
	e.log.mu.Unlock()
	for _, c := range children {
		if d := e.log.first(c).Sub(ended); d < 0 || d > 10*time.Second {
			t.Errorf("child %s first delivered %v after its parent's end; want soon after it (not at a shard sync)", c, d)
		}
	}
	e.finish(ctx, 50)
}

// MergeShards while two workers consume: the child's lease appears when the
// first parent ends, and the child waits for the second parent, held by
// either worker.
func TestMergeShardsMidStream(t *testing.T) {
	e := newReshardEnv(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e.prod.Start(100*time.Millisecond, 5)
	e.startWorkers("w1", "w2")
	e.waitDelivering(ctx)

	shards := e.listShards(ctx)
	second := aws.ToString(shards[1].ShardId)
	release := e.holdParent(ctx, second)
	e.reshard(ctx, "merge", func(ctx context.Context) error {
		_, err := e.kc.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(e.stream),
			ShardToMerge: shards[0].ShardId, AdjacentShardToMerge: shards[1].ShardId})
		return err
	})
	child := childrenOf(e.listShards(ctx), second)
	if len(child) != 1 {
		t.Fatalf("merge children %v", child)
	}
	e.waitLeaseOwned(ctx, child[0]) // created at the first parent's end
	release(child, 50)
	e.finish(ctx, 50)
}

// UpdateShardCount 2 -> 4 -> 3 while three workers consume: splits, then
// merges of the children; the merge children wait for a held parent.
func TestUpdateShardCountMidStream(t *testing.T) {
	e := newReshardEnv(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e.prod.Start(100*time.Millisecond, 5)
	e.startWorkers("w1", "w2", "w3")
	e.waitDelivering(ctx)
	scale := func(n int32) {
		e.reshard(ctx, fmt.Sprintf("UpdateShardCount to %d", n), func(ctx context.Context) error {
			_, err := e.kc.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(e.stream),
				TargetShardCount: aws.Int32(n), ScalingType: ktypes.ScalingTypeUniformScaling})
			return err
		})
	}
	scale(4)
	e.waitDelivering(ctx)
	// Hold every open shard but the first: whatever the emulator merges,
	// some merge child has a held parent.
	before := openIDs(e.listShards(ctx))
	releases := map[string]func([]string, int){}
	for _, id := range before[1:] {
		releases[id] = e.holdParent(ctx, id)
	}
	scale(3)
	after := e.listShards(ctx)
	if len(openIDs(after)) != 3 {
		t.Fatalf("open shards after UpdateShardCount to 3: %v", openIDs(after))
	}
	n := 50 // one observation window for all
	for _, id := range before[1:] {
		releases[id](childrenOf(after, id), n)
		n = 0
	}
	e.waitDelivering(ctx)
	e.finish(ctx, 50)
}
