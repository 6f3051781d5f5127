package kcl

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Record is one user record as delivered to a [RecordProcessor]. It is
// Shardline's own type, independent of the AWS SDK.
type Record struct {
	// Data is the record's payload. The slice belongs to the processor.
	Data []byte
	// PartitionKey is the key the producer used to pick the shard.
	PartitionKey string
	// SequenceNumber is the Kinesis sequence number of the (possibly
	// aggregated) Kinesis record this user record came from.
	SequenceNumber string
	// SubSequenceNumber is the index of this user record inside a KPL
	// aggregate; 0 for plain records.
	SubSequenceNumber int64
	// ApproximateArrivalTimestamp is when Kinesis accepted the record.
	ApproximateArrivalTimestamp time.Time
	// ExplicitHashKey is the hash key the producer set, if any.
	ExplicitHashKey string
	// Aggregated reports whether the record was unpacked from a KPL aggregate.
	Aggregated bool
	// DecodeErr is set when the record could not be turned into user data;
	// the record is delivered anyway, never dropped, and it counts like any
	// other for checkpoints. It matches [ErrMalformedAggregate] when the
	// Kinesis record started like a KPL aggregate but could not be unpacked
	// (bad digest, bad protobuf): Data is then the whole Kinesis record as
	// read. It matches [ErrRecordDecode] when the configured
	// [RecordDecoder] failed: Data is then the user record as read, still
	// encoded.
	DecodeErr error
}

// Errors reported in [Record.DecodeErr].
var (
	// ErrMalformedAggregate: the Kinesis record carried the KPL magic bytes
	// but was not a valid aggregate; it is delivered as one raw record.
	ErrMalformedAggregate = errors.New("shardline: malformed KPL aggregated record")
	// ErrRecordDecode: the RecordDecoder returned an error for the record.
	ErrRecordDecode = errors.New("shardline: record decoder failed")
)

// RecordDecoder reverses a producer's record encoder (client-side
// encryption, compression...). It is called once per user record, after KPL
// de-aggregation, with the record's partition key and data, and returns the
// data the processor receives. When it fails, the record is still delivered,
// with its data as read and DecodeErr set. Shards are read in parallel, so
// a decoder must be safe for concurrent use; ctx ends when the shard's
// reader stops.
type RecordDecoder func(ctx context.Context, partitionKey string, data []byte) ([]byte, error)

// Position returns the record's extended sequence number.
func (r Record) Position() ExtendedSequenceNumber {
	return ExtendedSequenceNumber{SequenceNumber: r.SequenceNumber, SubSequenceNumber: r.SubSequenceNumber}
}

// InitialPosition is where a shard without a checkpoint starts. The zero
// value is LATEST, as in the Java KCL; build the others with
// [StartAtTrimHorizon] and [StartAtTimestamp]. Positions compare with ==.
type InitialPosition struct {
	kind initialKind
	at   time.Time // with initialAtTimestamp only
}

// initialKind selects an InitialPosition.
type initialKind int

const (
	initialLatest initialKind = iota
	initialTrimHorizon
	initialAtTimestamp
)

// StartAtTrimHorizon returns the position of the oldest retained record.
func StartAtTrimHorizon() InitialPosition { return InitialPosition{kind: initialTrimHorizon} }

// StartAtLatest returns the position after the newest record.
func StartAtLatest() InitialPosition { return InitialPosition{kind: initialLatest} }

// StartAtTimestamp returns the position of the first record that arrived at
// or after t.
func StartAtTimestamp(t time.Time) InitialPosition {
	return InitialPosition{kind: initialAtTimestamp, at: t}
}

// Timestamp returns the time of a [StartAtTimestamp] position; zero for the
// others.
func (p InitialPosition) Timestamp() time.Time { return p.at }

// Validate reports a position that cannot be used at all: AT_TIMESTAMP
// without a time. It does not look at the clock, since a stored position is
// read again much later: where a position is chosen, worker.New and lease
// resets also refuse a time more than a minute in the future (Kinesis
// refuses such a time; an emulator would wait for it, reading nothing).
func (p InitialPosition) Validate() error {
	if p.kind == initialAtTimestamp && p.at.IsZero() {
		return fmt.Errorf("%w: AT_TIMESTAMP initial position needs a timestamp", ErrInvalidConfig)
	}
	return nil
}

// Sequence returns the sentinel that stands for p in the lease table:
// [TrimHorizon], [Latest] or [AtTimestamp] (whose time the lease stores
// beside it).
func (p InitialPosition) Sequence() ExtendedSequenceNumber {
	switch p.kind {
	case initialTrimHorizon:
		return TrimHorizon
	case initialAtTimestamp:
		return AtTimestamp
	}
	return Latest
}

// String describes the position: TRIM_HORIZON, LATEST or
// AT_TIMESTAMP(time).
func (p InitialPosition) String() string {
	if p.kind == initialAtTimestamp {
		return sentinelAtTimestamp + "(" + p.at.UTC().Format(time.RFC3339Nano) + ")"
	}
	return p.Sequence().SequenceNumber
}
