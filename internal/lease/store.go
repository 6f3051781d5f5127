package lease

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shardline/shardline/kcl"
)

// ErrInvalidArgument reports a store call refused before reaching the table:
// an empty lease key or worker ID, a lease key that names a worker presence
// row, or an empty new owner.
var ErrInvalidArgument = errors.New("lease: invalid argument")

// workerRowPrefix starts the leaseKey of every worker presence row.
const workerRowPrefix = "shardline:worker:"

// IsWorkerKey reports whether key is the leaseKey of the fleet row or of a
// presence row of an earlier version rather than of a shard lease.
// Store.List never returns such rows and the lease methods refuse such keys.
func IsWorkerKey(key string) bool { return strings.HasPrefix(key, workerRowPrefix) }

// fleetRowKey is the leaseKey of the fleet row (see [Fleet]).
const fleetRowKey = workerRowPrefix + "*"

// checkLeaseKey refuses keys that cannot name a shard lease.
func checkLeaseKey(op, key string) error {
	if key == "" {
		return fmt.Errorf("lease: %s: %w: empty lease key", op, ErrInvalidArgument)
	}
	if IsWorkerKey(key) {
		return fmt.Errorf("lease: %s %s: %w: key of a worker presence row", op, key, ErrInvalidArgument)
	}
	return nil
}

// checkWorkerID refuses an empty worker ID.
func checkWorkerID(op, id string) error {
	if id == "" {
		return fmt.Errorf("lease: %s: %w: empty worker ID", op, ErrInvalidArgument)
	}
	return nil
}

// normalizeLease returns a deep copy of l in the form every store keeps:
// shard ID sets sorted, without duplicates or empty strings, nil when empty;
// pending checkpoint state nil when empty or when there is no pending
// checkpoint. Both stores apply it so that they return identical leases.
func normalizeLease(l Lease) Lease {
	l = l.Clone()
	l.ParentShardIDs = normalizeShardSet(l.ParentShardIDs)
	l.ChildShardIDs = normalizeShardSet(l.ChildShardIDs)
	if l.Checkpoint.SequenceNumber == kcl.AtTimestamp.SequenceNumber && !l.CheckpointTimestamp.IsZero() {
		l.CheckpointTimestamp = l.CheckpointTimestamp.UTC().Round(0)
	} else {
		l.CheckpointTimestamp = time.Time{}
	}
	if len(l.PendingCheckpointState) == 0 || l.PendingCheckpoint.IsZero() {
		l.PendingCheckpointState = nil
	}
	l.Throughput = normalizeThroughput(l.Throughput)
	return l
}

// maxThroughput bounds stored throughputs (DynamoDB numbers hold 38 digits).
const maxThroughput = 1e15

// normalizeThroughput rounds v to thousandths, and makes negative, NaN and
// infinite values zero.
func normalizeThroughput(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(min(v, maxThroughput)*1000) / 1000
}

// normalizeShardSet sorts ids and drops duplicates and empty strings. It
// returns nil for an empty result; ids may be modified.
func normalizeShardSet(ids []string) []string {
	ids = slices.DeleteFunc(ids, func(s string) bool { return s == "" })
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// newConflict returns the refusal of a conditional write, with a deep copy
// of the row as stored (nil when there is none).
func newConflict(op, key string, cur *Lease) *ConflictError {
	e := &ConflictError{Op: op, Key: key}
	if cur != nil {
		c := cur.Clone()
		e.Current = &c
	}
	return e
}
