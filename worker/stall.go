package worker

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/shardline/shardline/internal/checkpoint"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// The stall detector watches every held shard: a shard whose opening,
// reads, processing or checkpoints keep failing, or that made no progress
// (no batch processed, no read at the tip of the shard) for StallTimeout,
// is stalled; so is a shard whose stored checkpoint cannot be read from
// (from the first refusal: only a repair of the row helps). Each change is
// logged once (WARN when a shard stalls or its reason changes, INFO when it
// recovers), reported to the hooks (EventShardStalled,
// EventShardRecovered) and written with the worker's next heartbeat in the
// fleet row, where kclctl leases shows it.

// defaultStallTimeout is Config.StallTimeout's default.
const defaultStallTimeout = 2 * time.Minute

// stallFailures is how many failures in a row of one operation make a
// shard stalled.
const stallFailures = 3

// stallOp is an operation whose repeated failure stalls a shard.
type stallOp int

const (
	opBadCheckpoint stallOp = iota // the stored checkpoint is refused (malformed, or by Kinesis)
	opOpen                         // making and initializing the processor, opening the shard
	opCheckpoint                   // checkpoint writes (a processor whose checkpoints fail fails too)
	opProcess                      // ProcessRecords
	opRead                         // reads from Kinesis
	numStallOps
)

// Stall reasons (Event.Reason of EventShardStalled and EventShardRecovered,
// the reason label of shardline_shard_stalled, the fleet row), in order of
// precedence when several apply.
var stallReasons = [numStallOps]string{
	opBadCheckpoint: "bad-checkpoint",
	opOpen:          "open-failing",
	opCheckpoint:    "checkpoint-failing",
	opProcess:       "processor-failing",
	opRead:          "read-failing",
}

// stallNoProgress is the reason of a shard without failures that made no
// progress for StallTimeout.
const stallNoProgress = "no-progress"

// stallWatch is one held shard's stall detector. Its methods are safe for
// concurrent use (lanes process batches in parallel); the report of a
// change is made under its lock, so that changes are reported in order.
type stallWatch struct {
	timeout time.Duration
	report  func(from, to string, st stallSnapshot)

	mu       sync.Mutex
	timing   bool               // progress is timed (the shard's parents finished)
	progress time.Time          // last progress, or when timing began
	fails    [numStallOps]int   // failures in a row, by operation
	lastErr  [numStallOps]error // the last failure's error, by operation
	reason   string             // as last reported; "" when not stalled
	ended    bool
}

// stallSnapshot describes a stall when it is reported.
type stallSnapshot struct {
	idle     time.Duration // since the last progress (0 before timing began)
	failures int           // failures in a row behind a failing reason
	err      error         // the last failure's error
}

func newStallWatch(timeout time.Duration, report func(from, to string, st stallSnapshot)) *stallWatch {
	return &stallWatch{timeout: timeout, report: report}
}

// begin starts timing progress from now.
func (st *stallWatch) begin(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.timing, st.progress = true, now
	st.evaluateLocked(now, numStallOps)
}

// progressed records progress at now.
func (st *stallWatch) progressed(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.progress = now
	st.evaluateLocked(now, numStallOps)
}

// observe records the outcome of one operation: a failure (err not nil)
// counts towards a failing stall, a success ends the run of failures.
func (st *stallWatch) observe(op stallOp, err error, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	failed := numStallOps
	if err != nil {
		st.fails[op]++
		st.lastErr[op] = err
		failed = op
	} else {
		st.fails[op] = 0
	}
	st.evaluateLocked(now, failed)
}

// check evaluates the shard at now (the no-progress timeout).
func (st *stallWatch) check(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.evaluateLocked(now, numStallOps)
}

// end stops watching: the shard's consumer stopped. A stall still
// reported ends with it.
func (st *stallWatch) end(now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ended {
		return
	}
	st.ended = true
	if st.reason != "" {
		from := st.reason
		st.reason = ""
		st.report(from, "", st.snapshotLocked(now, numStallOps))
	}
}

// current returns the reason reported now ("" when not stalled).
func (st *stallWatch) current() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.reason
}

// evaluateLocked works out the shard's reason at now and reports a change.
// failed is the operation whose failure is being observed (numStallOps
// for none): a stall moves from one failing operation to another only on a
// failure of the other, so that a checkpoint that succeeds again inside a
// processor call that failed because of it does not report the processor
// as failing in between. st.mu is held.
func (st *stallWatch) evaluateLocked(now time.Time, failed stallOp) {
	if st.ended {
		return
	}
	reason, op := "", numStallOps
	for o, n := range st.fails {
		if n >= stallFailures || n > 0 && stallOp(o) == opBadCheckpoint {
			reason, op = stallReasons[o], stallOp(o)
			break
		}
	}
	if reason == "" && st.timing && now.Sub(st.progress) >= st.timeout {
		reason = stallNoProgress
	}
	if reason == st.reason || op < numStallOps && op != failed && st.failingLocked() {
		return
	}
	from := st.reason
	st.reason = reason
	st.report(from, reason, st.snapshotLocked(now, op))
}

// failingLocked reports whether the reported reason is a failing
// operation's. st.mu is held.
func (st *stallWatch) failingLocked() bool {
	return st.reason != "" && st.reason != stallNoProgress
}

func (st *stallWatch) snapshotLocked(now time.Time, op stallOp) stallSnapshot {
	s := stallSnapshot{}
	if st.timing {
		s.idle = now.Sub(st.progress)
	}
	if op < numStallOps {
		s.failures, s.err = st.fails[op], st.lastErr[op]
	}
	return s
}

// newStall returns the stall detector of shard s: it logs each change and
// reports it to the hooks.
func (s *shardState) newStall() *stallWatch {
	return newStallWatch(s.w.cfg.StallTimeout, func(from, to string, st stallSnapshot) {
		attrs := []any{"since_progress", st.idle.Round(time.Millisecond)}
		if st.failures > 0 {
			attrs = append(attrs, "failures", st.failures, shardproc.ErrAttr(st.err))
		}
		if from != "" {
			attrs = append(attrs, "was", from)
		}
		switch to {
		case "":
			s.log.Info("shard no longer stalled", attrs...)
			s.w.hooks.emit(Event{Kind: EventShardRecovered, ShardID: s.id, Reason: from})
			return
		case stallReasons[opBadCheckpoint]:
			cp := s.h.Lease().Checkpoint
			attrs = append(attrs, "checkpoint", shardproc.Truncate(cp.String(), maxLoggedCheckpoint))
			if other, ok := checkpoint.OtherShard(s.shard, cp.SequenceNumber); ok {
				attrs = append(attrs, "checkpoint_of_shard", other)
			}
			s.log.Warn("stored checkpoint cannot be read from: the shard keeps its lease but processes nothing until the checkpoint is repaired (kclctl replay, lease.Reset)",
				append([]any{"reason", to}, attrs...)...)
		default:
			s.log.Warn("shard stalled", append([]any{"reason", to, "timeout", s.w.cfg.StallTimeout}, attrs...)...)
		}
		s.w.hooks.emit(Event{Kind: EventShardStalled, ShardID: s.id, Reason: to, Err: st.err})
	})
}

// observeStall feeds the stall detector with the outcome of an operation,
// unless it failed because the lease was lost (not a stall: the shard
// stops).
func (s *shardState) observeStall(op stallOp, err error) {
	if err != nil && errors.Is(err, kcl.ErrLeaseLost) {
		return
	}
	s.stall.observe(op, err, time.Now())
}

// stallCheckInterval is how often the worker evaluates the no-progress
// timeout of its shards.
func (w *Worker) stallCheckInterval() time.Duration {
	return min(w.cfg.StallTimeout/4, time.Second)
}

// checkStalls evaluates the no-progress timeout of every held shard.
func (w *Worker) checkStalls() {
	now := time.Now()
	for _, s := range w.runningShards() {
		s.stall.check(now)
	}
}

// stalls returns the worker's stalled shards (shard ID -> reason), for the
// fleet row.
func (w *Worker) stalls() map[string]string {
	var out map[string]string
	for _, s := range w.runningShards() {
		if r := s.stall.current(); r != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[s.id] = r
		}
	}
	return out
}

// runningShards returns the current shard consumers.
func (w *Worker) runningShards() []*shardState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Collect(maps.Values(w.running))
}

// unownedReport reports to the hooks the shards the lease manager sees
// unowned (see lease.Manager.Unowned) after each heartbeat:
// EventShardUnowned for each, with how long, and EventShardOwned for each
// reported before that no longer is.
type unownedReport struct {
	mu     sync.Mutex
	shown  map[string]bool // lease keys reported unowned
	closed bool            // Run returned: nothing more is reported
}

// report reports the manager's view after a heartbeat.
func (u *unownedReport) report(h *hooks, m *lease.Manager) {
	if h.none() {
		return
	}
	now := m.Unowned()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	u.ownedLocked(h, now)
	for key, d := range now {
		if u.shown == nil {
			u.shown = map[string]bool{}
		}
		u.shown[key] = true
		h.emit(Event{Kind: EventShardUnowned, ShardID: key, Duration: d})
	}
}

// close reports every shard reported unowned as owned (no longer watched)
// and stops the reports.
func (u *unownedReport) close(h *hooks) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	u.ownedLocked(h, nil)
}

// ownedLocked reports EventShardOwned for the shards reported unowned that
// are not in now. u.mu is held.
func (u *unownedReport) ownedLocked(h *hooks, now map[string]time.Duration) {
	for key := range u.shown {
		if _, ok := now[key]; !ok {
			delete(u.shown, key)
			h.emit(Event{Kind: EventShardOwned, ShardID: key})
		}
	}
}

// fetchObserver returns the observer of stream st's readers: each read's
// outcome goes to its shard's stall detector, then to the hooks. The events
// of a multi-stream worker name the shard by lease key.
func (w *Worker) fetchObserver(st *streamState) reader.Observer {
	return func(e reader.FetchEvent) {
		e.ShardID = st.leaseKey(e.ShardID)
		w.observeFetch(e)
		if !w.hooks.none() {
			w.hooks.onFetch(e)
		}
	}
}

// observeFetch feeds a read's outcome (ShardID the lease key) to its
// shard's stall detector. An expired iterator and a subscription refused
// while the previous one ends are routine and retried at once: they count
// neither way.
func (w *Worker) observeFetch(e reader.FetchEvent) {
	if e.ErrorKind == "expired_iterator" || e.ErrorKind == "in_use" {
		return
	}
	w.mu.Lock()
	s := w.running[e.ShardID]
	w.mu.Unlock()
	if s != nil {
		s.observeStall(opRead, e.Err)
	}
}
