package worker

import (
	"errors"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// Hook is a value implementing one or more of the Hook* interfaces below.
// Hooks observe the worker (the metrics package is built on them); the
// worker calls each one synchronously from the goroutine where the event
// happens, so a hook must be quick, safe for concurrent use, and must not
// call back into the worker.
type Hook any

// HookWorkerStart is called once when Run starts, after the start-up checks
// and before any other hook, with the worker's identity (the metrics package
// takes its stream and worker labels from it).
type HookWorkerStart interface {
	OnWorkerStart(WorkerStartEvent)
}

// WorkerStartEvent identifies a worker that starts consuming.
type WorkerStartEvent struct {
	// WorkerID is the worker's ID in the lease table.
	WorkerID string
	// Stream is the stream's name, or its ARN when the worker was
	// configured with StreamARN.
	Stream string
	// ApplicationName is the application's name.
	ApplicationName string
	// RecordCounts returns the worker's running totals of KPL
	// de-aggregation and record decoding (as [Worker.RecordCounts]); it may
	// be called from any goroutine at any time, e.g. when metrics are
	// scraped.
	RecordCounts func() RecordCounts
	// Unowned returns the unfinished shards that, as far as this worker
	// can tell from what it reads anyway (the fleet row at each heartbeat,
	// the leases when they change), no live worker holds, each with how
	// long it has been so: since its owner's heartbeat last moved (a dead
	// or stopped owner), or since the lease was last seen changing (a
	// free lease). The times are lower bounds. Every worker reports the
	// shards it sees so, its own excepted; like RecordCounts it may be
	// called at any time.
	Unowned func() map[string]time.Duration
}

// HookBatchProcessed is called after every delivery of a batch to a
// processor, failed (Err set; the batch will be delivered again) or not.
type HookBatchProcessed interface {
	OnBatchProcessed(BatchProcessedEvent)
}

// BatchProcessedEvent describes one call of ProcessRecords.
type BatchProcessedEvent struct {
	// ShardID is the shard.
	ShardID string
	// Records and Bytes count the user records and their data.
	Records, Bytes int
	// Attempt counts deliveries of this batch, from 1.
	Attempt int
	// Duration is how long the processor took.
	Duration time.Duration
	// Err is the processor's error (a *kcl.ProcessorPanicError after a
	// panic); nil on success.
	Err error
	// MillisBehindLatest is the shard's lag when the batch was fetched.
	MillisBehindLatest int64
	// OldestArrival is the approximate arrival time of the batch's first
	// record (zero for an empty batch).
	OldestArrival time.Time
	// Arrivals are the approximate arrival times of the batch's records, in
	// order (nil for an empty batch). The slice is the hook's own.
	Arrivals []time.Time
}

// HookFetch is called after every read call to Kinesis.
type HookFetch interface {
	OnFetch(FetchEvent)
}

// FetchEvent describes one read call (GetRecords, or one SubscribeToShard
// event or call). Records and Bytes count Kinesis records as received,
// before de-aggregation and filtering.
type FetchEvent struct {
	// ShardID is the shard read.
	ShardID string
	// Op names the call: "GetRecords", "GetShardIterator",
	// "SubscribeToShard" (a subscribe call, or a subscription that ended
	// with Err) or "SubscribeToShardEvent" (one event received).
	Op string
	// Records and Bytes are what the call returned.
	Records, Bytes int
	// Duration is how long the call took (for an event: the wait for it).
	Duration time.Duration
	// MillisBehindLatest is the lag the call reported.
	MillisBehindLatest int64
	// Err is the call's error, nil on success.
	Err error
	// ErrorKind classifies Err: "throttled", "in_use", "expired_iterator",
	// "transient", "trimmed", "not_found" or "fatal"; empty on success.
	ErrorKind string
}

// RecordCounts are a worker's running totals of KPL de-aggregation and
// record decoding.
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
	// DecodeFailures counts user records the RecordDecoder failed on; each
	// was delivered with DecodeErr matching kcl.ErrRecordDecode.
	DecodeFailures int64
}

// HookLease is called for every lease change of this worker.
type HookLease interface {
	OnLease(LeaseEvent)
}

// LeaseEventKind names a lease change.
type LeaseEventKind string

// Lease changes reported to [HookLease].
const (
	// LeaseAcquired: the worker took a lease; How says how: "take" (a new
	// or expired lease), "take-released" (released by its owner), "handoff"
	// (handed over by its owner) or "handoff-timeout" (taken after a
	// hand-over request timed out).
	LeaseAcquired LeaseEventKind = "acquired"
	// LeaseLost: the worker lost a lease (taken by another worker, or not
	// renewed in time); Cause says why.
	LeaseLost LeaseEventKind = "lost"
	// LeaseReleased: the worker gave a lease up (graceful stop, shard end).
	LeaseReleased LeaseEventKind = "released"
	// LeaseHandedOver: the worker handed a lease over to Peer.
	LeaseHandedOver LeaseEventKind = "handed_over"
	// LeaseHandoffRequested: the worker asked Peer to hand a lease over.
	LeaseHandoffRequested LeaseEventKind = "handoff_requested"
	// LeaseRenewFailed: a renewal failed for a reason other than a lost
	// lease; it is retried until the lease's deadline.
	LeaseRenewFailed LeaseEventKind = "renew_failed"
)

// LeaseEvent is a lease change of this worker.
type LeaseEvent struct {
	// Kind is what happened.
	Kind LeaseEventKind
	// ShardID is the lease's shard.
	ShardID string
	// How qualifies LeaseAcquired.
	How string
	// Peer is the other worker involved (previous owner, new owner,
	// requested owner), if any.
	Peer string
	// Cause qualifies LeaseLost: "expired" (not renewed in time),
	// "conflict" (another writer moved the lease) or "other".
	Cause string
	// Err is the error behind a loss or a failed renewal.
	Err error
}

// HookCheckpoint is called after every checkpoint write attempt.
type HookCheckpoint interface {
	OnCheckpoint(CheckpointEvent)
}

// CheckpointEvent describes one checkpoint write.
type CheckpointEvent struct {
	// ShardID is the shard.
	ShardID string
	// Position is the checkpoint written (or the pending one for a
	// prepared checkpoint).
	Position kcl.ExtendedSequenceNumber
	// Duration is how long the write took.
	Duration time.Duration
	// Err is the write's error; nil on success.
	Err error
}

// HookShard is called when a shard consumer starts or stops, and when a
// held shard stalls or recovers (see Config.StallTimeout).
type HookShard interface {
	OnShard(ShardEvent)
}

// ShardEventKind names a shard consumer's transition.
type ShardEventKind string

// Shard consumer transitions.
const (
	// ShardStarted: the worker began processing the shard.
	ShardStarted ShardEventKind = "started"
	// ShardStopped: the worker stopped processing the shard; Reason says
	// why ("lease_lost", "shutdown", "handoff", "shard_end", "error").
	ShardStopped ShardEventKind = "stopped"
	// ShardStalled: the held shard stalled, or the reason of its stall
	// changed; Reason is "open-failing", "processor-failing",
	// "checkpoint-failing", "read-failing" (each after a few failures in a
	// row) or "no-progress" (nothing processed and no read at the tip
	// for Config.StallTimeout).
	ShardStalled ShardEventKind = "stalled"
	// ShardRecovered: the stall of the shard ended (it made progress, the
	// failures stopped, or its consumer stopped); Reason is the stall's.
	ShardRecovered ShardEventKind = "recovered"
)

// ShardEvent describes a shard consumer's transition.
type ShardEvent struct {
	// ShardID is the shard.
	ShardID string
	// Kind is the transition.
	Kind ShardEventKind
	// Reason qualifies ShardStopped, ShardStalled and ShardRecovered.
	Reason string
}

// hooks fans events out to the configured hooks, sorted by interface once.
type hooks struct {
	start      []HookWorkerStart
	batch      []HookBatchProcessed
	fetch      []HookFetch
	lease      []HookLease
	checkpoint []HookCheckpoint
	shard      []HookShard
	delivery   []HookDelivery
}

func newHooks(hs []Hook) *hooks {
	h := &hooks{}
	for _, x := range hs {
		if v, ok := x.(HookWorkerStart); ok {
			h.start = append(h.start, v)
		}
		if v, ok := x.(HookBatchProcessed); ok {
			h.batch = append(h.batch, v)
		}
		if v, ok := x.(HookFetch); ok {
			h.fetch = append(h.fetch, v)
		}
		if v, ok := x.(HookLease); ok {
			h.lease = append(h.lease, v)
		}
		if v, ok := x.(HookCheckpoint); ok {
			h.checkpoint = append(h.checkpoint, v)
		}
		if v, ok := x.(HookShard); ok {
			h.shard = append(h.shard, v)
		}
		if v, ok := x.(HookDelivery); ok {
			h.delivery = append(h.delivery, v)
		}
	}
	return h
}

// known reports whether x implements at least one hook interface.
func knownHook(x Hook) bool {
	switch x.(type) {
	case HookWorkerStart, HookBatchProcessed, HookFetch, HookLease, HookCheckpoint, HookShard, HookDelivery:
		return true
	}
	return false
}

func (h *hooks) onWorkerStart(e WorkerStartEvent) {
	for _, x := range h.start {
		x.OnWorkerStart(e)
	}
}

func (h *hooks) onBatch(e BatchProcessedEvent) {
	for _, x := range h.batch {
		x.OnBatchProcessed(e)
	}
}

func (h *hooks) onFetch(re reader.FetchEvent) {
	e := FetchEvent{ShardID: re.ShardID, Op: re.Op, Records: re.Records, Bytes: re.Bytes, Duration: re.Duration,
		MillisBehindLatest: re.MillisBehindLatest, Err: re.Err, ErrorKind: re.ErrorKind}
	if e.Err != nil && e.ErrorKind == "" {
		e.ErrorKind = awsx.Label(e.Err)
	}
	for _, x := range h.fetch {
		x.OnFetch(e)
	}
}

func (h *hooks) onLease(le lease.Event) {
	e := LeaseEvent{Kind: LeaseEventKind(le.Kind), ShardID: le.Key, How: le.How, Peer: le.Peer, Err: le.Err}
	if e.Kind == LeaseAcquired && e.How == "" {
		e.How = "take"
	}
	if e.Kind == LeaseLost {
		switch {
		case errors.Is(le.Err, lease.ErrExpired):
			e.Cause = "expired"
		case errors.Is(le.Err, lease.ErrConflict):
			e.Cause = "conflict"
		default:
			e.Cause = "other"
		}
	}
	for _, x := range h.lease {
		x.OnLease(e)
	}
}

func (h *hooks) onCheckpoint(e CheckpointEvent) {
	for _, x := range h.checkpoint {
		x.OnCheckpoint(e)
	}
}

func (h *hooks) onDelivery(e DeliveryEvent) {
	for _, x := range h.delivery {
		x.OnDelivery(e)
	}
}

func (h *hooks) onShard(e ShardEvent) {
	for _, x := range h.shard {
		x.OnShard(e)
	}
}

// leaseObserver returns the observer for the lease manager, nil without hooks.
func (h *hooks) leaseObserver() func(lease.Event) {
	if len(h.lease) == 0 {
		return nil
	}
	return h.onLease
}
