package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// reshardState is what a worker remembers between shard syncs. The zero
// value is ready to use.
type reshardState struct {
	// ended is notified whenever a shard of this worker reaches SHARD_END,
	// so that children waiting in this worker check their parents at once.
	ended endSignal

	mu sync.Mutex
	// retention is the stream's retention period (0 until known).
	retention time.Duration
	// cleanable maps the key of a finished lease whose children have
	// progressed, while its shard is still listed, to when this worker first
	// saw it so. Its records are all older than that moment.
	cleanable map[string]time.Time
	// gaps describes the hash-key ranges last found uncovered ("" if none).
	gaps string
}

// describeStream checks that the stream exists and can be read, and notes
// its retention period. An error matches kcl.ErrStreamNotFound if the stream
// does not exist.
func (w *Worker) describeStream(ctx context.Context, st *streamState) error {
	d, err := st.ref.Describe(ctx, w.cfg.Kinesis)
	if err != nil {
		return fmt.Errorf("shardline: %w", err)
	}
	if d.RetentionPeriodHours != nil {
		st.reshard.mu.Lock()
		st.reshard.retention = time.Duration(*d.RetentionPeriodHours) * time.Hour
		st.reshard.mu.Unlock()
	}
	return nil
}

// listShards returns every shard of the stream (open and closed, as far as
// the stream still retains them).
func (w *Worker) listShards(ctx context.Context, st *streamState) ([]shardNode, error) {
	shards, err := awsx.ListShards(ctx, w.cfg.Kinesis, st.ref, nil)
	if err != nil {
		return nil, fmt.Errorf("shardline: %w", err)
	}
	nodes := make([]shardNode, len(shards))
	for i, s := range shards {
		nodes[i] = toShardNode(s)
	}
	return nodes, nil
}

func toShardNode(s ktypes.Shard) shardNode {
	n := shardNode{ID: aws.ToString(s.ShardId)}
	for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
		if id := aws.ToString(p); id != "" {
			n.Parents = append(n.Parents, id)
		}
	}
	// Only the presence of an ending sequence number is used: kinesis-mock
	// reports a made-up one.
	n.Closed = s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil
	if s.HashKeyRange != nil {
		n.StartingHashKey = aws.ToString(s.HashKeyRange.StartingHashKey)
		n.EndingHashKey = aws.ToString(s.HashKeyRange.EndingHashKey)
	}
	return n
}

// syncShards compares the stream's shards with the lease table: it creates
// the leases that are due (see lineage.go), reports hash-key ranges no
// unfinished lease covers, and deletes the leases of finished shards that
// are no longer needed.
//
// all is the lease table as read for this sync (nil: read it now); one
// read serves the syncs of every stream of a multi-stream worker, since the
// leases one stream's sync creates change nothing for the others.
func (w *Worker) syncShards(ctx context.Context, st *streamState, all []lease.Lease) error {
	shards, err := w.listShards(ctx, st)
	if err != nil {
		return err
	}
	leases, err := w.createLeases(ctx, st, shards, all)
	if err != nil {
		return err
	}
	return w.cleanupLeases(ctx, st, shards, leases)
}

// createLeases creates the leases due for the given listing of the stream
// and the lease table all (nil: as it is now), and returns the stream's
// leases as read, keyed by shard ID (see streamState.ownLeases).
func (w *Worker) createLeases(ctx context.Context, st *streamState, shards []shardNode, all []lease.Lease) ([]lease.Lease, error) {
	var unreadable *lease.UnreadableError
	if all == nil {
		var err error
		if all, err = w.store.List(ctx); err != nil && !errors.As(err, &unreadable) {
			return nil, fmt.Errorf("shardline: list leases: %w", err)
		}
	}
	if err := w.dropFormerIncarnations(ctx, st, all); err != nil {
		return nil, err
	}
	// Rows that cannot be read are left out of the plan (the lease manager
	// names them); their shards are not leased again: the rows exist.
	leases := st.ownLeases(all)
	create, gaps := newLineage(shards, leases).plan(st.initial)
	created := 0
	for _, l := range create { // parents before children
		if unreadable != nil && unreadable.Rows[l.Key] != "" {
			continue
		}
		if l.Checkpoint.SequenceNumber == kcl.AtTimestamp.SequenceNumber {
			l.CheckpointTimestamp = st.initial.Timestamp()
		}
		l = st.tableLease(l)
		if err := w.store.Create(ctx, l); err != nil {
			if errors.Is(err, lease.ErrConflict) {
				continue // another worker created it first
			}
			return nil, fmt.Errorf("shardline: create lease %s: %w", l.Key, err)
		}
		created++
		w.log.Info("created lease", "lease", l.Key, "start", l.Checkpoint.String(), "parents", l.ParentShardIDs)
	}
	w.reportGaps(st, gaps)
	if created > 0 {
		w.log.Info("created leases for new shards", "stream", st, "count", created, "shards", len(shards))
		if w.manager != nil {
			w.manager.WakeTaker()
		}
	}
	return leases, nil
}

// reportGaps logs hash-key ranges that no unfinished lease covers and that
// the shard listing could not fill, once each time they change.
func (w *Worker) reportGaps(st *streamState, gaps []hashkey.Range) {
	parts := make([]string, len(gaps))
	for i, g := range gaps {
		parts[i] = g.String()
	}
	desc := strings.Join(parts, ", ")
	st.reshard.mu.Lock()
	prev := st.reshard.gaps
	st.reshard.gaps = desc
	st.reshard.mu.Unlock()
	switch {
	case desc == prev:
	case desc == "":
		w.log.Info("hash key space covered by leases again", "stream", st)
	default:
		w.log.Warn("hash key ranges covered by no unfinished lease; the shard listing cannot fill them", "stream", st, "gaps", desc)
	}
}

// cleanupLeases deletes the leases of finished shards once every child has
// progressed past its start and the shard is gone from the stream, or the
// stream's retention period (at least FinishedLeaseRetention) has passed
// since this worker first saw it so; never with a negative
// FinishedLeaseRetention. leases is the table as read before the
// sync created any (new leases have not progressed, so they change
// nothing). Deletes are conditional on the counter read, so a lease that
// changed meanwhile is kept.
func (w *Worker) cleanupLeases(ctx context.Context, st *streamState, shards []shardNode, leases []lease.Lease) error {
	if w.cfg.FinishedLeaseRetention < 0 {
		return nil // kept forever
	}
	cands := newLineage(shards, leases).cleanable()
	now := time.Now()
	var due, listed []lease.Lease
	st.reshard.mu.Lock()
	seen := make(map[string]time.Time, len(cands))
	retention := max(st.reshard.retention, w.cfg.FinishedLeaseRetention)
	for _, c := range cands {
		if c.Gone {
			due = append(due, c.Lease)
			continue
		}
		first, ok := st.reshard.cleanable[c.Lease.Key]
		if !ok {
			first = now
		}
		seen[c.Lease.Key] = first
		if retention > 0 && now.Sub(first) >= retention {
			listed = append(listed, c.Lease)
		}
	}
	st.reshard.cleanable = seen
	st.reshard.mu.Unlock()

	if len(listed) > 0 {
		// The retention period may have been raised since it was read.
		if err := w.describeStream(ctx, st); err != nil {
			return err
		}
		st.reshard.mu.Lock()
		retention = max(st.reshard.retention, w.cfg.FinishedLeaseRetention)
		for _, l := range listed {
			if now.Sub(st.reshard.cleanable[l.Key]) >= retention {
				due = append(due, l)
			}
		}
		st.reshard.mu.Unlock()
	}
	for _, l := range due {
		l = st.tableLease(l)
		if err := w.store.Delete(ctx, l); err != nil {
			if errors.Is(err, lease.ErrConflict) {
				continue // changed or deleted meanwhile: look again next time
			}
			return fmt.Errorf("shardline: delete finished lease %s: %w", l.Key, err)
		}
		w.log.Info("deleted the lease of a finished shard", "lease", l.Key, "children", l.ChildShardIDs)
	}
	return nil
}

// finishShard is called when a shard of this worker reached SHARD_END: it
// wakes this worker's children waiting for it and creates the leases of its
// children from the given listing of the stream. If that listing is missing
// or lacks a child the read reported, the stream is listed again (a few
// times, briefly apart). When that fails, the next shard sync creates them.
func (w *Worker) finishShard(ctx context.Context, st *streamState, id string, children []string, shards []shardNode) {
	st.reshard.ended.notify()
	var err error
	for attempt := 0; shards == nil || !listsAll(shards, children); attempt++ {
		if attempt == 4 {
			err = fmt.Errorf("child shards %v not listed by the stream yet", children)
			break
		}
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				err = ctx.Err()
			case <-t.C:
			}
			if err != nil {
				break
			}
		}
		if shards, err = w.listShards(ctx, st); err != nil {
			break
		}
	}
	if err == nil {
		_, err = w.createLeases(ctx, st, shards, nil)
	}
	if err != nil {
		w.log.Warn("creating the child leases of a finished shard failed; the next shard sync creates them", "shard", id, "err", err)
		w.requestSync()
	}
}

// listsAll reports whether every shard of ids is in the listing.
func listsAll(shards []shardNode, ids []string) bool {
	for _, id := range ids {
		if !slices.ContainsFunc(shards, func(n shardNode) bool { return n.ID == id }) {
			return false
		}
	}
	return true
}

// parentCheckInterval is how often a child waiting for a parent that another
// worker processes looks at the parent's lease. A parent finishing in this
// worker wakes its children at once.
func (w *Worker) parentCheckInterval() time.Duration {
	return min(w.cfg.TakeInterval, time.Second)
}

// mergeIDs returns the union of shard ID lists, sorted.
func mergeIDs(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// requestSync asks the run loop for a shard sync soon.
func (w *Worker) requestSync() {
	select {
	case w.syncNow <- struct{}{}:
	default:
	}
}
