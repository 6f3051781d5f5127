package costsim

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/ddbcost"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/lease/storetest"
	"github.com/shardline/shardline/kcl"
)

// Defaults of worker.Config.
const (
	leaseDuration = 10 * time.Second
	renewInterval = leaseDuration / 3
	takeInterval  = renewInterval / 2
	// minWindow is the shortest steady state metered; it is longer with
	// more workers, to take in several of the fleet's periodic reads of the
	// whole table (each worker reads it every 20 s × workers).
	minWindow = 2 * time.Minute
)

// sizes are the fleets of the report; SHARDLINE_COST=all runs all of them
// (make cost), otherwise the two small ones run.
var sizes = []struct{ workers, leases int }{{3, 8}, {10, 100}, {20, 1000}, {100, 10000}}

// TestCost measures, in virtual time, what a fleet of managers at the
// default timing costs on DynamoDB in its steady state, and how long its
// leases take to fail over when a worker crashes; it prints the report of
// make cost.
func TestCost(t *testing.T) {
	all := os.Getenv("SHARDLINE_COST") == "all"
	var rs []Result
	for _, sz := range sizes {
		if !all && sz.leases > 100 {
			continue
		}
		var r Result
		synctest.Test(t, func(t *testing.T) { r = simulate(t, sz.workers, sz.leases) })
		if t.Failed() {
			return
		}
		rs = append(rs, r)
		t.Logf("%s", r.Line())
	}
	if out := os.Getenv("SHARDLINE_COST_OUT"); out != "" {
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		WriteReport(f, rs)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The goals of issue 13.
	for _, r := range rs {
		if bound := r.LeaseSeconds + 2; r.FailoverP99 > bound {
			t.Errorf("%d × %d: failover p99 %.2f s, want at most %.2f s", r.Workers, r.Leases, r.FailoverP99, bound)
		}
		if k3 := KCL3(r.Fleet); r.Measured.Reads > k3.Reads {
			t.Errorf("%d × %d: %.3f read units/s, want at most KCL 3.x's %.3f", r.Workers, r.Leases, r.Measured.Reads, k3.Reads)
		}
		if ratio := r.Measured.USDPerMonth() / KCL3(r.Fleet).USDPerMonth(); r.Leases >= 1000 && ratio > 0.2 {
			t.Errorf("%d × %d: %.3f × KCL 3.x's bill, want at most 0.2", r.Workers, r.Leases, ratio)
		}
	}
}

// workerID returns a worker ID as long as the UUIDs the KCL uses.
func workerID(i int) string { return fmt.Sprintf("3f2a9c1e-7b4d-4e8a-9c01-%012d", i) }

// shardLease returns the i-th of n leases of a fresh stream, shaped like
// the Java KCL's: a shard ID, a sequence number checkpoint, the hash key
// range.
func shardLease(i, n int) lease.Lease {
	span := new(big.Int).Lsh(big.NewInt(1), 128)
	span.Div(span, big.NewInt(int64(n)))
	lo := new(big.Int).Mul(span, big.NewInt(int64(i)))
	hi := new(big.Int).Add(lo, span)
	hi.Sub(hi, big.NewInt(1))
	return lease.Lease{
		Key:             fmt.Sprintf("shardId-%012d", i),
		Checkpoint:      kcl.ExtendedSequenceNumber{SequenceNumber: fmt.Sprintf("49%054d", 1000003*i+7)},
		StartingHashKey: lo.String(),
		EndingHashKey:   hi.String(),
	}
}

// sim is one simulated fleet.
type sim struct {
	t     *testing.T
	store *lease.MemoryStore
	meter *ddbcost.Meter
	n     int // leases

	mu       sync.Mutex
	acquired map[string]time.Time // lease -> last acquisition
	workers  []*simWorker
	next     int
}

type simWorker struct {
	id string
	m  *lease.Manager
	st *storetest.Partitioned
}

func (s *sim) start() *simWorker {
	s.mu.Lock()
	id := workerID(s.next)
	s.next++
	s.mu.Unlock()
	w := &simWorker{id: id, st: &storetest.Partitioned{Store: s.store}}
	w.m = lease.NewManager(lease.ManagerConfig{
		Store: w.st, WorkerID: id,
		LeaseDuration: leaseDuration, RenewInterval: renewInterval, TakeInterval: takeInterval,
		Logger:     slog.New(slog.DiscardHandler),
		Rand:       rand.New(rand.NewPCG(uint64(s.next), 1)),
		OnAcquired: s.onAcquired,
	})
	if err := w.m.Start(s.t.Context()); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.workers = append(s.workers, w)
	s.mu.Unlock()
	return w
}

// onAcquired records the acquisition and acts like a worker: it hands the
// lease over when asked.
func (s *sim) onAcquired(h *lease.Handle) {
	s.mu.Lock()
	s.acquired[h.Key()] = time.Now()
	s.mu.Unlock()
	go func() {
		select {
		case <-h.HandoffRequested():
			_ = h.HandOver(context.Background())
		case <-h.Lost():
		}
	}()
}

// balanced reports whether the live workers hold every lease within one
// of each other.
func (s *sim) balanced() bool {
	lo, hi, sum := math.MaxInt, 0, 0
	for _, w := range s.live() {
		n := len(w.m.Held())
		lo, hi, sum = min(lo, n), max(hi, n), sum+n
	}
	return sum == s.n && hi-lo <= 1
}

func (s *sim) live() []*simWorker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.workers), func(w *simWorker) bool { return w.st.Down.Load() })
}

// settle advances virtual time until the fleet is balanced.
func (s *sim) settle(what string) {
	start := time.Now()
	for !s.balanced() {
		if time.Since(start) > 10*time.Minute {
			s.t.Fatalf("%s: fleet not balanced after %v", what, time.Since(start))
		}
		advance(time.Second)
	}
}

func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// simulate runs one fleet and returns its result.
func simulate(t *testing.T, workers, leases int) Result {
	s := &sim{t: t, store: lease.NewMemoryStore(), meter: &ddbcost.Meter{}, n: leases, acquired: map[string]time.Time{}}
	for i := range leases {
		if err := s.store.Create(t.Context(), shardLease(i, leases)); err != nil {
			t.Fatal(err)
		}
	}
	s.store.SetMeter(s.meter)
	defer func() {
		for _, w := range s.workers {
			w.st.Down.Store(false)
			_ = w.m.Close(context.Background())
		}
	}()
	for range workers {
		s.start()
	}
	s.settle("start")
	advance(2 * leaseDuration)

	window := max(minWindow, time.Duration(workers)*25*time.Second)
	u0 := s.meter.Usage()
	advance(window)
	u := s.meter.Usage().Sub(u0)
	sec := window.Seconds()
	t.Logf("%d × %d: units by operation over %v: %v", workers, leases, window, u.ByOp)

	// Crash workers one at a time, at a random moment, and time how long
	// each of their leases takes to be held again; a new worker replaces
	// each.
	r := rand.New(rand.NewPCG(uint64(workers), uint64(leases)))
	kills := min(20, max(5, 100*workers/leases))
	var samples []float64
	for k := range kills {
		advance(time.Duration(r.Int64N(int64(renewInterval))))
		live := s.live()
		victim := live[r.IntN(len(live))]
		var keys []string
		for _, h := range victim.m.Held() {
			keys = append(keys, h.Key())
		}
		crash := time.Now()
		victim.st.Down.Store(true)
		deadline := crash.Add(3 * leaseDuration)
		for {
			done := 0
			s.mu.Lock()
			for _, key := range keys {
				if s.acquired[key].After(crash) {
					done++
				}
			}
			s.mu.Unlock()
			if done == len(keys) || time.Now().After(deadline) {
				break
			}
			advance(50 * time.Millisecond)
		}
		s.mu.Lock()
		for _, key := range keys {
			at := s.acquired[key]
			if !at.After(crash) {
				t.Errorf("kill %d: lease %s not taken over within %v", k, key, 3*leaseDuration)
				continue
			}
			samples = append(samples, at.Sub(crash).Seconds())
		}
		s.mu.Unlock()
		_ = victim.m.Close(context.Background())
		s.start()
		s.settle(fmt.Sprintf("after kill %d", k))
	}
	slices.Sort(samples)
	p99 := 0.0
	if len(samples) > 0 {
		p99 = samples[int(math.Ceil(0.99*float64(len(samples))))-1]
	}
	ls, _ := s.store.List(context.Background())
	return Result{
		Fleet: Fleet{
			Workers: workers, Leases: leases,
			LeaseBytes:         typicalLeaseBytes(ls),
			OwnerIndexBytes:    len("leaseKey") + len(ls[0].Key) + len("leaseOwner") + len(workerID(0)),
			WorkerMetricsBytes: workerMetricsBytes,
		},
		LeaseSeconds: leaseDuration.Seconds(),
		// One checkpoint per shard per second (a batch a second), written
		// at once or coalesced (worker.Config.CheckpointInterval): each
		// write is one UpdateItem of the lease.
		Checkpoint:          Rates{Writes: float64(leases) * ddbcost.WriteUnits(typicalLeaseBytes(ls))},
		CheckpointCoalesced: Rates{Writes: float64(leases) * ddbcost.WriteUnits(typicalLeaseBytes(ls)) / CoalesceInterval.Seconds()},
		Measured:            Rates{Reads: u.Reads / sec, Writes: u.Writes / sec},
		FailoverP99:         p99,
		FailoverSamples:     len(samples),
	}
}

// workerMetricsBytes is the size of a KCL 3.x worker metrics item: the
// worker ID, the update time, and ten samples each of CPU utilization and
// its configuration.
var workerMetricsBytes = ddbcost.ItemSize(map[string]types.AttributeValue{
	"wid":    &types.AttributeValueMemberS{Value: workerID(0)},
	"lut":    &types.AttributeValueMemberN{Value: "1733234567"},
	"sts":    &types.AttributeValueMemberS{Value: "OPERATIONAL"},
	"mts":    &types.AttributeValueMemberS{Value: strings.Repeat("{\"C\":[12.5]}", 10)},
	"opsCfg": &types.AttributeValueMemberS{Value: "{\"C\":[80]}"},
})

// typicalLeaseBytes returns the median size of the leases' items, owned.
func typicalLeaseBytes(ls []lease.Lease) int {
	var sz []int
	for _, l := range ls {
		sz = append(sz, lease.ItemSize(l))
	}
	slices.Sort(sz)
	return sz[len(sz)/2]
}
