package lease

import (
	"cmp"
	"maps"
	"math"
	"slices"
)

// View is what a worker knows about the fleet at one moment: every lease with
// whether it is expired (judged from observed counter changes), and the live
// workers.
type View struct {
	// Self is the planning worker's ID.
	Self string
	// Leases are all leases of the table.
	Leases []Lease
	// Expired holds the keys of leases whose owner stopped renewing them.
	Expired map[string]bool
	// LiveWorkers are the workers known to be alive (Self included).
	LiveWorkers []string
	// Stale holds the keys of free leases that stayed free for several
	// rounds: the worker the plan names for them does not take them (it
	// cannot scan the table, say). Any worker below its share takes them.
	Stale map[string]bool
	// Young holds the live workers that may not yet be able to judge a
	// lease expired: they started less than a lease duration (plus a take
	// interval, the Manager's margin) ago, so they have not watched any
	// counter stand still that long. The plan never
	// gives them an expired lease (it would wait for them in vain); they
	// still take unowned leases and ask for held ones. Workers judge each
	// other's age from the presence rows (see ManagerConfig), which every
	// planner reads alike.
	Young map[string]bool
	// ByLoad balances the leases' Throughput rather than their number
	// (see [PlanFleet]).
	ByLoad bool
	// LoadTolerance is the half-width of the band around the mean load,
	// relative to it, inside which a worker's load counts as balanced
	// (ByLoad only). Zero means [DefaultLoadTolerance].
	LoadTolerance float64
}

// DefaultLoadTolerance is the load band used when View.LoadTolerance is zero:
// a worker within ±20% of the mean load is not relieved of leases.
const DefaultLoadTolerance = 0.2

// Plan is what a worker decides to do in one taking round.
type Plan struct {
	// Take lists leases that are unowned or expired, to take.
	Take []Lease
	// Steal lists leases held by a live worker above its share, to ask it
	// for (a planned hand-over).
	Steal []Lease
	// Target is the number of leases this worker holds once the fleet-wide
	// plan is carried out.
	Target int
}

// Move is one lease changing hands in a fleet-wide plan.
type Move struct {
	// Lease is the lease as in the view.
	Lease Lease
	// To is the worker that should hold it.
	To string
	// Steal is true when the lease is validly held by another live worker
	// (it moves by a hand-over), false when it is free (unowned or expired).
	Steal bool
}

// PlanTakes decides which leases Self should take and ask for: its part of
// [PlanFleet]. It is a pure, deterministic function of the view.
//
// Every worker computes the same fleet-wide plan from the same view, so
// workers planning at the same time reach for disjoint leases and nothing is
// moved twice. Views taken at different times can disagree; a take or
// hand-over request planned from a stale view is then refused by the
// store's conditions, and the next round plans again from a fresh view.
//
// Only the receiving side acts: a worker never releases a lease because it
// holds more than its share. The plan names, for every lease that must leave
// a worker, the under-loaded worker that should get it, and that worker asks
// the owner for a hand-over (Steal), so the owner finishes its batch and
// checkpoints before letting go, and the shard is never left without an
// owner waiting for someone's next scan. An owner that also gave leases away
// on its own, from its own view, could move a lease the receiver already
// asked for, or one too many.
func PlanTakes(v View) Plan {
	f := newFleet(v)
	moves := f.plan()
	p := Plan{Target: f.count[v.Self]}
	mine := map[string]bool{}
	for _, mv := range moves {
		if mv.To != v.Self {
			if mv.Steal && f.owner[mv.Lease.Key] == v.Self {
				p.Target-- // Self gives it away when asked
			}
			continue
		}
		p.Target++
		mine[mv.Lease.Key] = true
		if mv.Steal {
			p.Steal = append(p.Steal, mv.Lease)
		} else {
			p.Take = append(p.Take, mv.Lease)
		}
	}
	// Liveness: stale free leases go to whoever is below the rounded-up
	// share, planned or not. Workers may collide on them; the store lets
	// one take each.
	if len(v.Stale) > 0 && f.active > 0 {
		ceil := (f.active + len(f.workers) - 1) / len(f.workers)
		for _, l := range f.free {
			if p.Target >= ceil {
				break
			}
			if v.Stale[l.Key] && !mine[l.Key] {
				p.Take = append(p.Take, l.Clone())
				p.Target++
			}
		}
	}
	return p
}

// PlanFleet returns the moves that balance the fleet seen in v, whoever
// plans. Finished leases (SHARD_END) never move and count for nobody.
//
// A live worker is Self, one in LiveWorkers, or the owner of a lease not
// expired. A lease is free when it is unowned or expired; every free lease
// is in the plan. A lease with a hand-over pending does not move again (the
// store would refuse a second request); it counts as the receiver's when
// the receiver is live, as the owner's otherwise.
//
// An expired lease never goes to a Young worker: only a worker that has
// been watching the table for a lease duration can take it (see
// View.Young). By count, a young worker's share is then filled with other
// leases, and an expired lease no mature worker has room for goes to the
// mature worker planned to hold the fewest, above its share if need be: a
// crashed worker's leases are taken at once, and the surplus moves on by
// hand-over in later rounds. With no mature worker, expired leases stay
// where they are until one matures.
//
// By count (the default), the result holds q or q+1 leases per worker, where
// q = active leases / live workers. The q+1 shares go to the workers holding
// more than q (the most first), then to the others by ID, so the plan moves
// the fewest leases possible: every free lease plus, from each worker above
// its share, the excess. A
// fleet within one lease of even moves nothing. Workers receive in ID order
// from the free leases (unowned first, then expired, by key), then from the
// excess leases (by victim ID, the victim's highest keys first), so that
// concurrent planners agree.
//
// By load (ByLoad), a lease weighs its Throughput; one reporting none (new,
// or idle) weighs the mean of those that do, and with no report at all every
// lease weighs 1. Free leases go, heaviest first, to the least loaded worker.
// Then, while the most loaded worker is above the mean by more than the
// tolerance or the least loaded below it by more, the lease of the most
// loaded whose move to the least loaded best evens the two moves, provided
// it lowers the higher of the two loads; otherwise planning stops. Every
// move lowers the sum of squared loads, so planning ends, and a fleet inside
// the band (or where no such move exists) moves nothing.
func PlanFleet(v View) []Move {
	return newFleet(v).plan()
}

// fleet is the state PlanFleet works on.
type fleet struct {
	v       View
	workers []string            // live workers, sorted
	live    map[string]bool     // the same, as a set
	count   map[string]int      // valid leases per worker (hand-overs counted for the receiver)
	held    map[string][]*Lease // movable valid leases per worker (no hand-over pending), by key
	free    []*Lease            // unowned first, then expired; by key
	active  int                 // leases not finished
	all     []*Lease            // active leases, by key
	owner   map[string]string   // effective owner of each valid active lease
	weight  map[string]float64  // ByLoad: weight of each active lease
}

func newFleet(v View) *fleet {
	f := &fleet{
		v:     v,
		live:  map[string]bool{v.Self: true},
		count: map[string]int{},
		held:  map[string][]*Lease{},
		owner: make(map[string]string, len(v.Leases)),
	}
	for _, w := range v.LiveWorkers {
		f.live[w] = true
	}
	f.all = make([]*Lease, 0, len(v.Leases))
	for i := range v.Leases {
		l := &v.Leases[i]
		if l.Finished() {
			continue
		}
		f.all = append(f.all, l)
		if l.Owner != "" && !v.Expired[l.Key] {
			f.live[l.Owner] = true
		}
	}
	slices.SortFunc(f.all, func(a, b *Lease) int { return cmp.Compare(a.Key, b.Key) })
	f.active = len(f.all)
	for w := range f.live {
		f.workers = append(f.workers, w)
	}
	slices.Sort(f.workers)
	var unowned, expired []*Lease
	for _, l := range f.all {
		switch {
		case l.Owner == "":
			unowned = append(unowned, l)
		case v.Expired[l.Key]:
			expired = append(expired, l)
		default:
			// A lease with a hand-over pending does not move again: the
			// store refuses a second request. It counts as the
			// receiver's unless the receiver is gone.
			o := l.Owner
			switch {
			case l.HandoffTo == "":
				f.held[o] = append(f.held[o], l)
			case f.live[l.HandoffTo]:
				o = l.HandoffTo
			}
			f.owner[l.Key] = o
			f.count[o]++
		}
	}
	f.free = slices.Concat(unowned, expired)
	return f
}

func (f *fleet) plan() []Move {
	if f.active == 0 {
		return nil
	}
	if f.v.ByLoad {
		return f.planByLoad()
	}
	return f.planByCount()
}

// planByCount gives q or q+1 leases to every worker with the fewest moves.
func (f *fleet) planByCount() []Move {
	n := len(f.workers)
	q, r := f.active/n, f.active%n
	// The q+1 shares go first to the workers holding more than q (the
	// most first): each saves a move, whichever it is. The rest go by ID,
	// not by count, so that a worker that just took its q does not take a
	// q+1 share from the next planner's view.
	ranked := slices.Clone(f.workers)
	slices.SortStableFunc(ranked, func(a, b string) int {
		ca, cb := f.count[a], f.count[b]
		if ca > q || cb > q {
			return cmp.Compare(cb, ca)
		}
		return 0
	})
	target := map[string]int{}
	for i, w := range ranked {
		target[w] = q
		if i < r {
			target[w] = q + 1
		}
	}
	type item struct {
		l     *Lease
		steal bool
	}
	pool := make([]item, 0, len(f.free))
	for _, l := range f.free {
		pool = append(pool, item{l: l})
	}
	for _, w := range f.workers {
		excess := f.count[w] - target[w]
		mine := f.held[w]
		for i := len(mine) - 1; i >= 0 && excess > 0; i-- {
			pool = append(pool, item{l: mine[i], steal: true})
			excess--
		}
	}
	var moves []Move
	planned := maps.Clone(f.count)
	for _, w := range f.workers {
		for need := target[w] - f.count[w]; need > 0; need-- {
			i := slices.IndexFunc(pool, func(it item) bool { return it.steal || f.canReceive(w, it.l) })
			if i < 0 {
				break
			}
			it := pool[i]
			pool = slices.Delete(pool, i, i+1)
			moves = append(moves, Move{Lease: it.l.Clone(), To: w, Steal: it.steal})
			planned[w]++
		}
	}
	// Expired leases left over because only young workers had room: to
	// the mature worker planned to hold the fewest, even above its share.
	for _, it := range pool {
		if it.steal {
			continue
		}
		w := ""
		for _, x := range f.workers {
			if f.canReceive(x, it.l) && (w == "" || planned[x] < planned[w]) {
				w = x
			}
		}
		if w == "" {
			continue // no mature worker: wait for one
		}
		moves = append(moves, Move{Lease: it.l.Clone(), To: w})
		planned[w]++
	}
	return moves
}

// canReceive reports whether free lease l may be planned for worker w: an
// expired lease not for a young worker (see View.Young).
func (f *fleet) canReceive(w string, l *Lease) bool {
	return !f.v.Young[w] || l.Owner == "" || !f.v.Expired[l.Key]
}

// planByLoad balances the sum of lease weights per worker within the
// tolerance band.
func (f *fleet) planByLoad() []Move {
	f.weigh()
	tol := f.v.LoadTolerance
	if tol <= 0 {
		tol = DefaultLoadTolerance
	}
	load := map[string]float64{}
	assign := map[string]string{} // lease key -> planned holder
	mine := map[string][]string{} // worker -> movable leases planned for it
	total := 0.0
	for _, l := range f.all {
		total += f.weight[l.Key]
		if o, ok := f.owner[l.Key]; ok {
			load[o] += f.weight[l.Key]
			assign[l.Key] = o
		}
	}
	for _, w := range f.workers {
		for _, l := range f.held[w] {
			mine[w] = append(mine[w], l.Key)
		}
	}
	byKey := make(map[string]*Lease, len(f.all))
	for _, l := range f.all {
		byKey[l.Key] = l
	}
	counts := map[string]int{}
	for w, c := range f.count {
		counts[w] = c
	}
	// Free leases, heaviest first, to the least loaded worker.
	free := slices.Clone(f.free)
	slices.SortStableFunc(free, func(a, b *Lease) int { return cmp.Compare(f.weight[b.Key], f.weight[a.Key]) })
	for _, l := range free {
		w := ""
		for _, x := range f.workers {
			if f.canReceive(x, l) && (w == "" || load[x] < load[w] || load[x] == load[w] && counts[x] < counts[w]) {
				w = x
			}
		}
		if w == "" {
			continue // expired, and no mature worker to take it
		}
		assign[l.Key] = w
		load[w] += f.weight[l.Key]
		counts[w]++
		mine[w] = append(mine[w], l.Key)
	}
	mean := total / float64(len(f.workers))
	hi, lo := mean*(1+tol), mean*(1-tol)
	// Each move lowers the sum of squared loads; the cap only guards
	// against floating-point surprises.
	for range 4 * (f.active + 1) {
		most, least := f.workers[0], f.workers[0]
		for _, x := range f.workers[1:] {
			if load[x] > load[most] {
				most = x
			}
			if load[x] < load[least] {
				least = x
			}
		}
		if load[most] <= hi && load[least] >= lo {
			break
		}
		gap := load[most] - load[least]
		best, bestAt := "", -1
		for i, k := range mine[most] {
			w := f.weight[k]
			if w >= gap {
				continue // would not lower the higher load
			}
			if l := byKey[k]; !f.canReceive(least, l) {
				continue // expired, and least is young
			}
			if best == "" || math.Abs(gap-2*w) < math.Abs(gap-2*f.weight[best]) ||
				math.Abs(gap-2*w) == math.Abs(gap-2*f.weight[best]) && k < best {
				best, bestAt = k, i
			}
		}
		if best == "" {
			break
		}
		mine[most] = slices.Delete(mine[most], bestAt, bestAt+1)
		mine[least] = append(mine[least], best)
		load[most] -= f.weight[best]
		load[least] += f.weight[best]
		counts[most]--
		counts[least]++
		assign[best] = least
	}
	var moves []Move
	for _, l := range f.all {
		to, ok := assign[l.Key]
		if !ok {
			continue
		}
		o, valid := f.owner[l.Key]
		if valid && o == to {
			continue
		}
		moves = append(moves, Move{Lease: l.Clone(), To: to, Steal: valid})
	}
	return moves
}

// weigh sets the weight of every active lease for load balancing.
func (f *fleet) weigh() {
	f.weight = make(map[string]float64, len(f.all))
	sum, n := 0.0, 0
	for _, l := range f.all {
		if l.Throughput > 0 && !math.IsInf(l.Throughput, 0) {
			sum += l.Throughput
			n++
		}
	}
	mean := 1.0
	if n > 0 {
		mean = sum / float64(n)
	}
	for _, l := range f.all {
		w := mean
		if n > 0 && l.Throughput > 0 && !math.IsInf(l.Throughput, 0) {
			w = l.Throughput
		}
		f.weight[l.Key] = w
	}
}
