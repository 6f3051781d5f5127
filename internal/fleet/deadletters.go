package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// Failures selects, from a record's data, the records a harness processor
// fails: poison ones on every attempt, flaky ones on the first attempt each
// process makes. The choice is a hash of the data, so every process and the
// checker agree on it.
type Failures struct {
	// PoisonPermille and FlakyPermille are the shares of records, in
	// thousandths, that are poison and flaky.
	PoisonPermille, FlakyPermille int
}

// ParseFailures parses "poison=P,flaky=F" (permille each; either may be
// left out); "" is no failures.
func ParseFailures(s string) (Failures, error) {
	var f Failures
	if s == "" {
		return f, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1000 {
			return f, fmt.Errorf("failures %q: %q wants a permille between 0 and 1000", s, kv)
		}
		switch k {
		case "poison":
			f.PoisonPermille = n
		case "flaky":
			f.FlakyPermille = n
		default:
			return f, fmt.Errorf("failures %q: unknown key %q (want poison or flaky)", s, k)
		}
	}
	return f, nil
}

// String formats f as ParseFailures reads it.
func (f Failures) String() string {
	return fmt.Sprintf("poison=%d,flaky=%d", f.PoisonPermille, f.FlakyPermille)
}

func dataHash(data string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(data))
	return h.Sum32()
}

// Poison reports whether the record with this data always fails.
func (f Failures) Poison(data string) bool {
	return int(dataHash(data)%1000) < f.PoisonPermille
}

// Flaky reports whether the record with this data fails its first attempt
// in each process (and is not poison).
func (f Failures) Flaky(data string) bool {
	return !f.Poison(data) && int(dataHash(data)/1000%1000) < f.FlakyPermille
}

// DeadLetters reads every record of the dead-letter stream, each a JSON
// object as a *producer.Producer writes it, and returns the records they
// name by [DeadLetterKey] and the number of dead letters read (a record
// dead-lettered again after a failover counts twice).
func DeadLetters(ctx context.Context, kc *kinesis.Client, stream string) (map[string]bool, int, error) {
	shards, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		return nil, 0, err
	}
	found := map[string]bool{}
	n := 0
	for _, sh := range shards.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			return nil, 0, err
		}
		iter := it.ShardIterator
		// The stream is no longer written: read until a read comes back empty.
		for iter != nil {
			out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				return nil, 0, err
			}
			for _, r := range out.Records {
				var dl struct {
					ShardID        string `json:"shard_id"`
					SequenceNumber string `json:"sequence_number"`
				}
				if err := json.Unmarshal(r.Data, &dl); err != nil || dl.ShardID == "" {
					return nil, 0, fmt.Errorf("dead letter %s: not a dead-letter object: %q", aws.ToString(r.SequenceNumber), r.Data)
				}
				found[DeadLetterKey(dl.ShardID, dl.SequenceNumber)] = true
				n++
			}
			if len(out.Records) == 0 {
				break
			}
			iter = out.NextShardIterator
		}
	}
	return found, n, nil
}
