package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/shardline/shardline/kcl"
)

// ManagerConfig configures a [Manager].
type ManagerConfig struct {
	// Store keeps the leases. Required.
	Store Store
	// WorkerID is this worker's ID. Required.
	WorkerID string
	// LeaseDuration is how long a lease stays valid without renewal.
	LeaseDuration time.Duration
	// RenewInterval is how often held leases are renewed (< LeaseDuration/2).
	RenewInterval time.Duration
	// TakeInterval is how often the table is scanned for leases to take and
	// for expired leases.
	TakeInterval time.Duration
	// OnAcquired is called (from the manager's goroutine; it must not block)
	// for every lease the manager takes.
	OnAcquired func(*Handle)
	// Logger receives logs; default slog.Default().
	Logger *slog.Logger
	// Rand seeds tie-breaking; default a random seed.
	Rand *rand.Rand
	// OnEvent, if set, is told about lease changes (for metrics). It is
	// called synchronously, sometimes with the manager's lock held: it must
	// return quickly and must not call the Manager or its handles.
	OnEvent func(Event)
	// Now is the clock by which the manager times what it observes in the
	// table and the deadlines of its leases; default time.Now. Only
	// differences between its readings matter (it should be monotonic):
	// workers whose clocks are offset from each other, or run up to a few
	// percent fast or slow, still agree on expiry. Tests inject skewed
	// clocks here.
	Now func() time.Time
	// BalanceByLoad balances the leases' Throughput (what their holders
	// measure, see Handle.RecordLoad) rather than their number; see
	// PlanFleet. Off by default. Every worker of the fleet should use the
	// same setting.
	BalanceByLoad bool
	// LoadTolerance is how far, relative to the mean, a worker's load may
	// stray before leases move (BalanceByLoad only). Default
	// DefaultLoadTolerance.
	LoadTolerance float64
	// MaxPendingHandoffs caps the hand-overs a worker asks for at once (to
	// different owners, or several leases of one); default 8. The plan
	// counts a requested lease as the requester's already, so a larger cap
	// only makes a joining worker reach its share in fewer rounds.
	MaxPendingHandoffs int
	// HandoffTimeout is how long a worker that asked for a lease (to
	// balance the fleet) waits for the owner to hand it over before taking
	// it anyway. Default: LeaseDuration. The owner's handle turns invalid
	// (lost with ErrHandoffTimeout) once the same time, less the safety
	// margin, has passed since its last write before the request, so that
	// it has stopped when the requester takes the lease: give every worker
	// the same value.
	HandoffTimeout time.Duration
}

// Manager renews the leases a worker holds and takes more when the worker
// holds less than its share. It writes the worker's presence row so that
// workers holding nothing are counted too.
//
// A held lease is represented by a [Handle]. The handle is lost (its Lost
// channel closes) when a renewal is refused because another worker took the
// lease, or when renewals failed for so long that the lease could be expiring
// in other workers' eyes: processing must stop before others may start.
type Manager struct {
	cfg        ManagerConfig
	store      Store
	log        *slog.Logger
	margin     time.Duration
	staleAfter time.Duration // how long a free lease may wait for the worker planned to take it

	mu       sync.Mutex
	held     map[string]*Handle
	observed map[string]observation // lease key -> last counter change seen
	workers  map[string]observation // worker ID -> last heartbeat change seen
	hb       Worker
	rnd      *rand.Rand
	// withdrawn is set by StopTaking: the presence row goes, so that the
	// others plan without this worker.
	withdrawn, rowGone bool

	wg              sync.WaitGroup
	hwg             sync.WaitGroup // hand-over waiters, joined by StopTaking
	pendingHandoffs int            // hand-over requests being waited for
	stopRenew       context.CancelFunc
	stopTake        context.CancelFunc
	takeDone        chan struct{}
	renewDone       chan struct{}
	takeWakeup      chan struct{}
}

// Causes of handles lost without a refused write. Both match
// kcl.ErrLeaseLost, as Handle.Err promises for every loss but a release.
var (
	errManagerClosed = fmt.Errorf("%w: lease manager closed", kcl.ErrLeaseLost)
	errTakenAgain    = fmt.Errorf("%w: lease taken again by this worker", kcl.ErrLeaseLost)
)

type observation struct {
	counter int64
	owner   string
	at      time.Time
}

// NewManager returns a manager; it does nothing until Start.
func NewManager(cfg ManagerConfig) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if cfg.HandoffTimeout <= 0 {
		cfg.HandoffTimeout = cfg.LeaseDuration
	}
	if cfg.OnAcquired == nil {
		cfg.OnAcquired = func(*Handle) {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxPendingHandoffs <= 0 {
		cfg.MaxPendingHandoffs = 8
	}
	return &Manager{
		cfg:        cfg,
		store:      cfg.Store,
		log:        cfg.Logger,
		margin:     cfg.LeaseDuration / 10,
		staleAfter: 3 * cfg.TakeInterval,
		held:       map[string]*Handle{},
		observed:   map[string]observation{},
		workers:    map[string]observation{},
		hb:         Worker{ID: cfg.WorkerID},
		rnd:        cfg.Rand,
		takeWakeup: make(chan struct{}, 1),
	}
}

// Start writes the presence row and starts the renewal and taking loops. The
// first taking round waits one TakeInterval so that workers started together
// see each other before they divide the leases.
//
// A row left by an earlier run with the same WorkerID (a crash) is deleted
// first, so that the heartbeat counts from 1 again: the other workers judge
// from it how long this worker has been watching the table (see
// View.Young). The leases are read once before the first heartbeat, and
// the time this worker watched them counts from that read.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.freshRow(ctx); err != nil {
		return err
	}
	// Best effort: a worker that cannot read the leases cannot take them
	// either, and the stale-lease rule of PlanTakes covers what is planned
	// for it meanwhile.
	if leases, err := m.store.List(ctx); err == nil {
		now := m.now()
		m.mu.Lock()
		for _, l := range leases {
			m.observed[l.Key] = observation{counter: l.Counter, owner: l.Owner, at: now}
		}
		m.mu.Unlock()
	} else if ctx.Err() == nil {
		m.log.Warn("reading the leases at start failed", "worker", m.cfg.WorkerID, "err", err)
	}
	if err := m.heartbeat(ctx); err != nil {
		return err
	}
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	tctx, tcancel := context.WithCancel(ctx)
	m.stopRenew, m.stopTake = rcancel, tcancel
	m.renewDone, m.takeDone = make(chan struct{}), make(chan struct{})
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		defer close(m.renewDone)
		m.renewLoop(rctx)
	}()
	go func() {
		defer m.wg.Done()
		defer close(m.takeDone)
		m.takeLoop(tctx)
	}()
	return nil
}

// freshRow deletes this worker's presence row if an earlier run left one,
// conditional on the heartbeat read, so that the first heartbeat writes 1.
// A row that keeps changing under it (another process with the same ID)
// is left after a few tries: the others then take this worker for older
// than it is, which delays failover but never makes two owners.
func (m *Manager) freshRow(ctx context.Context) error {
	for range 3 {
		ws, err := m.store.ListWorkers(ctx)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(ws, func(w Worker) bool { return w.ID == m.cfg.WorkerID })
		if i < 0 {
			return nil
		}
		err = m.store.DeleteWorker(ctx, ws[i])
		if err == nil || errors.Is(err, ErrNotFound) {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	m.log.Warn("presence row of this worker ID keeps changing; is another process using it?", "worker", m.cfg.WorkerID)
	return nil
}

// young reports whether the worker whose presence row shows heartbeat hb
// may have watched the table for less than LeaseDuration + TakeInterval.
// The row counts from 1 at its Start (see freshRow), which read the leases
// first, and grows by one per RenewInterval at most, so the worker has
// watched for at least (hb-1)*RenewInterval. The TakeInterval beyond the
// lease duration lets a worker that just matured have judged, at its own
// rounds, the leases others judge expired by the time they name it, and
// keeps planners that read its row a moment apart from naming it before it
// can act.
func (m *Manager) young(hb int64) bool {
	return time.Duration(hb-1)*m.cfg.RenewInterval < m.cfg.LeaseDuration+m.cfg.TakeInterval
}

// WakeTaker makes the taking loop run a round now (for example after a shard
// sync created leases).
func (m *Manager) WakeTaker() {
	select {
	case m.takeWakeup <- struct{}{}:
	default:
	}
}

// StopTaking stops the taking loop and waits for it. Held leases keep being
// renewed. The worker withdraws from the fleet: its presence row is removed
// at the next renewal tick, so that the other workers plan without it and
// take the leases it releases at once (they still count it while it holds
// leases).
func (m *Manager) StopTaking() {
	if m.stopTake == nil {
		return
	}
	m.stopTake()
	<-m.takeDone
	m.hwg.Wait()
	m.mu.Lock()
	m.withdrawn = true
	m.mu.Unlock()
}

// Close stops both loops, waits for them, and removes the presence row. Held
// leases are not released: call Release on each handle first for a graceful
// hand-over. Handles still held are lost afterwards, with an error matching
// kcl.ErrLeaseLost, and Held returns none.
func (m *Manager) Close(ctx context.Context) error {
	if m.stopRenew == nil {
		return nil
	}
	m.StopTaking()
	m.stopRenew()
	m.wg.Wait()
	m.mu.Lock()
	hb := m.hb
	for key, h := range m.held {
		h.markLost(errManagerClosed)
		delete(m.held, key)
	}
	m.mu.Unlock()
	if err := m.store.DeleteWorker(ctx, hb); err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// Held returns the handles of the leases currently held.
func (m *Manager) Held() []*Handle {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Handle, 0, len(m.held))
	for _, h := range m.held {
		out = append(out, h)
	}
	return out
}

func (m *Manager) heartbeat(ctx context.Context) error {
	m.mu.Lock()
	hb := m.hb
	hb.Leases = len(m.held)
	withdrawn, gone := m.withdrawn, m.rowGone
	m.mu.Unlock()
	if withdrawn {
		if gone {
			return nil
		}
		if err := m.store.DeleteWorker(ctx, hb); err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotFound) {
			return err
		}
		m.mu.Lock()
		m.rowGone = true
		m.mu.Unlock()
		return nil
	}
	nhb, err := m.store.Heartbeat(ctx, hb)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.hb = nhb
	m.mu.Unlock()
	return nil
}

func (m *Manager) renewLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.renewAll(ctx)
		if err := m.heartbeat(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("presence heartbeat failed", "worker", m.cfg.WorkerID, "err", err)
		}
	}
}

// renewAll renews every held lease, a bounded number at a time.
func (m *Manager) renewAll(ctx context.Context) {
	hs := m.Held()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, h := range hs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h.renew(ctx)
		}()
	}
	wg.Wait()
}

func (m *Manager) takeLoop(ctx context.Context) {
	first := time.NewTimer(m.cfg.TakeInterval)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	case <-m.takeWakeup:
	}
	for {
		expiry, err := m.takeRound(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Warn("lease taking round failed", "worker", m.cfg.WorkerID, "err", err)
		}
		// Jitter the period by up to ±10% so workers do not scan in lockstep.
		d := m.cfg.TakeInterval
		m.mu.Lock()
		d += time.Duration((m.rnd.Float64()*0.2 - 0.1) * float64(d))
		m.mu.Unlock()
		// Scan again as soon as a lease could expire: a crashed worker's
		// leases are then taken the lease duration after the last change of
		// their counters was seen, not up to a period later.
		if !expiry.IsZero() {
			d = min(d, max(expiry.Sub(m.now()), m.cfg.TakeInterval/10))
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-m.takeWakeup:
			t.Stop()
		}
	}
}

// takeRound scans the table, updates what it observed and takes leases
// according to PlanTakes. It returns when the next lease held by another
// worker would expire if its counter stood still (zero if none).
func (m *Manager) takeRound(ctx context.Context) (expiry time.Time, err error) {
	leases, err := m.store.List(ctx)
	if err != nil {
		return time.Time{}, err
	}
	workers, err := m.store.ListWorkers(ctx)
	if err != nil {
		return time.Time{}, err
	}
	now := m.now()
	view := View{Self: m.cfg.WorkerID, Leases: leases, Expired: map[string]bool{}, Stale: map[string]bool{},
		Young: map[string]bool{}, ByLoad: m.cfg.BalanceByLoad, LoadTolerance: m.cfg.LoadTolerance}

	m.mu.Lock()
	seen := make(map[string]bool, len(leases))
	for _, l := range leases {
		seen[l.Key] = true
		o, ok := m.observed[l.Key]
		if !ok || o.counter != l.Counter || o.owner != l.Owner {
			o = observation{counter: l.Counter, owner: l.Owner, at: now}
			m.observed[l.Key] = o
		}
		age := now.Sub(o.at)
		if h := m.held[l.Key]; l.Owner != "" && (h == nil || h.isLost()) {
			if age >= m.cfg.LeaseDuration {
				view.Expired[l.Key] = true
			} else if at := o.at.Add(m.cfg.LeaseDuration); expiry.IsZero() || at.Before(expiry) {
				expiry = at
			}
		}
		// A free lease that the worker PlanTakes names did not take within
		// a few rounds is stale: any worker below its share takes it.
		if l.Owner == "" && age >= m.staleAfter || view.Expired[l.Key] && age >= m.cfg.LeaseDuration+m.staleAfter {
			view.Stale[l.Key] = true
		}
	}
	for k := range m.observed {
		if !seen[k] {
			delete(m.observed, k)
		}
	}
	var stale []Worker
	wseen := map[string]bool{}
	for _, w := range workers {
		wseen[w.ID] = true
		o, ok := m.workers[w.ID]
		if !ok || o.counter != w.Heartbeat {
			o = observation{counter: w.Heartbeat, at: now}
			m.workers[w.ID] = o
		}
		age := now.Sub(o.at)
		if age < m.cfg.LeaseDuration || w.ID == m.cfg.WorkerID {
			view.LiveWorkers = append(view.LiveWorkers, w.ID)
			if m.young(w.Heartbeat) {
				view.Young[w.ID] = true
			}
		} else if age > 6*m.cfg.LeaseDuration {
			stale = append(stale, w)
		}
	}
	for id := range m.workers {
		if !wseen[id] {
			delete(m.workers, id)
		}
	}
	plan := PlanTakes(view)
	m.mu.Unlock()

	for _, w := range stale {
		if err := m.store.DeleteWorker(ctx, w); err == nil {
			m.log.Info("removed presence row of a long-dead worker", "dead_worker", w.ID)
		}
	}
	for _, l := range plan.Take {
		m.take(ctx, l, takeHow(l))
	}
	for _, l := range plan.Steal {
		m.requestHandoff(ctx, l)
	}
	return expiry, nil
}

// requestHandoff asks the owner of l to hand it over (a planned move: the
// owner finishes its batch and checkpoints first, so nothing is processed
// twice) and starts a goroutine that waits for the hand-over. At most
// MaxPendingHandoffs requests are pending per worker.
func (m *Manager) requestHandoff(ctx context.Context, l Lease) {
	m.mu.Lock()
	if m.pendingHandoffs >= m.cfg.MaxPendingHandoffs {
		m.mu.Unlock()
		return
	}
	m.pendingHandoffs++
	m.mu.Unlock()
	done := func() {
		m.mu.Lock()
		m.pendingHandoffs--
		m.mu.Unlock()
	}
	req, err := m.store.RequestHandoff(ctx, l, m.cfg.WorkerID)
	if err != nil {
		done()
		if !errors.Is(err, ErrConflict) && ctx.Err() == nil {
			m.log.Warn("asking for a lease hand-over failed", "shard", l.Key, "err", err)
		}
		return
	}
	m.log.Info("asked for a lease hand-over", "shard", l.Key, "owner", l.Owner)
	m.emit(Event{Kind: EventHandoffRequested, Key: l.Key, Peer: l.Owner})
	m.hwg.Add(1)
	go func() {
		defer m.hwg.Done()
		defer done()
		m.awaitHandoff(ctx, req)
	}()
}

// awaitHandoff polls the requested lease until its owner hands it over (then
// adopts it), releases it (then takes it), or ignores the request for
// HandoffTimeout (then takes it anyway: the owner's handle has turned
// invalid by then, see Handle.Valid).
func (m *Manager) awaitHandoff(ctx context.Context, req Lease) {
	deadline := m.now().Add(m.cfg.HandoffTimeout)
	t := time.NewTicker(min(100*time.Millisecond, m.cfg.TakeInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := m.store.Get(ctx, req.Key)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return
			}
			continue
		}
		switch {
		case cur.Owner == m.cfg.WorkerID:
			if m.holds(cur.Key) {
				return // a taking round took it meanwhile: nothing to adopt
			}
			// Renew at once so that this worker's deadline counts from a
			// write it sent itself.
			sent := m.now()
			nl, err := m.store.Renew(ctx, cur)
			if err == nil && ctx.Err() == nil {
				m.install(nl, sent, "handoff", req.Owner)
			}
			return
		case cur.Owner == "":
			m.take(ctx, cur, "take-released")
			return
		case cur.HandoffTo != m.cfg.WorkerID:
			return // the request is gone (lease taken or reset meanwhile)
		case !m.now().Before(deadline):
			m.log.Warn("owner did not hand the lease over in time; taking it", "shard", cur.Key, "owner", cur.Owner)
			m.take(ctx, cur, "handoff-timeout")
			return
		}
	}
}

// takeHow labels the acquisition of a lease with no live owner: one without
// an owner that was written since its creation (Counter > 0) was released by
// its owner; the others are new or expired.
func takeHow(l Lease) string {
	if l.Owner == "" && l.Counter > 0 {
		return "take-released"
	}
	return "take"
}

func (m *Manager) take(ctx context.Context, l Lease, why string) {
	start := m.now()
	nl, err := m.store.Take(ctx, l, m.cfg.WorkerID)
	if err != nil {
		if !errors.Is(err, ErrConflict) && ctx.Err() == nil {
			m.log.Warn("taking lease failed", "shard", l.Key, "err", err)
		}
		return
	}
	m.install(nl, start, why, l.Owner)
}

// install makes nl a held lease whose last write was sent at start. It is
// idempotent: when a taking round and a hand-over waiter acquire the same
// lease at once, the second to install finds a valid handle of the same
// tenure (see sameTenure) and keeps it, adopting nl if it is newer, so the
// shard is neither reported twice nor stopped and restarted.
func (m *Manager) install(nl Lease, start time.Time, why, previous string) {
	h := &Handle{m: m, key: nl.Key, lease: nl, renewedAt: start, lost: make(chan struct{}), handoff: make(chan struct{}),
		loadSince: start, rate: nl.Throughput}
	m.mu.Lock()
	if old := m.held[nl.Key]; old != nil {
		if old.adoptTenure(nl, start) {
			m.mu.Unlock()
			m.log.Info("lease acquired again while held; keeping the handle", "shard", nl.Key, "how", why, "counter", nl.Counter)
			return
		}
		old.markLost(errTakenAgain)
	}
	m.held[nl.Key] = h
	m.observed[nl.Key] = observation{counter: nl.Counter, owner: nl.Owner, at: start}
	h.armLocked()
	m.mu.Unlock()
	m.log.Info("lease acquired", "shard", nl.Key, "how", why, "previous_owner", previous, "counter", nl.Counter)
	m.emit(Event{Kind: EventAcquired, Key: nl.Key, How: why, Peer: previous})
	m.cfg.OnAcquired(h)
}

// holds reports whether a valid handle of key is held.
func (m *Manager) holds(key string) bool {
	m.mu.Lock()
	h := m.held[key]
	m.mu.Unlock()
	return h != nil && h.Valid()
}

// now reads the manager's clock.
func (m *Manager) now() time.Time { return m.cfg.Now() }

func (m *Manager) forget(h *Handle) {
	m.mu.Lock()
	if m.held[h.key] == h {
		delete(m.held, h.key)
	}
	m.mu.Unlock()
}

// EventKind names a lease change.
type EventKind string

// Lease changes reported through ManagerConfig.OnEvent.
const (
	// EventAcquired: the worker took a lease (How says how: "take",
	// "take-released", "handoff", "handoff-timeout").
	EventAcquired EventKind = "acquired"
	// EventLost: the worker lost a lease (taken by another worker, or not
	// renewed in time). Err says why.
	EventLost EventKind = "lost"
	// EventReleased: the worker gave a lease up (graceful stop, shard end).
	EventReleased EventKind = "released"
	// EventHandedOver: the worker handed a lease over to Peer.
	EventHandedOver EventKind = "handed_over"
	// EventHandoffRequested: the worker asked Peer for a lease.
	EventHandoffRequested EventKind = "handoff_requested"
	// EventRenewFailed: a renewal failed for a reason other than a lost
	// lease (it is retried until the lease's deadline).
	EventRenewFailed EventKind = "renew_failed"
)

// Event is a lease change of this worker.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Key is the lease (shard ID).
	Key string
	// How qualifies acquisitions.
	How string
	// Peer is the other worker involved (previous owner, new owner,
	// requested owner), if any.
	Peer string
	// Err is the cause of a loss or a failed renewal.
	Err error
}

func (m *Manager) emit(e Event) {
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(e)
	}
}
