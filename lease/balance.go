package lease

import (
	"math/rand/v2"
	"slices"
	"sort"
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
}

// Plan is what a worker decides to do in one taking round.
type Plan struct {
	// Take lists leases that are unowned or expired, to take.
	Take []Lease
	// Steal lists leases held by an overloaded live worker, to take from it.
	Steal []Lease
	// Target is the number of leases this worker aims to hold.
	Target int
}

// PlanTakes decides which leases Self should take. It is a pure function of
// the view; rnd breaks ties so that workers starting together do not all
// reach for the same leases (pass a seeded source for reproducible tests).
//
// Rules: finished leases (SHARD_END) are never taken. The target is
// ceil(active leases / live workers). Below it, the worker takes unowned and
// expired leases up to the target; if none are left and the most loaded
// worker holds at least two more leases than Self, it steals one lease from
// that worker. Once every worker is within one lease of the others, nothing
// moves.
func PlanTakes(v View, rnd *rand.Rand) Plan {
	live := map[string]bool{v.Self: true}
	for _, w := range v.LiveWorkers {
		live[w] = true
	}
	counts := map[string]int{}
	var free []Lease
	active := 0
	for _, l := range v.Leases {
		if l.Finished() {
			continue
		}
		active++
		switch {
		case l.Owner == "" || v.Expired[l.Key]:
			free = append(free, l)
		default:
			live[l.Owner] = true
			counts[l.Owner]++
		}
	}
	target := 0
	if active > 0 {
		target = (active + len(live) - 1) / len(live)
	}
	plan := Plan{Target: target}
	mine := counts[v.Self]
	need := target - mine
	if need <= 0 {
		return plan
	}
	if len(free) > 0 {
		// Prefer unowned leases (no one is processing them) over expired ones.
		rnd.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		sort.SliceStable(free, func(i, j int) bool { return free[i].Owner == "" && free[j].Owner != "" })
		plan.Take = free[:min(need, len(free))]
		return plan
	}
	// Steal one lease from the most loaded worker, if that evens things out.
	others := make([]string, 0, len(counts))
	for w := range counts {
		if w != v.Self {
			others = append(others, w)
		}
	}
	slices.Sort(others)
	victim := ""
	for _, w := range others {
		if victim == "" || counts[w] > counts[victim] {
			victim = w
		}
	}
	if victim == "" || counts[victim] < mine+2 {
		return plan
	}
	var theirs []Lease
	for _, l := range v.Leases {
		if l.Owner == victim && !l.Finished() && !v.Expired[l.Key] {
			theirs = append(theirs, l)
		}
	}
	slices.SortFunc(theirs, func(a, b Lease) int { return cmpString(a.Key, b.Key) })
	plan.Steal = []Lease{theirs[rnd.IntN(len(theirs))]}
	return plan
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
