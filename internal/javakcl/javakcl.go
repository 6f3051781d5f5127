// Package javakcl knows the lease table of the Java KCL: it writes tables
// the way the Java KCL 2.x, 3.0-3.4 and 3.5 (single-table format) write
// them, item for item (for take-over tests), and checks items against the
// rules of the Java lease reader (DynamoDBLeaseSerializer.fromDynamoRecord
// and, in multi-stream mode, DynamoDBMultiStreamLeaseSerializer), so that
// tests and kclctl can tell whether a table Shardline leaves behind can be
// read by Java again.
package javakcl

import (
	"context"
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Version is a family of Java KCL versions that share a lease table format.
type Version int

// The Java KCL lease table formats.
const (
	// V2 is the Java KCL 2.x (2.3 and later: hash key ranges, child
	// shards, multi-stream).
	V2 Version = iota
	// V3 is the Java KCL 3.0 to 3.4: adds throughputKBps, checkpointOwner
	// and the leaseOwner index.
	V3
	// V35 is the Java KCL 3.5 in its single-table format: lease rows carry
	// entityType LEASE, and the leader lock, migration state, worker
	// metrics and stream info live in the lease table as rows of their own
	// entityType.
	V35
)

// Versions lists every format, oldest first.
var Versions = []Version{V2, V3, V35}

func (v Version) String() string {
	switch v {
	case V2:
		return "2.x"
	case V3:
		return "3.0-3.4"
	case V35:
		return "3.5"
	}
	return fmt.Sprintf("Version(%d)", int(v))
}

// Attribute names of the Java lease table.
const (
	AttrEntityType = "entityType"
	AttrStreamName = "streamName"
	AttrShardID    = "shardId"
)

// EntityLease is the entityType of a lease row in the 3.5 format.
const EntityLease = "LEASE"

// nonLeaseEntities are the entityType values of the 3.5 format's other rows.
var nonLeaseEntities = []string{"STREAM", "LEADER", "CLIENT_VERSION_MIGRATION", "TABLE_MIGRATION", "WORKER_METRIC_STATS"}

// IsNonLeaseEntity reports whether entityType names a Java KCL 3.5 row
// that is not a lease.
func IsNonLeaseEntity(entityType string) bool { return slices.Contains(nonLeaseEntities, entityType) }

// CreateTable creates a lease table as the Java KCL does (hash key
// leaseKey, on-demand billing; 3.x adds the index from leaseOwner to
// leaseKey) and waits until it is active.
func CreateTable(ctx context.Context, client *dynamodb.Client, table string, v Version) error {
	in := &dynamodb.CreateTableInput{
		TableName:   aws.String(table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("leaseKey"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeHash}},
	}
	if v >= V3 {
		in.AttributeDefinitions = append(in.AttributeDefinitions,
			types.AttributeDefinition{AttributeName: aws.String("leaseOwner"), AttributeType: types.ScalarAttributeTypeS})
		in.GlobalSecondaryIndexes = []types.GlobalSecondaryIndex{{
			IndexName: aws.String("LeaseOwnerToLeaseKeyIndex"),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("leaseOwner"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("leaseKey"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly},
		}}
	}
	if _, err := client.CreateTable(ctx, in); err != nil {
		return fmt.Errorf("javakcl: create table %s: %w", table, err)
	}
	w := dynamodb.NewTableExistsWaiter(client, func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 100 * time.Millisecond })
	return w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute)
}

// Lease is one lease as a Java worker left it.
type Lease struct {
	// StreamID is the stream identifier "account:stream:creationEpoch" of
	// a multi-stream application; empty for a single-stream one.
	StreamID      string
	ShardID       string
	Owner         string // empty: unowned
	Counter       int64
	Checkpoint    string // a sequence number or TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END
	CheckpointSub int64
	Pending       string // pending checkpoint; empty if none
	PendingSub    int64
	// PendingState is the state written with the pending checkpoint by
	// prepareCheckpoint (stored as a binary attribute).
	PendingState  []byte
	OwnerSwitches int64
	Parents       []string
	Children      []string
	// StartHash and EndHash are the shard's hash key range (decimal).
	StartHash, EndHash string
	// ThroughputKBps (3.x) is the owner's measured load; zero: absent.
	ThroughputKBps float64
	// CheckpointOwner (3.x) is the worker finishing a graceful hand-off
	// to Owner; empty if none.
	CheckpointOwner string
}

// Key returns the lease's leaseKey: the shard ID, or in multi-stream
// applications "account:stream:creationEpoch:shardId".
func (l Lease) Key() string {
	if l.StreamID != "" {
		return l.StreamID + ":" + l.ShardID
	}
	return l.ShardID
}

// Item returns l as the Java KCL of version v stores it: the attributes
// its serializer writes at creation and updates, with their types.
func Item(v Version, l Lease) map[string]types.AttributeValue {
	s := func(x string) types.AttributeValue { return &types.AttributeValueMemberS{Value: x} }
	n := func(x int64) types.AttributeValue {
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(x, 10)}
	}
	item := map[string]types.AttributeValue{
		"leaseKey":                     s(l.Key()),
		"leaseCounter":                 n(l.Counter),
		"ownerSwitchesSinceCheckpoint": n(l.OwnerSwitches),
		"checkpoint":                   s(l.Checkpoint),
		"checkpointSubSequenceNumber":  n(l.CheckpointSub),
	}
	if l.Owner != "" {
		item["leaseOwner"] = s(l.Owner)
	}
	if len(l.Parents) > 0 {
		item["parentShardId"] = &types.AttributeValueMemberSS{Value: slices.Clone(l.Parents)}
	}
	if len(l.Children) > 0 {
		item["childShardIds"] = &types.AttributeValueMemberSS{Value: slices.Clone(l.Children)}
	}
	if l.Pending != "" {
		item["pendingCheckpoint"] = s(l.Pending)
		item["pendingCheckpointSubSequenceNumber"] = n(l.PendingSub)
		if l.PendingState != nil {
			item["pendingCheckpointState"] = &types.AttributeValueMemberB{Value: slices.Clone(l.PendingState)}
		}
	}
	if l.StartHash != "" {
		item["startingHashKey"] = s(l.StartHash)
		item["endingHashKey"] = s(l.EndHash)
	}
	if l.StreamID != "" {
		item[AttrStreamName] = s(l.StreamID)
		item[AttrShardID] = s(l.ShardID)
	}
	if v >= V3 {
		if l.ThroughputKBps != 0 {
			item["throughputKBps"] = &types.AttributeValueMemberN{Value: strconv.FormatFloat(l.ThroughputKBps, 'f', -1, 64)}
		}
		if l.CheckpointOwner != "" {
			item["checkpointOwner"] = s(l.CheckpointOwner)
		}
	}
	if v >= V35 {
		item[AttrEntityType] = s(EntityLease)
	}
	return item
}

// EntityRows returns the rows other than leases that a Java KCL 3.5
// application keeps in its lease table in the single-table format: the
// leader lock (held by the first worker), the client version migration
// state, one worker metrics row per worker, and for multi-stream
// applications one stream info row per stream.
func EntityRows(workers, streams []string, now time.Time) []map[string]types.AttributeValue {
	s := func(x string) types.AttributeValue { return &types.AttributeValueMemberS{Value: x} }
	n := func(x int64) types.AttributeValue {
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(x, 10)}
	}
	l := func(xs ...types.AttributeValue) types.AttributeValue { return &types.AttributeValueMemberL{Value: xs} }
	m := func(kv map[string]types.AttributeValue) types.AttributeValue {
		return &types.AttributeValueMemberM{Value: kv}
	}
	rows := []map[string]types.AttributeValue{
		{ // written by the DynamoDB lock client
			"leaseKey": s("Leader"), AttrEntityType: s("LEADER"),
			"ownerName": s(workers[0]), "leaseDuration": s("20000"), "recordVersionNumber": s("3f0e4f2c-9a51-4c43-8a6d-0d7a1f6de7b1"),
		},
		{
			"leaseKey": s("Migration3.0"), AttrEntityType: s("CLIENT_VERSION_MIGRATION"),
			"cv": s("CLIENT_VERSION_3X"), "mb": s(workers[0]), "mts": n(now.Unix()),
			"h": l(m(map[string]types.AttributeValue{"cv": s("CLIENT_VERSION_3X_WITH_ROLLBACK"), "mb": s(workers[0]), "mts": n(now.Unix() - 600)})),
		},
	}
	for _, w := range workers {
		rows = append(rows, map[string]types.AttributeValue{
			"leaseKey": s(w), AttrEntityType: s("WORKER_METRIC_STATS"),
			"lut": n(now.Unix()), "sup": n(1), "slu": n(now.Unix()),
			"sts": m(map[string]types.AttributeValue{"CPU": l(n(12), n(15), n(11))}),
			"opr": m(map[string]types.AttributeValue{"CPU": l(n(100))}),
		})
	}
	for i, st := range streams {
		rows = append(rows, map[string]types.AttributeValue{
			"leaseKey": s(st), AttrEntityType: s("STREAM"), "streamId": s(fmt.Sprintf("stream-id-%d", i)),
		})
	}
	return rows
}

// Put writes items unconditionally, as a fixture.
func Put(ctx context.Context, client *dynamodb.Client, table string, items ...map[string]types.AttributeValue) error {
	for _, it := range items {
		if _, err := client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: it}); err != nil {
			return fmt.Errorf("javakcl: put into %s: %w", table, err)
		}
	}
	return nil
}

// ReadsAsLease reports whether a Java KCL of version v hands an item to
// its lease deserializer. 2.x and 3.0-3.4 read every row of the table as
// a lease. 3.5 reads rows without entityType or with LEASE; its table scan
// for the leader also takes rows of an entityType it does not know for
// leases (stripping the attribute), so those must decode too.
func ReadsAsLease(v Version, item map[string]types.AttributeValue) bool {
	if v < V35 {
		return true
	}
	et, ok := item[AttrEntityType].(*types.AttributeValueMemberS)
	return !ok || !IsNonLeaseEntity(et.Value)
}

// streamIDPattern is the form of a multi-stream identifier that the Java
// KCL parses (StreamIdentifier.multiStreamInstance).
var streamIDPattern = regexp.MustCompile(`^[0-9]+:[a-zA-Z0-9_.-]+:[0-9]+$`)

// Problems returns why the Java KCL of version v, in single- or
// multi-stream mode, would fail to read item as a lease (and with it the
// whole lease listing); nil when it reads it, or does not read it as a
// lease at all. The rules are those of the Java lease reader: leaseKey,
// leaseCounter, ownerSwitchesSinceCheckpoint and checkpoint must be present
// (the Lease setters refuse null), numbers must parse as Java longs, every
// attribute must have the type the reader asks for, a hash key range must
// be two decimal integers in order, and in multi-stream mode streamName
// must be a stream identifier and shardId present.
func Problems(v Version, multiStream bool, item map[string]types.AttributeValue) []string {
	if !ReadsAsLease(v, item) {
		return nil
	}
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	str := func(attr string, required bool) (string, bool) {
		switch x := item[attr].(type) {
		case nil:
			if required {
				bad("%s missing", attr)
			}
			return "", false
		case *types.AttributeValueMemberS:
			return x.Value, true
		default:
			bad("%s is %s, want S", attr, TypeName(x))
			return "", false
		}
	}
	long := func(attr string, required bool) {
		switch x := item[attr].(type) {
		case nil:
			if required {
				bad("%s missing", attr)
			}
		case *types.AttributeValueMemberN:
			if _, err := strconv.ParseInt(x.Value, 10, 64); err != nil {
				bad("%s = %q is not a long", attr, x.Value)
			}
		default:
			bad("%s is %s, want N", attr, TypeName(x))
		}
	}
	stringSet := func(attr string) {
		switch x := item[attr].(type) {
		case nil, *types.AttributeValueMemberSS:
		default:
			bad("%s is %s, want SS", attr, TypeName(x))
		}
	}
	if k, _ := str("leaseKey", true); k == "" && item["leaseKey"] != nil {
		bad("leaseKey empty")
	}
	str("leaseOwner", false)
	long("leaseCounter", true)
	long("ownerSwitchesSinceCheckpoint", true)
	str("checkpoint", true)
	long("checkpointSubSequenceNumber", false)
	if p, ok := str("pendingCheckpoint", false); ok && p != "" {
		long("pendingCheckpointSubSequenceNumber", false)
	}
	switch x := item["pendingCheckpointState"].(type) {
	case nil, *types.AttributeValueMemberB:
	case *types.AttributeValueMemberN: // what Java's own lease creation writes; read as no state
	default:
		bad("pendingCheckpointState is %s, want B", TypeName(x))
	}
	stringSet("parentShardId")
	stringSet("childShardIds")
	start, okS := str("startingHashKey", false)
	end, okE := str("endingHashKey", false)
	if okS && okE && start != "" && end != "" {
		a, ok1 := new(big.Int).SetString(start, 10)
		b, ok2 := new(big.Int).SetString(end, 10)
		switch {
		case !ok1 || !ok2:
			bad("hash key range %q-%q is not decimal", start, end)
		case a.Cmp(b) > 0:
			bad("hash key range %s-%s is reversed", start, end)
		}
	}
	if v >= V3 {
		switch x := item["throughputKBps"].(type) {
		case nil:
		case *types.AttributeValueMemberN:
			if _, err := strconv.ParseFloat(x.Value, 64); err != nil {
				bad("throughputKBps = %q is not a double", x.Value)
			}
		default:
			bad("throughputKBps is %s, want N", TypeName(x))
		}
		str("checkpointOwner", false)
	}
	if v >= V35 {
		str(AttrEntityType, false)
	}
	if multiStream {
		if id, ok := str(AttrStreamName, true); ok && !streamIDPattern.MatchString(id) {
			bad("streamName %q is not a stream identifier account:stream:epoch", id)
		}
		str(AttrShardID, true)
	}
	return out
}

// TypeName names an attribute value's DynamoDB type (S, N, B, SS, M...).
func TypeName(v types.AttributeValue) string {
	switch v.(type) {
	case *types.AttributeValueMemberS:
		return "S"
	case *types.AttributeValueMemberN:
		return "N"
	case *types.AttributeValueMemberB:
		return "B"
	case *types.AttributeValueMemberSS:
		return "SS"
	case *types.AttributeValueMemberNS:
		return "NS"
	case *types.AttributeValueMemberBS:
		return "BS"
	case *types.AttributeValueMemberM:
		return "M"
	case *types.AttributeValueMemberL:
		return "L"
	case *types.AttributeValueMemberBOOL:
		return "BOOL"
	case *types.AttributeValueMemberNULL:
		return "NULL"
	}
	return fmt.Sprintf("%T", v)
}

// Writer guesses which Java KCL version wrote a table from its items and
// whether it has the 3.x leaseOwner index: entityType on any row means
// 3.5; throughputKBps or checkpointOwner on a lease, or the index, 3.0-3.4;
// otherwise 2.x. ok is false when no Java-written row is found.
func Writer(items []map[string]types.AttributeValue, ownerIndex bool) (v Version, ok bool) {
	v = V2
	if ownerIndex {
		v, ok = V3, true
	}
	for _, it := range items {
		if k, _ := it["leaseKey"].(*types.AttributeValueMemberS); k != nil && strings.HasPrefix(k.Value, "shardline:") {
			continue
		}
		if _, shardline := it["shardlineHeartbeats"]; shardline {
			continue
		}
		ok = true
		if _, has := it[AttrEntityType]; has {
			return V35, true
		}
		for _, a := range []string{"throughputKBps", "checkpointOwner"} {
			if _, has := it[a]; has {
				v = max(v, V3)
			}
		}
	}
	return v, ok
}

// SortedKeys returns the leaseKeys of items, sorted.
func SortedKeys(items []map[string]types.AttributeValue) []string {
	keys := map[string]bool{}
	for _, it := range items {
		if k, ok := it["leaseKey"].(*types.AttributeValueMemberS); ok {
			keys[k.Value] = true
		}
	}
	return slices.Sorted(maps.Keys(keys))
}
