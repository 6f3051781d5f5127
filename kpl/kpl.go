// Package kpl reads and writes the aggregated record format of the Kinesis
// Producer Library (KPL), which packs many user records into one Kinesis
// record to get past the per-record costs and limits of a shard.
//
// An aggregated Kinesis record is the four magic bytes F3 89 9A C2, a
// protobuf AggregatedRecord message (a table of partition keys, a table of
// explicit hash keys and the user records, each pointing into the tables),
// and the MD5 digest of that message. The message is encoded and decoded by
// google.golang.org/protobuf from the KPL's schema.
//
// Shardline's producer writes this format when aggregation is on, and its
// consumer unpacks it by default; this package is public for programs that
// read or write Kinesis by other means (a Lambda function, another producer).
package kpl

import (
	"unsafe"

	ikpl "github.com/shardline/shardline/internal/kpl"
)

// Errors of [Unmarshal]. Every error it returns matches exactly one of them.
var (
	// ErrNotAggregated: the data does not start with the magic bytes or is
	// too short to hold a digest. It is a plain record.
	ErrNotAggregated = ikpl.ErrNotAggregated
	// ErrChecksum: the data starts with the magic bytes but the MD5 trailer
	// does not match the message.
	ErrChecksum = ikpl.ErrChecksum
	// ErrMalformed: the digest matches but the message cannot be read: bad
	// protobuf, a missing required field, a table index out of range, or no
	// records at all.
	ErrMalformed = ikpl.ErrMalformed
)

// Record is one user record inside an aggregate.
type Record struct {
	// PartitionKey is the user record's partition key.
	PartitionKey string
	// ExplicitHashKey is the user record's explicit hash key (a decimal
	// number), or "" when it has none.
	ExplicitHashKey string
	// Data is the user record's payload.
	Data []byte
}

// IsAggregated reports whether data looks like an aggregated record: it
// starts with the magic bytes and is long enough to hold the digest. It does
// not check the digest; [Unmarshal] does.
func IsAggregated(data []byte) bool { return ikpl.IsAggregated(data) }

// Unmarshal returns the user records of an aggregated record, in order (a
// record's index is its sub-sequence number). The returned records do not
// share memory with data. The error matches [ErrNotAggregated],
// [ErrChecksum] or [ErrMalformed].
func Unmarshal(data []byte) ([]Record, error) {
	recs, err := ikpl.Unmarshal(data)
	if err != nil {
		return nil, err
	}
	return records(recs), nil
}

// records views internal records as Records without copying them: the two
// struct types have the same fields in the same order (the conversion
// Record(ikpl.Record{}) below fails to compile if they ever differ).
func records(recs []ikpl.Record) []Record {
	var _ = Record(ikpl.Record{})
	if len(recs) == 0 {
		return []Record{}
	}
	return unsafe.Slice((*Record)(unsafe.Pointer(unsafe.SliceData(recs))), len(recs))
}

// Marshal returns the aggregated record holding records, in order. It fails
// only when records is empty.
func Marshal(records []Record) ([]byte, error) {
	recs := make([]ikpl.Record, len(records))
	for i, r := range records {
		recs[i] = ikpl.Record(r)
	}
	return ikpl.Marshal(recs)
}
