package lease

import (
	"context"
	"maps"
)

// Beat writes worker id's heartbeat (see [Store.Beat]).
func (s *MemoryStore) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (Fleet, error) {
	if err := checkWorkerID("beat", id); err != nil {
		return Fleet{}, err
	}
	return s.fleetWrite(ctx, "beat", id, func(f *Fleet) bool {
		cur, ok := f.Members[id]
		if from == 0 && ok && cur != Dead || from != 0 && (!ok || cur != from) {
			return false
		}
		f.Members[id] = from + 1
		if withdrawn {
			f.Withdrawn[id] = true
		} else if from == 0 {
			delete(f.Withdrawn, id)
		}
		if bump {
			f.Gen++
		}
		setStalls(f, id, stalls)
		return true
	})
}

// setStalls replaces worker id's stalls in f (removes them when empty).
func setStalls(f *Fleet, id string, stalls map[string]string) {
	if len(stalls) == 0 {
		delete(f.Stalls, id)
		return
	}
	if f.Stalls == nil {
		f.Stalls = map[string]map[string]string{}
	}
	f.Stalls[id] = maps.Clone(stalls)
}

// ReadFleet returns the fleet row.
func (s *MemoryStore) ReadFleet(ctx context.Context) (Fleet, error) {
	var out Fleet
	err := s.run(ctx, "readfleet", "", func() error {
		s.chargeGet("readfleet", fleetRowKey, true)
		out = s.fleetCopy()
		return nil
	})
	return out, err
}

// Fence marks worker id dead if its heartbeat is hb.
func (s *MemoryStore) Fence(ctx context.Context, id string, hb int64) (Fleet, error) {
	if err := checkWorkerID("fence", id); err != nil {
		return Fleet{}, err
	}
	return s.fleetWrite(ctx, "fence", id, func(f *Fleet) bool {
		if cur, ok := f.Members[id]; !ok || cur != hb {
			return false
		}
		f.Members[id] = Dead
		setStalls(f, id, nil)
		return true
	})
}

// Leave removes worker id's entry if its heartbeat is hb.
func (s *MemoryStore) Leave(ctx context.Context, id string, hb int64, bump bool) error {
	if err := checkWorkerID("leave", id); err != nil {
		return err
	}
	_, err := s.fleetWrite(ctx, "leave", id, func(f *Fleet) bool {
		if cur, ok := f.Members[id]; !ok || cur != hb {
			return false
		}
		delete(f.Members, id)
		delete(f.Withdrawn, id)
		setStalls(f, id, nil)
		if bump {
			f.Gen++
		}
		return true
	})
	return err
}

// AskHandoff records that worker to asked for lease key.
func (s *MemoryStore) AskHandoff(ctx context.Context, key, to string) error {
	if err := checkLeaseKey("askhandoff", key); err != nil {
		return err
	}
	_, err := s.fleetWrite(ctx, "askhandoff", key, func(f *Fleet) bool {
		f.Handoffs[key] = to
		return true
	})
	return err
}

// ClearHandoff removes the record of AskHandoff if it names to.
func (s *MemoryStore) ClearHandoff(ctx context.Context, key, to string) error {
	if err := checkLeaseKey("clearhandoff", key); err != nil {
		return err
	}
	_, err := s.fleetWrite(ctx, "clearhandoff", key, func(f *Fleet) bool {
		if f.Handoffs[key] != to {
			return false
		}
		delete(f.Handoffs, key)
		return true
	})
	return err
}

// fleetWrite applies change to the fleet row (created if missing) if it
// accepts it, and returns the row as stored; a refusal is a
// *ConflictError.
func (s *MemoryStore) fleetWrite(ctx context.Context, op, key string, change func(*Fleet) bool) (Fleet, error) {
	var out Fleet
	err := s.run(ctx, op, key, func() error {
		next := s.fleetCopy()
		if !change(&next) {
			s.chargeWrite(op, fleetRowKey, -1)
			return &ConflictError{Op: op, Key: key}
		}
		next.Version++
		s.fleet = next
		if s.meter != nil {
			s.chargeWrite(op, fleetRowKey, s.fleetSize())
		}
		out = s.fleetCopy()
		return nil
	})
	return out, err
}

// fleetCopy returns a deep copy of the fleet row, with non-nil maps.
// s.mu is held.
func (s *MemoryStore) fleetCopy() Fleet {
	f := s.fleet.Clone()
	if f.Members == nil {
		f.Members = map[string]int64{}
	}
	if f.Withdrawn == nil {
		f.Withdrawn = map[string]bool{}
	}
	if f.Handoffs == nil {
		f.Handoffs = map[string]string{}
	}
	return f
}

// bumpGen increments the fleet row's Gen, if there is a fleet row, so that
// the workers read the leases again (after a reset: its owner stops).
func (s *MemoryStore) bumpGen(ctx context.Context) {
	s.mu.Lock()
	exists := s.fleet.Members != nil
	s.mu.Unlock()
	if exists {
		_, _ = s.fleetWrite(ctx, "bump", "", func(f *Fleet) bool { f.Gen++; return true })
	}
}
