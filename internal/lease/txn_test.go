package lease_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// newSinkTable creates a table with the string hash key "k", deleted when
// the test ends.
func newSinkTable(t testing.TB, client *dynamodb.Client) string {
	t.Helper()
	name := testenv.UniqueName("sink")
	_, err := client.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
	return name
}

// incr adds one to the counter n of key k.
func incr(table, k string) types.TransactWriteItem {
	return types.TransactWriteItem{Update: &types.Update{
		TableName:                 aws.String(table),
		Key:                       map[string]types.AttributeValue{"k": attrS(k)},
		UpdateExpression:          aws.String("ADD n :one"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": attrN("1")},
	}}
}

// sinkCount reads the counter of key k (0 when absent).
func sinkCount(t *testing.T, client *dynamodb.Client, table, k string) int {
	t.Helper()
	out, err := client.GetItem(t.Context(), &dynamodb.GetItemInput{TableName: aws.String(table),
		Key: map[string]types.AttributeValue{"k": attrS(k)}, ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	n, ok := out.Item["n"].(*types.AttributeValueMemberN)
	if !ok {
		return 0
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// moveTo returns the edit of a checkpoint write to sequence number seq.
func moveTo(seq string) func(*lease.Lease) {
	return func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence(seq); l.OwnerSwitchesSinceCheckpoint = 0 }
}

// txnManager starts a manager for worker id on st with short timings, and
// returns it with the channel its acquired handles arrive on.
func txnManager(t testing.TB, st lease.Store, id string, now func() time.Time) (*lease.Manager, <-chan *lease.Handle) {
	t.Helper()
	got := make(chan *lease.Handle, 16)
	m := lease.NewManager(lease.ManagerConfig{
		Store:         st,
		WorkerID:      id,
		LeaseDuration: 2 * time.Second,
		RenewInterval: 300 * time.Millisecond,
		TakeInterval:  300 * time.Millisecond,
		Logger:        testLogger(),
		Now:           now,
		OnAcquired:    func(h *lease.Handle) { got <- h },
	})
	if err := m.Start(t.Context()); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return m, got
}

func awaitHandle(t testing.TB, ch <-chan *lease.Handle, who string) *lease.Handle {
	t.Helper()
	select {
	case h := <-ch:
		return h
	case <-time.After(60 * time.Second):
		t.Fatalf("%s acquired no lease within 60s", who)
		return nil
	}
}

// heldLease makes a lease table reached through api (which wraps client),
// with the lease "shard-0", and a sink table; it starts a manager "a" and
// returns the store, the sink and a's handle on the lease. Everything is
// torn down when the test ends.
func heldLease(t testing.TB, api lease.DynamoDBAPI, client *dynamodb.Client) (*lease.DynamoStore, string, *lease.Handle) {
	t.Helper()
	table := testenv.UniqueName("leases")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	st, err := lease.NewDynamoStore(api, table)
	if err != nil {
		t.Fatal(err)
	}
	sink := newSinkTable(t, client)
	if err := st.EnsureTable(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(t.Context(), lease.Lease{Key: "shard-0", Checkpoint: kcl.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	m, acquired := txnManager(t, st, "a", nil)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return st, sink, awaitHandle(t, acquired, "a")
}

func TestTransactCommitsWritesWithCheckpoint(t *testing.T) {
	testenv.Require(t)
	client := testenv.DynamoDB(t)
	st, sink, h := heldLease(t, client, client)
	ctx := t.Context()

	nl, err := h.Transact(ctx, moveTo("100"), []types.TransactWriteItem{incr(sink, "x"), incr(sink, "y")})
	if err != nil {
		t.Fatalf("Transact: %v", err)
	}
	stored := getLease(t, st, "shard-0")
	if stored.Checkpoint.SequenceNumber != "100" || stored.Counter != nl.Counter || h.Lease().Counter != nl.Counter {
		t.Fatalf("after Transact: stored %+v, returned counter %d, handle counter %d", stored, nl.Counter, h.Lease().Counter)
	}
	if x, y := sinkCount(t, client, sink, "x"), sinkCount(t, client, sink, "y"); x != 1 || y != 1 {
		t.Fatalf("sink x=%d y=%d, want 1 1", x, y)
	}
	// The handle learnt the counter: a plain checkpoint follows.
	if _, err := h.UpdateCheckpoint(ctx, moveTo("101")); err != nil {
		t.Fatalf("checkpoint after Transact: %v", err)
	}

	// An application condition fails: nothing written, error says which.
	put := types.TransactWriteItem{Put: &types.Put{
		TableName:                           aws.String(sink),
		Item:                                map[string]types.AttributeValue{"k": attrS("x"), "n": attrN("0")},
		ConditionExpression:                 aws.String("attribute_not_exists(k)"),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}}
	_, err = h.Transact(ctx, moveTo("102"), []types.TransactWriteItem{incr(sink, "z"), put})
	var cf *lease.ConditionFailedError
	if !errors.As(err, &cf) || cf.Index != 1 || cf.Code != "ConditionalCheckFailed" || cf.Item == nil {
		t.Fatalf("Transact with a failing condition: %v (%+v), want ConditionFailedError at 1 with the item", err, cf)
	}
	if errors.Is(err, kcl.ErrLeaseLost) || !h.Valid() {
		t.Fatalf("a failed application condition lost the lease: %v", err)
	}
	if z := sinkCount(t, client, sink, "z"); z != 0 {
		t.Fatalf("z=%d after a cancelled transaction, want 0", z)
	}
	if cp := getLease(t, st, "shard-0").Checkpoint.SequenceNumber; cp != "101" {
		t.Fatalf("checkpoint %s after a cancelled transaction, want 101", cp)
	}

	// Too many writes are refused before reaching DynamoDB.
	many := make([]types.TransactWriteItem, lease.MaxTransactItems+1)
	for i := range many {
		many[i] = incr(sink, fmt.Sprint("m", i))
	}
	if _, err := h.Transact(ctx, moveTo("103"), many); !errors.Is(err, lease.ErrTransactTooLarge) {
		t.Fatalf("Transact with %d writes: %v, want ErrTransactTooLarge", len(many), err)
	}
	if _, err := h.Transact(ctx, moveTo("103"), many[:lease.MaxTransactItems]); err != nil {
		t.Fatalf("Transact with %d writes: %v", lease.MaxTransactItems, err)
	}
	if got := sinkCount(t, client, sink, "m98"); got != 1 {
		t.Fatalf("m98=%d, want 1", got)
	}
}

// stoppableClock is a clock that can stand still and then go on from where
// it stopped: a worker frozen with its clock (a paused VM) believes on
// resuming that no time passed, the worst case for its own expiry checks.
type stoppableClock struct {
	mu      sync.Mutex
	stopped bool
	at      time.Time     // reading while stopped
	behind  time.Duration // how far it runs behind time.Now
}

func (c *stoppableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.at
	}
	return time.Now().Add(-c.behind)
}

func (c *stoppableClock) stop() {
	at := c.Now()
	c.mu.Lock()
	c.stopped, c.at = true, at
	c.mu.Unlock()
}

func (c *stoppableClock) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.behind = time.Since(c.at)
	c.stopped = false
}

// TestTransactZombieCannotCommit freezes worker a (heartbeats stop, clock
// stands still) past its lease; b fences it and takes the lease over. When
// a resumes it still believes its lease valid, and its transaction reaches
// DynamoDB, which refuses it: nothing of it is written.
func TestTransactZombieCannotCommit(t *testing.T) {
	testenv.Require(t)
	client := testenv.DynamoDB(t)
	table := newTable(t, client)
	sink := newSinkTable(t, client)
	ctx := t.Context()
	// a's calls go through fault injection: frozen, every call of a fails
	// as with connections refused, except its transactions.
	frozen, err := faults.NewDynamoDB(faults.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fa := testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint(), func(o *dynamodb.Options) { o.HTTPClient = frozen })
	txns := func() int64 { return frozen.Stats()["TransactWriteItems"].Calls }
	sa, err := lease.NewDynamoStore(fa, table)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := lease.NewDynamoStore(client, table)
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sa.Create(ctx, lease.Lease{Key: "shard-0", Checkpoint: kcl.TrimHorizon}); err != nil {
		t.Fatal(err)
	}
	clock := &stoppableClock{}
	a, acqA := txnManager(t, sa, "a", clock.Now)
	defer a.Close(context.Background())
	ha := awaitHandle(t, acqA, "a")
	if _, err := ha.Transact(ctx, moveTo("100"), []types.TransactWriteItem{incr(sink, "a-before")}); err != nil {
		t.Fatalf("a's transaction before the freeze: %v", err)
	}

	frozen.Outage(faults.Refuse, "TransactWriteItems")
	clock.stop()
	b, acqB := txnManager(t, sb, "b", nil)
	defer b.Close(context.Background())
	hb := awaitHandle(t, acqB, "b")
	if l := hb.Lease(); l.Owner != "b" || l.Checkpoint.SequenceNumber != "100" {
		t.Fatalf("b took %+v, want owner b from checkpoint 100", l)
	}
	if _, err := hb.Transact(ctx, moveTo("200"), []types.TransactWriteItem{incr(sink, "b")}); err != nil {
		t.Fatalf("b's transaction: %v", err)
	}

	clock.resume()
	if !ha.Valid() {
		t.Fatal("a's handle is invalid by a's own clock: the test would not reach DynamoDB")
	}
	before := txns()
	_, err = ha.Transact(ctx, moveTo("150"), []types.TransactWriteItem{incr(sink, "zombie")})
	if !errors.Is(err, kcl.ErrLeaseLost) {
		t.Fatalf("zombie's transaction: %v, want an error matching kcl.ErrLeaseLost", err)
	}
	var ce *lease.ConflictError
	if !errors.As(err, &ce) || ce.Current == nil || ce.Current.Owner != "b" {
		t.Fatalf("zombie's transaction: %v, want DynamoDB's refusal showing owner b", err)
	}
	if txns() == before {
		t.Fatal("the zombie's transaction never reached DynamoDB")
	}
	if n := sinkCount(t, client, sink, "zombie"); n != 0 {
		t.Fatalf("zombie's write stored (%d)", n)
	}
	if l := getLease(t, sb, "shard-0"); l.Owner != "b" || l.Checkpoint.SequenceNumber != "200" {
		t.Fatalf("lease after the zombie: %+v, want b's checkpoint 200", l)
	}
	if !isClosed(ha.Lost()) {
		t.Error("the zombie's handle is not lost after DynamoDB refused it")
	}
	frozen.Restore()
}

// faultyClient returns a DynamoDB client for the emulator whose calls go
// through fault injection, without the SDK's own retries (as if the SDK had
// exhausted them), and its injector.
func faultyClient(t *testing.T) (*dynamodb.Client, *faults.Client) {
	t.Helper()
	fc, err := faults.NewDynamoDB(faults.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.NewDynamoDBClient(testenv.DynamoDBEndpoint(), func(o *dynamodb.Options) {
		o.HTTPClient = fc
		o.RetryMaxAttempts = 1
	}), fc
}

func TestTransactSettlesAnUnknownOutcome(t *testing.T) {
	testenv.Require(t)
	client := testenv.DynamoDB(t)
	lc, fc := faultyClient(t)
	st, sink, h := heldLease(t, lc, client)
	ctx := t.Context()

	// Applied, answer lost (the connection reset while awaiting it):
	// Transact learns it was committed.
	fc.FailNext("TransactWriteItems", faults.Reset, true, 1)
	if _, err := h.Transact(ctx, moveTo("100"), []types.TransactWriteItem{incr(sink, "x")}); err != nil {
		t.Fatalf("Transact whose answer was lost after applying: %v, want success", err)
	}
	if x := sinkCount(t, client, sink, "x"); x != 1 {
		t.Fatalf("x=%d, want 1", x)
	}
	// Lost before applying: Transact fails, nothing written, lease kept.
	fc.FailNext("TransactWriteItems", faults.Reset, false, 1)
	_, err := h.Transact(ctx, moveTo("101"), []types.TransactWriteItem{incr(sink, "x")})
	if err == nil || errors.Is(err, lease.ErrOutcomeUnknown) || errors.Is(err, kcl.ErrLeaseLost) {
		t.Fatalf("Transact lost before applying: %v, want a plain failure", err)
	}
	if x := sinkCount(t, client, sink, "x"); x != 1 {
		t.Fatalf("x=%d, want 1", x)
	}
	// Retried (the batch delivered again), it commits once; the handle
	// knows every counter on the way.
	if _, err := h.Transact(ctx, moveTo("101"), []types.TransactWriteItem{incr(sink, "x")}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, err := h.UpdateCheckpoint(ctx, moveTo("102")); err != nil {
		t.Fatalf("checkpoint after the settled transactions: %v", err)
	}
	if x, l := sinkCount(t, client, sink, "x"), getLease(t, st, "shard-0"); x != 2 || l.Checkpoint.SequenceNumber != "102" {
		t.Fatalf("x=%d checkpoint %s, want 2 and 102", x, l.Checkpoint.SequenceNumber)
	}
}

func TestTransactRetriesConflicts(t *testing.T) {
	testenv.Require(t)
	client := testenv.DynamoDB(t)
	cc, fc := faultyClient(t)
	st, sink, h := heldLease(t, cc, client)
	fc.FailNext("TransactWriteItems", faults.TxConflict, false, 3)
	if _, err := h.Transact(t.Context(), moveTo("100"), []types.TransactWriteItem{incr(sink, "x")}); err != nil {
		t.Fatalf("Transact through 3 conflicts: %v", err)
	}
	if c := fc.Stats()["TransactWriteItems"].Calls; c != 4 {
		t.Errorf("%d attempts, want 4", c)
	}
	if x, l := sinkCount(t, client, sink, "x"), getLease(t, st, "shard-0"); x != 1 || l.Checkpoint.SequenceNumber != "100" {
		t.Fatalf("x=%d checkpoint %s after the retries, want 1 and 100", x, l.Checkpoint.SequenceNumber)
	}
}
