package kcltest

import (
	"context"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Transaction is one transaction a processor committed through the public
// checkpoint package's Transact: the application's writes and the
// checkpoint stored with them.
type Transaction struct {
	// Checkpoint is the position stored with Items.
	Checkpoint kcl.ExtendedSequenceNumber
	// Items are the application's writes, as passed.
	Items []types.TransactWriteItem
}

// Transactions returns the transactions committed so far, in order. Each
// is also a checkpoint write (see [Shard.Writes]). A transaction is refused
// like a checkpoint: with kcl.ErrLeaseLost after [Shard.LoseLease], with the
// error of [Shard.FailCheckpoints]; nothing is recorded then. The shard
// checks the limits of one transaction as the worker does, but not the
// writes' conditions: test those against DynamoDB Local.
func (s *Shard) Transactions() []Transaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Transaction, len(s.txns))
	for i, t := range s.txns {
		out[i] = Transaction{Checkpoint: t.Checkpoint, Items: slices.Clone(t.Items)}
	}
	return out
}

// txWriter stores the shard's checkpoints and records its transactions.
type txWriter struct{ s *Shard }

func (w txWriter) WriteCheckpoint(ctx context.Context, st checkpoint.State) error {
	return w.s.write(ctx, st)
}

func (w txWriter) WriteCheckpointTx(ctx context.Context, st checkpoint.State, items []types.TransactWriteItem) error {
	if err := lease.CheckTransactItems(items); err != nil {
		return err
	}
	if err := w.s.write(ctx, st); err != nil {
		return err
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.txns = append(w.s.txns, Transaction{Checkpoint: st.Checkpoint, Items: slices.Clone(items)})
	return nil
}
