// Package lease holds the shard lease model, the [Store] that keeps leases
// (a DynamoDB table in production, memory in unit tests) and the [Manager]
// that renews, takes and balances leases among the workers of an
// application.
//
// Every write is conditional. A lease carries a counter that every write
// increments and every write is conditioned on, so a worker acting on a stale
// view of a lease (because another worker took it, or an operator reset it)
// is refused with an error that matches [ErrConflict].
//
// Liveness is per worker, not per lease: leases are not renewed. Every
// worker writes its heartbeat into one fleet row (see [Fleet], leaseKey
// "shardline:worker:*") and gets the whole row back with the write, so it
// sees every other worker's heartbeat at no read cost. A lease is valid
// while its owner's heartbeat moves. Expiry is never judged from clocks
// stored in the table: a worker remembers when, by its own monotonic clock,
// it last saw each heartbeat change, and once one has stood still for the
// lease duration it fences that worker (a write conditional on the
// heartbeat it watched, see [Store.Fence]) before taking its leases, each
// by a write conditional on owner and counter. A worker stops acting on its
// leases once the lease duration (less a margin) has passed since it sent
// its last successful heartbeat, so workers with skewed clocks agree.
//
// Rows whose leaseKey starts with "shardline:worker:" are not shard leases
// ([IsWorkerKey]): the fleet row, and the presence rows earlier versions
// wrote (ignored). Neither are rows whose entityType is not LEASE (the Java
// KCL 3.5 keeps its leader lock, migration state and worker metrics in the
// lease table). [Store.List] never returns them, and the lease methods
// refuse worker row keys with [ErrInvalidArgument]. The fleet row carries
// the attributes the Java KCL's lease reader requires (see dynamo_fleet.go)
// so that a table can go back to Java; do not share a table with the Java
// KCL while Shardline workers run.
package lease

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shardline/shardline/kcl"
)

// Lease is one shard's row in the lease table.
type Lease struct {
	// Key is the shard ID, or a multi-stream key
	// ACCOUNT:STREAM:EPOCH:SHARD (attribute leaseKey; see SplitKey).
	Key string
	// Owner is the worker ID holding the lease; empty when nobody does.
	Owner string
	// Counter increases with every write (attribute leaseCounter).
	Counter int64
	// Checkpoint is the last position processed (attributes checkpoint and
	// checkpointSubSequenceNumber).
	Checkpoint kcl.ExtendedSequenceNumber
	// CheckpointTimestamp is the time of an AT_TIMESTAMP checkpoint
	// (attribute shardlineCheckpointTimestamp): reading starts at the first
	// record that arrived at or after it. Stores keep it only while
	// Checkpoint is AT_TIMESTAMP and return it in UTC; zero otherwise.
	CheckpointTimestamp time.Time
	// PendingCheckpoint is a prepared two-phase checkpoint; zero if none.
	PendingCheckpoint kcl.ExtendedSequenceNumber
	// PendingCheckpointState is the application state stored with the
	// pending checkpoint.
	PendingCheckpointState []byte
	// OwnerSwitchesSinceCheckpoint counts owner changes since the checkpoint
	// last moved.
	OwnerSwitchesSinceCheckpoint int64
	// ParentShardIDs are the shards this one continues (after a split or
	// merge).
	ParentShardIDs []string
	// ChildShardIDs are the shards that continue this one, known once it ended.
	ChildShardIDs []string
	// StartingHashKey and EndingHashKey bound the shard's hash key range.
	StartingHashKey, EndingHashKey string
	// HandoffTo names the worker that asked the owner to hand the lease
	// over (planned move); empty when no hand-over is pending (attribute
	// shardlineHandoffTo, a Shardline extension).
	HandoffTo string
	// Throughput is the load the owner last measured on the shard, per
	// second, in the unit its worker reports (see [Handle.RecordLoad]),
	// written with every renewal (attribute shardlineThroughput, a Shardline
	// extension). Zero when none was measured. Stores keep it rounded to
	// thousandths; negative, NaN and infinite values read as zero.
	// Load-aware balancing weighs leases by it.
	Throughput float64
	// CheckpointOwner is the worker finishing a graceful hand-off of the
	// Java KCL 3.x (attribute checkpointOwner): it still processes the
	// shard and may checkpoint, while Owner waits to start. Shardline never
	// writes it: the lease is in use until its counter stands still for a
	// lease duration, and a take removes it. Empty otherwise.
	CheckpointOwner string
	// Nudge is the last token another worker wrote on the lease to make
	// its owner read the fleet row at once (see [Store.Nudge]; attribute
	// shardlineNudge, a Shardline extension). The owner notices it in the
	// result of its next write to the lease. A take, hand-over or release
	// removes it.
	Nudge string
}

// Clone returns a deep copy of l.
func (l Lease) Clone() Lease {
	l.PendingCheckpointState = slices.Clone(l.PendingCheckpointState)
	l.ParentShardIDs = slices.Clone(l.ParentShardIDs)
	l.ChildShardIDs = slices.Clone(l.ChildShardIDs)
	return l
}

// Finished reports whether the shard was processed to its end.
func (l Lease) Finished() bool { return l.Checkpoint.IsShardEnd() }

// InitialPosition returns where reading the shard starts when its
// checkpoint is a starting sentinel rather than a record's position:
// TRIM_HORIZON and LATEST as stored, AT_TIMESTAMP at CheckpointTimestamp.
// configured (the worker's initial position) applies to an AT_TIMESTAMP
// checkpoint without a timestamp (a lease created for that position) when it
// is itself AT_TIMESTAMP, otherwise TRIM_HORIZON stands in, which misses
// nothing; it also applies to checkpoints of records, which do not use it.
func (l Lease) InitialPosition(configured kcl.InitialPosition) kcl.InitialPosition {
	switch l.Checkpoint.SequenceNumber {
	case kcl.TrimHorizon.SequenceNumber:
		return kcl.StartAtTrimHorizon()
	case kcl.Latest.SequenceNumber:
		return kcl.StartAtLatest()
	case kcl.AtTimestamp.SequenceNumber:
		if !l.CheckpointTimestamp.IsZero() {
			return kcl.StartAtTimestamp(l.CheckpointTimestamp)
		}
		if configured.Sequence() == kcl.AtTimestamp {
			return configured
		}
		return kcl.StartAtTrimHorizon()
	}
	return configured
}

// Dead is the heartbeat of a fenced worker (see [Store.Fence]).
const Dead int64 = -1

// Fleet is the fleet row: one small item that every worker writes its
// heartbeat to (and reads back with it), instead of renewing each lease.
// A lease is valid while its owner's heartbeat moves.
type Fleet struct {
	// Members maps worker IDs to heartbeats (Dead when fenced).
	Members map[string]int64
	// Withdrawn holds the members that are leaving: they take nothing
	// more, and the others plan without them.
	Withdrawn map[string]bool
	// Handoffs maps lease keys to the worker that asked for them.
	Handoffs map[string]string
	// Gen increases whenever a worker asks the others to read the leases
	// again (it released or created leases).
	Gen int64
	// Version increases with every write of the row.
	Version int64
	// Stalls maps worker IDs to the stalled shards each reported with its
	// last heartbeat (lease key -> reason); a worker without stalls has no
	// entry. Informational: the protocol does not read it.
	Stalls map[string]map[string]string
}

// Clone returns a deep copy of f.
func (f Fleet) Clone() Fleet {
	f.Members = maps.Clone(f.Members)
	f.Withdrawn = maps.Clone(f.Withdrawn)
	f.Handoffs = maps.Clone(f.Handoffs)
	if f.Stalls != nil {
		stalls := make(map[string]map[string]string, len(f.Stalls))
		for id, m := range f.Stalls {
			stalls[id] = maps.Clone(m)
		}
		f.Stalls = stalls
	}
	return f
}

// Errors returned by stores. Test with errors.Is.
var (
	// ErrConflict reports a conditional write refused because the lease
	// changed since it was read (counter or owner differ) or already exists.
	ErrConflict = errors.New("lease: conditional write refused")
	// ErrNotFound reports a lease that does not exist.
	ErrNotFound = errors.New("lease: not found")
)

// UnreadableError reports rows of the lease table that cannot be read as
// leases (an attribute of the wrong type, a number that is not an integer:
// rows written by hand or by another tool). List and ListStale return it
// together with every lease they could read, so that one bad row does not
// stop the others: callers that can work without those rows use the leases
// and name the rows (the manager does not take them); the others fail.
type UnreadableError struct {
	// Op is the store operation ("list", "liststale").
	Op string
	// Table is the lease table's name.
	Table string
	// Rows maps the leaseKey of each unreadable row to why it cannot be
	// read (stored values in it are cut short).
	Rows map[string]string
}

// Error implements error. It names at most a few rows.
func (e *UnreadableError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Rows))
	var b strings.Builder
	fmt.Fprintf(&b, "lease: %s table %s: %d unreadable row(s)", e.Op, e.Table, len(keys))
	for i, k := range keys {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(keys)-i)
			break
		}
		fmt.Fprintf(&b, "; %s", e.Rows[k])
	}
	return b.String()
}

// ConflictError is the error a store returns for a refused conditional
// write. It matches [ErrConflict] and, when the lease had changed owner,
// kcl.ErrLeaseLost.
type ConflictError struct {
	// Op is the store operation ("renew", "take", ...).
	Op string
	// Key is the lease key.
	Key string
	// Current is the lease as stored when the write was refused, if the store
	// could tell; nil when the lease is gone.
	Current *Lease
}

// Error implements error.
func (e *ConflictError) Error() string {
	if e.Current == nil {
		return fmt.Sprintf("lease: %s %s: conditional write refused (lease missing)", e.Op, e.Key)
	}
	return fmt.Sprintf("lease: %s %s: conditional write refused (now owner %q counter %d)",
		e.Op, e.Key, e.Current.Owner, e.Current.Counter)
}

// Is makes errors.Is(err, ErrConflict) and errors.Is(err, kcl.ErrLeaseLost) true.
func (e *ConflictError) Is(target error) bool {
	return target == ErrConflict || target == kcl.ErrLeaseLost
}

// Store keeps leases. Implementations: [DynamoStore] and [MemoryStore]; the
// conformance suite in storetest runs against both.
//
// Every method that writes a lease is conditional on the lease's Counter
// (and, where it says so, Owner) being what the caller passes in, increments
// Counter, and returns the lease as now stored. A refused write returns a
// *[ConflictError].
type Store interface {
	// EnsureTable creates the table if it is missing and waits until it can
	// be used. Safe when many workers call it at once.
	EnsureTable(ctx context.Context) error
	// List returns every lease, read consistently, sorted by Key. Rows that
	// cannot be read as leases are left out and named by an
	// *[UnreadableError] returned with the others.
	List(ctx context.Context) ([]Lease, error)
	// Get returns one lease or an error matching ErrNotFound.
	Get(ctx context.Context, key string) (Lease, error)
	// Create stores a new lease with the given fields (Counter as given,
	// usually 0). Refused if the key exists.
	Create(ctx context.Context, l Lease) error
	// Renew increments the counter and stores l.Throughput; conditional on
	// Owner and Counter.
	Renew(ctx context.Context, l Lease) (Lease, error)
	// Take sets the owner to newOwner; conditional on Owner and Counter (so it
	// works on unowned, expired and stolen leases alike). It increments
	// OwnerSwitchesSinceCheckpoint when the owner changes.
	Take(ctx context.Context, l Lease, newOwner string) (Lease, error)
	// Release removes the owner; conditional on Owner and Counter.
	Release(ctx context.Context, l Lease) (Lease, error)
	// UpdateCheckpoint stores l.Checkpoint, l.CheckpointTimestamp,
	// l.PendingCheckpoint, l.PendingCheckpointState and
	// l.OwnerSwitchesSinceCheckpoint; conditional on Owner and Counter.
	UpdateCheckpoint(ctx context.Context, l Lease) (Lease, error)
	// ResetCheckpoint moves the checkpoint for a replay: it stores
	// l.Checkpoint and l.CheckpointTimestamp, removes the pending checkpoint
	// and its state, the owner and any pending hand-over, and sets
	// OwnerSwitchesSinceCheckpoint to 0; conditional on Counter only. The owner's next renewal or checkpoint
	// is refused (the counter moved), so it stops; any worker may take the
	// lease at once.
	ResetCheckpoint(ctx context.Context, l Lease) (Lease, error)
	// UpdateShardInfo stores l.ChildShardIDs, l.ParentShardIDs and the hash
	// key range; conditional on Counter only (any worker may record lineage).
	UpdateShardInfo(ctx context.Context, l Lease) (Lease, error)
	// Delete removes the lease; conditional on Counter.
	Delete(ctx context.Context, l Lease) error

	// RequestHandoff asks the owner to hand the lease over to worker to:
	// it sets HandoffTo, conditional on Owner, Counter and no hand-over
	// being pending. Unlike every other write it does not increment the
	// counter, so the owner's renewals go on and return the request.
	RequestHandoff(ctx context.Context, l Lease, to string) (Lease, error)
	// HandOver makes l.HandoffTo the owner and clears HandoffTo;
	// conditional on Owner, Counter and HandoffTo. It counts an owner
	// switch.
	HandOver(ctx context.Context, l Lease) (Lease, error)
	// Nudge stores token as the lease's Nudge, conditional only on owner
	// being its Owner (a refusal is a *ConflictError). Like RequestHandoff
	// it does not increment the counter, so the owner's writes go on and
	// return it: a worker that handed leases to owner on a graceful stop
	// uses it to make owner read the fleet row before its next heartbeat.
	Nudge(ctx context.Context, key, owner, token string) error

	// ListStale is List read eventually consistently (at half the price):
	// it may miss writes of the last moments.
	ListStale(ctx context.Context) ([]Lease, error)

	// Beat writes worker id's heartbeat in the fleet row: from+1,
	// conditional on the entry being from (from 0: absent or Dead, a
	// worker (re)joining). withdrawn marks the worker as leaving (it takes
	// nothing more); bump increments the fleet's Gen, telling the others to
	// read the leases again. stalls (lease key -> reason) replaces the
	// worker's entry of Fleet.Stalls (none when empty). It returns the
	// fleet row as stored after the write; a refusal (the entry was fenced
	// or moved) is a *ConflictError.
	Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (Fleet, error)
	// ReadFleet returns the fleet row, read consistently (empty if none).
	ReadFleet(ctx context.Context) (Fleet, error)
	// Fence marks worker id dead (its entry becomes Dead, its stalls are
	// removed), conditional on its heartbeat being hb: the worker's next
	// Beat is refused, so it holds nothing from then on, and its leases may
	// be taken.
	Fence(ctx context.Context, id string, hb int64) (Fleet, error)
	// Leave removes worker id's entry (and its stalls), conditional on its
	// heartbeat being hb; bump increments Gen.
	Leave(ctx context.Context, id string, hb int64, bump bool) error
	// AskHandoff records in the fleet row that worker to asked for lease
	// key (see RequestHandoff), so that the owner learns it at its next
	// Beat.
	AskHandoff(ctx context.Context, key, to string) error
	// ClearHandoff removes the record of AskHandoff, if it still names to.
	ClearHandoff(ctx context.Context, key, to string) error
}
