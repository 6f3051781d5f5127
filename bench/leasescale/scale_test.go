// Package leasescale simulates a large fleet in virtual time: 100 lease
// managers sharing 10,000 leases in one in-memory store, inside a
// testing/synctest bubble, so that minutes of lease timing run in seconds and
// every figure (rounds, virtual time, lease moves) is exact rather than
// noisy. It is a measurement, not a timed test: it fails only if the fleet
// never converges.
//
// Run: go test -run TestLeaseScale -v ./leasescale (from bench/). With
// BENCH_RESULT=file the figures are also written to that file as JSON.
package leasescale

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
)

// The worker's default lease timing.
const (
	leaseDuration = 10 * time.Second
	renewInterval = leaseDuration / 3
	takeInterval  = renewInterval / 2
)

// Phase is what one scenario of the simulation measured.
type Phase struct {
	// Name is the scenario: "cold start", "worker killed", "worker joined".
	Name string `json:"name"`
	// Converged is the virtual time from the scenario's start until every
	// lease had a live owner and holdings differed by at most one.
	Converged time.Duration `json:"converged_ns"`
	// Rounds is the number of taking rounds per live worker in that time.
	Rounds float64 `json:"rounds"`
	// Moves counts leases that changed from one owner to another (steals,
	// hand-overs, takes of expired leases); Acquired counts every take.
	Moves    int64 `json:"moves"`
	Acquired int64 `json:"acquired"`
	// MovesAfter counts moves in the two lease durations after convergence:
	// a stable fleet has none.
	MovesAfter int64 `json:"moves_after"`
}

// Result is the whole simulation.
type Result struct {
	Leases  int     `json:"leases"`
	Workers int     `json:"workers"`
	Seed    uint64  `json:"seed"`
	Phases  []Phase `json:"phases"`
}

// fleet is the simulated workers and their shared store.
type fleet struct {
	store   *lease.MemoryStore
	seed    uint64
	mu      sync.Mutex
	members map[string]*member

	rounds   atomic.Int64 // ListWorkers calls: one per taking round
	moves    atomic.Int64
	acquired atomic.Int64
}

type member struct {
	m      *lease.Manager
	cancel context.CancelFunc
}

// start adds a worker. Its OnAcquired does what a worker's shard consumer
// does with a lease: hand it over when another worker asks for it.
func (f *fleet) start(ctx context.Context, t *testing.T, id string) {
	ctx, cancel := context.WithCancel(ctx)
	var m *lease.Manager
	n, _ := strconv.Atoi(id[1:])
	m = lease.NewManager(lease.ManagerConfig{
		Store:         f.store,
		WorkerID:      id,
		LeaseDuration: leaseDuration,
		RenewInterval: renewInterval,
		TakeInterval:  takeInterval,
		Logger:        slog.New(slog.DiscardHandler),
		Rand:          rand.New(rand.NewPCG(f.seed, uint64(n))),
		OnEvent: func(e lease.Event) {
			if e.Kind == lease.EventAcquired {
				f.acquired.Add(1)
				if e.Peer != "" {
					f.moves.Add(1)
				}
			}
		},
		OnAcquired: func(h *lease.Handle) {
			go func() {
				select {
				case <-h.HandoffRequested():
					_ = h.HandOver(ctx)
				case <-h.Lost():
				case <-ctx.Done():
				}
			}()
		},
	})
	if err := m.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	f.mu.Lock()
	f.members[id] = &member{m: m, cancel: cancel}
	f.mu.Unlock()
}

// kill stops a worker without releasing its leases, as a crash would.
func (f *fleet) kill(id string) {
	f.mu.Lock()
	mb := f.members[id]
	delete(f.members, id)
	f.mu.Unlock()
	mb.cancel()
	_ = mb.m.Close(context.Background())
}

func (f *fleet) closeAll() {
	f.mu.Lock()
	ids := make([]string, 0, len(f.members))
	for id := range f.members {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	for _, id := range ids {
		f.kill(id)
	}
}

// balanced reports whether every lease is held by a live worker and the
// holdings differ by at most one.
func (f *fleet) balanced(ctx context.Context) (bool, error) {
	ls, err := f.store.List(ctx)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	count := make(map[string]int, len(f.members))
	for _, l := range ls {
		if f.members[l.Owner] == nil {
			return false, nil
		}
		count[l.Owner]++
	}
	lo, hi := len(ls), 0
	for id := range f.members {
		lo, hi = min(lo, count[id]), max(hi, count[id])
	}
	return hi-lo <= 1, nil
}

// measure runs one scenario: it waits (in virtual time) for balance, then
// watches two more lease durations for moves.
func (f *fleet) measure(ctx context.Context, t *testing.T, name string, workers int) Phase {
	began := time.Now()
	r0, m0, a0 := f.rounds.Load(), f.moves.Load(), f.acquired.Load()
	tick := time.NewTicker(takeInterval / 10)
	defer tick.Stop()
	for {
		ok, err := f.balanced(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Since(began) > 100*leaseDuration {
			t.Fatalf("%s: no balance after %v of virtual time", name, time.Since(began))
		}
		<-tick.C
	}
	p := Phase{
		Name:      name,
		Converged: time.Since(began),
		Rounds:    float64(f.rounds.Load()-r0) / float64(workers),
		Moves:     f.moves.Load() - m0,
		Acquired:  f.acquired.Load() - a0,
	}
	m1 := f.moves.Load()
	time.Sleep(2 * leaseDuration) // virtual: watching for moves after balance
	p.MovesAfter = f.moves.Load() - m1
	t.Logf("%s: balanced after %v of virtual time, %.1f rounds per worker, %d leases acquired, %d moves; %d moves in the next %v",
		name, p.Converged, p.Rounds, p.Acquired, p.Moves, p.MovesAfter, 2*leaseDuration)
	return p
}

// TestLeaseScale runs 10,000 leases and 100 workers: a cold start of the
// whole fleet, then one worker killed, then one worker joining.
func TestLeaseScale(t *testing.T) {
	const leases, workers = 10_000, 100
	seed := uint64(1)
	if s := os.Getenv("BENCH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	res := Result{Leases: leases, Workers: workers, Seed: seed}
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &fleet{store: lease.NewMemoryStore(), seed: seed, members: map[string]*member{}}
		f.store.SetFault(func(op, _ string) error {
			if op == "listworkers" {
				f.rounds.Add(1)
			}
			return nil
		})
		for i := range leases {
			if err := f.store.Create(ctx, lease.Lease{Key: fmt.Sprintf("shardId-%012d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range workers {
			f.start(ctx, t, fmt.Sprintf("w%03d", i))
		}
		res.Phases = append(res.Phases, f.measure(ctx, t, "cold start", workers))

		f.kill("w000")
		res.Phases = append(res.Phases, f.measure(ctx, t, "worker killed", workers-1))

		f.start(ctx, t, "w100")
		res.Phases = append(res.Phases, f.measure(ctx, t, "worker joined", workers))

		f.closeAll()
	})
	if path := os.Getenv("BENCH_RESULT"); path != "" {
		b, _ := json.Marshal(res)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
