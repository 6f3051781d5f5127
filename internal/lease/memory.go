package lease

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/shardline/shardline/internal/ddbcost"
	"github.com/shardline/shardline/kcl"
)

// MemoryStore is a [Store] kept in memory, for unit tests. It follows the
// same rules as [DynamoStore]: the same conditions, the same counter
// increments, the same errors, and the same normalisation (shard ID sets are
// returned sorted and without duplicates; an empty set or state reads as
// nil). Leases are deep-copied on the way in and out, so callers may keep
// and modify what they pass and receive.
//
// Faults can be injected per operation with [MemoryStore.SetFault] and
// [MemoryStore.SetFaultAfterWrite]. A MemoryStore is safe for concurrent use;
// the zero value is not usable, call [NewMemoryStore].
type MemoryStore struct {
	mu         sync.Mutex
	leases     map[string]Lease
	fleet      Fleet // the fleet row; Members nil while there is none
	fault      func(op, key string) error
	faultAfter func(op, key string) error
	meter      *ddbcost.Meter // see SetMeter
	sizes      map[string]int // item key -> DynamoDB item size, while metered
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty store. Its table always exists.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		leases: make(map[string]Lease),
	}
}

// SetFault installs f, which is called before every operation with the
// operation's name and key. If f returns an error, the operation returns
// exactly that error (unwrapped, so tests can inject what DynamoDB would
// return, such as a *ConflictError or an error wrapping kcl.ErrThrottled)
// and changes nothing. A nil f removes the hook.
//
// Operation names: "ensuretable", "list", "liststale", "get", "create",
// "renew", "take", "release", "checkpoint", "reset", "shardinfo", "delete",
// "handoff", "handover", "beat", "readfleet", "fence", "leave",
// "askhandoff", "clearhandoff". The key is the lease key, the worker ID for
// "beat", "fence" and "leave", and empty for "ensuretable", "list",
// "liststale" and "readfleet".
//
// f is called without the store's lock held: it may block (to hold an
// operation at a chosen point) or call the store.
func (s *MemoryStore) SetFault(f func(op, key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// SetFaultAfterWrite installs f, which is called after every operation that
// succeeded, with the same arguments as the hook of [MemoryStore.SetFault].
// If f returns an error, the operation returns that error although its write
// took effect: the ambiguous failure of a request whose response was lost.
// A nil f removes the hook.
func (s *MemoryStore) SetFaultAfterWrite(f func(op, key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faultAfter = f
}

// run performs one operation: it checks ctx, calls the fault hooks and runs
// apply under the lock.
func (s *MemoryStore) run(ctx context.Context, op, key string, apply func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lease: %s %s: %w", op, key, err)
	}
	s.mu.Lock()
	before, after := s.fault, s.faultAfter
	s.mu.Unlock()
	if before != nil {
		if err := before(op, key); err != nil {
			return err
		}
	}
	s.mu.Lock()
	err := apply()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if after != nil {
		return after(op, key)
	}
	return nil
}

// EnsureTable does nothing: the table of a MemoryStore always exists.
func (s *MemoryStore) EnsureTable(ctx context.Context) error {
	return s.run(ctx, "ensuretable", "", func() error { return nil })
}

// List returns every lease sorted by Key.
func (s *MemoryStore) List(ctx context.Context) ([]Lease, error) { return s.list(ctx, "list", true) }

// ListStale returns every lease sorted by Key: in memory, List billed as
// an eventually consistent read.
func (s *MemoryStore) ListStale(ctx context.Context) ([]Lease, error) {
	return s.list(ctx, "liststale", false)
}

func (s *MemoryStore) list(ctx context.Context, op string, consistent bool) ([]Lease, error) {
	var out []Lease
	err := s.run(ctx, op, "", func() error {
		s.chargeScan(op, consistent)
		// Sorting keys rather than leases keeps large tables cheap.
		keys := slices.Sorted(maps.Keys(s.leases))
		out = make([]Lease, 0, len(keys))
		for _, k := range keys {
			out = append(out, s.leases[k].Clone())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Get returns the lease with the given key, or an error matching
// [ErrNotFound].
func (s *MemoryStore) Get(ctx context.Context, key string) (Lease, error) {
	if err := checkLeaseKey("get", key); err != nil {
		return Lease{}, err
	}
	var out Lease
	err := s.run(ctx, "get", key, func() error {
		s.chargeGet("get", key, true)
		l, ok := s.leases[key]
		if !ok {
			return fmt.Errorf("lease: get %s: %w", key, ErrNotFound)
		}
		out = l.Clone()
		return nil
	})
	return out, err
}

// Create stores l if no lease has its key.
func (s *MemoryStore) Create(ctx context.Context, l Lease) error {
	if err := checkLeaseKey("create", l.Key); err != nil {
		return err
	}
	l = normalizeLease(l)
	return s.run(ctx, "create", l.Key, func() error {
		if cur, ok := s.leases[l.Key]; ok {
			s.chargeWrite("create", l.Key, -1)
			return newConflict("create", l.Key, &cur)
		}
		s.leases[l.Key] = l
		s.chargeWrite("create", l.Key, s.leaseSize(l))
		return nil
	})
}

// Renew increments the lease's counter and stores l.Throughput if its Owner
// and Counter are those of l.
func (s *MemoryStore) Renew(ctx context.Context, l Lease) (Lease, error) {
	tp := normalizeThroughput(l.Throughput)
	return s.updateFenced(ctx, "renew", l, true, func(cur *Lease) { cur.Throughput = tp })
}

// Take makes newOwner the owner if the lease's Owner and Counter are those
// of l, counting an owner switch when newOwner differs from l.Owner.
func (s *MemoryStore) Take(ctx context.Context, l Lease, newOwner string) (Lease, error) {
	if newOwner == "" {
		return Lease{}, fmt.Errorf("lease: take %s: %w: empty new owner", l.Key, ErrInvalidArgument)
	}
	return s.updateFenced(ctx, "take", l, true, func(cur *Lease) {
		if cur.Owner != newOwner {
			cur.OwnerSwitchesSinceCheckpoint++
		}
		cur.Owner = newOwner
		cur.HandoffTo = ""
		cur.CheckpointOwner = ""
		cur.Nudge = ""
	})
}

// Release removes the owner if the lease's Owner and Counter are those of l.
func (s *MemoryStore) Release(ctx context.Context, l Lease) (Lease, error) {
	return s.updateFenced(ctx, "release", l, true, func(cur *Lease) { cur.Owner = ""; cur.HandoffTo = ""; cur.CheckpointOwner = ""; cur.Nudge = "" })
}

// RequestHandoff sets HandoffTo if the lease's Owner and Counter are those
// of l and no hand-over is pending. The counter is not incremented.
func (s *MemoryStore) RequestHandoff(ctx context.Context, l Lease, to string) (Lease, error) {
	if to == "" || l.Owner == "" || to == l.Owner {
		return Lease{}, fmt.Errorf("lease: request handoff %s: %w: from %q to %q", l.Key, ErrInvalidArgument, l.Owner, to)
	}
	return s.conditional(ctx, "handoff", l, func(cur Lease) bool { return cur.HandoffTo == "" }, func(cur *Lease) {
		cur.HandoffTo = to
		cur.Counter-- // the one write that does not move the counter
	})
}

// Nudge stores token as the lease's Nudge if owner is its Owner. The
// counter is not incremented.
func (s *MemoryStore) Nudge(ctx context.Context, key, owner, token string) error {
	if owner == "" || token == "" {
		return fmt.Errorf("lease: nudge %s: %w: owner %q, token %q", key, ErrInvalidArgument, owner, token)
	}
	if err := checkLeaseKey("nudge", key); err != nil {
		return err
	}
	return s.run(ctx, "nudge", key, func() error {
		cur, ok := s.leases[key]
		if !ok || cur.Owner != owner {
			s.chargeWrite("nudge", key, -1)
			if !ok {
				return newConflict("nudge", key, nil)
			}
			return newConflict("nudge", key, &cur)
		}
		cur.Nudge = token
		s.leases[key] = cur
		s.chargeWrite("nudge", key, s.leaseSize(cur))
		return nil
	})
}

// HandOver makes l.HandoffTo the owner if the lease's Owner, Counter and
// HandoffTo are those of l.
func (s *MemoryStore) HandOver(ctx context.Context, l Lease) (Lease, error) {
	if l.HandoffTo == "" {
		return Lease{}, fmt.Errorf("lease: hand over %s: %w: no hand-over pending", l.Key, ErrInvalidArgument)
	}
	return s.conditional(ctx, "handover", l, func(cur Lease) bool { return cur.HandoffTo == l.HandoffTo }, func(cur *Lease) {
		cur.Owner = cur.HandoffTo
		cur.HandoffTo = ""
		cur.Nudge = ""
		cur.OwnerSwitchesSinceCheckpoint++
	})
}

// conditional is updateFenced (owner and counter checked) with an extra
// condition on the stored lease.
func (s *MemoryStore) conditional(ctx context.Context, op string, l Lease, cond func(Lease) bool, change func(*Lease)) (Lease, error) {
	return s.write(ctx, op, l, func(cur Lease) bool { return cur.Owner == l.Owner && cond(cur) }, change)
}

// UpdateCheckpoint stores the checkpoint fields of l if the lease's Owner
// and Counter are those of l. A zero l.PendingCheckpoint removes the pending
// checkpoint and its state.
func (s *MemoryStore) UpdateCheckpoint(ctx context.Context, l Lease) (Lease, error) {
	n := normalizeLease(l)
	return s.updateFenced(ctx, "checkpoint", l, true, func(cur *Lease) {
		cur.Checkpoint = n.Checkpoint
		cur.CheckpointTimestamp = n.CheckpointTimestamp
		cur.PendingCheckpoint = n.PendingCheckpoint
		cur.PendingCheckpointState = n.PendingCheckpointState
		cur.OwnerSwitchesSinceCheckpoint = n.OwnerSwitchesSinceCheckpoint
	})
}

// ResetCheckpoint stores the checkpoint and its timestamp, removes the
// pending checkpoint, the owner and any pending hand-over, and zeroes the owner switches, if the
// lease's Counter is l.Counter.
func (s *MemoryStore) ResetCheckpoint(ctx context.Context, l Lease) (Lease, error) {
	n := normalizeLease(l)
	nl, err := s.updateFenced(ctx, "reset", l, false, func(cur *Lease) {
		cur.Owner = ""
		cur.HandoffTo = ""
		cur.CheckpointOwner = ""
		cur.Checkpoint = n.Checkpoint
		cur.CheckpointTimestamp = n.CheckpointTimestamp
		cur.PendingCheckpoint = kcl.ExtendedSequenceNumber{}
		cur.PendingCheckpointState = nil
		cur.OwnerSwitchesSinceCheckpoint = 0
	})
	if err == nil {
		s.bumpGen(ctx)
	}
	return nl, err
}

// UpdateShardInfo stores the parent and child shard IDs and the hash key
// range of l if the lease's Counter is l.Counter.
func (s *MemoryStore) UpdateShardInfo(ctx context.Context, l Lease) (Lease, error) {
	n := normalizeLease(l)
	return s.updateFenced(ctx, "shardinfo", l, false, func(cur *Lease) {
		cur.ParentShardIDs = n.ParentShardIDs
		cur.ChildShardIDs = n.ChildShardIDs
		cur.StartingHashKey = n.StartingHashKey
		cur.EndingHashKey = n.EndingHashKey
	})
}

// updateFenced applies change to the stored lease and increments its
// counter, if the stored Counter (and, with checkOwner, Owner) match l.
// change receives a private copy.
func (s *MemoryStore) updateFenced(ctx context.Context, op string, l Lease, checkOwner bool, change func(*Lease)) (Lease, error) {
	return s.write(ctx, op, l, func(cur Lease) bool { return !checkOwner || cur.Owner == l.Owner }, change)
}

// write applies change to the stored lease and increments its counter, if
// the stored Counter is l.Counter and cond accepts the stored lease.
func (s *MemoryStore) write(ctx context.Context, op string, l Lease, cond func(Lease) bool, change func(*Lease)) (Lease, error) {
	if err := checkLeaseKey(op, l.Key); err != nil {
		return Lease{}, err
	}
	var out Lease
	err := s.run(ctx, op, l.Key, func() error {
		cur, ok := s.leases[l.Key]
		if !ok {
			s.chargeWrite(op, l.Key, -1)
			return newConflict(op, l.Key, nil)
		}
		if cur.Counter != l.Counter || !cond(cur) {
			s.chargeWrite(op, l.Key, -1)
			return newConflict(op, l.Key, &cur)
		}
		next := cur.Clone()
		change(&next)
		next.Counter++
		s.leases[l.Key] = next
		s.chargeWrite(op, l.Key, s.leaseSize(next))
		out = next.Clone()
		return nil
	})
	if err != nil {
		return Lease{}, err
	}
	return out, nil
}

// Delete removes the lease if its Counter is l.Counter.
func (s *MemoryStore) Delete(ctx context.Context, l Lease) error {
	if err := checkLeaseKey("delete", l.Key); err != nil {
		return err
	}
	return s.run(ctx, "delete", l.Key, func() error {
		cur, ok := s.leases[l.Key]
		if !ok || cur.Counter != l.Counter {
			s.chargeWrite("delete", l.Key, -1)
			if !ok {
				return newConflict("delete", l.Key, nil)
			}
			return newConflict("delete", l.Key, &cur)
		}
		delete(s.leases, l.Key)
		s.chargeWrite("delete", l.Key, 0)
		return nil
	})
}
