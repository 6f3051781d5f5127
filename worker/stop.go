package worker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// hardStopGrace is the longest hard part of a bounded stop: with a bound
// (ShutdownTimeout, Shutdown's deadline) the processors' contexts are
// cancelled a fifth of the budget, at most this long, before it; a stop
// without notice (Shutdown's context cancelled, a fatal error) cancels them
// at once and ends this long after.
const hardStopGrace = 2 * time.Second

// abandonWait is how long, once the bound has passed and every context the
// worker handed out is cancelled, the worker waits for shard goroutines that
// are not inside a user callback to return.
const abandonWait = 100 * time.Millisecond

// stopClock bounds a stop. Its timers cancel the processors' contexts (the
// hard stop) and then end the wait for the shards; both only move earlier.
type stopClock struct {
	mu        sync.Mutex
	hard, end time.Time   // zero while unbounded
	deadline  time.Time   // the bound itself (end is a little before it)
	hardT     *time.Timer // fires cancelHard at hard
	endT      *time.Timer // closes ended at end
	ended     chan struct{}
	endOnce   sync.Once
	// hardDone is set when the hard stop began (the processors' contexts
	// were cancelled before they finished).
	hardDone atomic.Bool
}

// boundStopBy bounds the stop by deadline: the hard stop begins a fifth of
// the time left (at most hardStopGrace) before it, and the wait for the
// shards ends a quarter of that before it, leaving the rest for closing.
func (w *Worker) boundStopBy(deadline time.Time) {
	left := time.Until(deadline)
	if left <= 0 {
		w.boundStopNow()
		return
	}
	g := min(left/5, hardStopGrace)
	w.boundStop(deadline.Add(-g), deadline.Add(-g/4), deadline)
}

// boundStopNow begins the hard stop at once and ends the stop within
// hardStopGrace.
func (w *Worker) boundStopNow() {
	now := time.Now()
	w.boundStop(now, now.Add(hardStopGrace), now.Add(hardStopGrace))
}

// boundStop moves the hard stop to hard and the end of the wait for the
// shards to end, unless they are set earlier already.
func (w *Worker) boundStop(hard, end, deadline time.Time) {
	c := &w.stopc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hard.IsZero() || hard.Before(c.hard) {
		c.hard = hard
		if c.hardT != nil {
			c.hardT.Stop()
		}
		c.hardT = time.AfterFunc(time.Until(hard), w.cancelHard)
	}
	if c.end.IsZero() || end.Before(c.end) {
		c.end, c.deadline = end, deadline
		if c.endT != nil {
			c.endT.Stop()
		}
		c.endT = time.AfterFunc(time.Until(end), func() { c.endOnce.Do(func() { close(c.ended) }) })
	}
}

// stopTimers stops the timers of the stop clock (Run is returning).
func (c *stopClock) stopTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range []*time.Timer{c.hardT, c.endT} {
		if t != nil {
			t.Stop()
		}
	}
}

// closeContext is the context for the worker's last writes (removing its
// fleet entry): until the bound, or 5 s for an unbounded stop, and never
// less than abandonWait.
func (c *stopClock) closeContext() (context.Context, context.CancelFunc) {
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	if d.IsZero() {
		d = time.Now().Add(5 * time.Second)
	}
	return context.WithDeadline(context.Background(), later(d, time.Now().Add(abandonWait)))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// cancelHard cancels every processor's context (the hard stop).
func (w *Worker) cancelHard() {
	w.stopc.hardDone.Store(true)
	w.mu.Lock()
	hc := w.hardCancel
	w.mu.Unlock()
	if hc != nil {
		hc()
	}
}

// waitShards waits for every shard goroutine to return, or for the end of
// a bounded stop. It returns the IDs of the shards abandoned then (see
// abandon).
func (w *Worker) waitShards() []string {
	for {
		w.mu.Lock()
		var s *shardState
		for s = range w.live {
			break
		}
		w.mu.Unlock()
		if s == nil {
			w.releases.Wait() // bounded: the duties' context ends with the stop bound
			return nil
		}
		select {
		case <-s.done:
		case <-w.stopc.ended:
			return w.abandon()
		}
	}
}

// abandon ends the wait for shards that did not stop by the bound. Every
// context the worker handed out is cancelled (stop duties included); shard
// goroutines that are not inside a user callback then return at once, and
// are waited for briefly. The others are stuck in a processor (or factory)
// call that ignores its context: a goroutine cannot be killed, so each is
// abandoned. Its reader is closed here, so that no goroutine of the worker
// but the one blocked in user code outlives Run; its lease is not released
// (the processor may still be working on its batch): it stays with its last
// checkpoint and expires once the worker has left the fleet, and its
// handle refuses every later write. If the callback returns one day, the
// goroutine finds its lease lost and ends.
func (w *Worker) abandon() []string {
	w.cancelDuties()
	t := time.NewTicker(abandonWait / 10)
	defer t.Stop()
	limit := time.Now().Add(abandonWait)
	var left []*shardState
	for {
		left = left[:0]
		stuck := true
		w.mu.Lock()
		for s := range w.live {
			left = append(left, s)
			stuck = stuck && s.inCallback()
		}
		w.mu.Unlock()
		if len(left) == 0 || stuck || !time.Now().Before(limit) {
			break
		}
		<-t.C
	}
	ids := make([]string, 0, len(left))
	for _, s := range left {
		s.closeReader()
		ids = append(ids, s.id)
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		w.log.Error("stop bound passed while callbacks were still running; their goroutines are abandoned and their leases left to expire",
			"shards", ids)
	}
	return ids
}

// stuckError is Run's error when shards were abandoned at the stop bound.
func stuckError(ids []string) error {
	return fmt.Errorf("shardline: %w: stop bound passed while the processors of shards %v had not returned "+
		"(their goroutines are abandoned; their leases are not released and expire)", context.DeadlineExceeded, ids)
}

// inCallback reports whether the shard's goroutine is inside user code: the
// ProcessorFactory, or a processor call of its machine (lanes included).
func (s *shardState) inCallback() bool {
	if s.inFactory.Load() {
		return true
	}
	m := s.mach.Load()
	return m != nil && m.Busy()
}

// closeReader closes the shard's reader, if it has one open.
func (s *shardState) closeReader() {
	s.rdMu.Lock()
	rd := s.rd
	s.rdMu.Unlock()
	if rd != nil {
		_ = rd.Close()
	}
}
