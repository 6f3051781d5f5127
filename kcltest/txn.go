package kcltest

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/lease"
)

// txWriter stores the shard's checkpoints, transactions included.
type txWriter struct{ s *Shard }

func (w txWriter) WriteCheckpoint(ctx context.Context, st checkpoint.State) error {
	return w.s.write(ctx, st, nil)
}

func (w txWriter) WriteCheckpointTx(ctx context.Context, st checkpoint.State, items []types.TransactWriteItem) error {
	if err := lease.CheckTransactItems(items); err != nil {
		return err
	}
	return w.s.write(ctx, st, items)
}
