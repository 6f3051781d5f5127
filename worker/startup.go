package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/kcl"
)

// retryStartup runs one start-up step until it succeeds, fails with an
// error that retrying cannot fix, or ctx (bounded by StartupTimeout) ends.
// Throttling, 5xx answers, timeouts and connection errors (a refused
// connection included) are retried with exponential backoff and jitter: a
// fleet starting at once is throttled by the control-plane limits, and that
// must not make Run fail. Waits start at RetryInitialInterval and never go
// below it. When ctx ends, the error is the last failure of the step (which
// names the endpoint for a connection error), not the cancellation of the
// attempt in flight.
func (w *Worker) retryStartup(ctx context.Context, what string, step func() error) error {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(w.cfg.RetryInitialInterval),
		backoff.WithMaxInterval(max(2*time.Second, w.cfg.RetryInitialInterval)),
		backoff.WithMaxElapsedTime(0),
	)
	var last error
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			if last == nil {
				last = err
			}
			return fmt.Errorf("%w (gave up at start-up after %d attempts: %w)", last, attempt, ctx.Err())
		}
		if !retryableAtStartup(err) {
			return err
		}
		last = err
		d := max(bo.NextBackOff(), w.cfg.RetryInitialInterval)
		w.log.Warn("start-up step failed; retrying", "step", what, "attempt", attempt, "backoff", d, "err", err)
		if awsx.Sleep(ctx, d) != nil {
			return fmt.Errorf("%w (gave up at start-up after %d attempts: %w)", last, attempt, ctx.Err())
		}
	}
}

// retryableAtStartup reports whether a failed start-up step may succeed
// when tried again: the AWS layer says so of an error from the SDK or the
// network, and the lease store's throttling says so. A missing stream, an
// invalid configuration and errors of other origins are final.
func retryableAtStartup(err error) bool {
	switch {
	case errors.Is(err, kcl.ErrStreamNotFound), errors.Is(err, kcl.ErrInvalidConfig):
		return false
	case errors.Is(err, kcl.ErrThrottled):
		return true
	}
	return awsx.Recognized(err) && awsx.Classify(err).Retryable()
}
