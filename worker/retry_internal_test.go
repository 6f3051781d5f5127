package worker

import (
	"testing"
	"time"
)

// No retry of a shard waits less than RetryInitialInterval, and waits
// double up to RetryMaxInterval.
func TestRetryDelayDoublesFromTheInitialInterval(t *testing.T) {
	w := &Worker{cfg: Config{RetryInitialInterval: 200 * time.Millisecond, RetryMaxInterval: 30 * time.Second}}
	lo, hi := w.cfg.RetryInitialInterval, w.cfg.RetryMaxInterval
	for failures := 1; failures <= 40; failures++ {
		base := min(hi, lo<<min(failures-1, 20))
		for range 200 {
			d := w.retryDelay(failures)
			if d < lo || d > hi || d < base || d > base+base/5 {
				t.Fatalf("retryDelay(%d) = %v, want %v..%v within %v..%v", failures, d, base, base+base/5, lo, hi)
			}
		}
	}
}
