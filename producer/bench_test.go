package producer

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// nullKinesis accepts every record at once and keeps nothing: it measures
// the producer's own cost.
type nullKinesis struct{ shards []fakeShard }

func (n *nullKinesis) PutRecords(_ context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	out := &kinesis.PutRecordsOutput{Records: make([]types.PutRecordsResultEntry, len(in.Records))}
	for i := range out.Records {
		out.Records[i] = types.PutRecordsResultEntry{ShardId: aws.String(n.shards[0].id), SequenceNumber: aws.String("1")}
	}
	return out, nil
}

func (n *nullKinesis) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return &kinesis.ListShardsOutput{Shards: []types.Shard{{ShardId: aws.String(n.shards[0].id), HashKeyRange: &types.HashKeyRange{
		StartingHashKey: aws.String("0"), EndingHashKey: aws.String("340282366920938463463374607431768211455")}}}}, nil
}

// BenchmarkPut measures Put through to the written outcome, 100-byte
// records, against a client that answers at once.
func BenchmarkPut(b *testing.B) {
	for _, agg := range []bool{false, true} {
		b.Run(fmt.Sprintf("aggregate=%v", agg), func(b *testing.B) {
			p, err := New(Config{StreamName: "s", Client: &nullKinesis{shards: evenShards(1, 0)}, Aggregate: agg,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			data := make([]byte, 100)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := p.Put(ctx, strconv.Itoa(i%1000), data); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
