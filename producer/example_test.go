package producer_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kpl"
	"github.com/shardline/shardline/producer"
)

// memStream stands in for Kinesis so that the examples run anywhere: a
// one-shard stream in memory. A real program passes kinesis.NewFromConfig(cfg).
type memStream struct {
	mu      sync.Mutex
	records [][]byte
}

func (m *memStream) PutRecords(_ context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &kinesis.PutRecordsOutput{}
	for _, e := range in.Records {
		m.records = append(m.records, e.Data)
		out.Records = append(out.Records, types.PutRecordsResultEntry{
			ShardId:        aws.String("shardId-000000000000"),
			SequenceNumber: aws.String(fmt.Sprintf("%056d", len(m.records))),
		})
	}
	return out, nil
}

func (m *memStream) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return &kinesis.ListShardsOutput{Shards: []types.Shard{{
		ShardId: aws.String("shardId-000000000000"),
		HashKeyRange: &types.HashKeyRange{
			StartingHashKey: aws.String("0"), EndingHashKey: aws.String("340282366920938463463374607431768211455"),
		},
	}}}, nil
}

// Write records and wait until Kinesis has them all. Put only buffers; the
// producer sends batches in parallel calls behind the scenes.
func Example() {
	ctx := context.Background()
	p, err := producer.New(producer.Config{
		StreamName: "orders",
		Client:     &memStream{}, // kinesis.NewFromConfig(awsCfg)
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for i := range 1000 {
		if _, err := p.Put(ctx, fmt.Sprintf("customer-%d", i%40), []byte(fmt.Sprintf(`{"order":%d}`, i))); err != nil {
			fmt.Println("not accepted:", err)
		}
	}
	// Close sends what is buffered and waits for every outcome.
	if err := p.Close(ctx); err != nil {
		fmt.Println(err)
	}
	st := p.Stats()
	fmt.Println("written:", st.Written, "failed:", st.Failed)
	// Output: written: 1000 failed: 0
}

// Each Put returns a Result: wait on it to learn where Kinesis stored the
// record, or why it could not.
func ExampleResult_Wait() {
	ctx := context.Background()
	p, _ := producer.New(producer.Config{StreamName: "orders", Client: &memStream{}, Logger: slog.New(slog.DiscardHandler)})
	defer p.Close(ctx)

	res, err := p.Put(ctx, "customer-7", []byte("hello"))
	if err != nil {
		fmt.Println("not accepted:", err)
		return
	}
	rc, err := res.Wait(ctx)
	if err != nil {
		fmt.Println("not written:", err)
		return
	}
	fmt.Println(rc.ShardID, rc.SubSequenceNumber, rc.Aggregated)
	// Output: shardId-000000000000 0 false
}

// With aggregation, small records bound for the same shard travel together
// in KPL aggregated records; Shardline's consumer (and the KCL) unpack them.
func Example_aggregation() {
	ctx := context.Background()
	stream := &memStream{}
	p, _ := producer.New(producer.Config{
		StreamName: "clicks",
		Client:     stream,
		Aggregate:  true,
		Logger:     slog.New(slog.DiscardHandler),
	})
	var last *producer.Result
	for i := range 500 {
		last, _ = p.Put(ctx, fmt.Sprintf("session-%d", i), []byte("click"))
	}
	if err := p.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	rc, _ := last.Wait(ctx)
	fmt.Println("last record aggregated:", rc.Aggregated, "at index", rc.SubSequenceNumber)

	users, _ := kpl.Unmarshal(stream.records[0])
	fmt.Println("Kinesis records:", len(stream.records), "user records in the first:", len(users))
	_ = p.Close(ctx)
	// Output:
	// last record aggregated: true at index 499
	// Kinesis records: 1 user records in the first: 500
}
