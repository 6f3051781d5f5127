package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// errNilProcessor is the failure of a ProcessorFactory that returned neither
// a processor nor an error.
var errNilProcessor = errors.New("shardline: ProcessorFactory returned a nil processor and a nil error")

// retryDelay is the wait before the next attempt after failures failures
// (from 1): RetryInitialInterval doubling up to RetryMaxInterval, plus up to
// a fifth more of jitter, never above RetryMaxInterval and never below
// RetryInitialInterval. Every retry loop of a shard uses it.
func (w *Worker) retryDelay(failures int) time.Duration {
	lo, hi := w.cfg.RetryInitialInterval, w.cfg.RetryMaxInterval
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	d += rand.N(d/5 + 1)
	return max(lo, min(d, hi))
}

// newProcessor calls the ProcessorFactory until it returns a processor. A
// factory error, a nil processor and a panic (a *kcl.ProcessorPanicError,
// logged with its stack) count as failures: the shard keeps its lease and
// calls the factory again after retryDelay, logging at ERROR only when the
// kind of failure changes, and at INFO when the factory recovers. ok is
// false when ctx ends first (a stop, a hand-over or the lease lost).
func (s *shardState) newProcessor(ctx context.Context) (proc kcl.RecordProcessor, ok bool) {
	last := ""
	for failures := 0; ; {
		proc, err := s.callFactory()
		if ctx.Err() == nil {
			s.observeStall(opOpen, err)
		}
		if err == nil {
			if failures > 0 {
				s.log.Info("processor factory succeeded again", "failures", failures)
			}
			return proc, true
		}
		failures++
		d := s.w.retryDelay(failures)
		if kind := failureKind(err); kind != last {
			last = kind
			s.log.Error("processor factory failed; keeping the lease and calling it again with backoff",
				shardproc.ErrAttr(err), shardproc.StackAttr(err), "failures", failures, "backoff", d)
		} else {
			s.log.Debug("processor factory failed again", shardproc.ErrAttr(err), "failures", failures, "backoff", d)
		}
		if awsx.Sleep(ctx, d) != nil {
			return nil, false
		}
	}
}

// callFactory calls the ProcessorFactory once, turning a panic into a
// *kcl.ProcessorPanicError and a nil processor into errNilProcessor. While it
// runs, the shard counts as inside a user callback (see stuckIn).
func (s *shardState) callFactory() (kcl.RecordProcessor, error) {
	var proc kcl.RecordProcessor
	s.inFactory.Store(true)
	defer s.inFactory.Store(false)
	err := shardproc.Recover(func() (err error) {
		proc, err = s.st.factory(s.shard)
		return err
	})
	if err == nil && proc == nil {
		err = errNilProcessor
	}
	if err != nil {
		return nil, fmt.Errorf("processor factory: %w", err)
	}
	return proc, nil
}

// failureKind sums an error up for "log once per change": its type and
// its message as logged.
func failureKind(err error) string {
	return shardproc.ErrorType(err) + ": " + shardproc.Truncate(err.Error(), shardproc.MaxLoggedErrBytes)
}
