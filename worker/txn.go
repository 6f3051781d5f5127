package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/lease"
)

// shardWriter is the checkpoint writer of a shard: plain checkpoint writes
// and transactional ones (the application's DynamoDB writes committed with
// the checkpoint, see the public checkpoint package's Transact), both
// through the lease handle.
type shardWriter struct{ s *shardState }

var _ checkpoint.TxWriter = shardWriter{}

// WriteCheckpoint stores a checkpoint.
func (w shardWriter) WriteCheckpoint(ctx context.Context, st checkpoint.State) error {
	return w.s.writeCheckpoint(ctx, st)
}

// WriteCheckpointTx commits items with the checkpoint in one transaction
// fenced by the lease.
func (w shardWriter) WriteCheckpointTx(ctx context.Context, st checkpoint.State, items []types.TransactWriteItem) (err error) {
	s := w.s
	if s.w.cfg.Delivery.Parallelism > 1 {
		// Lanes checkpoint at their low-water mark, after the fact: a
		// transaction's checkpoint could pass records another lane has not
		// processed yet.
		return fmt.Errorf("%w: not with Delivery.Parallelism > 1", lease.ErrTransactUnsupported)
	}
	began := time.Now()
	defer func() {
		s.w.hooks.emit(Event{Kind: EventCheckpoint, ShardID: s.id, Position: st.Checkpoint, Duration: time.Since(began), Err: err})
	}()
	_, err = s.h.Transact(ctx, checkpointEdit(st), items)
	return err
}

// checkpointEdit returns the change a checkpoint write makes to the lease:
// the checkpoint and pending checkpoint of st, and the owner switches
// counted afresh when the checkpoint moves.
func checkpointEdit(st checkpoint.State) func(*lease.Lease) {
	return func(l *lease.Lease) {
		if l.Checkpoint.Compare(st.Checkpoint) != 0 || l.Checkpoint.SequenceNumber != st.Checkpoint.SequenceNumber {
			l.OwnerSwitchesSinceCheckpoint = 0
		}
		l.Checkpoint = st.Checkpoint
		l.PendingCheckpoint = st.Pending
		l.PendingCheckpointState = slices.Clone(st.PendingState)
	}
}
