package reader

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"unsafe"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/kpl"
	"github.com/shardline/shardline/kcl"
)

// RecordOptions say how a reader turns Kinesis records into user records.
// The core applies them ([RecordOptions.transformer]) whichever way the
// shard is read.
type RecordOptions struct {
	// DisableDeaggregation delivers KPL aggregated records as they are, one
	// record each, instead of unpacking them (the default, as in the KCL).
	DisableDeaggregation bool
	// Decoder, when set, is applied to every user record after
	// de-aggregation (client-side decryption, decompression). A record it
	// fails on is delivered with its data as read and DecodeErr set.
	Decoder kcl.RecordDecoder
	// Counted, when set, is called with what de-aggregation and decoding
	// met in one response's records, after each response that met
	// something (from the reader's goroutine).
	Counted func(shardID string, c RecordCounts)
}

// RecordCounts count what turning Kinesis records into user records met.
type RecordCounts struct {
	// Aggregates counts KPL aggregated records unpacked, and
	// AggregatedUserRecords the user records delivered from them.
	Aggregates, AggregatedUserRecords int64
	// MalformedAggregates counts Kinesis records that started with the KPL
	// magic bytes but could not be unpacked; each was delivered as one raw
	// record with DecodeErr matching kcl.ErrMalformedAggregate.
	MalformedAggregates int64
	// DroppedAggregates counts aggregates not delivered because one of their
	// user records has a hash key outside the shard's range (written from a
	// stale shard map; the producer writes them again), and
	// DroppedUserRecords the user records they held.
	DroppedAggregates, DroppedUserRecords int64
	// DecodeFailures counts user records the RecordDecoder failed on; each was
	// delivered with DecodeErr matching kcl.ErrRecordDecode.
	DecodeFailures int64
}

// HashKeyRange is a shard's inclusive range of hash keys, in decimal as the
// Kinesis API and the lease table write them.
type HashKeyRange struct {
	StartingHashKey, EndingHashKey string
}

// IsZero reports whether the range is unset.
func (r HashKeyRange) IsZero() bool { return r.StartingHashKey == "" && r.EndingHashKey == "" }

// recordTransform turns the Kinesis records of one response into user
// records, in order. An aggregated Kinesis record becomes several user
// records sharing its sequence number, with sub-sequence numbers 0, 1, 2...
// Everything after it (the start-position filter, batching) works on
// extended sequence numbers. ctx bounds the decoder's calls.
type recordTransform func(ctx context.Context, in []types.Record) []kcl.Record

// transformer returns the transform of one shard's reader: shardID and
// hashRange (which may be zero: no range check) are the shard's. Every
// reader, polling or subscribed, must use it.
func (o RecordOptions) transformer(shardID string, hashRange HashKeyRange, log *slog.Logger) recordTransform {
	t := &shardTransform{opts: o, shardID: shardID, log: log}
	if !hashRange.IsZero() {
		r, err := hashkey.ParseRange(hashRange.StartingHashKey, hashRange.EndingHashKey)
		if err != nil {
			log.Warn("reader: shard hash key range unreadable; aggregated records are not range-checked",
				slog.String("start", hashRange.StartingHashKey), slog.String("end", hashRange.EndingHashKey), slog.Any("error", err))
		} else {
			t.hashRange, t.checkRange = r, true
		}
	}
	return t.transform
}

// shardTransform holds one shard's transform settings.
type shardTransform struct {
	opts       RecordOptions
	shardID    string
	log        *slog.Logger
	hashRange  hashkey.Range
	checkRange bool
}

func (t *shardTransform) transform(ctx context.Context, in []types.Record) []kcl.Record {
	if len(in) == 0 {
		return nil
	}
	var c RecordCounts
	// Plain records are written in place, field by field, into zeroed
	// slots: copying a whole kcl.Record costs a bulk write barrier per
	// record while the GC runs, and this loop is on the reader's critical
	// path. Slots past len(out) are never written before they are used.
	out := make([]kcl.Record, 0, len(in))
	for i := range in {
		kr := &in[i]
		if t.opts.DisableDeaggregation || !kpl.IsAggregated(kr.Data) {
			if len(out) < cap(out) {
				out = out[:len(out)+1]
			} else { // aggregates grew the batch past one record each
				out = append(out, kcl.Record{})
			}
			r := &out[len(out)-1]
			setBase(r, kr)
			if t.opts.Decoder != nil {
				*r = t.decode(ctx, *r, &c)
			}
			continue
		}
		var base kcl.Record
		setBase(&base, kr)
		users, err := kpl.Unmarshal(kr.Data)
		if err != nil {
			c.MalformedAggregates++
			t.log.WarnContext(ctx, "reader: malformed KPL aggregated record delivered as one raw record",
				slog.String("sequence", base.SequenceNumber), slog.Int("bytes", len(kr.Data)), slog.Any("error", err))
			base.DecodeErr = fmt.Errorf("%w: %w", kcl.ErrMalformedAggregate, err)
			out = append(out, base)
			continue
		}
		if t.checkRange {
			if i, k, ok := t.outOfRange(users); !ok {
				// As the KCL does: the whole aggregate goes. It was written
				// from a stale shard map, and a producer that learns so
				// (the KPL, Shardline's) writes all of it again.
				c.DroppedAggregates++
				c.DroppedUserRecords += int64(len(users))
				t.log.WarnContext(ctx, "reader: KPL aggregate dropped: a user record's hash key is outside the shard's range",
					slog.String("sequence", base.SequenceNumber), slog.Int("user_records", len(users)),
					slog.Int("index", i), slog.String("hash_key", k))
				continue
			}
		}
		c.Aggregates++
		c.AggregatedUserRecords += int64(len(users))
		for i, u := range users {
			r := base
			r.Data = u.Data
			r.PartitionKey = u.PartitionKey
			r.ExplicitHashKey = u.ExplicitHashKey
			r.SubSequenceNumber = int64(i)
			r.Aggregated = true
			out = append(out, t.decode(ctx, r, &c))
		}
	}
	if t.opts.Counted != nil && c != (RecordCounts{}) {
		t.opts.Counted(t.shardID, c)
	}
	return out
}

// setBase sets the fields of r that come from the Kinesis record kr; r's
// other fields are left as they are.
func setBase(r *kcl.Record, kr *types.Record) {
	r.Data = kr.Data
	if kr.PartitionKey != nil {
		r.PartitionKey = *kr.PartitionKey
	}
	if kr.SequenceNumber != nil {
		r.SequenceNumber = *kr.SequenceNumber
	}
	if kr.ApproximateArrivalTimestamp != nil {
		r.ApproximateArrivalTimestamp = *kr.ApproximateArrivalTimestamp
	}
}

// outOfRange finds the first user record whose hash key lies outside the
// shard's range. A record whose explicit hash key cannot be read is kept.
func (t *shardTransform) outOfRange(users []kpl.Record) (index int, key string, ok bool) {
	for i, u := range users {
		k, err := hashkey.For(u.PartitionKey, u.ExplicitHashKey)
		if err != nil {
			continue
		}
		if !t.hashRange.Contains(k) {
			return i, k.String(), false
		}
	}
	return 0, "", true
}

// decode applies the decoder to one user record, counting a failure in c.
func (t *shardTransform) decode(ctx context.Context, r kcl.Record, c *RecordCounts) kcl.Record {
	if t.opts.Decoder == nil {
		return r
	}
	data, err := decodeSafely(ctx, t.opts.Decoder, r)
	if err != nil {
		c.DecodeFailures++
		t.log.WarnContext(ctx, "reader: record decoder failed; record delivered undecoded with DecodeErr set",
			slog.String("position", r.Position().String()), slog.Any("error", err))
		r.DecodeErr = fmt.Errorf("%w: %w", kcl.ErrRecordDecode, err)
		return r
	}
	r.Data = data
	return r
}

// decodeSafely calls the decoder, turning a panic into an error.
func decodeSafely(ctx context.Context, d kcl.RecordDecoder, r kcl.Record) (data []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("decoder panicked: %v", v)
		}
	}()
	return d(ctx, r.PartitionKey, r.Data)
}

// toRecords converts without de-aggregation or decoding: one user record
// per Kinesis record, sub-sequence number 0, not aggregated. GetRecords does
// not return explicit hash keys, so ExplicitHashKey stays empty.
func toRecords(in []types.Record) []kcl.Record {
	return RecordOptions{DisableDeaggregation: true}.transformer("", HashKeyRange{}, slog.New(slog.DiscardHandler))(context.Background(), in)
}

// filterAfter drops the records whose extended sequence number is at or
// before after; it keeps every record when after is zero or a starting
// sentinel. Records are in order, so only a prefix can go: the result is a
// subslice of recs, and the common case (nothing to drop) costs one
// comparison.
func filterAfter(recs []kcl.Record, after kcl.ExtendedSequenceNumber) []kcl.Record {
	if len(recs) == 0 || after.IsZero() || (after.IsSentinel() && !after.IsShardEnd()) {
		return recs
	}
	if recs[0].Position().Compare(after) > 0 {
		return recs
	}
	i := sort.Search(len(recs), func(i int) bool { return recs[i].Position().Compare(after) > 0 })
	return recs[i:]
}

// recordOverhead is the memory of one user record besides its strings and
// data: the kcl.Record itself.
const recordOverhead = int64(unsafe.Sizeof(kcl.Record{}))

// RecordsMemory is the memory records take, as the prefetch bound counts
// it: per record its struct, its data, partition key and explicit hash key,
// and its sequence number (once per Kinesis record: the user records of one
// aggregate share it). Records without data still count, so many empty
// records cannot pass for nothing.
func RecordsMemory(recs []kcl.Record) int64 {
	var n int64
	for i := range recs {
		r := &recs[i]
		n += recordOverhead + int64(len(r.Data)+len(r.PartitionKey)+len(r.ExplicitHashKey))
		if r.SubSequenceNumber == 0 {
			n += int64(len(r.SequenceNumber))
		}
	}
	return n
}

// batchBytes is the memory of a batch's records, for the prefetch bound.
func batchBytes(b Batch) int64 { return RecordsMemory(b.Records) }

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
