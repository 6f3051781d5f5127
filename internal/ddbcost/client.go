package ddbcost

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// API is the part of the DynamoDB client that [Client] wraps: the calls
// the lease table makes (it is lease.DynamoDBAPI).
type API interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// Index describes a global secondary index for charging its writes.
type Index struct {
	// Keys are the index's key attributes: an item lacking one is not in
	// the (sparse) index.
	Keys []string
	// Projected are the non-key attributes projected into the index; nil
	// projects all (ALL), an empty non-nil slice none (KEYS_ONLY).
	Projected []string
}

// Client is a DynamoDB client that charges every call to a Meter as
// DynamoDB bills it. It needs the sizes of items it does not see in a
// response (the item before an update, the items a Scan's filter left out):
// it keeps the last version of every item it saw, keyed by the table's key
// attributes, so it is exact when every write to the table passes through
// it (one Client shared by a test's fleet). Safe for concurrent use.
type Client struct {
	api     API
	meter   *Meter
	keys    []string
	indexes []Index

	// Reported, if set, receives the capacity DynamoDB itself reports for
	// every call (the client asks for ReturnConsumedCapacity TOTAL), to
	// check this one's arithmetic against.
	Reported *Meter

	mu     sync.Mutex
	shadow map[string]map[string]types.AttributeValue
}

// NewClient returns a client charging meter for calls to api on a table
// whose primary key attributes are keys, with the given global secondary
// indexes.
func NewClient(api API, meter *Meter, keys []string, indexes ...Index) *Client {
	return &Client{api: api, meter: meter, keys: keys, indexes: indexes, shadow: map[string]map[string]types.AttributeValue{}}
}

// id returns the shadow key of an item or key map.
func (c *Client) id(item map[string]types.AttributeValue) string {
	var b strings.Builder
	for _, k := range c.keys {
		if s, ok := item[k].(*types.AttributeValueMemberS); ok {
			b.WriteString(s.Value)
		} else if n, ok := item[k].(*types.AttributeValueMemberN); ok {
			b.WriteString(n.Value)
		}
		b.WriteByte(0)
	}
	return b.String()
}

func (c *Client) remember(item map[string]types.AttributeValue) {
	if len(item) == 0 {
		return
	}
	c.mu.Lock()
	c.shadow[c.id(item)] = maps.Clone(item)
	c.mu.Unlock()
}

func (c *Client) known(key map[string]types.AttributeValue) map[string]types.AttributeValue {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.shadow[c.id(key)]
}

func (c *Client) report(op string, cc *types.ConsumedCapacity, write bool) {
	if c.Reported == nil || cc == nil || cc.CapacityUnits == nil {
		return
	}
	if write {
		c.Reported.Write(op, *cc.CapacityUnits)
	} else {
		c.Reported.Read(op, *cc.CapacityUnits)
	}
}

// CreateTable is not charged.
func (c *Client) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	return c.api.CreateTable(ctx, in, opts...)
}

// DescribeTable is not charged.
func (c *Client) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return c.api.DescribeTable(ctx, in, opts...)
}

// GetItem charges the item's size in 4 KB units (one unit for a missing
// item), halved unless ConsistentRead.
func (c *Client) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	if c.Reported != nil {
		in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	}
	out, err := c.api.GetItem(ctx, in, opts...)
	if err != nil {
		return out, err
	}
	c.remember(out.Item)
	c.meter.Read("GetItem", ReadUnits(ItemSize(out.Item), aws.ToBool(in.ConsistentRead)))
	c.report("GetItem", out.ConsumedCapacity, false)
	return out, nil
}

// Scan charges each page by the bytes of every item it read, the items its
// filter dropped included (sized from the last version seen of the items
// not returned), in 4 KB units, halved unless ConsistentRead.
func (c *Client) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	if c.Reported != nil {
		in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	}
	out, err := c.api.Scan(ctx, in, opts...)
	if err != nil {
		return out, err
	}
	bytes := 0
	returned := map[string]bool{}
	for _, it := range out.Items {
		bytes += ItemSize(it)
		returned[c.id(it)] = true
		c.remember(it)
	}
	if dropped := int(out.ScannedCount - out.Count); dropped > 0 {
		bytes += dropped * c.meanSizeExcept(returned, out.Items)
	}
	c.meter.Read("Scan", ReadUnits(bytes, aws.ToBool(in.ConsistentRead)))
	c.report("Scan", out.ConsumedCapacity, false)
	return out, nil
}

// meanSizeExcept returns the mean size of the items known but not in skip
// (those a filter dropped), or of items when none is known.
func (c *Client) meanSizeExcept(skip map[string]bool, items []map[string]types.AttributeValue) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, sum := 0, 0
	for id, it := range c.shadow {
		if !skip[id] {
			n++
			sum += ItemSize(it)
		}
	}
	if n == 0 {
		for _, it := range items {
			n++
			sum += ItemSize(it)
		}
	}
	if n == 0 {
		return 0
	}
	return sum / n
}

// PutItem charges the larger of the new item and the one it replaces.
func (c *Client) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if c.Reported != nil {
		in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	}
	old := c.known(in.Item)
	out, err := c.api.PutItem(ctx, in, opts...)
	if err != nil {
		c.refused("PutItem", err, old)
		return out, err
	}
	if len(out.Attributes) > 0 {
		old = out.Attributes
	}
	c.charge("PutItem", old, in.Item)
	c.remember(in.Item)
	c.report("PutItem", out.ConsumedCapacity, true)
	return out, nil
}

// UpdateItem charges the larger of the item before and after (the after
// known from ReturnValues ALL_NEW, which the lease store always asks for).
func (c *Client) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if c.Reported != nil {
		in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	}
	old := c.known(in.Key)
	out, err := c.api.UpdateItem(ctx, in, opts...)
	if err != nil {
		c.refused("UpdateItem", err, old)
		return out, err
	}
	nw := old
	if in.ReturnValues == types.ReturnValueAllNew {
		nw = out.Attributes
	}
	c.charge("UpdateItem", old, nw)
	c.remember(nw)
	c.report("UpdateItem", out.ConsumedCapacity, true)
	return out, nil
}

// DeleteItem charges the deleted item's size.
func (c *Client) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	if c.Reported != nil {
		in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	}
	old := c.known(in.Key)
	out, err := c.api.DeleteItem(ctx, in, opts...)
	if err != nil {
		c.refused("DeleteItem", err, old)
		return out, err
	}
	c.charge("DeleteItem", old, nil)
	c.mu.Lock()
	delete(c.shadow, c.id(in.Key))
	c.mu.Unlock()
	c.report("DeleteItem", out.ConsumedCapacity, true)
	return out, nil
}

// refused charges a write whose condition failed: DynamoDB bills it like a
// write of the item as stored (at least one unit).
func (c *Client) refused(op string, err error, old map[string]types.AttributeValue) {
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		return
	}
	if len(ccf.Item) > 0 {
		old = ccf.Item
		c.remember(old)
	}
	c.meter.Write(op+"(refused)", WriteUnits(ItemSize(old)))
}

// charge bills a write that changed old into nw (nil: absent) on the table
// and its indexes.
func (c *Client) charge(op string, old, nw map[string]types.AttributeValue) {
	c.meter.Write(op, WriteUnits(max(ItemSize(old), ItemSize(nw))))
	if u := IndexWriteUnits(c.indexes, c.keys, old, nw); u > 0 {
		c.meter.Write(op+"(index)", u)
	}
}

// IndexWriteUnits returns the write units a change of an item from old to
// nw (nil: absent) costs on the given global secondary indexes of a table
// with primary key attributes keys: none where the item is in neither
// version of the index or its projection is unchanged; one write of the
// projection where it enters, leaves or changes; two where its index key
// changes.
func IndexWriteUnits(indexes []Index, keys []string, old, nw map[string]types.AttributeValue) float64 {
	total := 0.0
	for _, ix := range indexes {
		po, inOld := project(ix, keys, old)
		pn, inNew := project(ix, keys, nw)
		switch {
		case !inOld && !inNew:
		case inOld && !inNew:
			total += WriteUnits(ItemSize(po))
		case !inOld && inNew:
			total += WriteUnits(ItemSize(pn))
		case !sameAttrs(po, pn, ix.Keys):
			total += WriteUnits(ItemSize(po)) + WriteUnits(ItemSize(pn))
		case !reflect.DeepEqual(po, pn):
			total += WriteUnits(max(ItemSize(po), ItemSize(pn)))
		}
	}
	return total
}

// project returns item as index ix holds it, and whether it is in ix.
func project(ix Index, keys []string, item map[string]types.AttributeValue) (map[string]types.AttributeValue, bool) {
	if item == nil {
		return nil, false
	}
	for _, k := range ix.Keys {
		if _, ok := item[k]; !ok {
			return nil, false
		}
	}
	if ix.Projected == nil {
		return item, true
	}
	names := append(append(append([]string{}, ix.Keys...), keys...), ix.Projected...)
	sort.Strings(names)
	out := map[string]types.AttributeValue{}
	for _, n := range names {
		if v, ok := item[n]; ok {
			out[n] = v
		}
	}
	return out, true
}

func sameAttrs(a, b map[string]types.AttributeValue, names []string) bool {
	for _, n := range names {
		if !reflect.DeepEqual(a[n], b[n]) {
			return false
		}
	}
	return true
}
