package lease_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/javakcl"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/lease/storetest"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// conditionalOnly passes calls through and fails the test on any write
// without a condition.
type conditionalOnly struct {
	lease.DynamoDBAPI
	t *testing.T
}

func (c conditionalOnly) check(op string, cond *string) {
	if aws.ToString(cond) == "" {
		c.t.Errorf("%s without a condition expression", op)
	}
}

func (c conditionalOnly) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.check("PutItem", in.ConditionExpression)
	return c.DynamoDBAPI.PutItem(ctx, in, opts...)
}

func (c conditionalOnly) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.check("UpdateItem", in.ConditionExpression)
	return c.DynamoDBAPI.UpdateItem(ctx, in, opts...)
}

func (c conditionalOnly) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.check("DeleteItem", in.ConditionExpression)
	return c.DynamoDBAPI.DeleteItem(ctx, in, opts...)
}

// newTable returns a unique table name, deleted when the test ends.
func newTable(t *testing.T, client *dynamodb.Client) string {
	t.Helper()
	name := testenv.UniqueName("leases")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
	})
	return name
}

// newDynamoStore returns a store on a new table, created.
func newDynamoStore(t *testing.T) (*lease.DynamoStore, *dynamodb.Client) {
	t.Helper()
	client := testenv.DynamoDB(t)
	s, err := lease.NewDynamoStore(conditionalOnly{client, t}, newTable(t, client))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureTable(t.Context()); err != nil {
		t.Fatalf("EnsureTable: %v", err)
	}
	return s, client
}

func TestDynamoStoreConformance(t *testing.T) {
	testenv.Require(t)
	storetest.Run(t, func(t *testing.T) lease.Store {
		s, _ := newDynamoStore(t)
		return s
	})
}

func getRaw(t *testing.T, client *dynamodb.Client, table, key string) map[string]types.AttributeValue {
	t.Helper()
	out, err := client.GetItem(t.Context(), &dynamodb.GetItemInput{
		TableName:      aws.String(table),
		Key:            map[string]types.AttributeValue{"leaseKey": &types.AttributeValueMemberS{Value: key}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	return out.Item
}

func putRaw(t *testing.T, client *dynamodb.Client, table string, item map[string]types.AttributeValue) {
	t.Helper()
	if _, err := client.PutItem(t.Context(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
		t.Fatalf("PutItem: %v", err)
	}
}

func attrS(v string) types.AttributeValue     { return &types.AttributeValueMemberS{Value: v} }
func attrN(v string) types.AttributeValue     { return &types.AttributeValueMemberN{Value: v} }
func attrSS(v ...string) types.AttributeValue { return &types.AttributeValueMemberSS{Value: v} }

// A table written by the Java KCL 2.x reads, and writes leave the
// attributes Shardline does not know alone.
func TestDynamoStoreReadsJavaKCLItems(t *testing.T) {
	st, client := newDynamoStore(t)
	ctx := t.Context()
	table := st.Table()
	putRaw(t, client, table, map[string]types.AttributeValue{
		"leaseKey":                     attrS("shardId-000000000002"),
		"leaseOwner":                   attrS("java-worker-1"),
		"leaseCounter":                 attrN("1234"),
		"checkpoint":                   attrS("TRIM_HORIZON"),
		"checkpointSubSequenceNumber":  attrN("0"),
		"ownerSwitchesSinceCheckpoint": attrN("3"),
		"parentShardId":                attrSS("shardId-000000000001", "shardId-000000000000"),
		"startingHashKey":              attrS("0"),
		"endingHashKey":                attrS("170141183460469231731687303715884105727"),
		// Attributes of newer Java versions that Shardline ignores.
		"throughputKBps":      attrN("12.5"),
		"leaseDurationMillis": attrN("10000"),
		"checkpointOwner":     attrS("java-worker-1"),
		"someFutureAttribute": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"x": attrN("1")}},
	})
	putRaw(t, client, table, map[string]types.AttributeValue{
		// An unowned, never-checkpointed lease with a pending checkpoint,
		// lacking the attributes old versions did not write.
		"leaseKey":                           attrS("shardId-000000000001"),
		"leaseCounter":                       attrN("7"),
		"checkpoint":                         attrS("49590338271490256608559692538361571095921575989136588898"),
		"checkpointSubSequenceNumber":        attrN("5"),
		"pendingCheckpoint":                  attrS("49590338271490256608559692538361571095921575989136588899"),
		"pendingCheckpointSubSequenceNumber": attrN("0"),
		"pendingCheckpointState":             &types.AttributeValueMemberB{Value: []byte{0, 0xfe}},
		"childShardIds":                      attrSS("shardId-000000000002"),
	})
	want := []lease.Lease{
		{
			Key:                    "shardId-000000000001",
			Counter:                7,
			Checkpoint:             kcl.ExtendedSequenceNumber{SequenceNumber: "49590338271490256608559692538361571095921575989136588898", SubSequenceNumber: 5},
			PendingCheckpoint:      kcl.NewSequence("49590338271490256608559692538361571095921575989136588899"),
			PendingCheckpointState: []byte{0, 0xfe},
			ChildShardIDs:          []string{"shardId-000000000002"},
		},
		{
			Key:                          "shardId-000000000002",
			Owner:                        "java-worker-1",
			Counter:                      1234,
			Checkpoint:                   kcl.TrimHorizon,
			OwnerSwitchesSinceCheckpoint: 3,
			ParentShardIDs:               []string{"shardId-000000000000", "shardId-000000000001"},
			StartingHashKey:              "0",
			EndingHashKey:                "170141183460469231731687303715884105727",
			CheckpointOwner:              "java-worker-1",
		},
	}
	got, err := st.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("List:\n got %+v\nwant %+v", got, want)
	}
	one, err := st.Get(ctx, "shardId-000000000002")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if fmt.Sprintf("%+v", one) != fmt.Sprintf("%+v", want[1]) {
		t.Fatalf("Get:\n got %+v\nwant %+v", one, want[1])
	}

	// Taking over from the Java worker keeps the attributes it wrote, but
	// for the graceful hand-off it ends and the load it measured.
	taken, err := st.Take(ctx, one, "go-worker")
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if taken.Counter != 1235 || taken.OwnerSwitchesSinceCheckpoint != 4 || taken.Owner != "go-worker" || taken.CheckpointOwner != "" {
		t.Errorf("taken lease = %+v", taken)
	}
	raw := getRaw(t, client, table, one.Key)
	for _, attr := range []string{"leaseDurationMillis", "someFutureAttribute"} {
		if _, ok := raw[attr]; !ok {
			t.Errorf("Take dropped the attribute %s", attr)
		}
	}
	for _, attr := range []string{"throughputKBps", "checkpointOwner"} {
		if v, ok := raw[attr]; ok {
			t.Errorf("Take left the attribute %s: %v", attr, v)
		}
	}
}

// The items Shardline writes have the Java KCL's attribute types, and leave
// out what is empty.
func TestDynamoStoreItemFormat(t *testing.T) {
	st, client := newDynamoStore(t)
	ctx := t.Context()
	l := lease.Lease{
		Key:                    "shardId-000000000003",
		Owner:                  "w",
		Checkpoint:             kcl.ExtendedSequenceNumber{SequenceNumber: "123", SubSequenceNumber: 4},
		PendingCheckpoint:      kcl.NewSequence("456"),
		PendingCheckpointState: []byte("state"),
		ParentShardIDs:         []string{"shardId-000000000001"},
		ChildShardIDs:          []string{"shardId-000000000004", "shardId-000000000005"},
		StartingHashKey:        "1",
		EndingHashKey:          "2",
	}
	if err := st.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	raw := getRaw(t, client, st.Table(), l.Key)
	wantTypes := map[string]string{
		"leaseKey": "S", "leaseOwner": "S", "leaseCounter": "N", "checkpoint": "S",
		"checkpointSubSequenceNumber": "N", "pendingCheckpoint": "S", "pendingCheckpointSubSequenceNumber": "N",
		"pendingCheckpointState": "B", "ownerSwitchesSinceCheckpoint": "N", "parentShardId": "SS",
		"childShardIds": "SS", "startingHashKey": "S", "endingHashKey": "S",
	}
	for attr, want := range wantTypes {
		if got := javakcl.TypeName(raw[attr]); got != want {
			t.Errorf("attribute %s has type %s, want %s", attr, got, want)
		}
	}
	if len(raw) != len(wantTypes) {
		t.Errorf("item has %d attributes, want %d: %v", len(raw), len(wantTypes), raw)
	}

	cur, err := st.Get(ctx, l.Key)
	if err != nil {
		t.Fatal(err)
	}
	cur.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
	if cur, err = st.UpdateCheckpoint(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if cur, err = st.Release(ctx, cur); err != nil {
		t.Fatal(err)
	}
	cur.ParentShardIDs, cur.ChildShardIDs = nil, nil
	if _, err = st.UpdateShardInfo(ctx, cur); err != nil {
		t.Fatal(err)
	}
	raw = getRaw(t, client, st.Table(), l.Key)
	for _, attr := range []string{"leaseOwner", "pendingCheckpoint", "pendingCheckpointSubSequenceNumber", "pendingCheckpointState", "parentShardId", "childShardIds"} {
		if v, ok := raw[attr]; ok {
			t.Errorf("attribute %s still present: %v", attr, v)
		}
	}
	if got := raw["leaseCounter"].(*types.AttributeValueMemberN).Value; got != "3" {
		t.Errorf("leaseCounter = %s, want 3", got)
	}

	if _, err := st.Beat(ctx, "w", 0, true, true, nil); err != nil {
		t.Fatal(err)
	}
	raw = getRaw(t, client, st.Table(), "shardline:worker:*")
	hb, _ := raw["shardlineHeartbeats"].(*types.AttributeValueMemberM)
	if hb == nil || fmt.Sprint(hb.Value["w"]) != fmt.Sprint(attrN("1")) ||
		fmt.Sprint(raw["leaseCounter"], raw["ownerSwitchesSinceCheckpoint"], raw["shardlineGeneration"], raw["shardlineWithdrawn"]) !=
			fmt.Sprint(attrN("1"), attrN("0"), attrN("1"), &types.AttributeValueMemberSS{Value: []string{"w"}}) {
		t.Errorf("fleet row = %v", raw)
	}
}

func TestDynamoStoreEnsureTableConcurrently(t *testing.T) {
	client := testenv.DynamoDB(t)
	table := newTable(t, client)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	start := make(chan struct{})
	for i := range errs {
		wg.Go(func() {
			st, err := lease.NewDynamoStore(client, table, lease.WithDynamoTablePollInterval(20*time.Millisecond))
			if err != nil {
				errs[i] = err
				return
			}
			<-start
			errs[i] = st.EnsureTable(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("EnsureTable %d: %v", i, err)
		}
	}
	out, err := client.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	if out.Table.TableStatus != types.TableStatusActive {
		t.Errorf("table status %s", out.Table.TableStatus)
	}
	if bm := out.Table.BillingModeSummary; bm == nil || bm.BillingMode != types.BillingModePayPerRequest {
		t.Errorf("billing mode summary %+v, want PAY_PER_REQUEST", bm)
	}
}

func TestDynamoStoreMissingTable(t *testing.T) {
	client := testenv.DynamoDB(t)
	st, err := lease.NewDynamoStore(client, testenv.UniqueName("missing"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	l := lease.Lease{Key: "shardId-0", Owner: "a"}
	calls := map[string]func() error{
		"List":             func() error { _, err := st.List(ctx); return err },
		"Get":              func() error { _, err := st.Get(ctx, l.Key); return err },
		"Create":           func() error { return st.Create(ctx, l) },
		"Renew":            func() error { _, err := st.Renew(ctx, l); return err },
		"Take":             func() error { _, err := st.Take(ctx, l, "b"); return err },
		"Release":          func() error { _, err := st.Release(ctx, l); return err },
		"UpdateCheckpoint": func() error { _, err := st.UpdateCheckpoint(ctx, l); return err },
		"UpdateShardInfo":  func() error { _, err := st.UpdateShardInfo(ctx, l); return err },
		"Delete":           func() error { return st.Delete(ctx, l) },
		"Beat":             func() error { _, err := st.Beat(ctx, "a", 0, false, false, nil); return err },
		"ReadFleet":        func() error { _, err := st.ReadFleet(ctx); return err },
		"Fence":            func() error { _, err := st.Fence(ctx, "a", 1); return err },
		"ListStale":        func() error { _, err := st.ListStale(ctx); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, kcl.ErrTableNotFound) {
			t.Errorf("%s: %v, want kcl.ErrTableNotFound", name, err)
		}
		var rnf *types.ResourceNotFoundException
		if !errors.As(err, &rnf) {
			t.Errorf("%s: %v does not wrap the SDK's error", name, err)
		}
		if errors.Is(err, lease.ErrConflict) || errors.Is(err, lease.ErrNotFound) {
			t.Errorf("%s: %v matches ErrConflict or ErrNotFound", name, err)
		}
	}
}

func TestDynamoStorePagination(t *testing.T) {
	st, _ := newDynamoStore(t)
	lease.SetScanPageSize(st, 2)
	ctx := t.Context()
	var keys []string
	for i := 9; i >= 0; i-- {
		k := fmt.Sprintf("shardId-%012d", i)
		keys = append(keys, k)
		if err := st.Create(ctx, lease.Lease{Key: k}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, err := st.Beat(ctx, fmt.Sprint("w", i), 0, false, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Sort(keys)
	ls, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range ls {
		got = append(got, l.Key)
	}
	if !slices.Equal(got, keys) {
		t.Errorf("List keys = %v, want %v", got, keys)
	}
	f, err := st.ReadFleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.Members) != "map[w0:1 w3:1 w6:1 w9:1]" {
		t.Errorf("fleet members = %v", f.Members)
	}
}

func TestDynamoStoreRefusesForeignKeySchema(t *testing.T) {
	client := testenv.DynamoDB(t)
	table := newTable(t, client)
	_, err := client.CreateTable(t.Context(), &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := lease.NewDynamoStore(client, table)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureTable(t.Context()); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Fatalf("EnsureTable on a table keyed by id: %v, want kcl.ErrInvalidConfig", err)
	}
}

// Unit tests below use a fake client and run under -short.

// fakeDynamo implements the calls a test sets; the others panic through
// the nil embedded interface, which fails the test.
type fakeDynamo struct {
	lease.DynamoDBAPI
	describe func() (*dynamodb.DescribeTableOutput, error)
	create   func() (*dynamodb.CreateTableOutput, error)
	update   func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error)
}

func (f *fakeDynamo) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return f.describe()
}

func (f *fakeDynamo) CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	return f.create()
}

func (f *fakeDynamo) UpdateItem(_ context.Context, in *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return f.update(in)
}

func described(status types.TableStatus) *dynamodb.DescribeTableOutput {
	return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{
		TableStatus: status,
		KeySchema:   []types.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeHash}},
	}}
}

func TestNewDynamoStoreValidates(t *testing.T) {
	for name, mk := range map[string]func() (*lease.DynamoStore, error){
		"nil client":  func() (*lease.DynamoStore, error) { return lease.NewDynamoStore(nil, "t") },
		"empty table": func() (*lease.DynamoStore, error) { return lease.NewDynamoStore(&fakeDynamo{}, "") },
		"nil logger": func() (*lease.DynamoStore, error) {
			return lease.NewDynamoStore(&fakeDynamo{}, "t", lease.WithDynamoLogger(nil))
		},
		"zero interval": func() (*lease.DynamoStore, error) {
			return lease.NewDynamoStore(&fakeDynamo{}, "t", lease.WithDynamoTablePollInterval(0))
		},
	} {
		if _, err := mk(); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("%s: %v, want kcl.ErrInvalidConfig", name, err)
		}
	}
}

func TestDynamoStoreEnsureTableWaitsForActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var describes, creates int
		f := &fakeDynamo{
			describe: func() (*dynamodb.DescribeTableOutput, error) {
				describes++
				switch describes {
				case 1, 2: // missing, then not visible yet after CreateTable
					return nil, &types.ResourceNotFoundException{Message: aws.String("no table")}
				case 3, 4:
					return described(types.TableStatusCreating), nil
				}
				return described(types.TableStatusActive), nil
			},
			create: func() (*dynamodb.CreateTableOutput, error) {
				creates++
				return &dynamodb.CreateTableOutput{}, nil
			},
		}
		st, err := lease.NewDynamoStore(f, "t", lease.WithDynamoTablePollInterval(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := st.EnsureTable(t.Context()); err != nil {
			t.Fatalf("EnsureTable: %v", err)
		}
		if creates != 1 || describes != 5 {
			t.Errorf("CreateTable called %d times, DescribeTable %d; want 1 and 5", creates, describes)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Errorf("EnsureTable took %v, want 3 poll intervals", d)
		}
	})
}

func TestDynamoStoreEnsureTableGivesUpWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDynamo{
			describe: func() (*dynamodb.DescribeTableOutput, error) { return described(types.TableStatusCreating), nil },
		}
		st, err := lease.NewDynamoStore(f, "t")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if err := st.EnsureTable(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("EnsureTable on a table that stays CREATING: %v, want DeadlineExceeded", err)
		}
	})
}

func TestDynamoStoreEnsureTableLosesCreateRace(t *testing.T) {
	describes := 0
	f := &fakeDynamo{
		describe: func() (*dynamodb.DescribeTableOutput, error) {
			describes++
			if describes == 1 {
				return nil, &types.ResourceNotFoundException{}
			}
			return described(types.TableStatusActive), nil
		},
		create: func() (*dynamodb.CreateTableOutput, error) {
			return nil, &types.ResourceInUseException{Message: aws.String("table exists")}
		},
	}
	st, err := lease.NewDynamoStore(f, "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureTable(t.Context()); err != nil {
		t.Fatalf("EnsureTable after losing the race to create: %v", err)
	}
}

func TestDynamoStoreClassifiesErrors(t *testing.T) {
	var next error
	f := &fakeDynamo{update: func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) { return nil, next }}
	st, err := lease.NewDynamoStore(f, "t")
	if err != nil {
		t.Fatal(err)
	}
	l := lease.Lease{Key: "shardId-0", Owner: "a", Counter: 1}
	renew := func(err error) error {
		next = err
		_, err = st.Renew(t.Context(), l)
		return err
	}

	for _, thr := range []error{
		&types.ProvisionedThroughputExceededException{},
		&types.RequestLimitExceeded{},
		&types.ThrottlingException{},
	} {
		err := renew(thr)
		if !errors.Is(err, kcl.ErrThrottled) || !errors.As(err, new(interface{ ErrorCode() string })) {
			t.Errorf("%T: %v, want kcl.ErrThrottled wrapping the SDK error", thr, err)
		}
	}

	err = renew(&types.ConditionalCheckFailedException{Item: map[string]types.AttributeValue{
		"leaseKey": attrS("shardId-0"), "leaseOwner": attrS("b"), "leaseCounter": attrN("5"), "parentShardId": attrSS("p2", "p1"),
	}})
	var ce *lease.ConflictError
	if !errors.As(err, &ce) || ce.Op != "renew" || ce.Key != "shardId-0" || ce.Current == nil {
		t.Fatalf("conditional check failure: %v, want a *ConflictError with Current", err)
	}
	if ce.Current.Owner != "b" || ce.Current.Counter != 5 || !slices.Equal(ce.Current.ParentShardIDs, []string{"p1", "p2"}) {
		t.Errorf("Current = %+v", *ce.Current)
	}

	err = renew(&types.ConditionalCheckFailedException{})
	if !errors.As(err, &ce) || ce.Current != nil {
		t.Errorf("conditional check failure without item: %v, want a conflict with nil Current", err)
	}

	other := errors.New("boom")
	if err := renew(other); !errors.Is(err, other) || errors.Is(err, lease.ErrConflict) {
		t.Errorf("other error: %v", err)
	}

	// The request is fenced by counter and owner.
	next = nil
	f.update = func(in *dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
		if got := render(aws.ToString(in.ConditionExpression), in); got != "leaseCounter = 1 AND leaseOwner = a" {
			t.Errorf("condition %q", got)
		}
		if in.ReturnValues != types.ReturnValueAllNew || in.ReturnValuesOnConditionCheckFailure != types.ReturnValuesOnConditionCheckFailureAllOld {
			t.Errorf("return values %q, %q", in.ReturnValues, in.ReturnValuesOnConditionCheckFailure)
		}
		return &dynamodb.UpdateItemOutput{Attributes: map[string]types.AttributeValue{
			"leaseKey": attrS("shardId-0"), "leaseOwner": attrS("a"), "leaseCounter": attrN("2"),
		}}, nil
	}
	got, err := st.Renew(t.Context(), l)
	if err != nil || got.Counter != 2 {
		t.Errorf("Renew = %+v, %v", got, err)
	}

	// A malformed item is an error, not a zero lease.
	f.update = func(*dynamodb.UpdateItemInput) (*dynamodb.UpdateItemOutput, error) {
		return &dynamodb.UpdateItemOutput{Attributes: map[string]types.AttributeValue{
			"leaseKey": attrS("shardId-0"), "leaseCounter": attrS("two"),
		}}, nil
	}
	if _, err := st.Renew(t.Context(), l); err == nil {
		t.Error("Renew returning a malformed item: no error")
	}
}

// render replaces the placeholders of an expression of in with the names
// and values they stand for.
func render(expr string, in *dynamodb.UpdateItemInput) string {
	type pair struct{ from, to string }
	var ps []pair
	for p, name := range in.ExpressionAttributeNames {
		ps = append(ps, pair{p, name})
	}
	for p, v := range in.ExpressionAttributeValues {
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			ps = append(ps, pair{p, v.Value})
		case *types.AttributeValueMemberN:
			ps = append(ps, pair{p, v.Value})
		}
	}
	// Longest placeholders first, so that :v1 does not match inside :v10.
	slices.SortFunc(ps, func(a, b pair) int { return len(b.from) - len(a.from) })
	for _, p := range ps {
		expr = strings.ReplaceAll(expr, p.from, p.to)
	}
	return expr
}
