package lease

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/shardline/shardline/kcl"
)

// ErrExpired is the cause of a lost handle whose renewals failed for too long.
var ErrExpired = errors.New("lease: not renewed in time")

// ErrReleased is the cause of a handle given up with Release.
var ErrReleased = errors.New("lease: released")

// ErrHandoffTimeout is the cause of a lost handle whose holder did not hand
// the lease over in time after another worker asked for it: the requester
// takes it.
var ErrHandoffTimeout = errors.New("lease: not handed over in time")

// Handle is a lease this worker holds. Writes through a handle are
// serialized, so renewals and checkpoints never race on the counter.
type Handle struct {
	m   *Manager
	key string // immutable

	wmu sync.Mutex // serializes writes to the lease

	smu       sync.Mutex // guards the fields below
	lease     Lease
	acquired  time.Time // when the write that acquired the lease was sent
	writtenAt time.Time // when the last successful write was sent
	handoffBy time.Time // when a requested hand-over must be done; zero if none was requested
	loadAt    time.Time // when the throughput was last written
	timer     *time.Timer
	lost      chan struct{}
	lostErr   error
	handoff   chan struct{} // closed when another worker asks for the lease

	// unconfirmed holds the leases as sent by writes that failed without a
	// conflict since the last successful write (guarded by wmu): any one
	// may have been applied (see appliedEarlier).
	unconfirmed []Lease

	// Load measurement (RecordLoad), turned into a rate at each renewal.
	measuring bool      // RecordLoad was called
	loadSum   float64   // units recorded since loadSince
	loadSince time.Time // start of the current measurement
	rate      float64   // smoothed rate; starts from the stored Throughput
}

// loadSmoothing is the weight of the newest measurement in the smoothed
// rate: with renewals every few seconds, a step in load shows fully after
// a handful of renewals, and one busy batch does not.
const loadSmoothing = 0.3

// RecordLoad adds n units of work done on the shard (records or bytes: use
// one unit fleet-wide). Each renewal turns what was recorded since the last
// one into a per-second rate, smooths it, and stores it as the lease's
// Throughput, which load-aware balancing (ManagerConfig.BalanceByLoad)
// weighs. A handle on which RecordLoad is never called leaves the stored
// Throughput as it is. Safe for concurrent use.
func (h *Handle) RecordLoad(n float64) {
	if !(n > 0) || math.IsInf(n, 0) {
		return
	}
	h.smu.Lock()
	defer h.smu.Unlock()
	if !h.measuring {
		h.measuring, h.loadSince = true, h.m.now()
	}
	h.loadSum += n
}

// throughput returns the smoothed rate to store with a renewal, and false
// while nothing was recorded.
func (h *Handle) throughput() (float64, bool) {
	h.smu.Lock()
	defer h.smu.Unlock()
	if !h.measuring {
		return 0, false
	}
	now := h.m.now()
	el := now.Sub(h.loadSince)
	if el < h.m.cfg.RenewInterval/2 {
		return h.rate, true // too short to measure (a retried write)
	}
	r := h.loadSum / el.Seconds()
	if h.rate == 0 {
		h.rate = r
	} else {
		h.rate = loadSmoothing*r + (1-loadSmoothing)*h.rate
	}
	h.loadSum, h.loadSince = 0, now
	return h.rate, true
}

// Key returns the lease key (the shard ID).
func (h *Handle) Key() string { return h.key }

// Lease returns the lease as last written by this worker.
func (h *Handle) Lease() Lease {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.lease.Clone()
}

// Lost returns a channel closed when the lease is no longer held: taken by
// another worker, not renewed in time, or released.
func (h *Handle) Lost() <-chan struct{} { return h.lost }

// HandoffRequested returns a channel closed when another worker asked for
// the lease (a planned move for balancing). The holder should finish its
// batch, checkpoint and call HandOver; if it does not within the requester's
// hand-over timeout, the requester takes the lease anyway.
func (h *Handle) HandoffRequested() <-chan struct{} { return h.handoff }

// Valid reports whether the lease is still held and its renewal deadline has
// not passed. Check it right before acting on the shard: after a long pause
// (GC, SIGSTOP) it turns false at once, before the expiry timer has run.
// After another worker asked for the lease (HandoffRequested), it also turns
// false once the hand-over timeout is nearly over, before the requester may
// take the lease.
func (h *Handle) Valid() bool {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.lostErr == nil && h.m.now().Before(h.deadlineLocked())
}

// Err returns why the handle was lost, or nil while it is held. The error
// matches kcl.ErrLeaseLost unless the lease was released on purpose
// (ErrReleased).
func (h *Handle) Err() error {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.lostErr
}

func (h *Handle) isLost() bool { return closed(h.lost) }

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// deadline is when this worker must stop acting on the lease: the lease
// duration after its last successful heartbeat was sent, less a safety
// margin (see Manager.deadline). Other workers cannot fence it before that.
// Once another worker asked for the lease, it is at the latest the
// hand-over timeout after a time known to precede the request, less the
// margin: the requester takes the lease when its timeout, started after its
// request, ends.
func (h *Handle) deadlineLocked() time.Time {
	d := h.m.deadline()
	if !h.handoffBy.IsZero() && h.handoffBy.Before(d) {
		return h.handoffBy
	}
	return d
}

// lapsedLocked returns why a handle past its deadline is lost.
func (h *Handle) lapsedLocked() error {
	if !h.handoffBy.IsZero() && !h.handoffBy.After(h.m.deadline()) {
		return fmt.Errorf("%w: %w", kcl.ErrLeaseLost, ErrHandoffTimeout)
	}
	return fmt.Errorf("%w: %w", kcl.ErrLeaseLost, ErrExpired)
}

// armLocked (re)starts the expiry timer. h.smu or the manager's lock that
// publishes h must be held.
func (h *Handle) armLocked() {
	d := h.deadlineLocked().Sub(h.m.now())
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.expire)
		return
	}
	h.timer.Reset(d)
}

func (h *Handle) expire() {
	h.smu.Lock()
	late := !h.m.now().Before(h.deadlineLocked())
	if !late && h.lostErr == nil {
		// Renewed meanwhile (the timer was re-armed), or the manager's
		// clock runs slower than the timers: wait for the rest.
		h.armLocked()
	}
	cause := h.lapsedLocked()
	h.smu.Unlock()
	if !late {
		return
	}
	if errors.Is(cause, ErrHandoffTimeout) {
		h.m.log.Warn("lease not handed over in time; stopping the shard", "shard", h.Key())
	} else {
		h.m.log.Warn("lease not renewed in time; stopping the shard", "shard", h.Key())
	}
	h.markLost(cause)
	h.m.forget(h)
	h.m.expired(h)
}

// markLost closes Lost once and records why. It takes only h's own lock
// (and none while it reports the loss).
func (h *Handle) markLost(err error) {
	h.smu.Lock()
	if h.lostErr != nil {
		h.smu.Unlock()
		return
	}
	h.lostErr = err
	if h.timer != nil {
		h.timer.Stop()
	}
	close(h.lost)
	h.smu.Unlock()
	if !errors.Is(err, ErrReleased) {
		h.m.emit(Event{Kind: EventLost, Key: h.key, Err: err})
	}
}

// write performs one conditional write under the handle's write lock: op
// stores the handle's lease after edit (nil: none) changed a copy. With
// release set, a successful write gives the lease up: the handle is marked
// lost with ErrReleased before the write lock is let go, so that no renewal
// or checkpoint can slip in between and write to the released lease.
//
// A write that failed without a conflict (a timeout, say) may still have
// been applied; it is remembered (see unconfirmed) so that the next write,
// refused because the counter moved, can recognise it and adopt its result.
func (h *Handle) write(ctx context.Context, release bool, edit func(*Lease), op func(context.Context, Lease) (Lease, error)) (Lease, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.smu.Lock()
	if h.lostErr != nil {
		err := h.lostErr
		h.smu.Unlock()
		if errors.Is(err, ErrReleased) {
			return Lease{}, fmt.Errorf("%w: %w", kcl.ErrLeaseLost, err)
		}
		return Lease{}, err
	}
	if !h.m.now().Before(h.deadlineLocked()) {
		err := h.lapsedLocked()
		h.smu.Unlock()
		h.markLost(err)
		h.m.forget(h)
		h.m.expired(h)
		return Lease{}, err
	}
	base := h.lease.Clone()
	nudge := base.Nudge // the last nudge seen (an adopted conflict may show a newer one)
	left := h.deadlineLocked().Sub(h.m.now())
	h.smu.Unlock()
	attempt := func(base Lease) Lease {
		l := base.Clone()
		if edit != nil {
			edit(&l)
		}
		return l
	}

	// Past the deadline the write cannot help (the lease is lost here by
	// then): bound it, so that a call DynamoDB never answers does not hold
	// the write lock, and every checkpoint waiting for it, beyond the lease.
	ctx, cancel := context.WithTimeout(ctx, left)
	defer cancel()
	sent := h.m.now()
	cur := attempt(base)
	nl, err := op(ctx, cur)
	var ce *ConflictError
	if errors.As(err, &ce) && (h.adoptable(base, ce.Current) || h.appliedEarlier(base, ce.Current)) {
		// Another worker recorded lineage on the lease, or an earlier write
		// of ours whose answer was lost was applied after all; ownership
		// is untouched. Adopt the new counter and write again.
		h.smu.Lock()
		h.lease = ce.Current.Clone()
		base = h.lease.Clone()
		h.smu.Unlock()
		h.unconfirmed = nil
		cur = attempt(base)
		nl, err = op(ctx, cur)
	}
	if err != nil {
		if errors.As(err, &ce) {
			h.unconfirmed = nil
			h.markLost(err)
			h.m.forget(h)
		} else if !release && len(h.unconfirmed) < maxUnconfirmed {
			h.unconfirmed = append(h.unconfirmed, normalizeLease(cur))
		}
		return Lease{}, err
	}
	h.unconfirmed = nil
	if release {
		h.smu.Lock()
		h.lease = nl
		h.smu.Unlock()
		h.markLost(ErrReleased)
		h.m.forget(h)
		return nl.Clone(), nil
	}
	h.smu.Lock()
	h.lease = nl
	if h.lostErr == nil {
		if nl.HandoffTo != "" && nl.HandoffTo != h.m.cfg.WorkerID && h.handoffBy.IsZero() {
			// The previous write's result showed no request: it was
			// applied, and sent, before the request was made.
			h.handoffBy = h.writtenAt.Add(h.m.cfg.HandoffTimeout - h.m.margin)
		}
		h.writtenAt = sent
		h.armLocked()
	}
	h.smu.Unlock()
	if nl.HandoffTo != "" && nl.HandoffTo != h.m.cfg.WorkerID {
		h.signalHandoff()
	}
	if nl.Nudge != "" && nl.Nudge != nudge {
		h.m.nudged(h.key, nl.Nudge)
	}
	return nl.Clone(), nil
}

// maxUnconfirmed bounds the failed writes a handle remembers (see
// Handle.unconfirmed); they all start from the same counter, and at most one
// of them can have been applied.
const maxUnconfirmed = 8

// adoptable reports whether a refused write may be retried on cur: the lease
// is still ours, with the same checkpoint, so the write that moved the
// counter only recorded lineage (any worker may). Resets, takes and
// hand-overs change the owner or the checkpoint and are never adopted.
func (h *Handle) adoptable(mine Lease, cur *Lease) bool {
	return cur != nil && cur.Owner == mine.Owner && cur.Owner == h.m.cfg.WorkerID &&
		cur.Counter > mine.Counter && cur.Checkpoint == mine.Checkpoint &&
		cur.PendingCheckpoint == mine.PendingCheckpoint && cur.HandoffTo == mine.HandoffTo
}

// appliedEarlier reports whether cur, the lease as stored when a write
// based on mine was refused, is the result of one of this handle's earlier
// writes that failed without an answer (a timeout) but was applied: owned
// by this worker, exactly one write past mine, and equal in every stored
// field (but the throughput a renewal measures, and a hand-over request
// made since) to what that write stored.
// Any other write since (a reset, a take, a hand-over, another checkpoint)
// changes the owner, the counter by more than one, or a field, and is never
// adopted.
func (h *Handle) appliedEarlier(mine Lease, cur *Lease) bool {
	if cur == nil || cur.Owner != h.m.cfg.WorkerID || mine.Owner != cur.Owner || cur.Counter != mine.Counter+1 {
		return false
	}
	for _, u := range h.unconfirmed {
		// A hand-over request does not move the counter: one may have
		// come after the write (write then sees it, as after a renewal).
		if u.Counter == mine.Counter && sameStored(u, *cur) && (cur.HandoffTo == u.HandoffTo || u.HandoffTo == "") {
			return true
		}
	}
	return false
}

// sameStored reports whether a and b (normalised as stores keep leases)
// agree on every field but Counter, Throughput and HandoffTo.
func sameStored(a, b Lease) bool {
	return a.Key == b.Key && a.Owner == b.Owner &&
		a.Checkpoint == b.Checkpoint && a.CheckpointTimestamp.Equal(b.CheckpointTimestamp) &&
		a.PendingCheckpoint == b.PendingCheckpoint && bytes.Equal(a.PendingCheckpointState, b.PendingCheckpointState) &&
		a.OwnerSwitchesSinceCheckpoint == b.OwnerSwitchesSinceCheckpoint &&
		slices.Equal(a.ParentShardIDs, b.ParentShardIDs) && slices.Equal(a.ChildShardIDs, b.ChildShardIDs) &&
		a.StartingHashKey == b.StartingHashKey && a.EndingHashKey == b.EndingHashKey
}

// adoptTenure is install's check for a lease acquired twice: it reports
// whether h, still valid, already stands for nl, a successful write of this
// worker to the same lease in the same tenure (same owner switches and
// checkpoint, so no other owner and no reset came in between). If nl is
// newer, h takes it over (its next write is conditioned on nl's counter)
// with the later of the two send times. The manager's lock is held.
func (h *Handle) adoptTenure(nl Lease, sent time.Time) bool {
	h.smu.Lock()
	defer h.smu.Unlock()
	l := h.lease
	if h.lostErr != nil || !h.m.now().Before(h.deadlineLocked()) || nl.Owner != h.m.cfg.WorkerID || l.Owner != nl.Owner ||
		l.OwnerSwitchesSinceCheckpoint != nl.OwnerSwitchesSinceCheckpoint ||
		l.Checkpoint != nl.Checkpoint || l.PendingCheckpoint != nl.PendingCheckpoint {
		return false
	}
	if nl.Counter > l.Counter {
		h.lease = nl.Clone()
		if sent.After(h.writtenAt) {
			h.writtenAt = sent
		}
	}
	return true
}

func (h *Handle) signalHandoff() {
	h.smu.Lock()
	defer h.smu.Unlock()
	select {
	case <-h.handoff:
	default:
		close(h.handoff)
	}
}

// rearm restarts the expiry timer after a heartbeat moved the deadline.
func (h *Handle) rearm() {
	h.smu.Lock()
	defer h.smu.Unlock()
	if h.lostErr == nil {
		h.armLocked()
	}
}

// counter returns the counter of the lease as last written by this worker.
func (h *Handle) counter() int64 {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.lease.Counter
}

// handoffSignalled reports whether HandoffRequested is closed.
func (h *Handle) handoffSignalled() bool { return closed(h.handoff) }

// requested takes in a hand-over request the fleet row showed: it made
// after since (and after this tenure began), so the requester takes the
// lease no earlier than the hand-over timeout after that. cur is the lease
// as read with the request in it, or nil if it could not be read (the
// deadline is then moved all the same, to be safe).
func (h *Handle) requested(cur *Lease, since time.Time) {
	h.smu.Lock()
	// The request came after since, after this tenure began, and after the
	// last write, whose result did not show it.
	bound := since
	for _, t := range []time.Time{h.acquired, h.writtenAt} {
		if t.After(bound) {
			bound = t
		}
	}
	by := bound.Add(h.m.cfg.HandoffTimeout - h.m.margin)
	if h.handoffBy.IsZero() || by.Before(h.handoffBy) {
		h.handoffBy = by
	}
	// The request stands for this tenure whatever the counters: only a
	// take, hand-over, release or reset clears it, and each moves the owner.
	signal := cur != nil && h.lostErr == nil
	if signal {
		h.lease.HandoffTo = cur.HandoffTo
	}
	if h.lostErr == nil {
		h.armLocked()
	}
	h.smu.Unlock()
	if signal {
		h.signalHandoff()
	}
}

// loadDue reports whether the measured throughput should be written.
func (h *Handle) loadDue(now time.Time) bool {
	h.smu.Lock()
	defer h.smu.Unlock()
	return h.measuring && now.Sub(h.loadAt) >= h.m.cfg.RenewInterval
}

// renew writes the measured throughput (load-aware balancing).
func (h *Handle) renew(ctx context.Context) {
	h.smu.Lock()
	h.loadAt = h.m.now()
	h.smu.Unlock()
	_, err := h.write(ctx, false, func(l *Lease) {
		if tp, ok := h.throughput(); ok {
			l.Throughput = tp
		}
	}, h.m.store.Renew)
	if err != nil && ctx.Err() == nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			h.m.log.Info("lease lost to another worker", "shard", h.Key(), "err", err)
		} else if !errors.Is(err, kcl.ErrLeaseLost) {
			h.m.log.Warn("lease renewal failed; will retry", "shard", h.Key(), "err", err)
			h.m.emit(Event{Kind: EventRenewFailed, Key: h.key, Err: err})
		}
	}
}

// UpdateCheckpoint applies edit to a copy of the lease and stores the
// checkpoint fields conditionally. If the lease was lost, it fails with an
// error matching kcl.ErrLeaseLost and writes nothing.
func (h *Handle) UpdateCheckpoint(ctx context.Context, edit func(*Lease)) (Lease, error) {
	return h.write(ctx, false, edit, h.m.store.UpdateCheckpoint)
}

// UpdateShardInfo applies edit to a copy of the lease and stores its lineage
// fields conditionally.
func (h *Handle) UpdateShardInfo(ctx context.Context, edit func(*Lease)) (Lease, error) {
	return h.write(ctx, false, edit, h.m.store.UpdateShardInfo)
}

// HandOver passes the lease to the worker that requested it (see
// HandoffRequested). Checkpoint first: the new owner starts from the stored
// checkpoint. The handle is lost afterwards (with ErrReleased).
func (h *Handle) HandOver(ctx context.Context) error {
	nl, err := h.write(ctx, true, nil, h.m.store.HandOver)
	if err == nil {
		h.m.log.Info("lease handed over", "shard", h.Key(), "to", nl.Owner)
		h.m.emit(Event{Kind: EventHandedOver, Key: h.key, Peer: nl.Owner})
	}
	return err
}

// Pass gives the lease up on a graceful stop (after StopTaking): to the
// worker that asked for it, if one did and is still active; else to the live worker that the
// fleet-wide plan gives it once this worker is gone, by a write conditional
// on this worker's ownership and counter, as a hand-over is, which the new
// owner learns of at its next heartbeat (it needs no taking round); else,
// with no such worker, it releases the lease. Checkpoint first. The handle is
// lost afterwards (with ErrReleased).
func (h *Handle) Pass(ctx context.Context) error {
	if to := h.Lease().HandoffTo; to != "" && h.m.active(to) {
		return h.HandOver(ctx)
	}
	to := h.m.passTarget(h.key)
	if to == "" {
		return h.Release(ctx)
	}
	nl, err := h.write(ctx, true, nil, func(ctx context.Context, l Lease) (Lease, error) { return h.m.store.Take(ctx, l, to) })
	h.m.changed() // the others read the leases again (on a failure too: the write may have been applied)
	if err != nil {
		return err
	}
	h.m.log.Info("lease handed over", "shard", h.Key(), "to", to)
	h.m.emit(Event{Kind: EventHandedOver, Key: h.key, Peer: to})
	// The record tells the new owner at its next heartbeat. Without it
	// (a failure here) the new owner finds the lease at its next read of
	// the table, its own without a handle: see Manager.expiredLocked.
	if err := h.m.store.AskHandoff(ctx, nl.Key, to); err != nil {
		if ctx.Err() == nil {
			h.m.log.Warn("recording a lease hand-over failed", "shard", h.Key(), "to", to, "err", err)
		}
		return nil
	}
	// The nudge makes the new owner read the record sooner: at its next
	// write to a lease it holds, if that comes before its heartbeat.
	h.m.nudge(ctx, to, nl)
	return nil
}

// Release gives the lease up so that another worker can take it at once.
// The handle is lost afterwards (with ErrReleased).
func (h *Handle) Release(ctx context.Context) error {
	_, err := h.write(ctx, true, nil, h.m.store.Release)
	if err == nil {
		h.m.changed()
		h.m.log.Info("lease released", "shard", h.Key())
		h.m.emit(Event{Kind: EventReleased, Key: h.key})
	}
	return err
}
