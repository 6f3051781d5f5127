package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/cenkalti/backoff/v4"

	"github.com/shardline/shardline/kcl"
)

// retryStartup runs one start-up step until it succeeds, fails with an
// error that retrying cannot fix, or ctx (bounded by StartupTimeout) ends.
// Throttling, 5xx answers, timeouts and connection errors are retried with
// exponential backoff and jitter: a fleet starting at once is throttled by
// the control-plane limits, and that must not make Run fail.
func (w *Worker) retryStartup(ctx context.Context, what string, step func() error) error {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	for attempt := 1; ; attempt++ {
		err := step()
		if err == nil || !transientStartupError(err) {
			return err
		}
		d := bo.NextBackOff()
		w.log.Warn("start-up step failed; retrying", "step", what, "attempt", attempt, "backoff", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up at start-up: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// transientStartupError reports whether a failed start-up step may succeed
// when tried again.
func transientStartupError(err error) bool {
	if errors.Is(err, kcl.ErrStreamNotFound) || errors.Is(err, kcl.ErrInvalidConfig) ||
		errors.Is(err, context.Canceled) && !isTimeout(err) {
		return false
	}
	if errors.Is(err, kcl.ErrThrottled) {
		return true
	}
	var api smithy.APIError
	isAPI := errors.As(err, &api)
	if isAPI {
		switch api.ErrorCode() {
		case "ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException",
			"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException":
			return true
		}
	}
	var resp *smithyhttp.ResponseError
	if errors.As(err, &resp) {
		return resp.HTTPStatusCode() == 429 || resp.HTTPStatusCode() >= 500
	}
	if isAPI {
		return api.ErrorFault() == smithy.FaultServer
	}
	var send *smithyhttp.RequestSendError
	return errors.As(err, &send) || isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
