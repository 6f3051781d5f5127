package lease

import "time"

// Unowned returns, for every unfinished lease of the manager's view that no
// live worker holds, how long it has been so as far as this worker can
// tell: since the owner's heartbeat was last seen moving (an owner whose
// heartbeat has not moved for three heartbeat periods, or that was
// fenced), or since the lease was last seen changing (a free lease, one
// still naming this worker from an earlier run, or, once that was a lease
// duration ago, one whose owner is missing from the fleet row). The times
// are lower bounds: a change is seen at this worker's next heartbeat or
// read. It reads nothing from the table.
func (m *Manager) Unowned() map[string]time.Duration {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]time.Duration{}
	for _, l := range m.view {
		if l.Finished() {
			continue
		}
		if since, ok := m.unownedSinceLocked(l, now); ok {
			if since.IsZero() { // not observed yet
				since = now
			}
			out[l.Key] = max(0, now.Sub(since))
		}
	}
	return out
}

// unownedSinceLocked returns since when lease l has had no live owner, and
// false if it has one. m.mu is held.
func (m *Manager) unownedSinceLocked(l Lease, now time.Time) (time.Time, bool) {
	switch {
	case l.Owner == "":
		return m.observed[l.Key].at, true
	case l.Owner == m.cfg.WorkerID:
		if m.held[l.Key] != nil {
			return time.Time{}, false
		}
		return m.observed[l.Key].at, true
	}
	o, member := m.members[l.Owner]
	live, seen := m.lastLive[l.Owner]
	switch {
	case member && o.counter != Dead:
		if now.Sub(o.at) <= 3*m.beatEvery {
			return time.Time{}, false
		}
		return o.at, true
	case seen:
		return live, true
	}
	// An owner missing from the fleet row (it left, or an earlier version
	// that renews each lease, which this worker sees only when it reads the
	// leases): as for expiry, only a counter that stood still for the lease
	// duration tells it is gone.
	at := m.observed[l.Key].at
	if now.Sub(at) < m.cfg.LeaseDuration {
		return time.Time{}, false
	}
	return at, true
}
