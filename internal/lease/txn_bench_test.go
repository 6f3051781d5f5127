package lease_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/testenv"
)

// metered asks DynamoDB for the capacity of the writes of the benchmark (to
// the sink table and to the lease "shard-0", not the fleet row) and adds
// it up.
type metered struct {
	*dynamodb.Client

	mu  sync.Mutex
	wcu float64 // as DynamoDB Local reports
	aws float64 // as DynamoDB charges: 1 per item write, 2 in transactions (items < 1 KB)
}

func (m *metered) add(cc *types.ConsumedCapacity) {
	if cc == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wcu += aws.ToFloat64(cc.CapacityUnits)
}

// counted reports whether a write is the benchmark's: to the sink (whose
// key is not leaseKey) or to the lease.
func (m *metered) counted(key map[string]types.AttributeValue) bool {
	k, isLease := key["leaseKey"].(*types.AttributeValueMemberS)
	return !isLease || k.Value == "shard-0"
}

func (m *metered) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if !m.counted(in.Key) {
		return m.Client.UpdateItem(ctx, in, opts...)
	}
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.Client.UpdateItem(ctx, in, opts...)
	if err == nil {
		m.add(out.ConsumedCapacity)
		m.mu.Lock()
		m.aws++
		m.mu.Unlock()
	}
	return out, err
}

func (m *metered) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	in.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
	out, err := m.Client.TransactWriteItems(ctx, in, opts...)
	if err == nil {
		for _, cc := range out.ConsumedCapacity {
			m.add(&cc)
		}
		m.mu.Lock()
		m.aws += 2 * float64(len(in.TransactItems))
		m.mu.Unlock()
	}
	return out, err
}

// BenchmarkEffectivelyOnce compares, on DynamoDB Local, a batch of records
// each adding to a counter (one item per record, distinct within the
// batch) committed with its checkpoint in one transaction (Handle.Transact)
// against the at-least-once way: an UpdateItem per record, then a
// checkpoint write. It reports records/s and write units per record
// (DynamoDB's ReturnConsumedCapacity).
//
//	SHARDLINE_REQUIRE_EMULATORS=1 go test -run '^$' -bench EffectivelyOnce -benchtime 200x ./internal/lease
func BenchmarkEffectivelyOnce(b *testing.B) {
	testenv.Require(b)
	for _, batch := range []int{1, 10, 50, 99} {
		for _, mode := range []string{"transact", "write-then-checkpoint"} {
			b.Run(fmt.Sprintf("batch=%d/%s", batch, mode), func(b *testing.B) {
				benchmarkBatches(b, batch, mode == "transact")
			})
		}
	}
}

func benchmarkBatches(b *testing.B, batch int, transact bool) {
	client := testenv.DynamoDB(b)
	mc := &metered{Client: client}
	_, sink, h := heldLease(b, mc, client)
	ctx := b.Context()
	items := make([]types.TransactWriteItem, batch)
	for i := range items {
		items[i] = incr(sink, fmt.Sprint("k", i))
	}
	mc.mu.Lock()
	mc.wcu, mc.aws = 0, 0
	mc.mu.Unlock()
	b.ResetTimer()
	start := time.Now()
	for n := 1; n <= b.N; n++ {
		seq := fmt.Sprint(1000 + n)
		if transact {
			if _, err := h.Transact(ctx, moveTo(seq), items); err != nil {
				b.Fatal(err)
			}
			continue
		}
		for _, it := range items {
			u := it.Update
			if _, err := mc.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: u.TableName, Key: u.Key,
				UpdateExpression: u.UpdateExpression, ExpressionAttributeValues: u.ExpressionAttributeValues}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := h.UpdateCheckpoint(ctx, moveTo(seq)); err != nil {
			b.Fatal(err)
		}
	}
	el := time.Since(start)
	b.StopTimer()
	records := float64(b.N * batch)
	b.ReportMetric(records/el.Seconds(), "records/s")
	mc.mu.Lock()
	b.ReportMetric(mc.wcu/records, "localWCU/record")
	b.ReportMetric(mc.aws/records, "awsWCU/record")
	mc.mu.Unlock()
}
