package lease_test

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// own returns active leases key-prefix-0..n-1 owned by owner ("" for unowned).
func own(prefix, owner string, n int) []lease.Lease {
	out := make([]lease.Lease, n)
	for i := range out {
		out[i] = lease.Lease{Key: fmt.Sprintf("%s-%02d", prefix, i), Owner: owner, Counter: int64(i + 1)}
	}
	return out
}

// finished returns n leases of shards processed to SHARD_END.
func finished(prefix, owner string, n int) []lease.Lease {
	out := own(prefix, owner, n)
	for i := range out {
		out[i].Checkpoint = kcl.ShardEnd
	}
	return out
}

// handingOver returns l with a hand-over to to pending.
func handingOver(l lease.Lease, to string) lease.Lease {
	l.HandoffTo = to
	return l
}

func keysOf(ls []lease.Lease) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.Key)
	}
	slices.Sort(out)
	return out
}

func expiredSet(keys ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func concat(parts ...[]lease.Lease) []lease.Lease { return slices.Concat(parts...) }

func TestPlanTakes(t *testing.T) {
	tests := []struct {
		name string
		view lease.View
		// wantTarget is the expected Plan.Target.
		wantTarget int
		// wantTake and wantSteal give how many leases the plan takes and
		// steals, takeFrom and stealFrom the keys they may come from (nil
		// takeFrom: any). wantTakeKeys, when set, is exactly what is taken.
		wantTake, wantSteal int
		takeFrom, stealFrom []string
		wantTakeKeys        []string
	}{
		{
			name:       "fresh fleet takes its share",
			view:       lease.View{Self: "a", Leases: own("s", "", 6), LiveWorkers: []string{"a", "b", "c"}},
			wantTarget: 2, wantTake: 2,
			wantTakeKeys: []string{"s-00", "s-01"},
		},
		{
			name:       "workers take disjoint blocks in ID order",
			view:       lease.View{Self: "c", Leases: own("s", "", 6), LiveWorkers: []string{"a", "b", "c"}},
			wantTarget: 2, wantTake: 2,
			wantTakeKeys: []string{"s-04", "s-05"},
		},
		{
			name:       "fresh fleet: the extra lease goes to the smaller ID",
			view:       lease.View{Self: "a", Leases: own("s", "", 7), LiveWorkers: []string{"a", "b", "c"}},
			wantTarget: 3, wantTake: 3,
			wantTakeKeys: []string{"s-00", "s-01", "s-02"},
		},
		{
			name:       "fresh fleet: a larger ID gets the share without the extra",
			view:       lease.View{Self: "b", Leases: own("s", "", 7), LiveWorkers: []string{"a", "b", "c"}},
			wantTarget: 2, wantTake: 2,
			wantTakeKeys: []string{"s-03", "s-04"},
		},
		{
			name:       "self counts as live even when missing from LiveWorkers",
			view:       lease.View{Self: "a", Leases: own("s", "", 4), LiveWorkers: []string{"b"}},
			wantTarget: 2, wantTake: 2,
			takeFrom: keysOf(own("s", "", 4)),
		},
		{
			name:       "single worker takes everything",
			view:       lease.View{Self: "a", Leases: own("s", "", 5)},
			wantTarget: 5, wantTake: 5,
			wantTakeKeys: keysOf(own("s", "", 5)),
		},
		{
			name: "unowned leases are taken with the rest held by others",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 3), own("u", "", 3)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 3, wantTake: 3,
			wantTakeKeys: keysOf(own("u", "", 3)),
		},
		{
			name: "expired leases are taken",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 2), own("x", "dead", 2)),
				Expired: expiredSet("x-00", "x-01"), LiveWorkers: []string{"a", "b"}},
			wantTarget: 2, wantTake: 2,
			wantTakeKeys: []string{"x-00", "x-01"},
		},
		{
			name: "unowned leases come before expired ones",
			view: lease.View{Self: "a", Leases: concat(own("a", "x", 4), own("u", "", 2)),
				Expired: expiredSet("a-00", "a-01", "a-02", "a-03"), LiveWorkers: []string{"a", "b"}},
			// a-* sort before u-*, yet a gets both unowned leases first.
			wantTarget: 3, wantTake: 3,
			wantTakeKeys: []string{"a-00", "u-00", "u-01"},
		},
		{
			name: "an expired lease of a live worker is free, then the excess is asked for",
			view: lease.View{Self: "a", Leases: own("b", "b", 4),
				Expired: expiredSet("b-02"), LiveWorkers: []string{"a", "b"}},
			// b counts 3 valid leases; a takes the expired one and asks b
			// for the one of its 3 above its share of 2.
			wantTarget: 2, wantTake: 1, wantSteal: 1,
			wantTakeKeys: []string{"b-02"},
			stealFrom:    []string{"b-03"},
		},
		{
			name:       "finished unowned leases are never taken",
			view:       lease.View{Self: "a", Leases: finished("f", "", 4), LiveWorkers: []string{"a"}},
			wantTarget: 0,
		},
		{
			name: "finished expired leases are never taken",
			view: lease.View{Self: "a", Leases: concat(finished("f", "dead", 3), own("u", "", 1)),
				Expired: expiredSet("f-00", "f-01", "f-02"), LiveWorkers: []string{"a"}},
			wantTarget: 1, wantTake: 1,
			wantTakeKeys: []string{"u-00"},
		},
		{
			name: "finished leases do not count as load",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 1), own("b", "b", 3), finished("f", "b", 6)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 2, wantSteal: 1,
			stealFrom: keysOf(own("b", "b", 3)),
		},
		{
			name:       "steals from a worker holding two more",
			view:       lease.View{Self: "a", Leases: own("b", "b", 2), LiveWorkers: []string{"a", "b"}},
			wantTarget: 1, wantSteal: 1,
			stealFrom: keysOf(own("b", "b", 2)),
		},
		{
			name: "steals only the excess of workers above their share",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 3), own("c", "c", 5)),
				LiveWorkers: []string{"a", "b", "c"}},
			// 8 leases on 3 workers: c and b keep 3, a gets c's 2 extra.
			wantTarget: 2, wantSteal: 2,
			stealFrom: []string{"c-03", "c-04"},
		},
		{
			name:       "asks for its whole share at once",
			view:       lease.View{Self: "a", Leases: own("b", "b", 10), LiveWorkers: []string{"a", "b"}},
			wantTarget: 5, wantSteal: 5,
			stealFrom: keysOf(own("b", "b", 10)),
		},
		{
			name:       "an owner missing from LiveWorkers still counts as live",
			view:       lease.View{Self: "a", Leases: own("b", "b", 4), LiveWorkers: []string{"a"}},
			wantTarget: 2, wantSteal: 2,
			stealFrom: keysOf(own("b", "b", 4)),
		},
		{
			name: "takes free leases before the excess of others",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 5), own("u", "", 1)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 3, wantTake: 1, wantSteal: 2,
			wantTakeKeys: []string{"u-00"},
			stealFrom:    []string{"b-03", "b-04"},
		},
		{
			name: "a lease handed over to self counts as its own",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 1), own("b", "b", 2), []lease.Lease{handingOver(own("c", "b", 1)[0], "a")}),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 2,
		},
		{
			name: "a lease handed over to another worker is not asked for again",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 4), []lease.Lease{handingOver(own("c", "b", 1)[0], "c")}),
				LiveWorkers: []string{"a", "b", "c"}},
			// c-00 counts as c's: b 4, c 1, a 0. Of the two extra shares,
			// b keeps one and a (smaller ID than c) gets the other.
			wantTarget: 2, wantSteal: 2,
			stealFrom: []string{"b-02", "b-03"},
		},
		{
			name: "a hand-over to a dead worker does not count",
			view: lease.View{Self: "a", Leases: concat(own("b", "b", 3), []lease.Lease{handingOver(own("c", "b", 1)[0], "dead")}),
				LiveWorkers: []string{"a", "b"}},
			// b holds 4 (c-00 included) but c-00 is not movable while the
			// request stands: a gets two of b-*.
			wantTarget: 2, wantSteal: 2,
			stealFrom: keysOf(own("b", "b", 3)),
		},
		{
			name: "stale free leases go to a worker below the rounded-up share",
			view: lease.View{Self: "b", Leases: concat(own("u", "", 1)),
				LiveWorkers: []string{"a", "b"}, Stale: expiredSet("u-00")},
			// The plan names a, which has not taken it for rounds.
			wantTarget: 1, wantTake: 1,
			wantTakeKeys: []string{"u-00"},
		},
		{
			name: "fresh free leases wait for the worker planned to take them",
			view: lease.View{Self: "b", Leases: concat(own("u", "", 1)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 0,
		},
		{
			name: "stale leases are not taken beyond the rounded-up share",
			view: lease.View{Self: "b", Leases: concat(own("b", "b", 2), own("a", "a", 1), own("u", "", 1)),
				LiveWorkers: []string{"a", "b"}, Stale: expiredSet("u-00")},
			wantTarget: 2,
		},
		{
			name: "no steal when balanced within one",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 1), own("b", "b", 2)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 1,
		},
		{
			name: "no steal from workers holding one more",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 3), own("b", "b", 4), own("c", "c", 4)),
				LiveWorkers: []string{"a", "b", "c"}},
			wantTarget: 3,
		},
		{
			name: "nothing when at its share although leases are free",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 2), own("b", "b", 1), own("u", "", 1)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 2,
		},
		{
			name: "above its share: gives away only when asked",
			view: lease.View{Self: "a", Leases: concat(own("a", "a", 5), own("b", "b", 1)),
				LiveWorkers: []string{"a", "b"}},
			wantTarget: 3,
		},
		{
			name:       "empty table",
			view:       lease.View{Self: "a", LiveWorkers: []string{"a", "b"}},
			wantTarget: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := cloneView(tt.view)
			p := lease.PlanTakes(tt.view)
			if !reflect.DeepEqual(tt.view, before) {
				t.Fatalf("PlanTakes modified its view:\n got %+v\nwant %+v", tt.view, before)
			}
			if p.Target != tt.wantTarget {
				t.Errorf("Target = %d, want %d", p.Target, tt.wantTarget)
			}
			if tt.wantTakeKeys != nil {
				tt.wantTake = len(tt.wantTakeKeys)
			}
			if len(p.Take) != tt.wantTake {
				t.Errorf("Take = %v, want %d leases", keysOf(p.Take), tt.wantTake)
			}
			if len(p.Steal) != tt.wantSteal {
				t.Errorf("Steal = %v, want %d leases", keysOf(p.Steal), tt.wantSteal)
			}
			if tt.wantTakeKeys != nil && !slices.Equal(keysOf(p.Take), tt.wantTakeKeys) {
				t.Errorf("Take = %v, want %v", keysOf(p.Take), tt.wantTakeKeys)
			}
			for _, l := range p.Take {
				if tt.takeFrom != nil && !slices.Contains(tt.takeFrom, l.Key) {
					t.Errorf("Take has %s, want one of %v", l.Key, tt.takeFrom)
				}
			}
			for _, l := range p.Steal {
				if !slices.Contains(tt.stealFrom, l.Key) {
					t.Errorf("Steal has %s, want one of %v", l.Key, tt.stealFrom)
				}
			}
			checkPlan(t, tt.view, p)
		})
	}
}

// TestPlanTakesDeterministic checks that the plan depends only on the view
// (not on the order of its leases and workers), and that workers planning
// from one view reach for disjoint leases whose union is the fleet plan.
func TestPlanTakesDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for seed := range uint64(200) {
		f := randomFleet(rand.New(rand.NewPCG(seed, 0xd5)))
		v := f.view(f.live[0])
		first := lease.PlanTakes(v)
		shuffled := cloneView(v)
		r.Shuffle(len(shuffled.Leases), func(i, j int) { shuffled.Leases[i], shuffled.Leases[j] = shuffled.Leases[j], shuffled.Leases[i] })
		r.Shuffle(len(shuffled.LiveWorkers), func(i, j int) {
			shuffled.LiveWorkers[i], shuffled.LiveWorkers[j] = shuffled.LiveWorkers[j], shuffled.LiveWorkers[i]
		})
		if again := lease.PlanTakes(shuffled); !reflect.DeepEqual(normPlan(first), normPlan(again)) {
			t.Fatalf("seed %d: the same view in another order gave %v/%v then %v/%v", seed,
				keysOf(first.Take), keysOf(first.Steal), keysOf(again.Take), keysOf(again.Steal))
		}
		fleetPlan := lease.PlanFleet(v)
		taken := map[string]string{}
		for _, w := range f.live {
			vw := v
			vw.Self = w
			p := lease.PlanTakes(vw)
			for _, l := range slices.Concat(p.Take, p.Steal) {
				if other, dup := taken[l.Key]; dup {
					t.Fatalf("seed %d: %s and %s both plan to get %s", seed, other, w, l.Key)
				}
				taken[l.Key] = w
			}
		}
		if len(taken) != len(fleetPlan) {
			t.Errorf("seed %d: the workers' plans get %d leases, the fleet plan moves %d", seed, len(taken), len(fleetPlan))
		}
		for _, mv := range fleetPlan {
			if taken[mv.Lease.Key] != mv.To {
				t.Errorf("seed %d: fleet plan moves %s to %s, the workers' plans to %q", seed, mv.Lease.Key, mv.To, taken[mv.Lease.Key])
			}
		}
	}
}

// normPlan sorts a plan's lists so plans compare regardless of order.
func normPlan(p lease.Plan) lease.Plan {
	sortKeys := func(ls []lease.Lease) []lease.Lease {
		ls = slices.Clone(ls)
		slices.SortFunc(ls, func(a, b lease.Lease) int {
			if a.Key < b.Key {
				return -1
			}
			return 1
		})
		return ls
	}
	p.Take, p.Steal = sortKeys(p.Take), sortKeys(p.Steal)
	return p
}

func cloneView(v lease.View) lease.View {
	out := v
	out.Leases = nil
	for _, l := range v.Leases {
		out.Leases = append(out.Leases, l.Clone())
	}
	out.Expired = maps.Clone(v.Expired)
	out.LiveWorkers = slices.Clone(v.LiveWorkers)
	return out
}

// checkPlan checks the rules every plan keeps, whatever the view: no
// finished lease, no duplicate, takes only of free leases, steals only of
// valid leases of other live workers with no hand-over pending and above
// their share, and a target within one of the even share.
func checkPlan(t *testing.T, v lease.View, p lease.Plan) {
	t.Helper()
	byKey := map[string]lease.Lease{}
	live := map[string]bool{v.Self: true}
	for _, w := range v.LiveWorkers {
		live[w] = true
	}
	active := 0
	for _, l := range v.Leases {
		byKey[l.Key] = l
		if !l.Finished() {
			active++
			if l.Owner != "" && !v.Expired[l.Key] {
				live[l.Owner] = true
			}
		}
	}
	counts := effectiveCounts(v, live)
	seen := map[string]bool{}
	for _, l := range slices.Concat(p.Take, p.Steal) {
		if seen[l.Key] {
			t.Errorf("plan lists %s twice", l.Key)
		}
		seen[l.Key] = true
		if !reflect.DeepEqual(l, byKey[l.Key]) {
			t.Errorf("plan lease %s = %+v, differs from the view's %+v", l.Key, l, byKey[l.Key])
		}
		if l.Finished() {
			t.Errorf("plan takes finished lease %s", l.Key)
		}
	}
	for _, l := range p.Take {
		if l.Owner != "" && !v.Expired[l.Key] {
			t.Errorf("Take has %s, validly held by %s", l.Key, l.Owner)
		}
	}
	q := 0
	if active > 0 {
		q = active / len(live)
	}
	for _, l := range p.Steal {
		switch {
		case l.Owner == "" || l.Owner == v.Self || v.Expired[l.Key]:
			t.Errorf("Steal has %s (owner %q, expired %v), not a valid lease of another worker", l.Key, l.Owner, v.Expired[l.Key])
		case l.HandoffTo != "":
			t.Errorf("Steal has %s, already being handed over to %s", l.Key, l.HandoffTo)
		case counts[l.Owner] <= q:
			t.Errorf("Steal from %s holding %d, not above the share %d", l.Owner, counts[l.Owner], q)
		}
	}
	if len(p.Take)+len(p.Steal) > 0 && (p.Target < q || p.Target > q+1) {
		t.Errorf("Target %d, want %d or %d", p.Target, q, q+1)
	}
	if got := counts[v.Self] + len(p.Take) + len(p.Steal); got > max(p.Target, counts[v.Self]) {
		t.Errorf("plan brings self from %d to %d leases, beyond target %d", counts[v.Self], got, p.Target)
	}
}

// effectiveCounts counts the valid active leases of each worker, a lease
// with a hand-over pending to a live worker counting for that worker.
func effectiveCounts(v lease.View, live map[string]bool) map[string]int {
	counts := map[string]int{}
	for _, l := range v.Leases {
		if l.Finished() || l.Owner == "" || v.Expired[l.Key] {
			continue
		}
		if l.HandoffTo != "" && live[l.HandoffTo] {
			counts[l.HandoffTo]++
		} else {
			counts[l.Owner]++
		}
	}
	return counts
}

// fleet is a simulated lease table shared by workers that plan from a
// snapshot and apply their plans with conditional writes, as the manager
// does against a Store. Steals are hand-over requests: the owner hands the
// lease over after a random number of rounds.
type fleet struct {
	leases map[string]lease.Lease
	live   []string // sorted
	isLive map[string]bool
	byLoad bool
	// maxPending caps the hand-overs one worker waits for, as the manager
	// does (0: no cap).
	maxPending int
	// handoffIn counts the rounds before the owner hands a requested lease
	// over.
	handoffIn map[string]int
	// maxDelay is the longest an owner takes to hand a lease over, in rounds.
	maxDelay int
}

// view returns the view of self: every lease of a worker not alive is
// expired.
func (f *fleet) view(self string) lease.View {
	v := lease.View{Self: self, Expired: map[string]bool{}, LiveWorkers: slices.Clone(f.live), ByLoad: f.byLoad}
	for _, k := range slices.Sorted(maps.Keys(f.leases)) {
		l := f.leases[k]
		v.Leases = append(v.Leases, l.Clone())
		if l.Owner != "" && !f.isLive[l.Owner] {
			v.Expired[k] = true
		}
	}
	return v
}

// take emulates Store.Take: it succeeds only if the lease still has the
// owner and counter it was planned with.
func (f *fleet) take(planned lease.Lease, by string) bool {
	cur := f.leases[planned.Key]
	if cur.Owner != planned.Owner || cur.Counter != planned.Counter {
		return false
	}
	cur.Owner = by
	cur.HandoffTo = ""
	cur.Counter++
	f.leases[planned.Key] = cur
	delete(f.handoffIn, cur.Key)
	return true
}

// request emulates Store.RequestHandoff.
func (f *fleet) request(planned lease.Lease, by string, r *rand.Rand) bool {
	cur := f.leases[planned.Key]
	if cur.Owner != planned.Owner || cur.Counter != planned.Counter || cur.HandoffTo != "" {
		return false
	}
	cur.HandoffTo = by
	f.leases[planned.Key] = cur
	f.handoffIn[cur.Key] = r.IntN(f.maxDelay + 1)
	return true
}

// pendingFor counts the hand-overs live owners will make to w.
func (f *fleet) pendingFor(w string) int {
	n := 0
	for _, l := range f.leases {
		if l.HandoffTo == w && f.isLive[l.Owner] {
			n++
		}
	}
	return n
}

// handOver lets live owners hand over the leases whose delay ran out. It
// returns how many changed hands.
func (f *fleet) handOver() int {
	moved := 0
	for _, k := range slices.Sorted(maps.Keys(f.handoffIn)) {
		l := f.leases[k]
		if !f.isLive[l.Owner] || l.HandoffTo == "" {
			continue // a dead owner hands nothing over; the lease expires
		}
		if f.handoffIn[k] > 0 {
			f.handoffIn[k]--
			continue
		}
		l.Owner, l.HandoffTo = l.HandoffTo, ""
		l.Counter++
		f.leases[k] = l
		delete(f.handoffIn, k)
		moved++
	}
	return moved
}

// counts returns the active leases each live worker holds and how many
// active leases are free (unowned or held by a dead worker).
func (f *fleet) counts() (map[string]int, int) {
	c := map[string]int{}
	for _, w := range f.live {
		c[w] = 0
	}
	free := 0
	for _, l := range f.leases {
		switch {
		case l.Finished():
		case f.isLive[l.Owner]:
			c[l.Owner]++
		default:
			free++
		}
	}
	return c, free
}

// settled reports whether every active lease has a live owner, no hand-over
// is pending, and the live workers hold within one lease of each other.
func (f *fleet) settled() bool {
	for _, l := range f.leases {
		if l.HandoffTo != "" && f.isLive[l.Owner] {
			return false
		}
	}
	c, free := f.counts()
	lo, hi := math.MaxInt, 0
	for _, n := range c {
		lo, hi = min(lo, n), max(hi, n)
	}
	return free == 0 && hi-lo <= 1
}

// round lets live owners hand over what they were asked for, then every
// live worker plan from the same snapshot, then applies the plans in a
// random order with conditional writes. It returns the number of leases
// that changed hands.
func (f *fleet) round(t *testing.T, r *rand.Rand) int {
	t.Helper()
	moved := f.handOver()
	plans := map[string]lease.Plan{}
	snapshot := f.view("")
	for _, w := range f.live {
		v := snapshot
		v.Self = w
		p := lease.PlanTakes(v)
		// checkPlan costs more than planning: on large fleets, check the
		// plan of one worker per round.
		if !f.byLoad && (len(f.leases) <= 100 || w == f.live[r.IntN(len(f.live))]) {
			checkPlan(t, v, p)
		}
		plans[w] = p
	}
	order := slices.Clone(f.live)
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	granted := map[string]string{} // lease key -> worker granted or promised it this round
	grant := func(key, w string) {
		// All plans come from one snapshot: a second grant of the same
		// lease would mean two workers own it at once.
		if other, dup := granted[key]; dup {
			t.Fatalf("lease %s granted to %s and %s in one round", key, other, w)
		}
		granted[key] = w
	}
	for _, w := range order {
		p := plans[w]
		for _, l := range p.Take {
			if f.take(l, w) {
				moved++
				grant(l.Key, w)
			}
		}
		pending := f.pendingFor(w)
		for _, l := range p.Steal {
			if f.maxPending > 0 && pending >= f.maxPending {
				break
			}
			if f.request(l, w, r) {
				pending++
				grant(l.Key, w)
			}
		}
	}
	// Every lease has at most one owner, and the counts add up.
	c, free := f.counts()
	held, active := 0, 0
	for _, n := range c {
		held += n
	}
	for _, l := range f.leases {
		if !l.Finished() {
			active++
		}
	}
	if held+free != active {
		t.Fatalf("live workers hold %d and %d are free, but %d leases are active", held, free, active)
	}
	return moved
}

// join adds a live worker.
func (f *fleet) join(w string) {
	f.live = append(f.live, w)
	slices.Sort(f.live)
	f.isLive[w] = true
}

// leave makes w dead: its leases expire.
func (f *fleet) leave(w string) {
	f.live = slices.DeleteFunc(f.live, func(x string) bool { return x == w })
	delete(f.isLive, w)
}

// minMoves is the fewest leases that must change hands to settle the fleet
// from its current state: every free lease, and the excess of every worker
// above the share it can keep, the workers holding most keeping the q+1
// shares. It is computed independently of PlanFleet.
func (f *fleet) minMoves() int {
	c, free := f.counts()
	active := free
	var ns []int
	for _, n := range c {
		ns = append(ns, n)
		active += n
	}
	slices.SortFunc(ns, func(a, b int) int { return b - a })
	q, rem := active/len(ns), active%len(ns)
	moves := free
	for i, n := range ns {
		share := q
		if i < rem {
			share++
		}
		moves += max(0, n-share)
	}
	return moves
}

// quiet reports whether the fleet is settled: by count, see settled; by
// load, nothing is free or being handed over and the plan is empty.
func (f *fleet) quiet() bool {
	if !f.byLoad {
		return f.settled()
	}
	for _, l := range f.leases {
		if l.HandoffTo != "" && f.isLive[l.Owner] {
			return false
		}
	}
	if _, free := f.counts(); free > 0 {
		return false
	}
	return len(lease.PlanFleet(f.view(f.live[0]))) == 0
}

// settle runs rounds until the fleet settles and returns the rounds and
// moves it took, failing after bound rounds.
func (f *fleet) settle(t *testing.T, r *rand.Rand, bound int, what string) (rounds, moved int) {
	t.Helper()
	for !f.quiet() {
		if rounds == bound {
			c, free := f.counts()
			t.Fatalf("%s: not settled after %d rounds: counts %v, %d free", what, rounds, c, free)
		}
		moved += f.round(t, r)
		rounds++
	}
	return rounds, moved
}

// checkStill runs n more rounds on a settled fleet and fails if anything moves.
func (f *fleet) checkStill(t *testing.T, r *rand.Rand, n int, what string) {
	t.Helper()
	before := maps.Clone(f.leases)
	for i := range n {
		if moved := f.round(t, r); moved != 0 {
			t.Fatalf("%s: a settled fleet moved %d leases in round %d", what, moved, i+1)
		}
	}
	if !reflect.DeepEqual(before, f.leases) {
		t.Fatalf("%s: a settled fleet changed the table", what)
	}
}

// randomFleet builds a table of up to 40 leases among up to 6 live and 2
// dead workers, some leases unowned, some finished, some with a hand-over
// pending.
func randomFleet(r *rand.Rand) *fleet {
	f := &fleet{leases: map[string]lease.Lease{}, isLive: map[string]bool{}, handoffIn: map[string]int{}}
	nLive, nDead := 1+r.IntN(6), r.IntN(3)
	var all []string
	for i := range nLive {
		w := fmt.Sprintf("w%d", i)
		f.live = append(f.live, w)
		f.isLive[w] = true
		all = append(all, w)
	}
	for i := range nDead {
		all = append(all, fmt.Sprintf("dead%d", i))
	}
	// Skew: owners are drawn from a prefix of the workers, so some fleets
	// start with everything on one worker.
	skew := 1 + r.IntN(len(all))
	pUnowned := r.Float64()
	for i := range r.IntN(41) {
		l := lease.Lease{Key: fmt.Sprintf("shard-%03d", i), Counter: r.Int64N(100)}
		if r.Float64() >= pUnowned {
			l.Owner = all[r.IntN(skew)]
			if to := all[r.IntN(len(all))]; to != l.Owner && r.IntN(6) == 0 {
				l.HandoffTo = to
				f.handoffIn[l.Key] = r.IntN(3)
			}
		}
		if r.IntN(8) == 0 {
			l.Checkpoint = kcl.ShardEnd
		}
		f.leases[l.Key] = l
	}
	return f
}

// TestPlanTakesFleetProperties simulates fleets from random starting tables
// and checks that they settle within a bounded number of rounds, that no
// lease is granted twice from one view, that a settled fleet stays put over
// many rounds, and that a worker joining or leaving a settled fleet moves
// exactly the fewest leases needed. Hand-overs take 0–2 rounds and a worker
// waits for at most one at a time (the manager's MaxPendingHandoffs at its
// slowest).
func TestPlanTakesFleetProperties(t *testing.T) {
	cases := uint64(400)
	if testing.Short() {
		cases = 100
	}
	worst, worstJoin := 0, 0
	for seed := range cases {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		f := randomFleet(r)
		f.maxPending, f.maxDelay = 1, 2
		// A worker gets its free leases in one round and the leases it asks
		// for one at a time, each within maxDelay+1 rounds; a start with
		// hand-overs to dead workers costs an expiry round more.
		c, free := f.counts()
		active := free
		for _, n := range c {
			active += n
		}
		target := (active + len(f.live) - 1) / len(f.live)
		bound := 3 + (f.maxDelay+1)*(target+1)
		rounds, _ := f.settle(t, r, bound, fmt.Sprintf("seed %d", seed))
		worst = max(worst, rounds)
		f.checkStill(t, r, 20, fmt.Sprintf("seed %d", seed))

		// A worker joins: only the excess of the others moves to it.
		want := 0
		f.join("new")
		want = f.minMoves()
		rounds, moved := f.settle(t, r, bound+(f.maxDelay+1)*target, fmt.Sprintf("seed %d, join", seed))
		worstJoin = max(worstJoin, rounds)
		if moved != want {
			t.Fatalf("seed %d: a worker joining moved %d leases, want the minimum %d", seed, moved, want)
		}
		f.checkStill(t, r, 20, fmt.Sprintf("seed %d, after join", seed))

		// A worker leaves (crashes): only its leases move, and none beyond
		// what evens the fleet.
		if len(f.live) > 1 {
			f.leave(f.live[r.IntN(len(f.live))])
			want = f.minMoves()
			_, moved = f.settle(t, r, bound, fmt.Sprintf("seed %d, leave", seed))
			if moved != want {
				t.Fatalf("seed %d: a worker leaving moved %d leases, want the minimum %d", seed, moved, want)
			}
			f.checkStill(t, r, 20, fmt.Sprintf("seed %d, after leave", seed))
		}
	}
	t.Logf("%d fleets settled in at most %d rounds; a join settled in at most %d", cases, worst, worstJoin)
}

// TestPlanFleetJoinLeaveLarge checks the minimum-move property on a larger
// fleet: 50 workers and 1,000 leases, several joins and leaves in a row.
func TestPlanFleetJoinLeaveLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	f := &fleet{leases: map[string]lease.Lease{}, isLive: map[string]bool{}, handoffIn: map[string]int{}}
	for i := range 50 {
		f.join(fmt.Sprintf("w%02d", i))
	}
	for i := range 1000 {
		f.leases[fmt.Sprintf("shard-%04d", i)] = lease.Lease{Key: fmt.Sprintf("shard-%04d", i)}
	}
	if _, moved := f.settle(t, r, 3, "start"); moved != 1000 {
		t.Fatalf("settling 1,000 free leases moved %d, want 1,000", moved)
	}
	next := 50
	for step := range 12 {
		what := ""
		if step%3 == 2 {
			w := f.live[r.IntN(len(f.live))]
			f.leave(w)
			what = "leave of " + w
		} else {
			w := fmt.Sprintf("w%02d", next)
			next++
			f.join(w)
			what = "join of " + w
		}
		want := f.minMoves()
		// No cap on pending hand-overs: all moves in one or two rounds.
		_, moved := f.settle(t, r, 4, what)
		if moved != want {
			t.Fatalf("%s moved %d leases, want the minimum %d", what, moved, want)
		}
		f.checkStill(t, r, 5, what)
	}
}

// TestPlanFleetMovesOnlyFromAboveShare checks PlanFleet directly on random
// views: every move comes from a free lease or from a worker above its share
// and goes to a worker below it, and a fleet within one lease of even
// (nothing free) gets an empty plan.
func TestPlanFleetMovesOnlyFromAboveShare(t *testing.T) {
	for seed := range uint64(500) {
		f := randomFleet(rand.New(rand.NewPCG(seed, 0xfa)))
		v := f.view(f.live[0])
		moves := lease.PlanFleet(v)
		c, free := f.counts()
		active := free
		for _, n := range c {
			active += n
		}
		q := active / len(f.live)
		c = effectiveCounts(v, f.isLive)
		gets, gives := map[string]int{}, map[string]int{}
		for _, mv := range moves {
			if !f.isLive[mv.To] {
				t.Fatalf("seed %d: moves %s to %s, not live", seed, mv.Lease.Key, mv.To)
			}
			gets[mv.To]++
			if mv.Steal {
				gives[mv.Lease.Owner]++
			}
		}
		for w, n := range gets {
			if gives[w] > 0 {
				t.Errorf("seed %d: %s both gets %d and gives %d", seed, w, n, gives[w])
			}
		}
		for w, n := range gives {
			if c[w]-n < q {
				t.Errorf("seed %d: %s gives %d of its %d, below the share %d", seed, w, n, c[w], q)
			}
		}
		if f.settled() && len(moves) != 0 {
			t.Errorf("seed %d: a settled fleet gets a plan of %d moves", seed, len(moves))
		}
	}
}

// load returns a view of leases with the given throughputs ("" owner for
// free), keyed prefix-NN in order.
func loads(prefix, owner string, tps ...float64) []lease.Lease {
	out := own(prefix, owner, len(tps))
	for i, tp := range tps {
		out[i].Throughput = tp
	}
	return out
}

func TestPlanFleetByLoad(t *testing.T) {
	type move struct{ key, to string }
	tests := []struct {
		name  string
		view  lease.View
		want  []move // in key order
		steal int    // how many of want are steals
	}{
		{
			name: "moves leases until both are in the band",
			view: lease.View{Self: "a", Leases: loads("a", "a", 10, 10, 10, 10), LiveWorkers: []string{"a", "b"}},
			// 40 over 2: a at 40, b at 0; each move of 10 evens best.
			want:  []move{{"a-00", "b"}, {"a-01", "b"}},
			steal: 2,
		},
		{
			name: "inside the band nothing moves",
			view: lease.View{Self: "a", Leases: concat(loads("a", "a", 10, 10, 10), loads("b", "b", 10, 10, 5)),
				LiveWorkers: []string{"a", "b"}},
			// 30 and 25 around a mean of 27.5: within ±20%.
		},
		{
			name: "a lease heavier than the gap does not move",
			view: lease.View{Self: "a", Leases: concat(loads("a", "a", 100), loads("b", "b", 1, 1, 1)),
				LiveWorkers: []string{"a", "b"}},
			// a is far above the band, but moving its only lease would
			// just swap the roles.
		},
		{
			name: "moves the lease that best evens the pair",
			view: lease.View{Self: "b", Leases: concat(loads("a", "a", 40, 25, 5), loads("b", "b", 10)),
				LiveWorkers: []string{"a", "b"}},
			// a 70, b 10: gap 60, the 25 leaves 45/35, the 40 leaves 30/50.
			want:  []move{{"a-01", "b"}},
			steal: 1,
		},
		{
			name: "free leases go heaviest first to the least loaded",
			view: lease.View{Self: "a", Leases: concat(loads("a", "a", 50), loads("u", "", 30, 20, 10)),
				LiveWorkers: []string{"a", "b"}},
			// 30 → b (0), 20 → b (30 < 50), 10 → a (50 = 50, a holds fewer).
			want: []move{{"u-00", "b"}, {"u-01", "b"}, {"u-02", "a"}},
		},
		{
			name: "a lease reporting nothing weighs the mean of the others",
			view: lease.View{Self: "b", Leases: loads("a", "a", 10, 0), LiveWorkers: []string{"a", "b"}},
			// a-01 weighs 10 too: a at 20, b at 0; either lease evens, the
			// smaller key goes.
			want:  []move{{"a-00", "b"}},
			steal: 1,
		},
		{
			name:  "without reports, leases weigh one each",
			view:  lease.View{Self: "b", Leases: own("a", "a", 6), LiveWorkers: []string{"a", "b"}},
			want:  []move{{"a-00", "b"}, {"a-01", "b"}, {"a-02", "b"}},
			steal: 3,
		},
		{
			name: "a lease being handed over counts for the receiver",
			view: lease.View{Self: "b", Leases: concat(loads("a", "a", 10, 10), []lease.Lease{handingOver(loads("h", "a", 20)[0], "b")}),
				LiveWorkers: []string{"a", "b"}},
			// b already gets 20: 20/20.
		},
		{
			name: "a wider tolerance moves less",
			view: lease.View{Self: "a", Leases: concat(loads("a", "a", 10, 10, 10, 10), loads("b", "b", 10, 10)),
				LiveWorkers: []string{"a", "b"}, LoadTolerance: 0.5},
			// 40 and 20 around 30: within ±50%.
		},
		{
			name: "finished leases weigh nothing",
			view: lease.View{Self: "a", Leases: concat(loads("a", "a", 10, 10), finishedLoads("f", "b", 50, 50)),
				LiveWorkers: []string{"a", "b"}},
			want:  []move{{"a-00", "b"}},
			steal: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.view.ByLoad = true
			before := cloneView(tt.view)
			moves := lease.PlanFleet(tt.view)
			if !reflect.DeepEqual(tt.view, before) {
				t.Fatalf("PlanFleet modified its view")
			}
			var got []move
			steals := 0
			for _, mv := range moves {
				got = append(got, move{mv.Lease.Key, mv.To})
				if mv.Steal {
					steals++
				}
			}
			slices.SortFunc(got, func(a, b move) int {
				if a.key < b.key {
					return -1
				}
				return 1
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("moves = %v, want %v", got, tt.want)
			}
			if steals != tt.steal {
				t.Errorf("%d steals, want %d", steals, tt.steal)
			}
			// The plan is a fixed point: carried out, it plans nothing more.
			after := cloneView(tt.view)
			for i, l := range after.Leases {
				for _, mv := range moves {
					if mv.Lease.Key == l.Key {
						after.Leases[i].Owner, after.Leases[i].HandoffTo = mv.To, ""
					}
				}
			}
			if again := lease.PlanFleet(after); len(again) != 0 {
				t.Errorf("after the plan, PlanFleet moves %d more", len(again))
			}
		})
	}
}

func finishedLoads(prefix, owner string, tps ...float64) []lease.Lease {
	out := loads(prefix, owner, tps...)
	for i := range out {
		out[i].Checkpoint = kcl.ShardEnd
	}
	return out
}

// weights computes lease weights as PlanFleet documents them, for checks
// independent of its code.
func weights(f *fleet) map[string]float64 {
	sum, n := 0.0, 0
	for _, l := range f.leases {
		if !l.Finished() && l.Throughput > 0 {
			sum += l.Throughput
			n++
		}
	}
	w := map[string]float64{}
	for k, l := range f.leases {
		switch {
		case l.Finished():
		case n == 0:
			w[k] = 1
		case l.Throughput > 0:
			w[k] = l.Throughput
		default:
			w[k] = sum / float64(n)
		}
	}
	return w
}

// checkLoadSettled checks the contract of a settled load-balanced fleet:
// every worker within the band around the mean, or else no lease of the
// most loaded worker lighter than its gap to the least loaded.
func checkLoadSettled(t *testing.T, f *fleet, tol float64, what string) {
	t.Helper()
	w := weights(f)
	load := map[string]float64{}
	total := 0.0
	for _, x := range f.live {
		load[x] = 0
	}
	for k, l := range f.leases {
		total += w[k]
		if f.isLive[l.Owner] {
			load[l.Owner] += w[k]
		}
	}
	mean := total / float64(len(f.live))
	most, least := f.live[0], f.live[0]
	for _, x := range f.live {
		if load[x] > load[most] {
			most = x
		}
		if load[x] < load[least] {
			least = x
		}
	}
	if load[most] <= mean*(1+tol)+1e-9 && load[least] >= mean*(1-tol)-1e-9 {
		return
	}
	gap := load[most] - load[least]
	for k, l := range f.leases {
		if l.Owner == most && !l.Finished() && w[k] < gap-1e-9 {
			t.Fatalf("%s: settled out of the band (mean %.1f, %s at %.1f, %s at %.1f), yet %s (%.1f) could move",
				what, mean, most, load[most], least, load[least], k, w[k])
		}
	}
}

// TestPlanFleetByLoadProperties simulates load-balanced fleets from random
// tables with random throughputs: they settle within a bounded number of
// rounds into a state that keeps the band contract, stay put once settled,
// settle again after a join and a leave, and do not flap when the measured
// loads wobble by a few percent.
func TestPlanFleetByLoadProperties(t *testing.T) {
	cases := uint64(300)
	if testing.Short() {
		cases = 80
	}
	worst, wobbleMoves := 0, 0
	for seed := range cases {
		r := rand.New(rand.NewPCG(seed, 0x10ad))
		f := randomFleet(r)
		f.byLoad, f.maxPending, f.maxDelay = true, 1, 2
		base := map[string]float64{}
		for _, k := range slices.Sorted(maps.Keys(f.leases)) {
			l := f.leases[k]
			if r.IntN(10) > 0 {
				l.Throughput = math.Round(100*math.Exp(r.NormFloat64())*1000) / 1000
			}
			f.leases[k] = l
			base[k] = l.Throughput
		}
		what := fmt.Sprintf("seed %d", seed)
		bound := 3 + (f.maxDelay+1)*(len(f.leases)+1)
		rounds, _ := f.settle(t, r, bound, what)
		worst = max(worst, rounds)
		checkLoadSettled(t, f, lease.DefaultLoadTolerance, what)
		f.checkStill(t, r, 10, what)

		f.join("new")
		f.settle(t, r, bound, what+", join")
		checkLoadSettled(t, f, lease.DefaultLoadTolerance, what+", join")
		f.checkStill(t, r, 5, what+", join")
		if len(f.live) > 1 {
			f.leave(f.live[r.IntN(len(f.live))])
			f.settle(t, r, bound, what+", leave")
			checkLoadSettled(t, f, lease.DefaultLoadTolerance, what+", leave")
		}

		// Measured loads wobble by ±2% round to round: no lease may move
		// back and forth.
		movedKeys := map[string]int{}
		for range 20 {
			for _, k := range slices.Sorted(maps.Keys(f.leases)) {
				l := f.leases[k]
				l.Throughput = base[k] * (1 + 0.04*(r.Float64()-0.5))
				f.leases[k] = l
			}
			owners := map[string]string{}
			for k, l := range f.leases {
				owners[k] = l.Owner
			}
			f.round(t, r)
			for k, l := range f.leases {
				if l.Owner != owners[k] {
					movedKeys[k]++
					wobbleMoves++
				}
			}
		}
		for k, n := range movedKeys {
			if n > 1 {
				t.Fatalf("%s: %s moved %d times while loads wobbled by 2%%", what, k, n)
			}
		}
	}
	t.Logf("%d load-balanced fleets settled in at most %d rounds; %d moves in all under ±2%% wobble", cases, worst, wobbleMoves)
}
