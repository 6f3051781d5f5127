package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/javakcl"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// writeCounter counts the writes to each key that pass through it.
type writeCounter struct {
	lease.DynamoDBAPI
	mu     sync.Mutex
	writes map[string]int
}

func (c *writeCounter) note(key map[string]types.AttributeValue) {
	k, _ := key["leaseKey"].(*types.AttributeValueMemberS)
	if k == nil {
		return
	}
	c.mu.Lock()
	c.writes[k.Value]++
	c.mu.Unlock()
}

func (c *writeCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[key]
}

func (c *writeCounter) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.note(in.Item)
	return c.DynamoDBAPI.PutItem(ctx, in, opts...)
}

func (c *writeCounter) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.note(in.Key)
	return c.DynamoDBAPI.UpdateItem(ctx, in, opts...)
}

func (c *writeCounter) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.note(in.Key)
	return c.DynamoDBAPI.DeleteItem(ctx, in, opts...)
}

// A table in the Java KCL 3.5's single-table format also holds the leader
// lock, the migration state and the workers' metrics. Two workers taking
// it over split its four leases 2/2, never write to the other rows, and
// remove the graceful hand-off and load the Java workers left.
func TestJava35SingleTableRowsAreNotLeases(t *testing.T) {
	client := testenv.DynamoDB(t)
	table := newTable(t, client)
	ctx := t.Context()
	if err := javakcl.CreateTable(ctx, client, table, javakcl.V35); err != nil {
		t.Fatal(err)
	}
	javaWorkers := []string{"java-a", "java-b"}
	var leaseKeys []string
	for i := range 4 {
		l := javakcl.Lease{
			ShardID: fmt.Sprintf("shardId-%012d", i), Owner: javaWorkers[i%2], Counter: 40 + int64(i),
			Checkpoint: fmt.Sprintf("4959%046d", 700+i), OwnerSwitches: 1, ThroughputKBps: 3.25,
			StartHash: fmt.Sprint(i), EndHash: fmt.Sprint(i + 1),
		}
		if i == 1 {
			l.CheckpointOwner = "java-a" // java-a was handing shard 1 over to java-b
		}
		leaseKeys = append(leaseKeys, l.Key())
		if err := javakcl.Put(ctx, client, table, javakcl.Item(javakcl.V35, l)); err != nil {
			t.Fatal(err)
		}
	}
	rows := javakcl.EntityRows(javaWorkers, nil, time.Now())
	if err := javakcl.Put(ctx, client, table, rows...); err != nil {
		t.Fatal(err)
	}

	wc := &writeCounter{DynamoDBAPI: client, writes: map[string]int{}}
	st, err := lease.NewDynamoStore(conditionalOnly{wc, t}, table)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 4 {
		t.Fatalf("List: %d leases, want the 4 leases alone: %+v", len(ls), ls)
	}
	if ls[1].CheckpointOwner != "java-a" || ls[1].Owner != "java-b" {
		t.Errorf("lease 1 read as owner %q checkpoint owner %q, want java-b and java-a", ls[1].Owner, ls[1].CheckpointOwner)
	}
	if _, err := st.Get(ctx, "Leader"); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get(Leader) = %v, want ErrNotFound", err)
	}

	const ld = 3 * time.Second
	acquired := make(chan string, 16)
	var managers []*lease.Manager
	for _, id := range []string{"go-1", "go-2"} {
		m := lease.NewManager(lease.ManagerConfig{
			Store: st, WorkerID: id, LeaseDuration: ld, RenewInterval: time.Second, TakeInterval: 300 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler), OnAcquired: func(h *lease.Handle) { acquired <- id },
		})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Close(context.Background())
		managers = append(managers, m)
	}
	held := func() (int, int) { return len(managers[0].Held()), len(managers[1].Held()) }
	timeout := time.After(60 * time.Second)
	for a, b := held(); a != 2 || b != 2; a, b = held() {
		select {
		case <-acquired:
		case <-time.After(time.Second): // a take of the other worker's surplus is not signalled here
		case <-timeout:
			t.Fatalf("after 60s the workers hold %d and %d leases, want 2 and 2", a, b)
		}
	}
	for _, r := range rows {
		key := r["leaseKey"].(*types.AttributeValueMemberS).Value
		if n := wc.count(key); n != 0 {
			t.Errorf("%d writes to the non-lease row %s", n, key)
		}
		if got := getRaw(t, client, table, key); !reflect.DeepEqual(got, r) {
			t.Errorf("row %s changed:\n got %v\nwant %v", key, got, r)
		}
	}
	for _, k := range leaseKeys {
		raw := getRaw(t, client, table, k)
		for _, attr := range []string{"checkpointOwner", "throughputKBps"} {
			if v, ok := raw[attr]; ok {
				t.Errorf("%s taken over with %s still %v", k, attr, v)
			}
		}
		if et := raw["entityType"]; !reflect.DeepEqual(et, attrS("LEASE")) {
			t.Errorf("%s: entityType %v, want LEASE kept", k, et)
		}
	}
}

// A lease whose graceful hand-off (checkpointOwner) is in progress is not
// taken while its counter moves, even though its leaseOwner (the next
// owner, which waits) names this very worker: the checkpoint owner still
// works the shard.
func TestCheckpointOwnerHandoffIsWaitedFor(t *testing.T) {
	st, client := newDynamoStore(t)
	table := st.Table()
	l := javakcl.Lease{ShardID: "shardId-000000000000", Owner: "go-1", CheckpointOwner: "java-a", Counter: 5, Checkpoint: "TRIM_HORIZON"}
	if err := javakcl.Put(t.Context(), client, table, javakcl.Item(javakcl.V3, l)); err != nil {
		t.Fatal(err)
	}
	const ld = 2 * time.Second
	acquired := make(chan time.Time, 1)
	m := lease.NewManager(lease.ManagerConfig{
		Store: st, WorkerID: "go-1", LeaseDuration: ld, RenewInterval: 500 * time.Millisecond, TakeInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), OnAcquired: func(*lease.Handle) { acquired <- time.Now() },
	})
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	// The Java checkpoint owner renews for 3 lease durations, then dies.
	var lastRenew time.Time
	tick := time.NewTicker(ld / 4)
	defer tick.Stop()
	for c := int64(5); c < 5+12; c++ {
		select {
		case at := <-acquired:
			t.Fatalf("taken at %v while the Java checkpoint owner renewed it", at)
		case <-tick.C:
		}
		_, err := client.UpdateItem(t.Context(), &dynamodb.UpdateItemInput{
			TableName: aws.String(table), Key: map[string]types.AttributeValue{"leaseKey": attrS(l.Key())},
			UpdateExpression:          aws.String("SET leaseCounter = :n"),
			ConditionExpression:       aws.String("leaseCounter = :c"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":n": attrN(fmt.Sprint(c + 1)), ":c": attrN(fmt.Sprint(c))},
		})
		if err != nil {
			t.Fatalf("renew as the Java worker: %v", err)
		}
		lastRenew = time.Now()
	}
	select {
	case at := <-acquired:
		if at.Sub(lastRenew) < ld {
			t.Errorf("taken %v after the last renewal, before a lease duration (%v)", at.Sub(lastRenew), ld)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("not taken 30s after the Java checkpoint owner stopped")
	}
	got, err := st.Get(t.Context(), l.Key())
	if err != nil || got.Owner != "go-1" || got.CheckpointOwner != "" {
		t.Fatalf("after the take: %+v, %v", got, err)
	}
}

// Every row Shardline writes (the fleet row, and leases through their
// whole life) is read by every Java KCL version, single- and multi-stream,
// and a fleet row of an earlier version gains what Java needs at the next
// heartbeat.
func TestShardlineRowsReadableByJava(t *testing.T) {
	st, client := newDynamoStore(t)
	ctx := t.Context()
	table := st.Table()
	// A fleet row as the previous version wrote it.
	putRaw(t, client, table, map[string]types.AttributeValue{
		"leaseKey": attrS("shardline:worker:*"), "leaseCounter": attrN("9"), "ownerSwitchesSinceCheckpoint": attrN("0"),
		"shardlineHeartbeats": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"old": attrN("4")}},
		"shardlineHandoffs":   &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}},
	})
	if p := javakcl.Problems(javakcl.V2, false, getRaw(t, client, table, "shardline:worker:*")); len(p) == 0 {
		t.Fatal("the checker finds nothing wrong with a fleet row without a checkpoint")
	}
	if _, err := st.Beat(ctx, "w", 0, false, false, nil); err != nil {
		t.Fatal(err)
	}
	l := lease.Lease{Key: "shardId-000000000001", Checkpoint: kcl.TrimHorizon, StartingHashKey: "0", EndingHashKey: "99", ParentShardIDs: []string{"shardId-000000000000"}}
	if err := st.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	check := func(stage string) {
		t.Helper()
		for _, key := range []string{"shardline:worker:*", l.Key} {
			item := getRaw(t, client, table, key)
			for _, v := range javakcl.Versions {
				for _, multi := range []bool{false, true} {
					if multi && key == l.Key {
						continue // single-stream lease keys are not read by a multi-stream application
					}
					if p := javakcl.Problems(v, multi, item); len(p) > 0 {
						t.Errorf("%s: Java %s (multi-stream %v) cannot read %s: %v", stage, v, multi, key, p)
					}
				}
			}
		}
	}
	check("created")
	cur, err := st.Get(ctx, l.Key)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err = st.Take(ctx, cur, "w"); err != nil {
		t.Fatal(err)
	}
	cur.Checkpoint = kcl.NewSequence("123")
	cur.PendingCheckpoint = kcl.NewSequence("456")
	cur.PendingCheckpointState = []byte("s")
	if cur, err = st.UpdateCheckpoint(ctx, cur); err != nil {
		t.Fatal(err)
	}
	cur.Throughput = 7.5
	if cur, err = st.Renew(ctx, cur); err != nil {
		t.Fatal(err)
	}
	check("held with a pending checkpoint")
	cur.Checkpoint, cur.PendingCheckpoint, cur.PendingCheckpointState = kcl.ShardEnd, kcl.ExtendedSequenceNumber{}, nil
	if cur, err = st.UpdateCheckpoint(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, err = st.Release(ctx, cur); err != nil {
		t.Fatal(err)
	}
	check("finished and released")
}
