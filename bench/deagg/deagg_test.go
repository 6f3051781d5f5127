// Package deagg compares KPL de-aggregation: Shardline's kpl.Unmarshal
// against the awslabs kinesis-aggregation deaggregator that
// vmware-go-kcl-v2 uses, on the same aggregated Kinesis records.
//
// Run: go test -run '^$' -bench BenchmarkDeaggregate (from bench/).
package deagg

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	awslabs "github.com/awslabs/kinesis-aggregation/go/v2/deaggregator"

	"github.com/shardline/shardline/kpl"
)

// aggregates returns n aggregated Kinesis records of users user records of
// size bytes each, with distinct partition keys.
func aggregates(b *testing.B, n, users, size int) []types.Record {
	out := make([]types.Record, n)
	now := time.Now()
	for i := range out {
		recs := make([]kpl.Record, users)
		for j := range recs {
			data := make([]byte, size)
			for k := range data {
				data[k] = byte('a' + (i+j+k)%26)
			}
			recs[j] = kpl.Record{PartitionKey: "pk-" + strconv.Itoa(j), Data: data}
		}
		agg, err := kpl.Marshal(recs)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = types.Record{
			Data: agg, PartitionKey: aws.String("pk-0"), ApproximateArrivalTimestamp: &now,
			SequenceNumber: aws.String(fmt.Sprintf("49%054d", i)),
		}
	}
	return out
}

// BenchmarkDeaggregate unpacks a batch of 100 aggregated records. One op is
// one batch; MB/s counts aggregated bytes in.
func BenchmarkDeaggregate(b *testing.B) {
	for _, shape := range []struct {
		name        string
		users, size int
	}{{"100x100B", 100, 100}, {"40x1KiB", 40, 1024}} {
		in := aggregates(b, 100, shape.users, shape.size)
		total := 0
		for _, r := range in {
			total += len(r.Data)
		}
		userRecords := len(in) * shape.users
		b.Run("agg="+shape.name+"/lib=shardline", func(b *testing.B) {
			run(b, total, userRecords, func() int {
				n := 0
				for _, r := range in {
					users, err := kpl.Unmarshal(r.Data)
					if err != nil {
						b.Fatal(err)
					}
					n += len(users)
				}
				return n
			})
		})
		b.Run("agg="+shape.name+"/lib=awslabs", func(b *testing.B) {
			run(b, total, userRecords, func() int {
				users, err := awslabs.DeaggregateRecords(in)
				if err != nil {
					b.Fatal(err)
				}
				return len(users)
			})
		})
	}
}

func run(b *testing.B, bytes, userRecords int, batch func() int) {
	b.SetBytes(int64(bytes))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	for b.Loop() {
		if n := batch(); n != userRecords {
			b.Fatalf("got %d user records, want %d", n, userRecords)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N*userRecords), "allocs/user-record")
}
