// Package reader gets records out of Kinesis for one shard at a time, in
// either of the two ways AWS offers: shared throughput (GetRecords polling,
// [NewPolling]) and enhanced fan-out (SubscribeToShard through a registered
// consumer, [NewFanOut]).
//
// One core (core.go) owns everything a shard reader does whichever way it
// reads: the queue bounded by batches and bytes, position and gap tracking,
// the filter after a checkpoint, de-aggregation and decoding, shard end
// with children, retries and fatal errors, and the observer. Two small
// fetchers plug into it: polling.go (GetShardIterator/GetRecords) and
// subscribe.go (SubscribeToShard). Both yield the same [Batch] type with the
// same guarantees, so the worker does not care which one is used.
package reader

import (
	"context"
	"time"

	"github.com/shardline/shardline/kcl"
)

// Batch is one fetch result for a shard.
type Batch struct {
	// Records are in sequence order, already filtered so that none is at or
	// before the start position.
	Records []kcl.Record
	// MillisBehindLatest is how far behind the tip of the shard the read was.
	MillisBehindLatest int64
	// ShardEnded is true on the last batch of a closed shard: every record of
	// the shard has been delivered (this batch's records included).
	ShardEnded bool
	// ChildShardIDs lists the shards continuing a closed shard (with ShardEnded).
	ChildShardIDs []string
	// Gap, when true, reports that the start position had already been
	// trimmed by the stream's retention: reading resumed at the oldest
	// retained record (TRIM_HORIZON) and records between the checkpoint and
	// the first record delivered may have been lost. It is set on the first
	// batch delivered after the gap was found, which may have no records.
	Gap bool
}

// StartPosition is where a shard read begins: after a checkpoint, or at an
// initial position when the shard has none.
type StartPosition struct {
	// After is the checkpoint; records at or before it are not delivered. A
	// sentinel (TRIM_HORIZON, LATEST, AT_TIMESTAMP) or zero means "use
	// Initial".
	After kcl.ExtendedSequenceNumber
	// Initial applies when After is not a real sequence number.
	Initial kcl.InitialPosition
	// HashKeyRange is the shard's hash key range, from its lease. When set,
	// a KPL aggregate holding a user record outside it is dropped (and
	// counted) as the KCL does: it was written from a stale shard map, and
	// the producer writes it again to the right shard. Zero: no check.
	HashKeyRange HashKeyRange
}

// Source opens readers on shards of one stream.
type Source interface {
	// Open starts reading shardID from start. The returned Reader is owned by
	// the caller, who must Close it.
	Open(ctx context.Context, shardID string, start StartPosition) (Reader, error)
}

// Reader yields the batches of one shard in order.
type Reader interface {
	// Next blocks until a batch is ready or ctx ends. After a batch with
	// ShardEnded it returns an error matching io.EOF. Throttling and
	// transient errors are retried internally with backoff and never
	// surface. An error that retrying cannot fix ends the reader: Next
	// returns it as an error naming the shard (matching kcl.ErrStreamNotFound when
	// the stream or shard is gone) after the batches already fetched, and on
	// every later call. After Close it returns an error.
	Next(ctx context.Context) (Batch, error)
	// Close stops reading and waits for the reader's goroutines to end.
	Close() error
}

// FetchEvent describes one read call (GetRecords, or one SubscribeToShard
// event or call) for observers such as metrics. Records and Bytes count
// Kinesis records as received, before de-aggregation and filtering.
type FetchEvent struct {
	// ShardID is the shard read.
	ShardID string
	// Op names the call: "GetRecords", "GetShardIterator",
	// "SubscribeToShard" (a subscribe call, or a subscription that ended
	// with Err) or "SubscribeToShardEvent" (one event received).
	Op string
	// Records and Bytes are what the call returned.
	Records, Bytes int
	// Duration is how long the call took; for a SubscribeToShardEvent, how
	// long the reader waited for the event (since the previous one was
	// handed over, or since the subscribe call returned).
	Duration time.Duration
	// MillisBehindLatest is the lag the call reported.
	MillisBehindLatest int64
	// Err is the call's error, nil on success.
	Err error
	// ErrorKind classifies Err: "throttled", "expired_iterator", "transient",
	// "trimmed", "not_found" or "fatal"; empty on success.
	ErrorKind string
}

// Observer receives fetch events. It is called synchronously from the
// reading goroutine and must return quickly.
type Observer func(FetchEvent)
