package lease

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/kcl"
)

// Attribute names of the lease table. They are those of the Java KCL 2.x, so
// that either library reads a table the other wrote.
const (
	attrLeaseKey        = "leaseKey"
	attrLeaseOwner      = "leaseOwner"
	attrLeaseCounter    = "leaseCounter"
	attrCheckpoint      = "checkpoint"
	attrCheckpointSub   = "checkpointSubSequenceNumber"
	attrCheckpointTime  = "shardlineCheckpointTimestamp" // AT_TIMESTAMP checkpoints only
	attrPending         = "pendingCheckpoint"
	attrPendingSub      = "pendingCheckpointSubSequenceNumber"
	attrPendingState    = "pendingCheckpointState"
	attrOwnerSwitches   = "ownerSwitchesSinceCheckpoint"
	attrParentShardIDs  = "parentShardId"
	attrChildShardIDs   = "childShardIds"
	attrStartingHashKey = "startingHashKey"
	attrEndingHashKey   = "endingHashKey"
	attrHeartbeats      = "shardlineHeartbeats" // fleet row only
	attrWithdrawn       = "shardlineWithdrawn"  // fleet row only
	attrHandoffs        = "shardlineHandoffs"   // fleet row only
	attrGeneration      = "shardlineGeneration" // fleet row only
	attrHandoffTo       = "shardlineHandoffTo"
	attrThroughput      = "shardlineThroughput"
	attrNudge           = "shardlineNudge"
	attrStreamName      = "streamName" // multi-stream leases: the stream identifier (see SplitKey)
	attrShardID         = "shardId"    // multi-stream leases

	// Attributes of the Java KCL 3.x that Shardline reads or removes.
	attrEntityType      = "entityType"      // 3.5: the kind of row; absent or entityLease on leases
	attrCheckpointOwner = "checkpointOwner" // 3.x: the worker finishing a graceful hand-off
	attrThroughputKBps  = "throughputKBps"  // 3.x: the owner's measured load
)

// entityLease is the entityType of a lease row in the Java KCL 3.5's
// single-table format; rows of any other entityType (leader lock, worker
// metrics, migration state, stream info) are not leases.
const entityLease = "LEASE"

// isLeaseItem reports whether an item is a shard lease: not a Shardline
// worker row, and without an entityType other than a lease's.
func isLeaseItem(item map[string]types.AttributeValue) bool {
	if k, ok := item[attrLeaseKey].(*types.AttributeValueMemberS); ok && IsWorkerKey(k.Value) {
		return false
	}
	switch v := item[attrEntityType].(type) {
	case nil, *types.AttributeValueMemberNULL:
		return true
	case *types.AttributeValueMemberS:
		return v.Value == entityLease
	}
	return false
}

// DynamoStore is the [Store] kept in a DynamoDB table laid out like the
// lease table of the Java KCL 2.x: hash key leaseKey (a string), on-demand
// billing, and the attribute names of the Java library, so that an
// application moving from it keeps its checkpoints. Attributes it does not
// know are ignored on reading and left alone on writing.
//
// Every write is a conditional write, fenced by leaseCounter (and leaseOwner
// where the [Store] method says so); a refusal is a *[ConflictError] whose
// Current is the item as stored. Operations on a missing table fail with an
// error matching kcl.ErrTableNotFound, throttling that outlasted the SDK's
// retries with one matching kcl.ErrThrottled. Empty strings are not stored:
// an empty Owner, checkpoint or hash key is an absent attribute, as are empty
// shard ID sets and an empty pending checkpoint state.
//
// A DynamoStore is safe for concurrent use.
type DynamoStore struct {
	client       DynamoDBAPI
	table        string
	log          *slog.Logger
	pollInterval time.Duration
	scanLimit    int32 // items per Scan page; 0 lets DynamoDB choose
}

var _ Store = (*DynamoStore)(nil)

// DynamoOption configures a [DynamoStore]. An option refuses a bad value by
// returning an error; [NewDynamoStore] then fails.
type DynamoOption func(*DynamoStore) error

// WithDynamoLogger sets the logger (default: discard). The store logs table
// creation and decoding problems.
func WithDynamoLogger(l *slog.Logger) DynamoOption {
	return func(s *DynamoStore) error {
		if l == nil {
			return fmt.Errorf("%w: lease: nil logger", kcl.ErrInvalidConfig)
		}
		s.log = l
		return nil
	}
}

// WithDynamoTablePollInterval sets how often EnsureTable asks DynamoDB
// whether a new table is ACTIVE yet (default 250ms).
func WithDynamoTablePollInterval(d time.Duration) DynamoOption {
	return func(s *DynamoStore) error {
		if d <= 0 {
			return fmt.Errorf("%w: lease: table poll interval %v is not positive", kcl.ErrInvalidConfig, d)
		}
		s.pollInterval = d
		return nil
	}
}

// NewDynamoStore returns a store on the given table, reached through client
// (usually a *dynamodb.Client). It does not contact DynamoDB; call
// EnsureTable to create the table if needed. Errors match
// kcl.ErrInvalidConfig.
func NewDynamoStore(client DynamoDBAPI, table string, opts ...DynamoOption) (*DynamoStore, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: lease: nil DynamoDB client", kcl.ErrInvalidConfig)
	}
	if table == "" {
		return nil, fmt.Errorf("%w: lease: empty table name", kcl.ErrInvalidConfig)
	}
	s := &DynamoStore{
		client:       client,
		table:        table,
		log:          slog.New(slog.DiscardHandler),
		pollInterval: 250 * time.Millisecond,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Table returns the table's name.
func (s *DynamoStore) Table() string { return s.table }

// EnsureTable creates the table if it does not exist and waits, polling
// DescribeTable, until it is ACTIVE or ctx ends. Many workers may call it at
// once: the losers of the race to create the table wait like the winner. A
// table whose key schema is not a string hash key named leaseKey is refused
// with an error matching kcl.ErrInvalidConfig.
func (s *DynamoStore) EnsureTable(ctx context.Context) error {
	out, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)})
	switch {
	case err == nil:
		if ready, err := s.tableReady(out.Table); ready || err != nil {
			return err
		}
	case awsx.Classify(err) == awsx.NotFound:
		s.log.InfoContext(ctx, "lease: creating lease table", "table", s.table)
		_, err := s.client.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(s.table),
			BillingMode:          types.BillingModePayPerRequest,
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(attrLeaseKey), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(attrLeaseKey), KeyType: types.KeyTypeHash}},
		})
		if err != nil && awsx.Classify(err) != awsx.InUse { // InUse: another worker created it
			return s.fail("create table", "", err)
		}
	default:
		return s.fail("describe table", "", err)
	}
	return s.waitActive(ctx)
}

// waitActive polls DescribeTable until the table is usable or ctx ends. A
// table not found yet counts as still being created: DescribeTable may lag
// behind CreateTable.
func (s *DynamoStore) waitActive(ctx context.Context) error {
	tick := time.NewTicker(s.pollInterval)
	defer tick.Stop()
	last := "not found"
	for {
		out, err := s.client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)})
		switch {
		case err == nil:
			ready, err := s.tableReady(out.Table)
			if ready || err != nil {
				return err
			}
			last = string(out.Table.TableStatus)
		case awsx.Classify(err) == awsx.NotFound:
			last = "not found"
		default:
			return s.fail("describe table", "", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lease: ensure table %s: still %s: %w", s.table, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// tableReady reports whether a described table can be used, and an error if
// it never will be.
func (s *DynamoStore) tableReady(t *types.TableDescription) (bool, error) {
	if t == nil {
		return false, nil
	}
	switch t.TableStatus {
	case types.TableStatusActive, types.TableStatusUpdating:
	case types.TableStatusCreating:
		return false, nil
	default:
		return false, fmt.Errorf("lease: ensure table %s: table is %s", s.table, t.TableStatus)
	}
	if len(t.KeySchema) != 1 || aws.ToString(t.KeySchema[0].AttributeName) != attrLeaseKey ||
		t.KeySchema[0].KeyType != types.KeyTypeHash {
		return false, fmt.Errorf("%w: lease: table %s does not have the hash key %s alone", kcl.ErrInvalidConfig, s.table, attrLeaseKey)
	}
	for _, d := range t.AttributeDefinitions {
		if aws.ToString(d.AttributeName) == attrLeaseKey && d.AttributeType != types.ScalarAttributeTypeS {
			return false, fmt.Errorf("%w: lease: table %s: %s is of type %s, not S", kcl.ErrInvalidConfig, s.table, attrLeaseKey, d.AttributeType)
		}
	}
	return true, nil
}

// List returns every lease, read with a consistent Scan, sorted by Key.
// The fleet row, presence rows of earlier versions and rows of the Java
// KCL 3.5 with an entityType other than LEASE are left out.
func (s *DynamoStore) List(ctx context.Context) ([]Lease, error) {
	return s.list(ctx, "list", true)
}

// ListStale returns every lease, read with an eventually consistent Scan
// (half the price of List), sorted by Key.
func (s *DynamoStore) ListStale(ctx context.Context) ([]Lease, error) {
	return s.list(ctx, "liststale", false)
}

func (s *DynamoStore) list(ctx context.Context, op string, consistent bool) ([]Lease, error) {
	items, err := s.scan(ctx, op, consistent, "NOT begins_with(#k, :wp) AND (attribute_not_exists(#e) OR #e = :lease)")
	if err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(items))
	var bad *UnreadableError
	for _, item := range items {
		if !isLeaseItem(item) { // the filter already did; never trust a page blindly
			continue
		}
		l, err := decodeLease(item)
		if err != nil {
			key := itemKeyOf(item)
			if key == "" || IsWorkerKey(key) {
				return nil, fmt.Errorf("lease: %s table %s: %w", op, s.table, err)
			}
			if bad == nil {
				bad = &UnreadableError{Op: op, Table: s.table, Rows: map[string]string{}}
			}
			bad.Rows[key] = err.Error()
			continue
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return cmp.Compare(a.Key, b.Key) })
	if bad != nil {
		return out, bad
	}
	return out, nil
}

// scan reads every item matching filter (which may use #k for leaseKey, #e
// for entityType, :wp for the worker row prefix and :lease for a lease's
// entityType), page after page.
func (s *DynamoStore) scan(ctx context.Context, op string, consistent bool, filter string) ([]map[string]types.AttributeValue, error) {
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(s.table),
		ConsistentRead:            aws.Bool(consistent),
		FilterExpression:          aws.String(filter),
		ExpressionAttributeNames:  map[string]string{"#k": attrLeaseKey, "#e": attrEntityType},
		ExpressionAttributeValues: map[string]types.AttributeValue{":wp": stringValue(workerRowPrefix), ":lease": stringValue(entityLease)},
	}
	if s.scanLimit > 0 {
		in.Limit = aws.Int32(s.scanLimit)
	}
	var items []map[string]types.AttributeValue
	for {
		out, err := s.client.Scan(ctx, in)
		if err != nil {
			return nil, s.fail(op, "", err)
		}
		items = append(items, out.Items...)
		if len(out.LastEvaluatedKey) == 0 {
			return items, nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// Get returns one lease, read consistently, or an error matching
// [ErrNotFound].
func (s *DynamoStore) Get(ctx context.Context, key string) (Lease, error) {
	if err := checkLeaseKey("get", key); err != nil {
		return Lease{}, err
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            itemKey(key),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Lease{}, s.fail("get", key, err)
	}
	if len(out.Item) == 0 || !isLeaseItem(out.Item) {
		return Lease{}, fmt.Errorf("lease: get %s: %w", key, ErrNotFound)
	}
	l, err := decodeLease(out.Item)
	if err != nil {
		return Lease{}, fmt.Errorf("lease: get %s: %w", key, err)
	}
	return l, nil
}

// Create puts l, conditional on no item having its key.
func (s *DynamoStore) Create(ctx context.Context, l Lease) error {
	if err := checkLeaseKey("create", l.Key); err != nil {
		return err
	}
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                encodeLease(normalizeLease(l)),
		ConditionExpression:                 aws.String("attribute_not_exists(#k)"),
		ExpressionAttributeNames:            map[string]string{"#k": attrLeaseKey},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err != nil {
		return s.fail("create", l.Key, err)
	}
	return nil
}

// Renew increments leaseCounter and writes shardlineThroughput (removed
// when zero), conditional on leaseOwner and leaseCounter.
func (s *DynamoStore) Renew(ctx context.Context, l Lease) (Lease, error) {
	u := newUpdate()
	if tp := normalizeThroughput(l.Throughput); tp > 0 {
		u.set(attrThroughput, floatValue(tp))
	} else {
		u.remove(attrThroughput)
	}
	return s.updateFenced(ctx, "renew", l, true, u)
}

// Take sets leaseOwner to newOwner, conditional on leaseOwner and
// leaseCounter, and increments ownerSwitchesSinceCheckpoint when the owner
// changes. It removes the Java KCL 3.x's checkpointOwner (a graceful
// hand-off it ends) and throughputKBps (the previous owner's load).
func (s *DynamoStore) Take(ctx context.Context, l Lease, newOwner string) (Lease, error) {
	if newOwner == "" {
		return Lease{}, fmt.Errorf("lease: take %s: %w: empty new owner", l.Key, ErrInvalidArgument)
	}
	u := newUpdate()
	u.set(attrLeaseOwner, stringValue(newOwner))
	u.remove(attrHandoffTo)
	u.remove(attrCheckpointOwner)
	u.remove(attrThroughputKBps)
	u.remove(attrNudge)
	if newOwner != l.Owner {
		n := u.name(attrOwnerSwitches)
		u.sets = append(u.sets, fmt.Sprintf("%s = if_not_exists(%s, %s) + %s", n, n, u.value(numberValue(0)), u.value(numberValue(1))))
	}
	return s.updateFenced(ctx, "take", l, true, u)
}

// Release removes leaseOwner (and checkpointOwner), conditional on
// leaseOwner and leaseCounter.
func (s *DynamoStore) Release(ctx context.Context, l Lease) (Lease, error) {
	u := newUpdate()
	u.remove(attrLeaseOwner)
	u.remove(attrHandoffTo)
	u.remove(attrCheckpointOwner)
	u.remove(attrNudge)
	return s.updateFenced(ctx, "release", l, true, u)
}

// RequestHandoff sets shardlineHandoffTo, conditional on leaseOwner,
// leaseCounter and no pending hand-over; the counter is not incremented.
func (s *DynamoStore) RequestHandoff(ctx context.Context, l Lease, to string) (Lease, error) {
	if to == "" || l.Owner == "" || to == l.Owner {
		return Lease{}, fmt.Errorf("lease: request handoff %s: %w: from %q to %q", l.Key, ErrInvalidArgument, l.Owner, to)
	}
	if err := checkLeaseKey("handoff", l.Key); err != nil {
		return Lease{}, err
	}
	u := newUpdate()
	u.set(attrHandoffTo, stringValue(to))
	cond := fmt.Sprintf("%s AND %s = %s AND attribute_not_exists(%s)", u.counterIs(l.Counter),
		u.name(attrLeaseOwner), u.value(stringValue(l.Owner)), u.name(attrHandoffTo))
	out, err := s.client.UpdateItem(ctx, u.input(s.table, l.Key, cond))
	if err != nil {
		return Lease{}, s.fail("handoff", l.Key, err)
	}
	return decodeLease(out.Attributes)
}

// Nudge sets shardlineNudge, conditional on leaseOwner only; the counter
// is not incremented.
func (s *DynamoStore) Nudge(ctx context.Context, key, owner, token string) error {
	if owner == "" || token == "" {
		return fmt.Errorf("lease: nudge %s: %w: owner %q, token %q", key, ErrInvalidArgument, owner, token)
	}
	if err := checkLeaseKey("nudge", key); err != nil {
		return err
	}
	u := newUpdate()
	u.set(attrNudge, stringValue(token))
	cond := fmt.Sprintf("%s = %s", u.name(attrLeaseOwner), u.value(stringValue(owner)))
	in := u.input(s.table, key, cond)
	in.ReturnValues = types.ReturnValueNone
	if _, err := s.client.UpdateItem(ctx, in); err != nil {
		return s.fail("nudge", key, err)
	}
	return nil
}

// HandOver makes shardlineHandoffTo the owner, conditional on leaseOwner,
// leaseCounter and shardlineHandoffTo, and increments the counter and
// ownerSwitchesSinceCheckpoint.
func (s *DynamoStore) HandOver(ctx context.Context, l Lease) (Lease, error) {
	if l.HandoffTo == "" {
		return Lease{}, fmt.Errorf("lease: hand over %s: %w: no hand-over pending", l.Key, ErrInvalidArgument)
	}
	u := newUpdate()
	u.set(attrLeaseOwner, stringValue(l.HandoffTo))
	u.remove(attrHandoffTo)
	u.remove(attrNudge)
	n := u.name(attrOwnerSwitches)
	u.sets = append(u.sets, fmt.Sprintf("%s = if_not_exists(%s, %s) + %s", n, n, u.value(numberValue(0)), u.value(numberValue(1))))
	// The condition on the pending hand-over joins the fenced condition.
	u.extraCond = fmt.Sprintf("%s = %s", u.name(attrHandoffTo), u.value(stringValue(l.HandoffTo)))
	return s.updateFenced(ctx, "handover", l, true, u)
}

// UpdateCheckpoint writes the checkpoint, the pending checkpoint (removed
// when l.PendingCheckpoint is zero) and ownerSwitchesSinceCheckpoint,
// conditional on leaseOwner and leaseCounter.
func (s *DynamoStore) UpdateCheckpoint(ctx context.Context, l Lease) (Lease, error) {
	return s.updateFenced(ctx, "checkpoint", l, true, checkpointUpdate(l))
}

// checkpointUpdate returns the update of UpdateCheckpoint (the checkpoint
// fields of l, normalised), without the counter and its condition, which
// fence adds. A transactional checkpoint (txn.go) writes the same.
func checkpointUpdate(l Lease) *update {
	n := normalizeLease(l)
	u := newUpdate()
	u.setString(attrCheckpoint, n.Checkpoint.SequenceNumber)
	u.set(attrCheckpointSub, numberValue(n.Checkpoint.SubSequenceNumber))
	u.setString(attrCheckpointTime, formatTimestamp(n.CheckpointTimestamp))
	u.set(attrOwnerSwitches, numberValue(n.OwnerSwitchesSinceCheckpoint))
	if n.PendingCheckpoint.IsZero() {
		u.remove(attrPending)
		u.remove(attrPendingSub)
		u.remove(attrPendingState)
	} else {
		u.setString(attrPending, n.PendingCheckpoint.SequenceNumber)
		u.set(attrPendingSub, numberValue(n.PendingCheckpoint.SubSequenceNumber))
		if len(n.PendingCheckpointState) > 0 {
			u.set(attrPendingState, &types.AttributeValueMemberB{Value: n.PendingCheckpointState})
		} else {
			u.remove(attrPendingState)
		}
	}
	return u
}

// ResetCheckpoint writes the checkpoint and its timestamp, removes
// leaseOwner, checkpointOwner, shardlineHandoffTo and the pending
// checkpoint, and sets ownerSwitchesSinceCheckpoint to 0, conditional on
// leaseCounter only.
func (s *DynamoStore) ResetCheckpoint(ctx context.Context, l Lease) (Lease, error) {
	n := normalizeLease(l)
	u := newUpdate()
	u.remove(attrLeaseOwner)
	u.remove(attrHandoffTo)
	u.remove(attrCheckpointOwner)
	u.setString(attrCheckpoint, n.Checkpoint.SequenceNumber)
	u.set(attrCheckpointSub, numberValue(n.Checkpoint.SubSequenceNumber))
	u.setString(attrCheckpointTime, formatTimestamp(n.CheckpointTimestamp))
	u.set(attrOwnerSwitches, numberValue(0))
	u.remove(attrPending)
	u.remove(attrPendingSub)
	u.remove(attrPendingState)
	nl, err := s.updateFenced(ctx, "reset", l, false, u)
	if err == nil {
		s.bumpGen(ctx)
	}
	return nl, err
}

// UpdateShardInfo writes parentShardId, childShardIds and the hash key
// range, conditional on leaseCounter only.
func (s *DynamoStore) UpdateShardInfo(ctx context.Context, l Lease) (Lease, error) {
	n := normalizeLease(l)
	u := newUpdate()
	u.setSet(attrParentShardIDs, n.ParentShardIDs)
	u.setSet(attrChildShardIDs, n.ChildShardIDs)
	u.setString(attrStartingHashKey, n.StartingHashKey)
	u.setString(attrEndingHashKey, n.EndingHashKey)
	return s.updateFenced(ctx, "shardinfo", l, false, u)
}

// updateFenced runs u as an UpdateItem on l's item, adding the leaseCounter
// increment and the condition on leaseCounter (and, with checkOwner,
// leaseOwner), and returns the item as now stored.
func (s *DynamoStore) updateFenced(ctx context.Context, op string, l Lease, checkOwner bool, u *update) (Lease, error) {
	if err := checkLeaseKey(op, l.Key); err != nil {
		return Lease{}, err
	}
	out, err := s.client.UpdateItem(ctx, u.input(s.table, l.Key, u.fence(l, checkOwner)))
	if err != nil {
		return Lease{}, s.fail(op, l.Key, err)
	}
	stored, err := decodeLease(out.Attributes)
	if err != nil {
		return Lease{}, fmt.Errorf("lease: %s %s: %w", op, l.Key, err)
	}
	return stored, nil
}

// fence adds the leaseCounter increment to u and returns the condition on
// leaseCounter (and, with checkOwner, leaseOwner) that every fenced write
// of l carries, with u.extraCond.
//
// The conditions hold for every item that reads as l: a row without
// leaseCounter (written by hand or by another tool) reads as counter 0 and
// is written as if it had 0, and a leaseOwner that is absent, NULL or empty
// reads as no owner. Otherwise such rows could never be taken.
func (u *update) fence(l Lease, checkOwner bool) string {
	u.increment(attrLeaseCounter)
	cond := u.counterIs(l.Counter)
	if u.extraCond != "" {
		cond += " AND " + u.extraCond
	}
	if checkOwner {
		o := u.name(attrLeaseOwner)
		if l.Owner == "" {
			cond += fmt.Sprintf(" AND (attribute_not_exists(%s) OR attribute_type(%s, %s) OR %s = %s)",
				o, o, u.value(stringValue("NULL")), o, u.value(stringValue("")))
		} else {
			cond += fmt.Sprintf(" AND %s = %s", o, u.value(stringValue(l.Owner)))
		}
	}
	return cond
}

// counterIs returns the condition that leaseCounter is n; for 0 it also
// holds when the row exists without leaseCounter (see fence).
func (u *update) counterIs(n int64) string {
	c := u.name(attrLeaseCounter)
	if n == 0 {
		return fmt.Sprintf("(%s = %s OR (attribute_not_exists(%s) AND attribute_exists(%s)))",
			c, u.value(numberValue(0)), c, u.name(attrLeaseKey))
	}
	return fmt.Sprintf("%s = %s", c, u.value(numberValue(n)))
}

// Delete removes the item, conditional on leaseCounter.
func (s *DynamoStore) Delete(ctx context.Context, l Lease) error {
	if err := checkLeaseKey("delete", l.Key); err != nil {
		return err
	}
	return s.deleteFenced(ctx, "delete", l.Key, l.Counter)
}

func (s *DynamoStore) deleteFenced(ctx context.Context, op, key string, counter int64) error {
	u := newUpdate()
	cond := u.counterIs(counter)
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                           aws.String(s.table),
		Key:                                 itemKey(key),
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            u.names,
		ExpressionAttributeValues:           u.values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err != nil {
		return s.fail(op, key, err)
	}
	return nil
}

// fail turns an error from the DynamoDB client into the store's error, as
// classified by the AWS layer (awsx): a refused condition becomes
// a *ConflictError carrying the item as stored, a missing table matches
// kcl.ErrTableNotFound, throttling matches kcl.ErrThrottled. Other errors
// (including context cancellation) are wrapped with the operation and key.
func (s *DynamoStore) fail(op, key string, err error) error {
	subject := key
	if subject == "" {
		subject = "table " + s.table
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		e := &ConflictError{Op: op, Key: key}
		if len(ccf.Item) > 0 {
			cur, derr := decodeLease(ccf.Item)
			if derr != nil {
				s.log.Warn("lease: cannot decode the item of a refused write", "op", op, "key", key, "error", derr)
			} else {
				e.Current = &cur
			}
		}
		return e
	}
	switch awsx.Classify(err) {
	case awsx.NotFound:
		return fmt.Errorf("lease: %s %s: %w (table %s): %w", op, subject, kcl.ErrTableNotFound, s.table, err)
	case awsx.Throttled:
		return fmt.Errorf("lease: %s %s: %w: %w", op, subject, kcl.ErrThrottled, err)
	}
	return fmt.Errorf("lease: %s %s: %w", op, subject, err)
}

// update builds an UpdateItem request: SET and REMOVE clauses with
// placeholders for every attribute name and value.
type update struct {
	sets, removes []string
	adds, deletes []string          // ADD and DELETE clauses, whole
	extraCond     string            // ANDed to the fenced condition
	names         map[string]string // placeholder -> attribute name
	placeholders  map[string]string // attribute name -> placeholder
	values        map[string]types.AttributeValue
}

func newUpdate() *update {
	return &update{
		names:        make(map[string]string),
		placeholders: make(map[string]string),
		values:       make(map[string]types.AttributeValue),
	}
}

// name returns the placeholder of an attribute name.
func (u *update) name(attr string) string {
	if p, ok := u.placeholders[attr]; ok {
		return p
	}
	p := "#a" + strconv.Itoa(len(u.names))
	u.names[p] = attr
	u.placeholders[attr] = p
	return p
}

// value returns a new placeholder for v.
func (u *update) value(v types.AttributeValue) string {
	p := ":v" + strconv.Itoa(len(u.values))
	u.values[p] = v
	return p
}

func (u *update) set(attr string, v types.AttributeValue) {
	u.sets = append(u.sets, u.name(attr)+" = "+u.value(v))
}

func (u *update) remove(attr string) { u.removes = append(u.removes, u.name(attr)) }

// setString sets a string attribute, or removes it when v is empty.
func (u *update) setString(attr, v string) {
	if v == "" {
		u.remove(attr)
		return
	}
	u.set(attr, stringValue(v))
}

// setSet sets a string set attribute, or removes it when ids is empty.
func (u *update) setSet(attr string, ids []string) {
	if len(ids) == 0 {
		u.remove(attr)
		return
	}
	u.set(attr, &types.AttributeValueMemberSS{Value: slices.Clone(ids)})
}

// input returns the UpdateItem request on key with the given condition.
func (u *update) input(table, key, cond string) *dynamodb.UpdateItemInput {
	var expr strings.Builder
	if len(u.sets) > 0 {
		expr.WriteString("SET " + strings.Join(u.sets, ", "))
	}
	if len(u.removes) > 0 {
		if expr.Len() > 0 {
			expr.WriteString(" ")
		}
		expr.WriteString("REMOVE " + strings.Join(u.removes, ", "))
	}
	if len(u.adds) > 0 {
		expr.WriteString(" ADD " + strings.Join(u.adds, ", "))
	}
	if len(u.deletes) > 0 {
		expr.WriteString(" DELETE " + strings.Join(u.deletes, ", "))
	}
	in := &dynamodb.UpdateItemInput{
		TableName:                           aws.String(table),
		Key:                                 itemKey(key),
		UpdateExpression:                    aws.String(expr.String()),
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            u.names,
		ReturnValues:                        types.ReturnValueAllNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if len(u.values) > 0 {
		in.ExpressionAttributeValues = u.values
	}
	return in
}

func itemKey(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrLeaseKey: stringValue(key)}
}

func stringValue(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

func numberValue(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

// floatValue encodes a normalised throughput (at most 16 digits before the
// point and 3 after it).
func floatValue(v float64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatFloat(v, 'f', -1, 64)}
}

// encodeLease returns the item of a normalised lease. Empty strings, sets
// and state are left out.
func encodeLease(l Lease) map[string]types.AttributeValue {
	item := map[string]types.AttributeValue{
		attrLeaseKey:      stringValue(l.Key),
		attrLeaseCounter:  numberValue(l.Counter),
		attrCheckpointSub: numberValue(l.Checkpoint.SubSequenceNumber),
		attrOwnerSwitches: numberValue(l.OwnerSwitchesSinceCheckpoint),
	}
	putString := func(attr, v string) {
		if v != "" {
			item[attr] = stringValue(v)
		}
	}
	putSet := func(attr string, ids []string) {
		if len(ids) > 0 {
			item[attr] = &types.AttributeValueMemberSS{Value: slices.Clone(ids)}
		}
	}
	putString(attrLeaseOwner, l.Owner)
	putString(attrCheckpoint, l.Checkpoint.SequenceNumber)
	putString(attrCheckpointTime, formatTimestamp(l.CheckpointTimestamp))
	if !l.PendingCheckpoint.IsZero() {
		putString(attrPending, l.PendingCheckpoint.SequenceNumber)
		item[attrPendingSub] = numberValue(l.PendingCheckpoint.SubSequenceNumber)
		if len(l.PendingCheckpointState) > 0 {
			item[attrPendingState] = &types.AttributeValueMemberB{Value: slices.Clone(l.PendingCheckpointState)}
		}
	}
	putSet(attrParentShardIDs, l.ParentShardIDs)
	putSet(attrChildShardIDs, l.ChildShardIDs)
	putString(attrStartingHashKey, l.StartingHashKey)
	putString(attrEndingHashKey, l.EndingHashKey)
	putString(attrHandoffTo, l.HandoffTo)
	putString(attrNudge, l.Nudge)
	if l.Throughput > 0 {
		item[attrThroughput] = floatValue(l.Throughput)
	}
	if stream, shard, ok := SplitKey(l.Key); ok && stream != "" {
		// As the Java KCL's multi-stream serializer writes them.
		item[attrStreamName] = stringValue(stream)
		item[attrShardID] = stringValue(shard)
	}
	return item
}

// decodeLease reads an item. Missing attributes read as zero values and
// unknown ones are ignored (tables written by the Java KCL have both);
// an attribute of an unexpected type is an error.
func decodeLease(item map[string]types.AttributeValue) (Lease, error) {
	d := itemDecoder{item: item}
	l := Lease{
		Key:                          d.str(attrLeaseKey),
		Owner:                        d.str(attrLeaseOwner),
		Counter:                      d.num(attrLeaseCounter),
		Checkpoint:                   kcl.ExtendedSequenceNumber{SequenceNumber: d.str(attrCheckpoint), SubSequenceNumber: d.num(attrCheckpointSub)},
		CheckpointTimestamp:          d.time(attrCheckpointTime),
		PendingCheckpoint:            kcl.ExtendedSequenceNumber{SequenceNumber: d.str(attrPending), SubSequenceNumber: d.num(attrPendingSub)},
		PendingCheckpointState:       d.bytes(attrPendingState),
		OwnerSwitchesSinceCheckpoint: d.num(attrOwnerSwitches),
		ParentShardIDs:               d.set(attrParentShardIDs),
		ChildShardIDs:                d.set(attrChildShardIDs),
		StartingHashKey:              d.str(attrStartingHashKey),
		EndingHashKey:                d.str(attrEndingHashKey),
		HandoffTo:                    d.str(attrHandoffTo),
		Throughput:                   d.float(attrThroughput),
		CheckpointOwner:              d.str(attrCheckpointOwner),
	}
	if v, ok := item[attrNudge].(*types.AttributeValueMemberS); ok {
		l.Nudge = v.Value // of no other type: a token nobody else reads
	}
	if d.err != nil {
		return Lease{}, d.err
	}
	if l.Key == "" {
		return Lease{}, fmt.Errorf("decode item: no %s", attrLeaseKey)
	}
	return normalizeLease(l), nil
}

// itemDecoder reads typed attributes of an item and keeps the first error.
type itemDecoder struct {
	item map[string]types.AttributeValue
	err  error
}

func (d *itemDecoder) fail(attr string, v types.AttributeValue, want string) {
	if d.err == nil {
		d.err = fmt.Errorf("decode item %q: attribute %s is %s, want %s", clipValue(itemKeyOf(d.item)), attr, typeName(v), want)
	}
}

// itemKeyOf returns an item's leaseKey ("" if it has none of type S).
func itemKeyOf(item map[string]types.AttributeValue) string {
	if k, ok := item[attrLeaseKey].(*types.AttributeValueMemberS); ok {
		return k.Value
	}
	return ""
}

// typeName names the DynamoDB type of an attribute value ("S", "N", ...).
func typeName(v types.AttributeValue) string {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return "S"
	case *types.AttributeValueMemberN:
		return "N"
	case *types.AttributeValueMemberB:
		return "B"
	case *types.AttributeValueMemberBOOL:
		return "BOOL"
	case *types.AttributeValueMemberSS:
		return "SS"
	case *types.AttributeValueMemberNS:
		return "NS"
	case *types.AttributeValueMemberBS:
		return "BS"
	case *types.AttributeValueMemberL:
		return "L"
	case *types.AttributeValueMemberM:
		return "M"
	}
	return fmt.Sprintf("%T", v)
}

// maxValueInError caps a stored value quoted in an error: a row written by
// hand may hold anything, and the error ends up in logs.
const maxValueInError = 64

// clipValue returns s, cut to maxValueInError characters with its length
// when longer.
func clipValue(s string) string {
	if len(s) <= maxValueInError {
		return s
	}
	return fmt.Sprintf("%.*s...[%d bytes in all]", maxValueInError, s, len(s))
}

// badValue records that attribute attr holds v, which is not want.
func (d *itemDecoder) badValue(attr, v, want string) {
	if d.err == nil {
		d.err = fmt.Errorf("decode item %q: attribute %s: %q is not %s", clipValue(itemKeyOf(d.item)), attr, clipValue(v), want)
	}
}

// str reads a string; absent or NULL reads as "".
func (d *itemDecoder) str(attr string) string {
	switch v := d.item[attr].(type) {
	case nil, *types.AttributeValueMemberNULL:
		return ""
	case *types.AttributeValueMemberS:
		return v.Value
	default:
		d.fail(attr, v, "S")
		return ""
	}
}

// time reads a timestamp stored as an RFC 3339 string; absent, NULL or
// empty reads as the zero time.
func (d *itemDecoder) time(attr string) time.Time {
	v := d.str(attr)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		d.badValue(attr, v, "an RFC 3339 time")
	}
	return t
}

// formatTimestamp returns t as stored (RFC 3339 in UTC, to the nanosecond),
// or "" for the zero time.
func formatTimestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// num reads an integer; absent or NULL reads as 0.
func (d *itemDecoder) num(attr string) int64 {
	switch v := d.item[attr].(type) {
	case nil, *types.AttributeValueMemberNULL:
		return 0
	case *types.AttributeValueMemberN:
		n, err := strconv.ParseInt(v.Value, 10, 64)
		if err != nil {
			d.badValue(attr, v.Value, "an integer")
		}
		return n
	default:
		d.fail(attr, v, "N")
		return 0
	}
}

// float reads a number with a fraction; absent or NULL reads as 0.
func (d *itemDecoder) float(attr string) float64 {
	switch v := d.item[attr].(type) {
	case nil, *types.AttributeValueMemberNULL:
		return 0
	case *types.AttributeValueMemberN:
		f, err := strconv.ParseFloat(v.Value, 64)
		if err != nil {
			d.badValue(attr, v.Value, "a number")
		}
		return f
	default:
		d.fail(attr, v, "N")
		return 0
	}
}

// bytes reads a binary value; absent or NULL reads as nil, and so does a
// number: the Java KCL 3.x's lease creation writes pendingCheckpointState
// as one, and its reader takes it for no state.
func (d *itemDecoder) bytes(attr string) []byte {
	switch v := d.item[attr].(type) {
	case nil, *types.AttributeValueMemberNULL, *types.AttributeValueMemberN:
		return nil
	case *types.AttributeValueMemberB:
		return slices.Clone(v.Value)
	default:
		d.fail(attr, v, "B")
		return nil
	}
}

// set reads a string set. A single string or a list of strings is accepted
// too; absent or NULL reads as nil.
func (d *itemDecoder) set(attr string) []string {
	switch v := d.item[attr].(type) {
	case nil, *types.AttributeValueMemberNULL:
		return nil
	case *types.AttributeValueMemberSS:
		return slices.Clone(v.Value)
	case *types.AttributeValueMemberS:
		return []string{v.Value}
	case *types.AttributeValueMemberL:
		out := make([]string, 0, len(v.Value))
		for _, e := range v.Value {
			s, ok := e.(*types.AttributeValueMemberS)
			if !ok {
				d.fail(attr, v, "SS")
				return nil
			}
			out = append(out, s.Value)
		}
		return out
	default:
		d.fail(attr, v, "SS")
		return nil
	}
}
