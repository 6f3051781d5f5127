package worker

import (
	"context"
	"errors"

	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// retryStop runs a duty of a stopping shard (the final checkpoint, the
// hand-over, the release) until it succeeds, the lease turns out lost, or
// ctx (the duty's deadline) ends, backing off between attempts. One
// throttled or timed-out write must not turn a planned move into records
// delivered twice or a shard idle until the lease expires.
func (s *shardState) retryStop(ctx context.Context, what string, op func() error) error {
	return s.retry(ctx, ctx, what, func(int) error {
		err := op()
		if errors.Is(err, kcl.ErrLeaseLost) || errors.Is(err, lease.ErrConflict) || errors.Is(err, kcl.ErrInvalidCheckpoint) ||
			errors.Is(err, kcl.ErrTableNotFound) {
			return backoff.Permanent(err)
		}
		return err
	})
}
