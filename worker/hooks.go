package worker

import (
	"errors"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// Hook observes a worker (the metrics package is one). The worker calls
// OnEvent synchronously from the goroutine where the event happens, so a
// hook must be quick, safe for concurrent use, and must not call back into
// the worker.
//
// In a multi-stream worker (Config.Streams or StreamsFunc) the ShardID of
// every event is the shard's lease key, ACCOUNT:STREAM:EPOCH:SHARD, so that
// it names the stream too, and the EventWorkerStart event's Stream is empty.
type Hook interface {
	OnEvent(Event)
}

// HookFunc adapts a function to [Hook].
type HookFunc func(Event)

// OnEvent calls f(e).
func (f HookFunc) OnEvent(e Event) { f(e) }

// EventKind says what an [Event] reports, and so which of its fields are
// set; the fields not listed for a kind are zero.
type EventKind string

// The kinds of events. Every kind but EventWorkerStart sets ShardID.
const (
	// EventWorkerStart: Run started, after the start-up checks and before
	// any other event. WorkerID and Stream (the stream's name, or its ARN
	// when the worker was configured with StreamARN) identify the worker.
	EventWorkerStart EventKind = "worker_start"

	// EventBatchProcessed: one call of ProcessRecords returned, failed (Err
	// set, a *kcl.ProcessorPanicError after a panic; the batch will be
	// delivered again) or not. Records and Bytes count the user records
	// and their data, Attempt the deliveries of this batch from 1, Duration
	// the processor's time, MillisBehindLatest the shard's lag when the
	// batch was fetched, Arrivals the records' approximate arrival times in
	// order (nil for an empty batch; the slice is the hook's own).
	EventBatchProcessed EventKind = "batch_processed"

	// EventFetch: one read call to Kinesis returned. Op names it:
	// "GetRecords", "GetShardIterator", "SubscribeToShard" (a subscribe
	// call, or a subscription that ended with Err) or
	// "SubscribeToShardEvent" (one event received). Records and Bytes count
	// the Kinesis records received, before de-aggregation and filtering;
	// Duration is the call's time (for an event: the wait for it);
	// MillisBehindLatest the lag it reported. On failure Err is set and
	// Reason classifies it: "throttled", "in_use", "expired_iterator",
	// "transient", "trimmed", "not_found" or "fatal".
	EventFetch EventKind = "fetch"

	// EventAggregatesUnpacked: KPL aggregated records of one read were
	// unpacked: Aggregates of them, holding Records user records.
	EventAggregatesUnpacked EventKind = "aggregates_unpacked"
	// EventAggregatesMalformed: Aggregates Kinesis records of one read
	// started with the KPL magic bytes but could not be unpacked; each was
	// delivered as one raw record with DecodeErr matching
	// kcl.ErrMalformedAggregate.
	EventAggregatesMalformed EventKind = "aggregates_malformed"
	// EventAggregatesDropped: Aggregates aggregated records of one read,
	// holding Records user records, were not delivered because one of their
	// user records has a hash key outside the shard's range (written from a
	// stale shard map; the producer writes them again).
	EventAggregatesDropped EventKind = "aggregates_dropped"
	// EventDecodeFailed: the RecordDecoder failed on Records user records
	// of one read; each was delivered with DecodeErr matching
	// kcl.ErrRecordDecode.
	EventDecodeFailed EventKind = "decode_failed"

	// EventLeaseAcquired: the worker took a lease. Reason says how: "take"
	// (a new or expired lease), "take-released" (released by its owner),
	// "handoff" (handed over by its owner) or "handoff-timeout" (taken
	// after a hand-over request timed out); Peer is the previous owner, if
	// any.
	EventLeaseAcquired EventKind = "lease_acquired"
	// EventLeaseLost: the worker lost a lease without giving it up. Reason
	// says why: "expired" (not renewed in time), "conflict" (another writer
	// moved the lease) or "other"; Err is the error behind it; Peer the new
	// owner, if known.
	EventLeaseLost EventKind = "lease_lost"
	// EventLeaseReleased: the worker gave a lease up (shard end, failed
	// start; a graceful stop with no other live worker to hand it to).
	EventLeaseReleased EventKind = "lease_released"
	// EventLeaseHandedOver: the worker handed a lease over to Peer (which
	// asked for it, or, on a graceful stop, which the fleet-wide plan
	// names).
	EventLeaseHandedOver EventKind = "lease_handed_over"
	// EventHandoffRequested: the worker asked Peer to hand a lease over.
	EventHandoffRequested EventKind = "handoff_requested"
	// EventLeaseRenewFailed: a renewal failed (Err) for a reason other than
	// a lost lease; it is retried until the lease's deadline.
	EventLeaseRenewFailed EventKind = "lease_renew_failed"
	// EventLeaseUnreadable: a row of the lease table (ShardID is its key)
	// cannot be read as a lease (an attribute of an unexpected type; Err
	// says which). The worker does not take it and goes on with the
	// others; reported when first seen and whenever the reason changes.
	EventLeaseUnreadable EventKind = "lease_unreadable"
	// EventLeaseTakeRefused: taking a lease was refused although the row
	// still showed the owner (Peer) and counter the take was conditioned
	// on, so the next try will be refused too; reported for every such
	// refusal.
	EventLeaseTakeRefused EventKind = "lease_take_refused"

	// EventCheckpoint: a checkpoint write returned. Position is the
	// checkpoint written (the pending one for a prepared checkpoint),
	// Duration the write's time, Err its error.
	EventCheckpoint EventKind = "checkpoint"

	// EventShardStarted: the worker began processing the shard.
	EventShardStarted EventKind = "shard_started"
	// EventShardStopped: the worker stopped processing the shard; Reason
	// says why: "lease_lost", "shutdown", "handoff", "shard_end", "stopped"
	// (hard stop) or "error".
	EventShardStopped EventKind = "shard_stopped"
	// EventShardStalled: a shard the worker holds stalled, or the reason
	// of its stall changed (see Config.StallTimeout). Reason is
	// "bad-checkpoint" (the stored checkpoint cannot be read from; from
	// the first refusal), "open-failing", "checkpoint-failing",
	// "processor-failing", "read-failing" (each after a few failures in a
	// row; Err is the last one) or "no-progress" (nothing processed and no
	// read at the tip for StallTimeout).
	EventShardStalled EventKind = "shard_stalled"
	// EventShardRecovered: the shard's stall ended (it made progress, the
	// failures stopped, or its consumer stopped); Reason is the stall's.
	EventShardRecovered EventKind = "shard_recovered"
	// EventShardUnowned: as far as the worker can tell from what it reads
	// anyway (the fleet row at each heartbeat, the leases when they
	// change), no live worker holds the unfinished shard: its owner's
	// heartbeat stopped moving, or the lease is free. Duration is how long
	// it has been so (a lower bound). Reported after each of the worker's
	// heartbeats while it lasts; every worker reports the shards it sees
	// so.
	EventShardUnowned EventKind = "shard_unowned"
	// EventShardOwned: a shard reported by EventShardUnowned is no longer
	// seen so (it has a live owner, it finished, or its lease is gone), or
	// the worker stopped watching (Run returns).
	EventShardOwned EventKind = "shard_owned"

	// EventRecordsFiltered: the [DeliveryPolicy] Filter kept Records
	// records from the processor.
	EventRecordsFiltered EventKind = "records_filtered"
	// EventPartialFailure: the processor reported a partial failure (Err);
	// the Records records before the failed one counted as processed.
	EventPartialFailure EventKind = "partial_failure"
	// EventBisect: a failing batch of Records records (Err) was split in
	// halves (BisectOnError).
	EventBisect EventKind = "bisect"
	// EventDeadLetter: Records records (last error Err) went to the
	// dead-letter handler.
	EventDeadLetter EventKind = "dead_letter"
	// EventLanesBusy: the number of the shard's lanes running a batch
	// (Parallelism) changed to LanesBusy.
	EventLanesBusy EventKind = "lanes_busy"
)

// Event is one thing a worker reports to its hooks. Kind says what happened
// and which fields are set (see the EventKind constants).
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// ShardID is the shard concerned: its shard ID, or in a multi-stream
	// worker its lease key (see [Hook]).
	ShardID string
	// WorkerID and Stream identify the worker (EventWorkerStart).
	WorkerID, Stream string
	// Records and Bytes count records and their data bytes.
	Records, Bytes int
	// Aggregates counts KPL aggregated records.
	Aggregates int
	// Attempt counts the deliveries of a batch, from 1.
	Attempt int
	// Duration is how long a call took.
	Duration time.Duration
	// MillisBehindLatest is the shard's lag a read reported.
	MillisBehindLatest int64
	// Arrivals are the approximate arrival times of a batch's records.
	Arrivals []time.Time
	// Op names a read call (EventFetch).
	Op string
	// Reason qualifies the event: how a lease was acquired, why it was
	// lost, why a shard stopped or stalled, what kind of error a read met.
	Reason string
	// Peer is the other worker involved in a lease change, if any.
	Peer string
	// Position is a checkpoint's position (EventCheckpoint).
	Position kcl.ExtendedSequenceNumber
	// LanesBusy counts the shard's lanes running a batch (EventLanesBusy).
	LanesBusy int
	// Err is the error behind the event, if any.
	Err error
}

// hooks fans events out to the configured hooks.
type hooks struct {
	list []Hook
	// guard recovers, counts and logs the panics of hooks.
	guard hookGuard
}

func newHooks(hs []Hook) *hooks { return &hooks{list: hs} }

// none reports whether no hook is configured.
func (h *hooks) none() bool { return len(h.list) == 0 }

// emit calls every hook with e, each under the guard.
func (h *hooks) emit(e Event) {
	for _, x := range h.list {
		h.guard.call(string(e.Kind), func() { x.OnEvent(e) })
	}
}

func (h *hooks) onFetch(re reader.FetchEvent) {
	e := Event{Kind: EventFetch, ShardID: re.ShardID, Op: re.Op, Records: re.Records, Bytes: re.Bytes,
		Duration: re.Duration, MillisBehindLatest: re.MillisBehindLatest, Err: re.Err, Reason: re.ErrorKind}
	if e.Err != nil && e.Reason == "" {
		e.Reason = awsx.Label(e.Err)
	}
	h.emit(e)
}

// leaseKinds maps the lease protocol's event kinds to the hooks'.
var leaseKinds = map[lease.EventKind]EventKind{
	lease.EventAcquired:         EventLeaseAcquired,
	lease.EventLost:             EventLeaseLost,
	lease.EventReleased:         EventLeaseReleased,
	lease.EventHandedOver:       EventLeaseHandedOver,
	lease.EventHandoffRequested: EventHandoffRequested,
	lease.EventRenewFailed:      EventLeaseRenewFailed,
	lease.EventUnreadable:       EventLeaseUnreadable,
	lease.EventTakeRefused:      EventLeaseTakeRefused,
}

func (h *hooks) onLease(le lease.Event) {
	e := Event{Kind: leaseKinds[le.Kind], ShardID: le.Key, Reason: le.How, Peer: le.Peer, Err: le.Err}
	if e.Kind == "" {
		return
	}
	switch e.Kind {
	case EventLeaseAcquired:
		if e.Reason == "" {
			e.Reason = "take"
		}
	case EventLeaseLost:
		switch {
		case errors.Is(le.Err, lease.ErrExpired):
			e.Reason = "expired"
		case errors.Is(le.Err, lease.ErrConflict):
			e.Reason = "conflict"
		default:
			e.Reason = "other"
		}
	}
	h.emit(e)
}

// onRecordCounts reports what turning one read's Kinesis records into user
// records met.
func (h *hooks) onRecordCounts(shardID string, c reader.RecordCounts) {
	if c.Aggregates > 0 {
		h.emit(Event{Kind: EventAggregatesUnpacked, ShardID: shardID, Aggregates: int(c.Aggregates), Records: int(c.AggregatedUserRecords)})
	}
	if c.MalformedAggregates > 0 {
		h.emit(Event{Kind: EventAggregatesMalformed, ShardID: shardID, Aggregates: int(c.MalformedAggregates)})
	}
	if c.DroppedAggregates > 0 {
		h.emit(Event{Kind: EventAggregatesDropped, ShardID: shardID, Aggregates: int(c.DroppedAggregates), Records: int(c.DroppedUserRecords)})
	}
	if c.DecodeFailures > 0 {
		h.emit(Event{Kind: EventDecodeFailed, ShardID: shardID, Records: int(c.DecodeFailures)})
	}
}

// recordCounter returns the readers' record counter, nil without hooks.
func (h *hooks) recordCounter() func(string, reader.RecordCounts) {
	if h.none() {
		return nil
	}
	return h.onRecordCounts
}

// leaseObserver returns the observer for the lease manager, nil without hooks.
func (h *hooks) leaseObserver() func(lease.Event) {
	if h.none() {
		return nil
	}
	return h.onLease
}
