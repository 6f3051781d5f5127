package producer_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kpl"
	"github.com/shardline/shardline/producer"
)

// TestEmulatorRoundTrip writes records to kinesis-mock with and without
// aggregation, reads every shard back, and checks that each record is stored
// exactly once where its receipt says. It logs the producer's throughput;
// SHARDLINE_PRODUCER_RECORDS raises the volume for a measurement.
func TestEmulatorRoundTrip(t *testing.T) {
	kc := testenv.Kinesis(t)
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("SHARDLINE_PRODUCER_RECORDS")); err == nil && v > 0 {
		n = v
	}
	for _, agg := range []bool{false, true} {
		t.Run(fmt.Sprintf("aggregate=%v", agg), func(t *testing.T) {
			stream := testenv.CreateStream(t, kc, 2)
			ctx := t.Context()
			p, err := producer.New(producer.Config{StreamName: stream, Client: kc, Aggregate: agg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			payload := make([]byte, 100)
			started := time.Now()
			results := make([]*producer.Result, n)
			for i := range n {
				copy(payload, fmt.Sprintf("rec-%06d", i))
				if results[i], err = p.Put(ctx, "pk-"+strconv.Itoa(i%101), payload); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(started)
			st := p.Stats()
			t.Logf("aggregate=%v: %d records of 100 bytes in %v: %.0f records/s (%d entries retried)",
				agg, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), st.Retried)
			if st.Written != int64(n) {
				t.Fatalf("stats %+v", st)
			}

			type pos struct {
				shard, seq string
				sub        int64
			}
			stored := map[pos]string{}
			for _, shard := range []string{"shardId-000000000000", "shardId-000000000001"} {
				for _, r := range readShard(t, kc, stream, shard) {
					users := []kpl.Record{{Data: r.Data}}
					if agg {
						if users, err = kpl.Unmarshal(r.Data); err != nil {
							t.Fatalf("stored record is not an aggregate: %v", err)
						}
					}
					for i, u := range users {
						stored[pos{shard, aws.ToString(r.SequenceNumber), int64(i)}] = string(u.Data[:10])
					}
				}
			}
			if len(stored) != n {
				t.Fatalf("%d user records stored, want %d", len(stored), n)
			}
			for i, r := range results {
				rc, err := r.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if got := stored[pos{rc.ShardID, rc.SequenceNumber, rc.SubSequenceNumber}]; got != fmt.Sprintf("rec-%06d", i) {
					t.Fatalf("record %d: receipt %+v points at %q", i, rc, got)
				}
			}
		})
	}
}

// readShard returns every record of a shard.
func readShard(t *testing.T, kc *kinesis.Client, stream, shard string) []types.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []types.Record
	iter := it.ShardIterator
	for iter != nil {
		res, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.Records...)
		if len(res.Records) == 0 && aws.ToInt64(res.MillisBehindLatest) == 0 {
			break
		}
		iter = res.NextShardIterator
	}
	return out
}
