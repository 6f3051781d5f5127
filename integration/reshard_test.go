package integration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

// TestReshardWhileWorkerKilled: three worker processes consume four shards;
// UpdateShardCount to 2 merges them in pairs and, at that moment, the
// worker holding the most shards is killed (SIGKILL), parents mid-way. The
// survivors take its leases once they expire and finish the parents; each
// merge child starts only after both its parents ended. Nothing is lost,
// records of each partition key are first delivered in the order they were
// written, across parent and child shards, and every closed shard's lease is
// at SHARD_END with its child recorded.
func TestReshardWhileWorkerKilled(t *testing.T) {
	// Checkpoints at most every 500ms: the kill leaves processed records
	// behind checkpoints, delivered again by the next owner.
	e := setup(t, 4, 500*time.Millisecond)
	stream := e.fleet.Config().Stream
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	e.prod.Start(100*time.Millisecond, 5)
	workers := []string{"w1", "w2", "w3"}
	e.start(workers...)
	e.waitBalanced(ctx, workers, 1)
	waitEveryShardDelivering(ctx, t, e, 4)

	own := fleet.Ownership(e.leases(ctx))
	victim := slices.MaxFunc(workers, func(a, b string) int { return len(own[a]) - len(own[b]) })
	if _, err := e.kc.UpdateShardCount(ctx, &kinesis.UpdateShardCountInput{StreamName: aws.String(stream),
		TargetShardCount: aws.Int32(2), ScalingType: ktypes.ScalingTypeUniformScaling}); err != nil {
		t.Fatal(err)
	}
	killedAt, err := e.fleet.Process(victim).Kill()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("UpdateShardCount 4 -> 2, and killed %s holding %v", victim, own[victim])
	if err := testenv.WaitStreamActive(ctx, e.kc, stream); err != nil {
		t.Fatal(err)
	}
	shards := listAll(ctx, t, e.kc, stream)
	var children []string
	for _, s := range shards {
		if s.ParentShardId != nil && s.SequenceNumberRange.EndingSequenceNumber == nil {
			children = append(children, aws.ToString(s.ShardId))
		}
	}
	if len(children) == 0 {
		t.Fatalf("no merge child among %d shards", len(shards))
	}
	err = fleet.Poll(ctx, 200*time.Millisecond, "every merge child delivering", func(context.Context) (bool, error) {
		first := e.events().FirstDeliveries(children, killedAt, victim)
		if len(first) < len(children) {
			return false, fmt.Errorf("%d of %d children delivering", len(first), len(children))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	e.waitDelivered(ctx)

	r := e.report(ctx)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if err := keyOrder(e.events(), nil); err != nil {
		t.Error(err)
	}
	leases := map[string]bool{}
	for _, l := range e.leases(ctx) {
		leases[l.Key] = true
		for _, s := range shards {
			if aws.ToString(s.ShardId) != l.Key || s.SequenceNumberRange.EndingSequenceNumber == nil {
				continue
			}
			if !l.Finished() || len(l.ChildShardIDs) != 1 || !slices.Contains(children, l.ChildShardIDs[0]) {
				t.Errorf("closed shard %s: lease at %s with children %v; want SHARD_END with its merge child", l.Key, l.Checkpoint, l.ChildShardIDs)
			}
		}
	}
	for _, s := range shards {
		if !leases[aws.ToString(s.ShardId)] {
			t.Errorf("shard %s has no lease", aws.ToString(s.ShardId))
		}
	}
	t.Logf("%d duplicates after the kill (after checkpoints: %d)", r.Duplicates, r.DuplicatesAfterCheckpoint)
}

func listAll(ctx context.Context, t *testing.T, kc *kinesis.Client, stream string) []ktypes.Shard {
	t.Helper()
	out, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	return out.Shards
}

// keyOrder checks that the records of each partition key (data "pk:N")
// were first delivered in the order they were written, whatever shard of
// the lineage they were in. Events of all workers are ordered by their time
// stamps (one machine, one clock); re-deliveries are ignored.
//
// Records for which given reports true (poison records handed to a
// dead-letter handler) are never delivered: the key's order skips them.
func keyOrder(evs fleet.Events, given func(data string) bool) error {
	recs := evs.Filter(func(ev fleet.Event) bool { return ev.Type == fleet.EventRecord })
	slices.SortStableFunc(recs, func(a, b fleet.Event) int { return a.Time.Compare(b.Time) })
	last := map[string]int{}
	seen := map[string]bool{}
	var bad []string
	for _, ev := range recs {
		if seen[ev.Data] {
			continue
		}
		seen[ev.Data] = true
		pk, num, _ := strings.Cut(ev.Data, ":")
		n, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("record data %q is not pk:N", ev.Data)
		}
		for given != nil && n > last[pk]+1 && given(pk+":"+strconv.Itoa(last[pk]+1)) {
			last[pk]++
		}
		if n != last[pk]+1 {
			bad = append(bad, fmt.Sprintf("%s:%d (shard %s, %s) after %s:%d", pk, n, ev.Shard, ev.Worker, pk, last[pk]))
		}
		last[pk] = max(last[pk], n)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d records first delivered out of their key's order: %s", len(bad), strings.Join(bad[:min(5, len(bad))], "; "))
	}
	return nil
}
