package metrics

import "time"

// lagWindow is how long a batch's arrival lag counts in
// shardline_behind_arrival_seconds: the gauge shows the largest lag of the
// shard's batches processed in the last lagWindow, so that a scrape every
// 15 or 30 seconds sees the lag of a catch-up batch that is over in
// milliseconds.
const lagWindow = 30 * time.Second

// lagSample is the arrival lag of one batch processed at at.
type lagSample struct {
	at  time.Time
	lag time.Duration
}

// windowMax is the largest lag of the batches processed in the last
// lagWindow, or the last batch's lag if none was. It keeps the samples that
// may still become the maximum: their lags decrease from the front, which
// is the maximum, to the back, which is the newest batch.
type windowMax []lagSample

// add records a batch's lag.
func (w *windowMax) add(at time.Time, lag time.Duration) {
	q := *w
	for len(q) > 0 && q[len(q)-1].lag <= lag {
		q = q[:len(q)-1]
	}
	*w = append(q, lagSample{at, lag})
}

// max returns the window's maximum at now, forgetting the samples that left
// the window (the newest one is always kept).
func (w *windowMax) max(now time.Time) time.Duration {
	q := *w
	for len(q) > 1 && now.Sub(q[0].at) > lagWindow {
		q = q[1:]
	}
	*w = q
	if len(q) == 0 {
		return 0
	}
	return q[0].lag
}
