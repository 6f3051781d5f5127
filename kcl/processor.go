package kcl

import "context"

// RecordProcessor consumes the records of one shard. The worker creates one
// processor per shard lease it holds (through a [ProcessorFactory]) and calls
// ProcessRecords from a single goroutine, batch after batch, in sequence
// order.
//
// If ProcessRecords returns an error (or panics), the same batch is delivered
// again after a backoff; records are never skipped. The context is cancelled
// when the lease is lost or the worker stops waiting for the processor.
type RecordProcessor interface {
	ProcessRecords(ctx context.Context, in ProcessRecordsInput) error
}

// RecordProcessorFunc adapts an ordinary function to [RecordProcessor].
type RecordProcessorFunc func(ctx context.Context, in ProcessRecordsInput) error

// ProcessRecords calls f(ctx, in).
func (f RecordProcessorFunc) ProcessRecords(ctx context.Context, in ProcessRecordsInput) error {
	return f(ctx, in)
}

// ProcessorFactory makes the processor for one shard lease. It is called each
// time the worker starts processing a shard. An error leaves the lease to be
// retried later.
type ProcessorFactory func(shardID string) (RecordProcessor, error)

// ProcessRecordsInput is one ordered batch of records of one shard.
type ProcessRecordsInput struct {
	// ShardID is the shard the records come from.
	ShardID string
	// Records are in sequence order. The batch may be empty when the worker
	// is configured to call processors on empty reads.
	Records []Record
	// MillisBehindLatest is how far the read position was behind the tip of
	// the shard when the batch was fetched.
	MillisBehindLatest int64
	// Attempt counts deliveries of this batch, from 1. A value above 1 means
	// an earlier call returned an error for the same records.
	Attempt int
	// Checkpointer stores progress for this shard.
	Checkpointer Checkpointer
}

// Checkpointer stores how far a processor has got in its shard. All methods
// are safe to call from the processor's goroutine while it handles a batch,
// and from the lifecycle callbacks that pass one.
//
// A checkpoint write is conditional on the worker still holding the lease:
// after a lease is lost every call fails with [ErrLeaseLost], so a worker that
// lost a shard can never overwrite progress made by its new owner.
type Checkpointer interface {
	// Checkpoint stores the position of the last record delivered so far.
	Checkpoint(ctx context.Context) error
	// CheckpointAt stores a given position. It must not be before the last
	// stored checkpoint nor after the last delivered record, and must be a
	// sequence number of this shard (refused where the sequence number's
	// format tells the shard, as the Java KCL does); otherwise it fails
	// with [ErrInvalidCheckpoint].
	CheckpointAt(ctx context.Context, pos ExtendedSequenceNumber) error
	// CheckpointRecord stores the position of r. It is CheckpointAt(r.Position()).
	CheckpointRecord(ctx context.Context, r Record) error
	// Prepare stores a pending checkpoint at pos together with opaque
	// application state, without moving the checkpoint yet. Calling Commit on
	// the result makes it the checkpoint. A processor started after a crash
	// between the two steps sees the pending checkpoint and its state in
	// [InitializeInput].
	Prepare(ctx context.Context, pos ExtendedSequenceNumber, state []byte) (PreparedCheckpoint, error)
	// Last returns the last stored checkpoint.
	Last() ExtendedSequenceNumber
}

// PreparedCheckpoint is the second half of a two-phase checkpoint.
type PreparedCheckpoint interface {
	// Position returns the pending position.
	Position() ExtendedSequenceNumber
	// Commit turns the pending checkpoint into the checkpoint.
	Commit(ctx context.Context) error
}

// Initializer is implemented by processors that want to know where their
// shard starts before the first batch.
type Initializer interface {
	Initialize(ctx context.Context, in InitializeInput) error
}

// InitializeInput tells a processor where its shard resumes.
type InitializeInput struct {
	// ShardID is the shard.
	ShardID string
	// Checkpoint is the stored checkpoint, or the initial position's sentinel
	// when the shard was never checkpointed.
	Checkpoint ExtendedSequenceNumber
	// PendingCheckpoint is the position of a prepared but uncommitted
	// checkpoint; zero when there is none.
	PendingCheckpoint ExtendedSequenceNumber
	// PendingState is the application state stored with PendingCheckpoint.
	PendingState []byte
}

// LeaseLostHandler is implemented by processors that want to know when the
// worker lost their shard to another worker (or could not renew the lease in
// time). No checkpoint is possible any more: the Checkpointer of the shard
// fails with [ErrLeaseLost]. Release resources only.
type LeaseLostHandler interface {
	LeaseLost(ctx context.Context, in LeaseLostInput) error
}

// LeaseLostInput describes a lost lease.
type LeaseLostInput struct {
	// ShardID is the shard.
	ShardID string
}

// ShardEndedHandler is implemented by processors that want to act when their
// shard was read to its end (after a split or merge). The processor must
// call in.Checkpointer.Checkpoint to record SHARD_END; children of the shard
// start only after that. If the processor does not implement the interface,
// the worker checkpoints SHARD_END itself once the last batch succeeded.
type ShardEndedHandler interface {
	ShardEnded(ctx context.Context, in ShardEndedInput) error
}

// ShardEndedInput describes a finished shard.
type ShardEndedInput struct {
	// ShardID is the shard.
	ShardID string
	// ChildShardIDs are the shards that continue it.
	ChildShardIDs []string
	// Checkpointer stores SHARD_END with Checkpoint.
	Checkpointer Checkpointer
}

// ShutdownRequestedHandler is implemented by processors that want a last
// chance to checkpoint when the worker gives the shard up on purpose
// (graceful shutdown or a planned hand-over). The checkpointer still works.
type ShutdownRequestedHandler interface {
	ShutdownRequested(ctx context.Context, in ShutdownRequestedInput) error
}

// ShutdownRequestedInput describes a planned stop of a shard.
type ShutdownRequestedInput struct {
	// ShardID is the shard.
	ShardID string
	// Checkpointer still holds the lease.
	Checkpointer Checkpointer
}
