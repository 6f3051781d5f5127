package checkpoint

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// TxWriter is a [Writer] that can also store a checkpoint together with the
// application's DynamoDB writes, in one transaction fenced like its
// checkpoint writes: all of them are stored or none.
type TxWriter interface {
	Writer
	WriteCheckpointTx(ctx context.Context, s State, items []types.TransactWriteItem) error
}

// TransactCheckpoint commits items and the checkpoint at pos in one
// transaction, after checking last <= pos <= delivered as CheckpointAt does.
// A writer that is not a [TxWriter] fails with an error matching
// lease.ErrTransactUnsupported. Unlike CheckpointAt, the items are written
// even when pos is the stored checkpoint already.
func (c *Checkpointer) TransactCheckpoint(ctx context.Context, pos kcl.ExtendedSequenceNumber, items []types.TransactWriteItem) error {
	tw, ok := c.w.(TxWriter)
	if !ok {
		return c.wrap("transact", fmt.Errorf("%w (checkpoint writer %T)", lease.ErrTransactUnsupported, c.w))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkLocked(pos); err != nil {
		return err
	}
	if err := tw.WriteCheckpointTx(ctx, State{Checkpoint: pos}, items); err != nil {
		return c.wrap("transact", err)
	}
	c.last = pos
	c.pending = kcl.ExtendedSequenceNumber{}
	return nil
}
