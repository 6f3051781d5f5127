package lease

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The fleet row (see [Fleet]) is the item of leaseKey "shardline:worker:*":
// shardlineHeartbeats a map of worker IDs to heartbeats,
// shardlineWithdrawn a string set of withdrawn workers, shardlineHandoffs a
// map of lease keys to requesting workers, shardlineGeneration a number,
// and for each worker that reported stalled shards with its last heartbeat
// an attribute "shardlineStalls:<worker ID>", a map of lease keys to stall
// reasons (one attribute per worker, so that no write depends on a map
// another version of the row may lack); leaseCounter counts its writes.
//
// So that every Java KCL version can list a table Shardline left behind,
// the row also carries what the Java lease deserializer requires:
// entityType SHARDLINE_FLEET (the Java KCL 3.5 skips rows whose entityType
// is not LEASE), and for 2.x and 3.0-3.4, which read every row as a lease,
// ownerSwitchesSinceCheckpoint 0 and the checkpoint SHARD_END with
// sub-sequence 0: a finished lease, which no Java worker reads from; their
// multi-stream mode also requires streamName (a stream identifier it can
// parse, of a stream no application tracks) and shardId. Every write of
// the row sets them (in the same write, so the cost stays one write per
// heartbeat), so a row written by an earlier version gains them at the
// next heartbeat.
const (
	entityFleet      = "SHARDLINE_FLEET"
	fleetCheckpoint  = "SHARD_END"
	fleetStreamName  = "000000000000:shardline-fleet-row:1"
	fleetShardID     = "shardline-fleet-row"
	attrJavaStreamID = "streamName"
	attrJavaShardID  = "shardId"
)

// fleetJavaFields returns the attributes the Java KCL needs on the fleet
// row.
func fleetJavaFields() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrEntityType:    stringValue(entityFleet),
		attrCheckpoint:    stringValue(fleetCheckpoint),
		attrCheckpointSub: numberValue(0),
		attrOwnerSwitches: numberValue(0),
		attrJavaStreamID:  stringValue(fleetStreamName),
		attrJavaShardID:   stringValue(fleetShardID),
	}
}

// javaFields sets the attributes the Java KCL needs on the fleet row.
func (u *update) javaFields() {
	f := fleetJavaFields()
	for _, k := range slices.Sorted(maps.Keys(f)) {
		u.set(k, f[k])
	}
}

// attrStallsPrefix starts the fleet row's attribute of one worker's stalls.
const attrStallsPrefix = "shardlineStalls:"

// Beat writes worker id's heartbeat in the fleet row (see [Store.Beat]).
func (s *DynamoStore) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (Fleet, error) {
	if err := checkWorkerID("beat", id); err != nil {
		return Fleet{}, err
	}
	u := newUpdate()
	entry := u.name(attrHeartbeats) + "." + u.name(id)
	u.sets = append(u.sets, entry+" = "+u.value(numberValue(from+1)))
	if len(stalls) > 0 {
		u.set(attrStallsPrefix+id, stallsValue(stalls))
	} else {
		u.remove(attrStallsPrefix + id)
	}
	if withdrawn {
		u.adds = append(u.adds, u.name(attrWithdrawn)+" "+u.value(&types.AttributeValueMemberSS{Value: []string{id}}))
	}
	if bump {
		u.increment(attrGeneration)
	}
	var cond string
	if from == 0 {
		cond = fmt.Sprintf("attribute_not_exists(%s) OR %s = %s", entry, entry, u.value(numberValue(Dead)))
	} else {
		cond = entry + " = " + u.value(numberValue(from))
	}
	return s.fleetUpdate(ctx, "beat", id, u, cond)
}

// ReadFleet returns the fleet row, read consistently.
func (s *DynamoStore) ReadFleet(ctx context.Context) (Fleet, error) {
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            itemKey(fleetRowKey),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Fleet{}, s.fail("readfleet", fleetRowKey, err)
	}
	return decodeFleet(out.Item)
}

// Fence marks worker id dead, conditional on its heartbeat being hb.
func (s *DynamoStore) Fence(ctx context.Context, id string, hb int64) (Fleet, error) {
	if err := checkWorkerID("fence", id); err != nil {
		return Fleet{}, err
	}
	u := newUpdate()
	entry := u.name(attrHeartbeats) + "." + u.name(id)
	u.sets = append(u.sets, entry+" = "+u.value(numberValue(Dead)))
	u.remove(attrStallsPrefix + id)
	return s.fleetUpdate(ctx, "fence", id, u, entry+" = "+u.value(numberValue(hb)))
}

// Leave removes worker id's entry, conditional on its heartbeat being hb.
func (s *DynamoStore) Leave(ctx context.Context, id string, hb int64, bump bool) error {
	if err := checkWorkerID("leave", id); err != nil {
		return err
	}
	u := newUpdate()
	entry := u.name(attrHeartbeats) + "." + u.name(id)
	u.removes = append(u.removes, entry)
	u.remove(attrStallsPrefix + id)
	u.deletes = append(u.deletes, u.name(attrWithdrawn)+" "+u.value(&types.AttributeValueMemberSS{Value: []string{id}}))
	if bump {
		u.increment(attrGeneration)
	}
	_, err := s.fleetUpdate(ctx, "leave", id, u, entry+" = "+u.value(numberValue(hb)))
	return err
}

// AskHandoff records that worker to asked for lease key.
func (s *DynamoStore) AskHandoff(ctx context.Context, key, to string) error {
	if err := checkLeaseKey("askhandoff", key); err != nil {
		return err
	}
	u := newUpdate()
	u.sets = append(u.sets, u.name(attrHandoffs)+"."+u.name(key)+" = "+u.value(stringValue(to)))
	_, err := s.fleetUpdate(ctx, "askhandoff", key, u, "")
	return err
}

// ClearHandoff removes the record of AskHandoff if it still names to.
func (s *DynamoStore) ClearHandoff(ctx context.Context, key, to string) error {
	if err := checkLeaseKey("clearhandoff", key); err != nil {
		return err
	}
	u := newUpdate()
	entry := u.name(attrHandoffs) + "." + u.name(key)
	u.removes = append(u.removes, entry)
	_, err := s.fleetUpdate(ctx, "clearhandoff", key, u, entry+" = "+u.value(stringValue(to)))
	return err
}

// bumpGen increments the fleet row's Gen, if there is a fleet row, so that
// the workers read the leases again (after a reset: its owner stops). A
// failure is logged: the owner then stops at its next write or read.
func (s *DynamoStore) bumpGen(ctx context.Context) {
	u := newUpdate()
	u.increment(attrGeneration)
	u.increment(attrLeaseCounter)
	u.javaFields()
	_, err := s.client.UpdateItem(ctx, u.input(s.table, fleetRowKey, "attribute_exists("+u.name(attrLeaseKey)+")"))
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		s.log.Warn("lease: telling the workers of a reset failed", "error", err)
	}
}

// increment adds one to a number attribute, counting from zero.
func (u *update) increment(attr string) {
	n := u.name(attr)
	u.sets = append(u.sets, fmt.Sprintf("%s = if_not_exists(%s, %s) + %s", n, n, u.value(numberValue(0)), u.value(numberValue(1))))
}

// fleetUpdate writes the fleet row with u (and leaseCounter incremented)
// under cond ("" for none), creating the row first if it is missing (a
// path into a missing map is refused as invalid).
func (s *DynamoStore) fleetUpdate(ctx context.Context, op, key string, u *update, cond string) (Fleet, error) {
	u.increment(attrLeaseCounter)
	u.javaFields()
	if cond == "" {
		cond = "attribute_exists(" + u.name(attrLeaseKey) + ")"
	} else {
		cond = "attribute_exists(" + u.name(attrLeaseKey) + ") AND (" + cond + ")"
	}
	in := u.input(s.table, fleetRowKey, cond)
	for try := 0; ; try++ {
		out, err := s.client.UpdateItem(ctx, in)
		if err == nil {
			return decodeFleet(out.Attributes)
		}
		var ccf *types.ConditionalCheckFailedException
		if try == 0 && errors.As(err, &ccf) && len(ccf.Item) == 0 {
			if err := s.createFleet(ctx); err != nil {
				return Fleet{}, err
			}
			continue
		}
		if errors.As(err, &ccf) {
			return Fleet{}, &ConflictError{Op: op, Key: key}
		}
		return Fleet{}, s.fail(op, key, err)
	}
}

// createFleet puts an empty fleet row unless one exists.
func (s *DynamoStore) createFleet(ctx context.Context) error {
	_, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                aws.String(s.table),
		Item:                     encodeFleet(Fleet{}),
		ConditionExpression:      aws.String("attribute_not_exists(#k)"),
		ExpressionAttributeNames: map[string]string{"#k": attrLeaseKey},
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return s.fail("createfleet", fleetRowKey, err)
	}
	return nil
}

// encodeFleet returns the item of the fleet row f.
func encodeFleet(f Fleet) map[string]types.AttributeValue {
	hb := make(map[string]types.AttributeValue, len(f.Members))
	for id, n := range f.Members {
		hb[id] = numberValue(n)
	}
	ho := make(map[string]types.AttributeValue, len(f.Handoffs))
	for k, to := range f.Handoffs {
		ho[k] = stringValue(to)
	}
	item := map[string]types.AttributeValue{
		attrLeaseKey:     stringValue(fleetRowKey),
		attrLeaseCounter: numberValue(f.Version),
		attrHeartbeats:   &types.AttributeValueMemberM{Value: hb},
		attrHandoffs:     &types.AttributeValueMemberM{Value: ho},
	}
	maps.Copy(item, fleetJavaFields())
	if f.Gen != 0 {
		item[attrGeneration] = numberValue(f.Gen)
	}
	if len(f.Withdrawn) > 0 {
		item[attrWithdrawn] = &types.AttributeValueMemberSS{Value: slices.Sorted(maps.Keys(f.Withdrawn))}
	}
	for id, m := range f.Stalls {
		if len(m) > 0 {
			item[attrStallsPrefix+id] = stallsValue(m)
		}
	}
	return item
}

// stallsValue is the attribute value of one worker's stalls.
func stallsValue(stalls map[string]string) types.AttributeValue {
	m := make(map[string]types.AttributeValue, len(stalls))
	for shard, reason := range stalls {
		m[shard] = stringValue(reason)
	}
	return &types.AttributeValueMemberM{Value: m}
}

// decodeFleet reads the fleet row; a missing item is an empty fleet.
func decodeFleet(item map[string]types.AttributeValue) (Fleet, error) {
	f := Fleet{Members: map[string]int64{}, Withdrawn: map[string]bool{}, Handoffs: map[string]string{}}
	d := itemDecoder{item: item}
	f.Version = d.num(attrLeaseCounter)
	f.Gen = d.num(attrGeneration)
	for _, id := range d.set(attrWithdrawn) {
		f.Withdrawn[id] = true
	}
	if d.err != nil {
		return Fleet{}, d.err
	}
	if m, ok := item[attrHeartbeats].(*types.AttributeValueMemberM); ok {
		for id, v := range m.Value {
			n, ok := v.(*types.AttributeValueMemberN)
			if !ok {
				return Fleet{}, fmt.Errorf("decode fleet row: heartbeat of %q is %T", id, v)
			}
			hb, err := strconv.ParseInt(n.Value, 10, 64)
			if err != nil {
				return Fleet{}, fmt.Errorf("decode fleet row: heartbeat of %q: %w", id, err)
			}
			f.Members[id] = hb
		}
	}
	if m, ok := item[attrHandoffs].(*types.AttributeValueMemberM); ok {
		for k, v := range m.Value {
			if to, ok := v.(*types.AttributeValueMemberS); ok {
				f.Handoffs[k] = to.Value
			}
		}
	}
	// Stalls are informational: entries of another type are left out.
	for attr, v := range item {
		id, ok := strings.CutPrefix(attr, attrStallsPrefix)
		m, isMap := v.(*types.AttributeValueMemberM)
		if !ok || !isMap || id == "" {
			continue
		}
		stalls := map[string]string{}
		for shard, r := range m.Value {
			if reason, ok := r.(*types.AttributeValueMemberS); ok {
				stalls[shard] = reason.Value
			}
		}
		if len(stalls) > 0 {
			if f.Stalls == nil {
				f.Stalls = map[string]map[string]string{}
			}
			f.Stalls[id] = stalls
		}
	}
	return f, nil
}
