package fanout

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kcl"
)

// recordTransform turns the Kinesis records of one GetRecords response into
// user records, in order. It is the single place where KPL de-aggregation
// will slot in: an aggregated Kinesis record becomes several user records
// sharing its sequence number, with sub-sequence numbers 0, 1, 2...
// Everything after it (the start-position filter, batching) works on
// extended sequence numbers and needs no change.
type recordTransform func(in []types.Record) []kcl.Record

// toRecords is the default transform: one user record per Kinesis record,
// sub-sequence number 0, not aggregated. GetRecords does not return explicit
// hash keys, so ExplicitHashKey stays empty.
func toRecords(in []types.Record) []kcl.Record {
	if len(in) == 0 {
		return nil
	}
	out := make([]kcl.Record, len(in))
	for i, r := range in {
		out[i] = kcl.Record{
			Data:                        r.Data,
			PartitionKey:                aws.ToString(r.PartitionKey),
			SequenceNumber:              aws.ToString(r.SequenceNumber),
			ApproximateArrivalTimestamp: aws.ToTime(r.ApproximateArrivalTimestamp),
		}
	}
	return out
}

// filterAfter drops, in place, the records whose extended sequence number is
// at or before after; it keeps every record when after is zero or a starting
// sentinel. Records are in order, so only a prefix can go, but the test is
// per record and does not rely on it.
func filterAfter(recs []kcl.Record, after kcl.ExtendedSequenceNumber) []kcl.Record {
	if after.IsZero() || (after.IsSentinel() && !after.IsShardEnd()) {
		return recs
	}
	kept := recs[:0]
	for _, r := range recs {
		if r.Position().Compare(after) > 0 {
			kept = append(kept, r)
		}
	}
	return kept
}

// batchBytes is the size of a batch's record data, for the prefetch bound.
func batchBytes(b Batch) int64 {
	var n int64
	for _, r := range b.Records {
		n += int64(len(r.Data))
	}
	return n
}

// childShardIDs lists the shard IDs of a GetRecords response's child shards.
func childShardIDs(in []types.ChildShard) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, 0, len(in))
	for _, c := range in {
		if id := aws.ToString(c.ShardId); id != "" {
			out = append(out, id)
		}
	}
	return out
}
