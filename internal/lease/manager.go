package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// RenewInterval bounds the heartbeat period (< LeaseDuration/2): the
	// worker writes its heartbeat every min(RenewInterval, TakeInterval).
	// With BalanceByLoad, it is also how often each lease's measured
	// throughput is written.
	RenewInterval time.Duration
	// TakeInterval is how often the worker looks for leases to take and
	// for dead workers (it reads the lease table only when something
	// changed, see Manager).
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
	// different owners, or several leases of one); default 32. The plan
	// counts a requested lease as the requester's already, so a larger cap
	// only makes a joining worker reach its share in fewer rounds; each
	// request is waited for by polling the lease until its owner's next
	// heartbeat, so the reads a join costs do not grow with the cap.
	MaxPendingHandoffs int
	// OnTableLost, if set, is called once when the lease table turns out
	// to be gone while the manager runs: a heartbeat or a taking round
	// failed with an error matching kcl.ErrTableNotFound, or the fleet row
	// came back older than one already seen (the table was deleted and
	// created again between two heartbeats). In the second case the
	// manager stops heartbeating and taking leases at once: leases of the
	// new table would start wherever whoever created them chose, while
	// the holders of the old one may still know their checkpoints. The
	// error matches kcl.ErrTableNotFound. It is called from the manager's
	// goroutines, before the handles are lost; it must not block.
	OnTableLost func(error)
	// HandoffTimeout is how long a worker that asked for a lease (to
	// balance the fleet) waits for the owner to hand it over before taking
	// it anyway. Default: LeaseDuration. The owner's handle turns invalid
	// (lost with ErrHandoffTimeout) once the same time, less the safety
	// margin, has passed since its last write before the request, so that
	// it has stopped when the requester takes the lease: give every worker
	// the same value.
	HandoffTimeout time.Duration
	// Stalls, if set, returns the worker's stalled shards (lease key ->
	// reason); each heartbeat writes them in the fleet row (see
	// Fleet.Stalls). Called from the heartbeat goroutine; it must be quick.
	Stalls func() map[string]string
	// OnBeat, if set, is called after each heartbeat whose answer updated
	// the manager's view (see Unowned), from the heartbeat goroutine with
	// no lock held; it must be quick.
	OnBeat func()
}

// Manager keeps the worker's heartbeat in the fleet row (which extends every
// lease the worker holds at once), takes leases when the worker holds less
// than its share, and takes the leases of workers whose heartbeat stood
// still for the lease duration, after fencing them.
//
// A held lease is represented by a [Handle]. The handle is lost (its Lost
// channel closes) when a write is refused because another worker took the
// lease, when the worker was fenced, or when heartbeats failed for so long
// that other workers may fence it: processing must stop before others may
// start.
//
// Reads follow change: the fleet row comes back with every heartbeat, at
// no read cost; the lease table is read (consistently) at start, when the
// fleet row's Gen moves (a worker released or created leases) and after a
// worker died, and otherwise (eventually consistent) once per fullScanEach
// times the number of workers, so that the fleet scans about once per
// fullScanEach in all.
type Manager struct {
	cfg        ManagerConfig
	store      Store
	log        *slog.Logger
	margin     time.Duration
	staleAfter time.Duration // how long a free lease may wait for the worker planned to take it
	beatEvery  time.Duration // heartbeat period

	// beatSent is when the last successful heartbeat was sent: every
	// handle's deadline counts from it.
	beatSent atomic.Pointer[time.Time]

	mu                    sync.Mutex
	held                  map[string]*Handle
	observed              map[string]observation // lease key -> last counter change seen
	members               map[string]observation // worker ID -> last heartbeat change seen
	lastLive              map[string]time.Time   // member ID -> when its heartbeat last moved to a live value (see Unowned)
	hb                    int64                  // own heartbeat; 0 until (re)registered
	joined                time.Time              // when this worker (re)registered
	fleet                 Fleet                  // the fleet row as last seen
	view                  []Lease                // the leases as last read (and changed by this worker since)
	scanGen               int64                  // fleet.Gen at the last read of the leases
	scanned               time.Time              // when the leases were last read
	dead                  map[string]bool        // Dead members whose leases the last read has seen
	mustScan              bool                   // read the leases (consistently) at the next round
	viewVer               int64                  // counts changes of view and held
	planFP                string                 // planFPLocked at the last round that planned nothing
	planUntil, planExpiry time.Time              // when time changes that plan; the lease expiry it returned
	bump                  bool                   // the next heartbeat bumps Gen
	asks                  map[string]time.Time   // hand-over requests in the fleet row -> lower bound of their time
	orphans               []Lease                // leases whose handle passed its deadline, to release
	oldHB                 int64                  // this worker\'s entry before it (re)joined, if any
	prevBeat              time.Time              // when the heartbeat before the last one was sent
	rnd                   *rand.Rand
	// withdrawn is set by StopTaking: the fleet row marks the worker
	// withdrawn, so that the others plan without it.
	withdrawn bool
	// reset is set when the table was found created again (see
	// OnTableLost): the manager then writes nothing more.
	reset error
	// tableLostOnce guards OnTableLost.
	tableLostOnce sync.Once
	// passTo maps the leases held when StopTaking ran to the worker
	// planned to receive each (see Handle.Pass).
	passTo map[string]string

	wg              sync.WaitGroup
	hwg             sync.WaitGroup    // hand-over waiters, joined by StopTaking
	pendingHandoffs int               // hand-over requests being waited for
	awaiting        map[string]bool   // leases whose hand-over is being waited for
	unreadable      map[string]string // lease rows the last read could not decode -> why (m.mu)
	refusedAt       map[string]int64  // lease key -> counter+1 of the last take refused without cause (m.mu)
	stopRenew       context.CancelFunc
	stopTake        context.CancelFunc
	takeDone        chan struct{}
	renewDone       chan struct{}
	takeWakeup      chan struct{}
	beatWakeup      chan struct{}
}

// fullScanEach is how often, in all, the fleet reads the whole lease table
// when nothing asks for it (the KCL 3.x leader's period).
const fullScanEach = 20 * time.Second

// Causes of handles lost without a refused write. All match
// kcl.ErrLeaseLost, as Handle.Err promises for every loss but a release.
var (
	errManagerClosed = fmt.Errorf("%w: lease manager closed", kcl.ErrLeaseLost)
	errTakenAgain    = fmt.Errorf("%w: lease taken again by this worker", kcl.ErrLeaseLost)
	errFenced        = fmt.Errorf("%w: this worker was fenced (its heartbeat stood still too long)", kcl.ErrLeaseLost)
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
		cfg.MaxPendingHandoffs = 32
	}
	m := &Manager{
		cfg:        cfg,
		store:      cfg.Store,
		log:        cfg.Logger,
		margin:     cfg.LeaseDuration / 10,
		staleAfter: 3 * cfg.TakeInterval,
		beatEvery:  min(cfg.RenewInterval, cfg.TakeInterval),
		held:       map[string]*Handle{},
		observed:   map[string]observation{},
		members:    map[string]observation{},
		lastLive:   map[string]time.Time{},
		dead:       map[string]bool{},
		asks:       map[string]time.Time{},
		awaiting:   map[string]bool{},
		unreadable: map[string]string{},
		refusedAt:  map[string]int64{},
		rnd:        cfg.Rand,
		takeWakeup: make(chan struct{}, 1),
		beatWakeup: make(chan struct{}, 1),
	}
	m.beatSent.Store(&time.Time{})
	return m
}

// Start joins the fleet row and starts the heartbeat and taking loops. The
// first taking round runs a moment later (gatherDelay, at most a
// TakeInterval), with the fleet row read again, so that workers started
// together see each other before they divide the leases; a worker joining
// a running fleet asks for its share of the held leases in that round.
//
// An entry left by an earlier run with the same WorkerID (a crash) is
// removed first, so that the heartbeat counts from 1 again: the other
// workers judge from it how long this worker has been watching (see
// View.Young). Leases that still name this worker are taken as its
// earlier run's: they expire a lease duration after this start.
func (m *Manager) Start(ctx context.Context) error {
	if err := m.freshEntry(ctx); err != nil {
		return err
	}
	// Best effort: a worker that cannot read the leases cannot take them
	// either, and the stale-lease rule of PlanTakes covers what is planned
	// for it meanwhile.
	if leases, err := m.readable(m.store.List(ctx)); err == nil {
		now := m.now()
		m.mu.Lock()
		m.view, m.scanned = leases, now
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
	m.mu.Lock()
	m.scanGen = m.fleet.Gen
	m.mu.Unlock()
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	tctx, tcancel := context.WithCancel(ctx)
	m.stopRenew, m.stopTake = rcancel, tcancel
	m.renewDone, m.takeDone = make(chan struct{}), make(chan struct{})
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		defer close(m.renewDone)
		m.beatLoop(rctx)
	}()
	go func() {
		defer m.wg.Done()
		defer close(m.takeDone)
		m.takeLoop(tctx)
	}()
	return nil
}

// freshEntry removes this worker's entry from the fleet row if an earlier
// run left one, conditional on the heartbeat read, so that the first
// heartbeat writes 1. That also fences the earlier run: its next heartbeat
// is refused. An entry that keeps changing under it (another process with
// the same ID) is left after a few tries.
func (m *Manager) freshEntry(ctx context.Context) error {
	for range 3 {
		f, err := m.store.ReadFleet(ctx)
		if err != nil {
			return err
		}
		hb, ok := f.Members[m.cfg.WorkerID]
		if !ok || hb == Dead {
			return nil
		}
		m.mu.Lock()
		m.oldHB = hb
		m.mu.Unlock()
		err = m.store.Leave(ctx, m.cfg.WorkerID, hb, false)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	m.log.Warn("fleet entry of this worker ID keeps changing; is another process using it?", "worker", m.cfg.WorkerID)
	return nil
}

// young reports whether the worker whose heartbeat is hb may have watched
// the fleet for less than LeaseDuration + TakeInterval. The heartbeat counts
// from 1 at its Start (see freshEntry), which read the leases first, and
// grows by one per heartbeat period at most, so the worker has watched for
// at least (hb-1) periods. The TakeInterval beyond the lease duration lets
// a worker that just matured have judged, at its own rounds, the workers
// others judge dead by the time they name it.
func (m *Manager) young(hb int64) bool {
	return time.Duration(hb-1)*m.beatEvery < m.cfg.LeaseDuration+m.cfg.TakeInterval
}

// WakeTaker makes the taking loop run a round now, reading the leases (for
// example after a shard sync created leases); the next heartbeat tells the
// other workers to read them too.
func (m *Manager) WakeTaker() {
	m.mu.Lock()
	m.mustScan, m.bump = true, true
	m.mu.Unlock()
	wake(m.takeWakeup)
	wake(m.beatWakeup)
}

// changed makes the next heartbeat, sent now, tell the other workers to
// read the leases again (a lease was released).
func (m *Manager) changed() {
	m.mu.Lock()
	m.bump = true
	m.mu.Unlock()
	wake(m.beatWakeup)
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// StopTaking stops the taking loop and waits for it. Held leases stay
// valid while heartbeats go on. The worker withdraws from the fleet: the
// fleet row marks it so at the next heartbeat, so that the other workers
// plan without it (they still count it while it holds leases). It also
// plans which live worker each held lease goes to (see Handle.Pass).
func (m *Manager) StopTaking() {
	if m.stopTake == nil {
		return
	}
	m.stopTake()
	<-m.takeDone
	m.hwg.Wait()
	// Plan with the fleet as it is now, not as the last heartbeat saw it:
	// a worker that left since (a fleet stopping at once) must not be
	// handed leases it would never take.
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewInterval)
	if f, err := m.store.ReadFleet(ctx); err == nil {
		m.mu.Lock()
		m.observeLocked(f, m.now())
		m.mu.Unlock()
	}
	cancel()
	m.mu.Lock()
	m.withdrawn = true
	m.passTo = m.passPlanLocked(m.now())
	m.mu.Unlock()
	wake(m.beatWakeup)
}

// passPlanLocked returns, for each lease this worker holds, the live
// worker that the fleet-wide plan gives it once this worker is gone (see
// Handle.Pass): the survivors' own planners, shown the leases released,
// would take the same ones. Empty when no other live worker is known.
// m.mu is held.
func (m *Manager) passPlanLocked(now time.Time) map[string]string {
	var survivors []string
	young := map[string]bool{}
	for id, o := range m.members {
		if _, member := m.fleet.Members[id]; !member || id == m.cfg.WorkerID || o.counter == Dead ||
			m.fleet.Withdrawn[id] || now.Sub(o.at) >= m.cfg.LeaseDuration {
			continue
		}
		survivors = append(survivors, id)
		if m.young(o.counter) {
			young[id] = true
		}
	}
	if len(survivors) == 0 || len(m.held) == 0 {
		return nil
	}
	slices.Sort(survivors)
	view := View{Self: survivors[0], LiveWorkers: survivors, Expired: map[string]bool{}, Young: young,
		ByLoad: m.cfg.BalanceByLoad, LoadTolerance: m.cfg.LoadTolerance}
	view.Leases = make([]Lease, 0, len(m.view))
	for _, l := range m.view {
		if l.Owner == m.cfg.WorkerID {
			l.Owner, l.HandoffTo = "", ""
		} else if l.Owner != "" && m.expiredLocked(l, now) {
			view.Expired[l.Key] = true
		}
		view.Leases = append(view.Leases, l)
	}
	out := map[string]string{}
	for _, mv := range PlanFleet(view) {
		if h := m.held[mv.Lease.Key]; h != nil && !mv.Steal {
			out[mv.Lease.Key] = mv.To
		}
	}
	return out
}

// passTarget returns the worker planned to receive lease key when this
// worker withdrew, if it is still a live member; "" otherwise.
func (m *Manager) passTarget(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if to := m.passTo[key]; m.activeLocked(to) {
		return to
	}
	return ""
}

// active reports whether worker id is in the fleet row, neither fenced nor
// withdrawn, as last seen.
func (m *Manager) active(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.activeLocked(id)
}

// activeLocked is active with m.mu held.
func (m *Manager) activeLocked(id string) bool {
	o, ok := m.members[id]
	return id != "" && ok && o.counter != Dead && !m.fleet.Withdrawn[id]
}

// Close stops both loops, waits for them, and removes this worker's entry
// from the fleet row. Held leases are not released: call Pass (or Release)
// on each handle first for a graceful hand-over (others then take what is left a
// lease duration after they see the entry gone). Handles still held are
// lost afterwards, with an error matching kcl.ErrLeaseLost, and Held
// returns none.
func (m *Manager) Close(ctx context.Context) error {
	if m.stopRenew == nil {
		return nil
	}
	m.StopTaking()
	m.stopRenew()
	m.wg.Wait()
	m.mu.Lock()
	hb, bump := m.hb, m.bump
	for key, h := range m.held {
		h.markLost(errManagerClosed)
		delete(m.held, key)
	}
	m.mu.Unlock()
	if hb == 0 {
		return nil
	}
	m.releaseIncoming(ctx)
	if err := m.store.Leave(ctx, m.cfg.WorkerID, hb, bump); err != nil && !errors.Is(err, ErrConflict) {
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

// deadline is when this worker must stop acting on its leases: the lease
// duration after its last successful heartbeat was sent, less the safety
// margin. No other worker fences it before.
func (m *Manager) deadline() time.Time {
	return m.beatSent.Load().Add(m.cfg.LeaseDuration - m.margin)
}

// heartbeat writes this worker's heartbeat and takes in the fleet row it
// returns. A refusal means this worker was fenced (or an earlier heartbeat
// whose answer was lost was applied): its handles are lost and it joins
// again as a new worker.
func (m *Manager) heartbeat(ctx context.Context) error {
	m.mu.Lock()
	if err := m.reset; err != nil {
		m.mu.Unlock()
		return err
	}
	from, withdrawn, bump := m.hb, m.withdrawn, m.bump
	m.bump = false
	m.mu.Unlock()
	var stalls map[string]string
	if m.cfg.Stalls != nil {
		stalls = m.cfg.Stalls()
	}
	sent := m.now()
	f, err := m.store.Beat(ctx, m.cfg.WorkerID, from, withdrawn, bump, stalls)
	if err == nil && from == 0 {
		m.mu.Lock()
		old := m.oldHB
		m.oldHB = 0
		m.mu.Unlock()
		if old == 1 {
			// The entry read 1 before this worker joined again, and reads 1
			// again: a worker that missed the change in between would see a
			// heartbeat standing still. Move on to 2 at once.
			from, sent = 1, m.now()
			f, err = m.store.Beat(ctx, m.cfg.WorkerID, from, withdrawn, false, stalls)
		}
	}
	if err != nil {
		if bump {
			m.mu.Lock()
			m.bump = true
			m.mu.Unlock()
		}
		if errors.Is(err, ErrConflict) {
			m.fenced(ctx, from)
		}
		return err
	}
	now := m.now()
	m.mu.Lock()
	m.hb = from + 1
	if from == 0 {
		m.joined, m.mustScan = sent, true
	}
	m.prevBeat = *m.beatSent.Load()
	m.beatSent.Store(&sent)
	m.observeLocked(f, now)
	hs := make([]*Handle, 0, len(m.held))
	for _, h := range m.held {
		hs = append(hs, h)
	}
	asks := m.pendingAsksLocked()
	handed, stale := m.handedLocked()
	changed := f.Gen != m.scanGen
	for id, hb := range f.Members {
		changed = changed || hb == Dead && !m.dead[id]
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.rearm()
	}
	m.receiveAll(ctx, handed)
	for _, key := range slices.Concat(handed, stale) {
		_ = m.store.ClearHandoff(ctx, key, m.cfg.WorkerID)
	}
	if changed {
		wake(m.takeWakeup) // read the leases now
	}
	for key, since := range asks {
		m.noticeHandoff(ctx, key, since)
	}
	m.releaseExpired(ctx)
	if m.cfg.OnBeat != nil {
		m.cfg.OnBeat()
	}
	return nil
}

// expired records that h passed its deadline: the lease still names this
// worker, whose heartbeat may go on, so the others would wait for it in
// vain. The next successful heartbeat releases it.
func (m *Manager) expired(h *Handle) {
	l := h.Lease()
	m.mu.Lock()
	m.orphans = append(m.orphans, l)
	m.mu.Unlock()
}

// releaseExpired releases the leases whose handles passed their deadline
// (see expired), conditional on the counter this worker last wrote.
func (m *Manager) releaseExpired(ctx context.Context) {
	m.mu.Lock()
	ls := m.orphans
	m.orphans = nil
	m.mu.Unlock()
	for _, l := range ls {
		nl, err := m.store.Release(ctx, l)
		if err == nil {
			m.log.Info("released a lease whose handle expired", "shard", l.Key)
			m.mu.Lock()
			m.noteLocked(nl)
			m.bump = true
			m.mu.Unlock()
			wake(m.beatWakeup)
		} else if !errors.Is(err, ErrConflict) {
			m.mu.Lock()
			m.orphans = append(m.orphans, l) // try again
			m.mu.Unlock()
		}
	}
}

// fenced handles a refused heartbeat from hb: unless an earlier heartbeat
// of ours was applied after all (the entry is hb+1), this worker was
// fenced; it loses every handle and joins again.
func (m *Manager) fenced(ctx context.Context, hb int64) {
	f, err := m.store.ReadFleet(ctx)
	m.mu.Lock()
	seen := m.fleet.Version
	m.mu.Unlock()
	if err == nil && f.Version < seen {
		// A consistent read older than what a write of ours returned: the
		// row (with the whole table, as nothing else deletes it) was
		// created again.
		m.tableReset(fmt.Errorf("%w: the lease table was deleted and created again while this worker ran "+
			"(its fleet row went back from version %d to %d)", kcl.ErrTableNotFound, seen, f.Version))
		return
	}
	if err == nil && f.Members[m.cfg.WorkerID] == hb+1 && hb != 0 {
		// Our last write was applied: go on from there, without extending
		// the deadline (we do not know when that write was sent).
		m.mu.Lock()
		if m.hb == hb {
			m.hb = hb + 1
		}
		m.mu.Unlock()
		return
	}
	m.log.Warn("this worker was fenced: its heartbeat stood still too long; joining again", "worker", m.cfg.WorkerID)
	m.mu.Lock()
	m.oldHB, m.hb = hb, 0
	m.viewVer++
	var hs []*Handle
	for key, h := range m.held {
		hs = append(hs, h)
		delete(m.held, key)
	}
	m.mu.Unlock()
	for _, h := range hs {
		h.markLost(errFenced)
	}
}

// tableMissing reports err to OnTableLost if it says that the table is gone.
func (m *Manager) tableMissing(err error) {
	if errors.Is(err, kcl.ErrTableNotFound) {
		m.tableLost(err)
	}
}

// tableLost calls OnTableLost once.
func (m *Manager) tableLost(err error) {
	m.tableLostOnce.Do(func() {
		if m.cfg.OnTableLost != nil {
			m.cfg.OnTableLost(err)
		}
	})
}

// tableReset stops the manager's writes for good (the table it worked in
// is gone, see OnTableLost) and loses every handle.
func (m *Manager) tableReset(err error) {
	m.log.Error("the lease table was created again under this worker; it takes and writes nothing more", "err", err)
	m.mu.Lock()
	m.reset = err
	m.mu.Unlock()
	m.tableLost(err)
	m.mu.Lock()
	var hs []*Handle
	for key, h := range m.held {
		hs = append(hs, h)
		delete(m.held, key)
	}
	m.viewVer++
	m.mu.Unlock()
	lost := fmt.Errorf("%w: %w", kcl.ErrLeaseLost, err)
	for _, h := range hs {
		h.markLost(lost)
	}
}

// observeLocked takes in a fleet row read at now. m.mu is held.
func (m *Manager) observeLocked(f Fleet, now time.Time) {
	if f.Version < m.fleet.Version {
		return // older than what we saw
	}
	m.fleet = f
	for id, hb := range f.Members {
		if o, ok := m.members[id]; !ok || o.counter != hb {
			m.members[id] = observation{counter: hb, at: now}
			if hb != Dead {
				m.lastLive[id] = now
			}
		}
	}
	for id := range m.members {
		if _, ok := f.Members[id]; !ok {
			delete(m.members, id)
			delete(m.lastLive, id)
		}
	}
}

// pendingAsksLocked returns the hand-over requests of the fleet row for
// leases this worker holds validly and has not been told of yet, each
// with a time no later than the request (see noticeHandoff). m.mu is held.
func (m *Manager) pendingAsksLocked() map[string]time.Time {
	out := map[string]time.Time{}
	for key, to := range m.fleet.Handoffs {
		if _, ok := m.asks[key]; !ok {
			// The heartbeat before this one did not show it: the request
			// came after that heartbeat was sent.
			m.asks[key] = m.prevBeat
		}
		if h := m.held[key]; h != nil && to != m.cfg.WorkerID && !h.handoffSignalled() {
			out[key] = m.asks[key]
		}
	}
	for key := range m.asks {
		if _, ok := m.fleet.Handoffs[key]; !ok {
			delete(m.asks, key)
		}
	}
	return out
}

// handedLocked returns the records of the fleet row that name this worker
// for a lease it neither holds nor asked for: leases another worker handed
// it on a graceful stop (see Handle.Pass). Those that were already there
// when this worker (re)joined are returned as stale instead: they may have
// been meant for an earlier run under the same ID, which may still act
// until it notices it was fenced; such a lease is this worker's orphan
// (see releaseOrphans). pendingAsksLocked ran first. m.mu is held.
func (m *Manager) handedLocked() (handed, stale []string) {
	for key, to := range m.fleet.Handoffs {
		if to != m.cfg.WorkerID || m.awaiting[key] {
			continue
		}
		if h := m.held[key]; h != nil && !h.isLost() {
			stale = append(stale, key) // already held: only the record is left
			continue
		}
		if m.asks[key].Before(m.joined) {
			stale = append(stale, key)
			continue
		}
		handed = append(handed, key)
	}
	slices.Sort(handed)
	return handed, stale
}

// receiveAll receives the leases of keys, a few at a time, and returns
// once all are done; the caller clears their records.
func (m *Manager) receiveAll(ctx context.Context, keys []string) {
	inParallel(len(keys), 8, func(i int) { m.receive(ctx, keys[i]) })
}

// inParallel calls fn(i) for every i in [0, n), at most limit at a time,
// and returns once every call has.
func inParallel(n, limit int, fn func(int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(i)
		}()
	}
	wg.Wait()
}

// receive adopts a lease handed to this worker (see handedLocked): it reads
// it and, if it still names this worker, holds it, acquired no later than
// the read was sent. If a third worker already asked for it, it hands it on
// at once instead (it has not processed anything).
func (m *Manager) receive(ctx context.Context, key string) {
	sent := m.now()
	cur, err := m.store.Get(ctx, key)
	if err != nil || cur.Owner != m.cfg.WorkerID || m.holds(key) || !sent.Before(m.deadline()) {
		return
	}
	m.mu.Lock()
	withdrawn := m.withdrawn
	m.mu.Unlock()
	if withdrawn {
		// Handed to this worker as it withdrew: give it up at once.
		if _, err := m.store.Release(ctx, cur); err == nil {
			m.changed()
		}
		return
	}
	if cur.HandoffTo != "" && cur.HandoffTo != m.cfg.WorkerID {
		if _, err := m.store.HandOver(ctx, cur); err == nil {
			m.log.Info("lease handed on at once to the worker that asked for it", "shard", key, "to", cur.HandoffTo)
		}
		return
	}
	m.install(cur, sent, "handoff", "")
}

// nudgeLeases is how many leases of the new owner a hand-over on a
// graceful stop nudges (see Manager.nudge).
const nudgeLeases = 4

// nudge writes a token on up to nudgeLeases leases that worker to holds, as
// this worker last saw them, other than passed (the lease just handed to
// it): to's next write to one of them returns the token, and to reads the
// fleet row at once (see nudged) instead of at its next heartbeat. A worker
// processing records checkpoints far more often than it beats. Best
// effort: a refusal (the lease moved since) tries another, and with none
// to learns at its heartbeat as before. A write per nudged lease, on a
// graceful stop only.
func (m *Manager) nudge(ctx context.Context, to string, passed Lease) {
	m.mu.Lock()
	var keys []string
	for _, l := range m.view {
		if l.Owner == to && l.Key != passed.Key && !l.Finished() {
			keys = append(keys, l.Key)
		}
	}
	m.rnd.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	m.mu.Unlock()
	token := fmt.Sprintf("%s %s %d", m.cfg.WorkerID, passed.Key, passed.Counter)
	nudged := 0
	for _, key := range keys[:min(len(keys), 2*nudgeLeases)] {
		if nudged == nudgeLeases || ctx.Err() != nil {
			return
		}
		if err := m.store.Nudge(ctx, key, to, token); err == nil {
			nudged++
		}
	}
}

// nudged is told by a handle whose write returned a new nudge: another
// worker handed this one a lease (see nudge). The heartbeat runs at once
// and finds the record of the hand-over in the fleet row.
func (m *Manager) nudged(key, token string) {
	m.log.Debug("nudged by a hand-over: reading the fleet row now", "worker", m.cfg.WorkerID, "shard", key, "token", token)
	wake(m.beatWakeup)
}

// noticeHandoff reads a lease another worker asked for and, if the request
// stands in its row, tells the holder (see Handle.HandoffRequested). since
// is a time no later than the request.
func (m *Manager) noticeHandoff(ctx context.Context, key string, since time.Time) {
	m.mu.Lock()
	h := m.held[key]
	m.mu.Unlock()
	if h == nil {
		return
	}
	cur, err := m.store.Get(ctx, key)
	if err != nil {
		h.requested(nil, since)
		return
	}
	if cur.Owner != m.cfg.WorkerID || cur.HandoffTo == "" || cur.HandoffTo == m.cfg.WorkerID {
		return // a request for an earlier tenure, gone since
	}
	h.requested(&cur, since)
}

func (m *Manager) beatLoop(ctx context.Context) {
	t := time.NewTicker(m.beatEvery)
	defer t.Stop()
	for {
		woken := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.beatWakeup:
			woken = true
		}
		if err := m.heartbeat(ctx); err != nil && ctx.Err() == nil {
			m.tableMissing(err)
			m.log.Warn("heartbeat failed", "worker", m.cfg.WorkerID, "err", err)
		}
		if woken {
			// A heartbeat out of turn replaces the next one: as many
			// writes as before, one of them sooner.
			t.Reset(m.beatEvery)
		}
		if m.cfg.BalanceByLoad {
			m.renewLoads(ctx)
		}
	}
}

// renewLoads writes the measured throughput of the leases whose holder
// records load, at most once per RenewInterval each (load-aware balancing
// only: it costs a write per lease).
func (m *Manager) renewLoads(ctx context.Context) {
	var hs []*Handle
	now := m.now()
	for _, h := range m.Held() {
		if h.loadDue(now) {
			hs = append(hs, h)
		}
	}
	inParallel(len(hs), 16, func(i int) { hs[i].renew(ctx) })
}

func (m *Manager) takeLoop(ctx context.Context) {
	first := time.NewTimer(m.firstRoundDelay())
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	// Plan the first round with every worker that joined meanwhile: workers
	// started together then divide the free leases without moving any.
	if f, err := m.store.ReadFleet(ctx); err == nil {
		m.mu.Lock()
		m.observeLocked(f, m.now())
		m.mu.Unlock()
	}
	select {
	case <-m.takeWakeup: // the first round reads the leases anyway
	default:
	}
	for {
		expiry, err := m.takeRound(ctx)
		if err != nil && ctx.Err() == nil {
			m.tableMissing(err)
			m.log.Warn("lease taking round failed", "worker", m.cfg.WorkerID, "err", err)
		}
		// Jitter the period by up to ±10% so workers do not act in lockstep.
		d := m.cfg.TakeInterval
		m.mu.Lock()
		d += time.Duration((m.rnd.Float64()*0.2 - 0.1) * float64(d))
		m.mu.Unlock()
		// Look again as soon as a worker could be judged dead: its leases
		// are then taken the lease duration after the last change of its
		// heartbeat was seen, not up to a period later.
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

// gatherDelay is how long the first taking round waits after Start (at
// most a TakeInterval): long enough for workers started together to see
// each other in the fleet row, short enough that a worker holds its first
// leases well within a second of its start.
const gatherDelay = 100 * time.Millisecond

// firstRoundDelay is how long after Start the first taking round runs.
func (m *Manager) firstRoundDelay() time.Duration {
	return min(gatherDelay, m.cfg.TakeInterval)
}

// fullScanPeriod is how long a worker goes without reading the whole lease
// table when nothing asks for it: fullScanEach per live worker, so that
// the fleet reads it about once per fullScanEach, and at least a few lease
// durations.
func (m *Manager) fullScanPeriod(workers int) time.Duration {
	if m.cfg.BalanceByLoad {
		return m.cfg.LeaseDuration // loads change without telling
	}
	return max(3*m.cfg.LeaseDuration, time.Duration(workers)*fullScanEach)
}

// takeRound judges the fleet from the last heartbeat's view, fences the
// workers whose heartbeat stood still for the lease duration, reads the
// leases when something changed, and takes leases according to PlanTakes.
// It returns when the next worker could be judged dead if its heartbeat
// stood still (zero if none).
func (m *Manager) takeRound(ctx context.Context) (expiry time.Time, err error) {
	m.mu.Lock()
	reset := m.reset
	m.mu.Unlock()
	if reset != nil {
		return time.Time{}, reset
	}
	now := m.now()
	if !now.Before(m.deadline()) {
		return time.Time{}, nil // heartbeats are failing: nothing can be taken
	}
	type suspect struct {
		id string
		hb int64
	}
	var suspects []suspect
	m.mu.Lock()
	for id, o := range m.members {
		if id == m.cfg.WorkerID || o.counter == Dead {
			continue
		}
		if now.Sub(o.at) >= m.cfg.LeaseDuration {
			suspects = append(suspects, suspect{id, o.counter})
		} else if at := o.at.Add(m.cfg.LeaseDuration); expiry.IsZero() || at.Before(expiry) {
			expiry = at
		}
	}
	m.mu.Unlock()
	for _, s := range suspects {
		f, err := m.store.Fence(ctx, s.id, s.hb)
		if err != nil && errors.Is(err, ErrConflict) {
			// It beat meanwhile, or another worker fenced it: look.
			f, err = m.store.ReadFleet(ctx)
		} else if err == nil {
			m.log.Info("fenced a worker whose heartbeat stood still", "dead_worker", s.id)
		}
		if err != nil {
			return expiry, err
		}
		m.mu.Lock()
		m.observeLocked(f, m.now())
		m.mu.Unlock()
	}

	m.tidy(ctx)
	if err := m.maybeScan(ctx); err != nil {
		return expiry, err
	}
	// Planning is a pure function of the view, the members and time: skip
	// it while none of them changed since a round that planned nothing.
	now = m.now()
	m.mu.Lock()
	if m.planFPLocked(now) == m.planFP && now.Before(m.planUntil) {
		if !m.planExpiry.IsZero() && (expiry.IsZero() || m.planExpiry.Before(expiry)) {
			expiry = m.planExpiry
		}
		m.mu.Unlock()
		return expiry, nil
	}
	m.mu.Unlock()
	m.releaseOrphans(ctx)

	now = m.now()
	m.mu.Lock()
	view := View{Self: m.cfg.WorkerID, Leases: m.view, Expired: map[string]bool{}, Stale: map[string]bool{},
		Young: map[string]bool{}, ByLoad: m.cfg.BalanceByLoad, LoadTolerance: m.cfg.LoadTolerance}
	var leaseExpiry time.Time
	for _, l := range m.view {
		o := m.observed[l.Key]
		age := now.Sub(o.at)
		if l.Owner != "" && m.expiredLocked(l, now) {
			view.Expired[l.Key] = true
		}
		if l.Owner == "" && age >= m.staleAfter || view.Expired[l.Key] && age >= m.cfg.LeaseDuration+m.staleAfter {
			view.Stale[l.Key] = true
		}
		if _, ok := m.members[l.Owner]; l.Owner != "" && (!ok || l.CheckpointOwner != "" && l.CheckpointOwner != l.Owner) {
			if at := o.at.Add(m.cfg.LeaseDuration); !view.Expired[l.Key] && (leaseExpiry.IsZero() || at.Before(leaseExpiry)) {
				leaseExpiry = at
			}
		}
	}
	if !leaseExpiry.IsZero() && (expiry.IsZero() || leaseExpiry.Before(expiry)) {
		expiry = leaseExpiry
	}
	for id, o := range m.members {
		if o.counter == Dead || m.fleet.Withdrawn[id] && id != m.cfg.WorkerID {
			continue
		}
		if now.Sub(o.at) < m.cfg.LeaseDuration || id == m.cfg.WorkerID {
			view.LiveWorkers = append(view.LiveWorkers, id)
			if m.young(o.counter) {
				view.Young[id] = true
			}
		}
	}
	slices.Sort(view.LiveWorkers)
	plan := PlanTakes(view)
	// Read the leases again at the next round while they move: a free or
	// expired lease, or a planned move, means other workers act too, and
	// their takes change the plan.
	// A pending hand-over moves a lease soon too.
	unsettled := len(plan.Take) > 0 || len(plan.Steal) > 0
	for _, l := range m.view {
		if unsettled = unsettled || !l.Finished() && (l.Owner == "" || view.Expired[l.Key] || l.HandoffTo != ""); unsettled {
			break
		}
	}
	m.mustScan = m.mustScan || unsettled
	m.planFP, m.planExpiry, m.planUntil = "", leaseExpiry, now
	if !unsettled {
		// Nothing to do until something changes, or time expires a lease
		// or ends this worker's first lease duration (see releaseOrphans).
		m.planFP, m.planUntil = m.planFPLocked(now), now.Add(24*time.Hour)
		for _, t := range []time.Time{leaseExpiry, m.joined.Add(m.cfg.LeaseDuration)} {
			if t.After(now) && t.Before(m.planUntil) {
				m.planUntil = t
			}
		}
	}
	m.mu.Unlock()

	take, err := m.confirmOwnersGone(ctx, plan.Take)
	if err != nil {
		return expiry, err
	}
	for _, l := range take {
		m.take(ctx, l, takeHow(l))
	}
	for _, l := range plan.Steal {
		m.requestHandoff(ctx, l)
	}
	return expiry, nil
}

// tidy keeps the fleet row small: it removes the entries of workers fenced
// long ago (their leases have been taken by then; one that still names
// such a worker expires by its counter, as a lease of any worker missing
// from the row does) and the hand-over requests of workers that died
// before clearing them.
func (m *Manager) tidy(ctx context.Context) {
	now := m.now()
	m.mu.Lock()
	var dead []string
	for id, o := range m.members {
		if o.counter == Dead && now.Sub(o.at) >= 6*m.cfg.LeaseDuration {
			dead = append(dead, id)
		}
	}
	asks := map[string]string{}
	for key, to := range m.fleet.Handoffs {
		if o, ok := m.members[to]; !ok || o.counter == Dead {
			asks[key] = to
		}
	}
	m.mu.Unlock()
	for _, id := range dead {
		if err := m.store.Leave(ctx, id, Dead, false); err == nil {
			m.log.Info("removed the fleet entry of a worker fenced long ago", "dead_worker", id)
		}
	}
	for key, to := range asks {
		_ = m.store.ClearHandoff(ctx, key, to)
	}
}

// planFPLocked sums up what planning depends on besides time: the view's
// and the held leases' versions and the members' standing. m.mu is held.
func (m *Manager) planFPLocked(now time.Time) string {
	var b strings.Builder
	fmt.Fprint(&b, m.viewVer, "|")
	for _, id := range slices.Sorted(maps.Keys(m.members)) {
		o := m.members[id]
		fmt.Fprint(&b, id, ",", o.counter == Dead, now.Sub(o.at) < m.cfg.LeaseDuration, m.young(o.counter), m.fleet.Withdrawn[id], ";")
	}
	return b.String()
}

// confirmOwnersGone keeps, of the leases planned to take, the unowned ones
// and those whose owner a consistent read of the fleet row, made after the
// leases were read, still shows fenced or missing. A worker fenced (or
// gone) may join again under the same ID and take leases; a view of the
// fleet older than that would take its new leases for its old ones. Those
// it took before the leases were read are shown live by this read; those
// it takes after fail the take's condition on the counter read.
func (m *Manager) confirmOwnersGone(ctx context.Context, ls []Lease) ([]Lease, error) {
	owned := slices.ContainsFunc(ls, func(l Lease) bool { return l.Owner != "" && l.Owner != m.cfg.WorkerID })
	if !owned {
		return ls, nil
	}
	f, err := m.store.ReadFleet(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.observeLocked(f, m.now())
	m.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(ls), func(l Lease) bool {
		hb, member := f.Members[l.Owner]
		return l.Owner != "" && l.Owner != m.cfg.WorkerID && member && hb != Dead
	}), nil
}

// releaseOrphans releases the leases that name this worker but that it
// holds no handle of (its earlier run's, or lost), once a lease duration
// has passed since it joined: the earlier run (fenced when this one
// joined) has stopped by then. The others learn of it at once (Gen).
func (m *Manager) releaseOrphans(ctx context.Context) {
	now := m.now()
	m.mu.Lock()
	var orphans []Lease
	if !now.Before(m.joined.Add(m.cfg.LeaseDuration)) {
		for _, l := range m.view {
			// Not while a Java KCL 3.x checkpoint owner finishes a hand-off
			// to this worker's ID (expiredLocked waits for it).
			if h := m.held[l.Key]; l.Owner == m.cfg.WorkerID && (h == nil || h.isLost()) && !m.incomingLocked(l.Key) &&
				(l.CheckpointOwner == "" || m.expiredLocked(l, now)) {
				orphans = append(orphans, l)
			}
		}
	}
	m.mu.Unlock()
	for _, l := range orphans {
		nl, err := m.store.Release(ctx, l)
		var ce *ConflictError
		switch {
		case err == nil:
			m.log.Info("released a lease of an earlier run of this worker", "shard", l.Key)
			m.mu.Lock()
			m.noteLocked(nl)
			m.bump = true
			m.mu.Unlock()
		case errors.As(err, &ce) && ce.Current != nil:
			m.mu.Lock()
			m.noteRefusedLocked(*ce.Current)
			m.mu.Unlock()
		}
	}
	if len(orphans) > 0 {
		wake(m.beatWakeup)
	}
}

// releaseIncoming releases, as this worker leaves, the leases handed to it
// that it has not taken up (a worker stopping just before it passed them,
// see Handle.Pass): left naming it, they would wait for it to expire
// before another worker took them. Each release is conditional on the
// lease as read.
func (m *Manager) releaseIncoming(ctx context.Context) {
	f, err := m.store.ReadFleet(ctx)
	if err != nil {
		return
	}
	for key, to := range f.Handoffs {
		if to != m.cfg.WorkerID {
			continue
		}
		l, err := m.store.Get(ctx, key)
		if err != nil || l.Owner != m.cfg.WorkerID {
			continue
		}
		if _, err := m.store.Release(ctx, l); err == nil {
			m.log.Info("released a lease handed to this worker as it left", "shard", key)
		}
		_ = m.store.ClearHandoff(ctx, key, m.cfg.WorkerID)
	}
}

// incomingLocked reports whether lease key is on its way to this worker: a
// hand-over it asked for is being waited for, or the fleet row records one
// handed to it (see receive). Such a lease, once it names this worker, is
// no orphan. m.mu is held.
func (m *Manager) incomingLocked(key string) bool {
	return m.awaiting[key] || m.fleet.Handoffs[key] == m.cfg.WorkerID
}

// expiredLocked reports whether lease l, owned, may be taken: its owner
// was fenced, or is missing from the fleet row and the lease's counter
// stood still for a lease duration, or is
// this worker without a handle for it (an earlier run's, or one lost) a
// lease duration after this worker joined. m.mu is held.
func (m *Manager) expiredLocked(l Lease, now time.Time) bool {
	if l.CheckpointOwner != "" && l.CheckpointOwner != l.Owner {
		// A graceful hand-off of the Java KCL 3.x: the checkpoint owner
		// still works the shard, whoever Owner is. It renews the counter.
		return !now.Before(m.observed[l.Key].at.Add(m.cfg.LeaseDuration))
	}
	if l.Owner == m.cfg.WorkerID {
		h := m.held[l.Key]
		return (h == nil || h.isLost()) && !now.Before(m.joined.Add(m.cfg.LeaseDuration)) && !m.incomingLocked(l.Key)
	}
	o, ok := m.members[l.Owner]
	if ok {
		return o.counter == Dead
	}
	// An owner missing from the fleet row (it left, or it is a worker of
	// an earlier version, which renews each lease): the lease expires
	// once its counter stood still for the lease duration, as before. The
	// take is conditional on the counter seen, so a renewal since then
	// makes it fail rather than overlap.
	return !now.Before(m.observed[l.Key].at.Add(m.cfg.LeaseDuration))
}

// maybeScan reads the whole lease table when the view may be missing
// something: consistently at the first round, after a Gen bump or when
// asked (WakeTaker), eventually consistently after a worker died (its
// leases do not move until taken: a stale read is enough to find them)
// or when the periodic read is due.
func (m *Manager) maybeScan(ctx context.Context) error {
	now := m.now()
	m.mu.Lock()
	consistent := m.view == nil || m.mustScan || m.fleet.Gen != m.scanGen
	need := consistent
	for id, o := range m.members {
		if o.counter == Dead && !m.dead[id] {
			need = true
		}
	}
	live := 0
	for _, o := range m.members {
		if o.counter != Dead {
			live++
		}
	}
	if !need && now.Sub(m.scanned) >= m.fullScanPeriod(live) {
		need = true
	}
	gen := m.fleet.Gen
	m.mustScan = false
	m.mu.Unlock()
	if !need {
		return nil
	}
	var leases []Lease
	var err error
	if consistent {
		leases, err = m.readable(m.store.List(ctx))
	} else {
		leases, err = m.readable(m.store.ListStale(ctx))
	}
	if err != nil {
		if consistent {
			m.mu.Lock()
			m.mustScan = true
			m.mu.Unlock()
		}
		return err
	}
	now = m.now()
	// Spread the periodic reads: the next one comes after a random part
	// of the period more or less.
	m.mu.Lock()
	jitter := time.Duration((m.rnd.Float64()*0.5 - 0.25) * float64(m.fullScanPeriod(max(1, live))))
	m.scanned = now.Add(jitter)
	if consistent {
		m.scanGen = gen
	}
	m.dead = map[string]bool{}
	for id, o := range m.members {
		if o.counter == Dead {
			m.dead[id] = true
		}
	}
	seen := make(map[string]bool, len(leases))
	var lost []*Handle
	var lostTo []error
	for _, l := range leases {
		seen[l.Key] = true
		if o, ok := m.observed[l.Key]; !ok || o.counter != l.Counter || o.owner != l.Owner {
			m.observed[l.Key] = observation{counter: l.Counter, owner: l.Owner, at: now}
		}
		// A held lease the table shows moved on (a reset, say): counters
		// only grow, so a read showing a higher one is newer than ours.
		if h := m.held[l.Key]; h != nil && l.Owner != m.cfg.WorkerID && l.Counter > h.counter() {
			lost = append(lost, h)
			lostTo = append(lostTo, newConflict("read", l.Key, &l))
			delete(m.held, l.Key)
		}
	}
	for k := range m.observed {
		if !seen[k] {
			delete(m.observed, k)
		}
	}
	m.view = leases
	m.viewVer++
	m.mu.Unlock()
	for i, h := range lost {
		h.markLost(lostTo[i])
	}
	return nil
}

// readable takes the result of a List: the rows it could not read (see
// UnreadableError) are reported, once each time the set of such rows or
// their reasons change, and left out, so that the others can be taken; a
// clean read reports that the rows reported before are readable (or gone).
func (m *Manager) readable(leases []Lease, err error) ([]Lease, error) {
	var ue *UnreadableError
	if err != nil && !errors.As(err, &ue) {
		return nil, err
	}
	rows := map[string]string{}
	if ue != nil {
		rows = ue.Rows
	}
	m.mu.Lock()
	var news, gone []string
	for key, why := range rows {
		if m.unreadable[key] != why {
			news = append(news, key)
		}
	}
	for key := range m.unreadable {
		if _, ok := rows[key]; !ok {
			gone = append(gone, key)
		}
	}
	m.unreadable = maps.Clone(rows)
	m.mu.Unlock()
	slices.Sort(news)
	slices.Sort(gone)
	for _, key := range news {
		m.log.Warn("lease row cannot be read; it is not taken until it is repaired or deleted",
			"worker", m.cfg.WorkerID, "shard", key, "reason", rows[key])
		m.emit(Event{Kind: EventUnreadable, Key: key, Err: errors.New(rows[key])})
	}
	for _, key := range gone {
		m.log.Info("lease row readable again (or deleted)", "worker", m.cfg.WorkerID, "shard", key)
	}
	return leases, nil
}

// refused reports a take refused although the lease, as the refusal
// returned it, still had the owner and counter the take was conditioned
// on: the row is one this worker cannot write (a mistyped attribute, say),
// and the take would fail at every round. It is reported once per lease
// and counter.
func (m *Manager) refused(l Lease, err error) {
	m.mu.Lock()
	first := m.refusedAt[l.Key] != l.Counter+1
	m.refusedAt[l.Key] = l.Counter + 1
	m.mu.Unlock()
	m.emit(Event{Kind: EventTakeRefused, Key: l.Key, Peer: l.Owner, Err: err})
	if first {
		m.log.Warn("taking a lease was refused although the row shows the owner and counter it was conditioned on; the row may hold an attribute of an unexpected type",
			"worker", m.cfg.WorkerID, "shard", l.Key, "owner", l.Owner, "counter", l.Counter, "err", err)
	}
}

// noteWrite records in the view a lease as this worker wrote it or found
// it in a refusal. m.mu is held.
func (m *Manager) noteLocked(l Lease) {
	i, ok := slices.BinarySearchFunc(m.view, l.Key, func(a Lease, k string) int { return strings.Compare(a.Key, k) })
	if ok {
		if m.view[i].Counter <= l.Counter {
			m.view = slices.Clone(m.view)
			m.view[i] = l.Clone()
			m.viewVer++
		}
	}
}

// noteRefusedLocked notes the lease as stored when a write was refused,
// and, if it moved, when this worker saw it move: a counter still moving
// means its owner is alive. m.mu is held.
func (m *Manager) noteRefusedLocked(c Lease) {
	m.noteLocked(c)
	if o := m.observed[c.Key]; o.counter != c.Counter || o.owner != c.Owner {
		m.observed[c.Key] = observation{counter: c.Counter, owner: c.Owner, at: m.now()}
	}
}

// requestHandoff asks the owner of l to hand it over (a planned move: the
// owner finishes its batch and checkpoints first, so nothing is processed
// twice) and starts a goroutine that waits for the hand-over. At most
// MaxPendingHandoffs requests are pending per worker.
func (m *Manager) requestHandoff(ctx context.Context, l Lease) {
	m.mu.Lock()
	if m.pendingHandoffs >= m.cfg.MaxPendingHandoffs || m.awaiting[l.Key] {
		m.mu.Unlock()
		return
	}
	m.pendingHandoffs++
	m.awaiting[l.Key] = true
	m.mu.Unlock()
	done := func() {
		m.mu.Lock()
		m.pendingHandoffs--
		delete(m.awaiting, l.Key)
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
	// The owner learns of the request from the fleet row, at its next
	// heartbeat; the timeout counts from when the row says so.
	if err := m.store.AskHandoff(ctx, l.Key, m.cfg.WorkerID); err != nil {
		done()
		if ctx.Err() == nil {
			m.log.Warn("recording a lease hand-over request failed", "shard", l.Key, "err", err)
		}
		return
	}
	m.log.Info("asked for a lease hand-over", "shard", l.Key, "owner", l.Owner)
	m.emit(Event{Kind: EventHandoffRequested, Key: l.Key, Peer: l.Owner})
	m.hwg.Add(1)
	go func() {
		defer m.hwg.Done()
		m.awaitHandoff(ctx, req)
		if err := m.store.ClearHandoff(context.WithoutCancel(ctx), req.Key, m.cfg.WorkerID); err != nil && !errors.Is(err, ErrConflict) {
			m.log.Warn("clearing a lease hand-over request failed", "shard", req.Key, "err", err)
		}
		done()
		// Plan again at once: a worker short of its share asks for its
		// next lease as soon as a request ends, not a TakeInterval later.
		wake(m.takeWakeup)
	}()
}

// awaitHandoff polls the requested lease until its owner hands it over (then
// adopts it), releases it (then takes it), or ignores the request for
// HandoffTimeout (then takes it anyway: the owner's handle has turned
// invalid by then, see Handle.Valid: the owner counts the timeout from
// before the request reached the fleet row).
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
			if ctx.Err() == nil && m.now().Before(m.deadline()) {
				m.install(cur, m.now(), "handoff", req.Owner)
			}
			return
		case cur.Owner == "":
			m.take(ctx, cur, "take-released")
			return
		case cur.HandoffTo != m.cfg.WorkerID || cur.Owner != req.Owner:
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
	if !start.Before(m.deadline()) {
		return // heartbeats are failing: the lease would be lost at once
	}
	nl, err := m.store.Take(ctx, l, m.cfg.WorkerID)
	if err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) && ce.Current != nil {
			c := *ce.Current
			m.mu.Lock()
			m.noteRefusedLocked(c)
			m.mu.Unlock()
			if c.Counter == l.Counter && c.Owner == l.Owner {
				m.refused(l, err)
			}
		}
		if !errors.Is(err, ErrConflict) && ctx.Err() == nil {
			m.log.Warn("taking lease failed", "shard", l.Key, "err", err)
		}
		return
	}
	m.install(nl, start, why, l.Owner)
}

// install makes nl a held lease, acquired by a write sent at start. It is
// idempotent: when a taking round and a hand-over waiter acquire the same
// lease at once, the second to install finds a valid handle of the same
// tenure (see sameTenure) and keeps it, adopting nl if it is newer, so the
// shard is neither reported twice nor stopped and restarted.
func (m *Manager) install(nl Lease, start time.Time, why, previous string) {
	h := &Handle{m: m, key: nl.Key, lease: nl, acquired: start, writtenAt: start, lost: make(chan struct{}), handoff: make(chan struct{}),
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
	m.viewVer++
	m.observed[nl.Key] = observation{counter: nl.Counter, owner: nl.Owner, at: start}
	m.noteLocked(nl)
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
		m.viewVer++
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
	// EventUnreadable: a row of the lease table cannot be read as a lease
	// (Err says why); it is not taken. Reported when first seen and when
	// the reason changes.
	EventUnreadable EventKind = "unreadable"
	// EventTakeRefused: taking a lease was refused although the row still
	// showed the owner (Peer) and counter the take was conditioned on, so
	// it will be refused again. Reported for every such refusal.
	EventTakeRefused EventKind = "take_refused"
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
