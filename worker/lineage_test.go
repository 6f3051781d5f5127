package worker

import (
	"fmt"
	"maps"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Synthetic shard graphs. Shard "sN" has hash keys [N*span, (N+1)*span-1]
// of a space cut in `parts` parts unless given explicitly.

func hk(parts, i int) string {
	if i >= parts {
		return hashkey.Max().String()
	}
	return hashkey.Split(parts)[i].Start.String()
}

// node makes a shard covering parts [from, to) of a space cut in parts.
func node(id string, parts, from, to int, closed bool, parents ...string) shardNode {
	end := hashkey.Split(parts)[to-1].End.String()
	return shardNode{ID: id, Parents: parents, Closed: closed, StartingHashKey: hk(parts, from), EndingHashKey: end}
}

func leaseAt(key string, cp kcl.ExtendedSequenceNumber, parents ...string) lease.Lease {
	return lease.Lease{Key: key, Checkpoint: cp, ParentShardIDs: parents}
}

var (
	t0       = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	trim     = kcl.StartAtTrimHorizon()
	latest   = kcl.StartAtLatest()
	finished = kcl.ShardEnd
	midway   = kcl.NewSequence("49600000000000000000000000000000000000000000000000000002")
)

// planned formats a plan as "id@START(parents)" in creation order.
func planned(ls []lease.Lease) string {
	var b []string
	for _, l := range ls {
		s := l.Key + "@" + l.Checkpoint.SequenceNumber
		if len(l.ParentShardIDs) > 0 {
			s += "(" + strings.Join(l.ParentShardIDs, ",") + ")"
		}
		b = append(b, s)
	}
	return strings.Join(b, " ")
}

func TestPlanLeases(t *testing.T) {
	// s0 split into s1 and s2; s1 split into s3 and s4 (2-level chain).
	splitChain := []shardNode{
		node("s0", 4, 0, 4, true),
		node("s1", 4, 0, 2, true, "s0"),
		node("s2", 4, 2, 4, false, "s0"),
		node("s3", 4, 0, 1, false, "s1"),
		node("s4", 4, 1, 2, false, "s1"),
	}
	// s0 and s1 merged into s2.
	merge := []shardNode{
		node("s0", 2, 0, 1, true),
		node("s1", 2, 1, 2, true),
		node("s2", 2, 0, 2, false, "s0", "s1"),
	}
	cases := []struct {
		name    string
		shards  []shardNode
		leases  []lease.Lease
		initial kcl.InitialPosition
		want    string
	}{
		{"fresh, no resharding, trim horizon",
			[]shardNode{node("s0", 2, 0, 1, false), node("s1", 2, 1, 2, false)}, nil, trim,
			"s0@TRIM_HORIZON s1@TRIM_HORIZON"},
		{"fresh, no resharding, latest",
			[]shardNode{node("s0", 2, 0, 1, false), node("s1", 2, 1, 2, false)}, nil, latest,
			"s0@LATEST s1@LATEST"},
		{"fresh split chain, trim horizon: only the oldest ancestor",
			splitChain, nil, trim, "s0@TRIM_HORIZON"},
		{"fresh split chain, latest: only open shards",
			splitChain, nil, latest, "s2@LATEST(s0) s3@LATEST(s1) s4@LATEST(s1)"},
		{"fresh split chain, at timestamp: the oldest ancestor",
			splitChain, nil, kcl.StartAtTimestamp(t0), "s0@AT_TIMESTAMP"},
		{"fresh merge, trim horizon: both parents",
			merge, nil, trim, "s0@TRIM_HORIZON s1@TRIM_HORIZON"},
		{"fresh merge, latest: the child",
			merge, nil, latest, "s2@LATEST(s0,s1)"},
		{"trimmed ancestor: its children are the oldest",
			splitChain[1:], nil, trim, "s1@TRIM_HORIZON(s0) s2@TRIM_HORIZON(s0)"},
		{"merge child whose other parent was trimmed covers that parent's keys",
			merge[1:], nil, trim, "s1@TRIM_HORIZON s2@TRIM_HORIZON(s0,s1)"},
		{"split ended: both children at trim horizon, whatever the initial position",
			splitChain[:3], []lease.Lease{leaseAt("s0", finished)}, latest,
			"s1@TRIM_HORIZON(s0) s2@TRIM_HORIZON(s0)"},
		{"at timestamp: children start at the timestamp (reads the same as trim horizon, minus older records)",
			splitChain[:3], []lease.Lease{leaseAt("s0", finished)}, kcl.StartAtTimestamp(t0),
			"s1@AT_TIMESTAMP(s0) s2@AT_TIMESTAMP(s0)"},
		{"parent still running: children leased, one generation per sync",
			splitChain, []lease.Lease{leaseAt("s0", midway)}, trim,
			"s1@TRIM_HORIZON(s0) s2@TRIM_HORIZON(s0)"},
		{"closed shard behind leased descendants is never leased again",
			splitChain, []lease.Lease{leaseAt("s2", midway, "s0"), leaseAt("s3", midway, "s1"), leaseAt("s4", midway, "s1")}, trim,
			""},
		{"finished leases stay finished",
			merge, []lease.Lease{leaseAt("s0", finished), leaseAt("s1", finished), leaseAt("s2", midway, "s0", "s1")}, trim,
			""},
		{"merge: first parent ended, second not yet leased",
			[]shardNode{
				node("s0", 4, 0, 2, true), node("x", 4, 2, 4, true),
				node("s1", 4, 2, 3, true, "x"), node("s9", 4, 3, 4, false, "x"),
				node("s2", 4, 0, 3, false, "s0", "s1"),
			},
			[]lease.Lease{leaseAt("s0", finished), leaseAt("x", midway)}, trim,
			"s1@TRIM_HORIZON(x) s9@TRIM_HORIZON(x) s2@TRIM_HORIZON(s0,s1)"},
		{"cleaned-up parent: a missing child is repaired",
			splitChain[:3], []lease.Lease{leaseAt("s1", midway, "s0")}, trim,
			"s2@TRIM_HORIZON(s0)"},
		{"latest: a parent closed before the start does not hold a leased lineage back",
			[]shardNode{
				node("a", 2, 0, 1, true), node("b", 2, 1, 2, true),
				node("m", 2, 0, 2, false, "a", "b"),
			},
			[]lease.Lease{leaseAt("a", finished)}, latest,
			"m@TRIM_HORIZON(a,b)"},
		{"trim horizon: a parent not yet read holds the child back",
			[]shardNode{
				node("a", 2, 0, 1, true), node("b", 2, 1, 2, true),
				node("m", 2, 0, 2, false, "a", "b"),
			},
			[]lease.Lease{leaseAt("a", finished)}, trim,
			"b@TRIM_HORIZON m@TRIM_HORIZON(a,b)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			create, gaps := newLineage(c.shards, c.leases).plan(c.initial)
			if got := planned(create); got != c.want {
				t.Errorf("plan:\n got %q\nwant %q", got, c.want)
			}
			if len(gaps) > 0 {
				t.Errorf("gaps left: %v", gaps)
			}
			// The plan is complete: planning again on the result creates
			// nothing in the same generation.
			again := newLineage(c.shards, append(slices.Clone(c.leases), create...))
			for _, l := range create {
				if _, ok := again.candidate(l.Key, c.initial, true); ok {
					t.Errorf("%s would be created twice", l.Key)
				}
			}
		})
	}
}

func TestPlanRecordsHashRangesAndTimestamp(t *testing.T) {
	shards := []shardNode{node("s0", 2, 0, 1, false), node("s1", 2, 1, 2, false)}
	create, _ := newLineage(shards, nil).plan(trim)
	if len(create) != 2 {
		t.Fatalf("plan %s", planned(create))
	}
	for i, l := range create {
		if l.StartingHashKey != shards[i].StartingHashKey || l.EndingHashKey != shards[i].EndingHashKey {
			t.Errorf("%s: hash range %s..%s, want %s..%s", l.Key, l.StartingHashKey, l.EndingHashKey,
				shards[i].StartingHashKey, shards[i].EndingHashKey)
		}
	}
}

func TestGaps(t *testing.T) {
	shards := []shardNode{node("s0", 4, 0, 1, false), node("s1", 4, 1, 2, false), node("s3", 4, 3, 4, false)}
	g := newLineage(shards, []lease.Lease{leaseAt("s0", midway), leaseAt("s3", finished)})
	gaps := g.gaps()
	if len(gaps) != 1 {
		t.Fatalf("gaps %v, want one from s1's start to the end", gaps)
	}
	if gaps[0].Start.String() != hk(4, 1) || gaps[0].End != hashkey.Max() {
		t.Errorf("gap %v, want %s..max", gaps[0], hk(4, 1))
	}
	// An unlisted shard without a lease leaves its range uncovered, and
	// nothing in the listing can fill it: plan reports it.
	create, left := newLineage(shards, []lease.Lease{leaseAt("s0", midway), leaseAt("s1", midway), leaseAt("s3", midway)}).plan(trim)
	if len(create) != 0 || len(left) != 1 || left[0].Start.String() != hk(4, 2) {
		t.Errorf("plan created %q, left gaps %v; want nothing and the gap of the missing s2", planned(create), left)
	}
	if got := hashkey.Uncovered(nil); len(got) != 1 || got[0].Start != (hashkey.Key{}) || got[0].End != hashkey.Max() {
		t.Errorf("Uncovered(nil) = %v, want the whole space", got)
	}
}

func TestPendingParent(t *testing.T) {
	table := map[string]lease.Lease{
		"done":    leaseAt("done", finished),
		"running": leaseAt("running", midway),
		"new":     leaseAt("new", kcl.TrimHorizon),
	}
	get := func(k string) (lease.Lease, error) {
		if k == "broken" {
			return lease.Lease{}, fmt.Errorf("throttled")
		}
		l, ok := table[k]
		if !ok {
			return lease.Lease{}, fmt.Errorf("get %s: %w", k, lease.ErrNotFound)
		}
		return l, nil
	}
	cases := []struct {
		parents []string
		want    string
		err     bool
	}{
		{nil, "", false},
		{[]string{"done"}, "", false},
		{[]string{"gone"}, "", false},
		{[]string{"done", "gone"}, "", false},
		{[]string{"done", "running"}, "running", false},
		{[]string{"new", "done"}, "new", false},
		{[]string{"done", "broken"}, "broken", true},
	}
	for _, c := range cases {
		got, err := pendingParent(c.parents, get)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("pendingParent(%v) = %q, %v; want %q, error %v", c.parents, got, err, c.want, c.err)
		}
	}
}

func TestCleanable(t *testing.T) {
	split := []shardNode{
		node("s0", 2, 0, 2, true),
		node("s1", 2, 0, 1, false, "s0"),
		node("s2", 2, 1, 2, false, "s0"),
	}
	withChildren := func(l lease.Lease, kids ...string) lease.Lease { l.ChildShardIDs = kids; return l }
	cases := []struct {
		name   string
		shards []shardNode
		leases []lease.Lease
		want   string // key:gone|listed
	}{
		{"children not started", split,
			[]lease.Lease{leaseAt("s0", finished), leaseAt("s1", kcl.TrimHorizon, "s0"), leaseAt("s2", midway, "s0")}, ""},
		{"children progressed, shard listed", split,
			[]lease.Lease{leaseAt("s0", finished), leaseAt("s1", midway, "s0"), leaseAt("s2", finished, "s0")}, "s0:listed"},
		{"children progressed, shard gone", split[1:],
			[]lease.Lease{withChildren(leaseAt("s0", finished), "s1", "s2"), leaseAt("s1", midway, "s0"), leaseAt("s2", midway, "s0")}, "s0:gone"},
		{"a child lease missing (not created yet)", split,
			[]lease.Lease{leaseAt("s0", finished), leaseAt("s1", midway, "s0")}, ""},
		{"unfinished lease", split,
			[]lease.Lease{leaseAt("s0", midway), leaseAt("s1", midway, "s0"), leaseAt("s2", midway, "s0")}, ""},
		{"finished, no known child, still listed", split[:1],
			[]lease.Lease{leaseAt("s0", finished)}, ""},
		{"finished, no known child, gone", nil,
			[]lease.Lease{leaseAt("s0", finished)}, "s0:gone"},
		{"child cleaned up itself: its leased descendants stand for it",
			append(slices.Clone(split), node("s3", 4, 0, 1, false, "s1"), node("s4", 4, 1, 2, false, "s1")),
			[]lease.Lease{leaseAt("s0", finished), leaseAt("s2", midway, "s0"), leaseAt("s3", midway, "s1"), leaseAt("s4", kcl.TrimHorizon, "s1")},
			"s0:listed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, cc := range newLineage(c.shards, c.leases).cleanable() {
				where := "listed"
				if cc.Gone {
					where = "gone"
				}
				got = append(got, cc.Lease.Key+":"+where)
			}
			if g := strings.Join(got, " "); g != c.want {
				t.Errorf("cleanable %q, want %q", g, c.want)
			}
		})
	}
}

// --- Property test: a fleet simulated on random shard graphs. ---

// simShard is a shard of a simulated stream.
type simShard struct {
	node    shardNode
	trimmed bool
	born    int // step of creation
}

// simStream is a stream resharded at random.
type simStream struct {
	shards map[string]*simShard
	order  []string
	next   int
}

func newSimStream(rng *rand.Rand, n int) *simStream {
	s := &simStream{shards: map[string]*simShard{}}
	for _, r := range hashkey.Split(n) {
		s.add(0, r.Start.String(), r.End.String())
	}
	return s
}

func (s *simStream) add(step int, start, end string, parents ...string) string {
	id := fmt.Sprintf("shardId-%012d", s.next)
	s.next++
	s.shards[id] = &simShard{node: shardNode{ID: id, Parents: parents, StartingHashKey: start, EndingHashKey: end}, born: step}
	s.order = append(s.order, id)
	return id
}

func (s *simStream) open() []*simShard {
	var out []*simShard
	for _, id := range s.order {
		if sh := s.shards[id]; !sh.node.Closed {
			out = append(out, sh)
		}
	}
	slices.SortFunc(out, func(a, b *simShard) int {
		x, _ := hashkey.Parse(a.node.StartingHashKey)
		y, _ := hashkey.Parse(b.node.StartingHashKey)
		return x.Compare(y)
	})
	return out
}

// reshard splits a random open shard or merges two adjacent ones.
func (s *simStream) reshard(rng *rand.Rand, step int) {
	open := s.open()
	if len(open) >= 2 && (len(open) > 4 || rng.IntN(2) == 0) {
		i := rng.IntN(len(open) - 1)
		a, b := open[i], open[i+1]
		a.node.Closed, b.node.Closed = true, true
		s.add(step, a.node.StartingHashKey, b.node.EndingHashKey, a.node.ID, b.node.ID)
		return
	}
	a := open[rng.IntN(len(open))]
	start, _ := new(big.Int).SetString(a.node.StartingHashKey, 10)
	end, _ := new(big.Int).SetString(a.node.EndingHashKey, 10)
	if new(big.Int).Sub(end, start).Cmp(big.NewInt(4)) < 0 {
		return
	}
	width := new(big.Int).Sub(end, start)
	mid := new(big.Int).Add(start, width.Mul(width, big.NewInt(int64(1+rng.IntN(999)))).Div(width, big.NewInt(1000)))
	if mid.Cmp(start) == 0 {
		mid.Add(mid, big.NewInt(1))
	}
	a.node.Closed = true
	s.add(step, start.String(), new(big.Int).Sub(mid, big.NewInt(1)).String(), a.node.ID)
	s.add(step, mid.String(), end.String(), a.node.ID)
}

// trim drops a random closed shard whose parents are all trimmed already
// (retention removes the oldest shards first).
func (s *simStream) trim(rng *rand.Rand) bool {
	var can []*simShard
	for _, id := range s.order {
		sh := s.shards[id]
		if sh.trimmed || !sh.node.Closed {
			continue
		}
		if !slices.ContainsFunc(sh.node.Parents, func(p string) bool { return !s.shards[p].trimmed }) {
			can = append(can, sh)
		}
	}
	if len(can) == 0 {
		return false
	}
	can[rng.IntN(len(can))].trimmed = true
	return true
}

func (s *simStream) listing() []shardNode {
	var out []shardNode
	for _, id := range s.order {
		if sh := s.shards[id]; !sh.trimmed {
			n := sh.node
			n.Parents = slices.Clone(n.Parents)
			out = append(out, n)
		}
	}
	return out
}

// simFleet applies the worker's rules to a lease table kept in memory.
type simFleet struct {
	t        *testing.T
	seed     uint64
	stream   *simStream
	initial  kcl.InitialPosition
	leases   map[string]lease.Lease
	clock    int // event counter
	started  map[string]int
	finished map[string]int
	ended    map[string]bool // ever finished
	errs     []string
}

func (f *simFleet) fail(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *simFleet) table() []lease.Lease {
	return slices.Collect(maps.Values(f.leases))
}

// sync is a shard sync (also run at a shard end to create the children).
func (f *simFleet) sync() {
	create, _ := newLineage(f.stream.listing(), f.table()).plan(f.initial)
	for _, l := range create {
		if _, ok := f.leases[l.Key]; ok {
			f.fail("lease %s planned although it exists", l.Key)
			continue
		}
		if f.ended[l.Key] {
			f.fail("lease %s created again after its shard was finished", l.Key)
		}
		f.leases[l.Key] = l
	}
}

// process advances one lease: it starts it (if its parents allow) and
// finishes it when its shard is closed or gone. crash skips creating the
// children at the shard's end.
func (f *simFleet) process(key string, finish, crash bool) {
	l := f.leases[key]
	if l.Finished() {
		return
	}
	pending, _ := pendingParent(l.ParentShardIDs, func(k string) (lease.Lease, error) {
		pl, ok := f.leases[k]
		if !ok {
			return lease.Lease{}, lease.ErrNotFound
		}
		return pl, nil
	})
	if pending != "" {
		return
	}
	f.clock++
	if _, ok := f.started[key]; !ok {
		f.started[key] = f.clock
	}
	sh := f.stream.shards[key]
	if !finish || (sh != nil && !sh.node.Closed && !sh.trimmed) {
		return
	}
	f.clock++
	l.Checkpoint = kcl.ShardEnd
	l.ChildShardIDs = childrenInListing(f.stream.listing(), key)
	f.leases[key] = l
	f.finished[key] = f.clock
	f.ended[key] = true
	if !crash {
		f.sync()
	}
}

func (f *simFleet) cleanup(rng *rand.Rand) {
	for _, c := range newLineage(f.stream.listing(), f.table()).cleanable() {
		if c.Gone || rng.IntN(3) == 0 { // listed: retention passed, sometimes
			delete(f.leases, c.Lease.Key)
		}
	}
}

// check verifies parent-before-child over the whole history.
func (f *simFleet) check() {
	for id, at := range f.started {
		sh := f.stream.shards[id]
		for _, p := range sh.node.Parents {
			if ps, ok := f.started[p]; ok {
				pf, done := f.finished[p]
				if !done || pf > at {
					f.fail("%s started at %d before its parent %s (started %d) finished (at %d, finished=%v)", id, at, p, ps, pf, done)
				}
			}
		}
	}
}

func TestPropertyParentsFinishBeforeChildren(t *testing.T) {
	runs := 600
	if testing.Short() {
		runs = 200
	}
	for seed := range uint64(runs) {
		rng := rand.New(rand.NewPCG(seed, 42))
		initial := []kcl.InitialPosition{trim, latest, kcl.StartAtTimestamp(t0)}[rng.IntN(3)]
		trimming := rng.IntN(3) == 0
		stream := newSimStream(rng, 1+rng.IntN(3))
		// History before the application starts.
		for range rng.IntN(5) {
			stream.reshard(rng, 0)
			if trimming && rng.IntN(2) == 0 {
				stream.trim(rng)
			}
		}
		before := map[string]bool{} // shards closed before the start
		for id, sh := range stream.shards {
			before[id] = sh.node.Closed
		}
		f := &simFleet{t: t, seed: seed, stream: stream, initial: initial, leases: map[string]lease.Lease{},
			started: map[string]int{}, finished: map[string]int{}, ended: map[string]bool{}}
		f.sync() // the first worker starts
		reshards := rng.IntN(8)
		for step := 1; step < 150; step++ {
			switch r := rng.IntN(12); {
			case r == 0:
				f.sync()
			case r == 1 && reshards > 0:
				reshards--
				stream.reshard(rng, step)
			case r == 2 && trimming:
				stream.trim(rng)
			case r == 3:
				f.cleanup(rng)
			default:
				keys := slices.Sorted(maps.Keys(f.leases))
				if len(keys) > 0 {
					f.process(keys[rng.IntN(len(keys))], rng.IntN(2) == 0, rng.IntN(5) == 0)
				}
			}
		}
		// Quiesce: no more resharding; syncs and processing until nothing
		// moves.
		for range 100 {
			clock, n := f.clock, len(f.leases)
			f.sync()
			for _, k := range slices.Sorted(maps.Keys(f.leases)) {
				f.process(k, true, false)
			}
			f.cleanup(rng)
			if f.clock == clock && len(f.leases) == n {
				break
			}
		}
		f.check()

		// Liveness: every open shard is being processed; the leases cover
		// the whole hash key space.
		g := newLineage(stream.listing(), f.table())
		if gaps := g.gaps(); len(gaps) > 0 {
			f.fail("gaps at rest: %v", gaps)
		}
		for _, sh := range stream.open() {
			if _, ok := f.started[sh.node.ID]; !ok {
				f.fail("open shard %s never processed", sh.node.ID)
			}
		}
		if !trimming {
			for _, id := range stream.order {
				_, started := f.started[id]
				sh := stream.shards[id]
				switch {
				case initial == latest && before[id] && started:
					f.fail("latest: %s, closed before the start, was read", id)
				case (initial != latest || !before[id]) && !started:
					f.fail("%s (closed before start: %v) never read with initial position %v", id, before[id], initial)
				case sh.node.Closed && started && !f.ended[id]:
					f.fail("closed shard %s never reached SHARD_END", id)
				}
			}
		}
		if len(f.errs) > 0 {
			t.Fatalf("seed %d (initial %v, trimming %v, %d shards):\n%s\nleases: %s", seed, initial, trimming,
				len(stream.order), strings.Join(f.errs, "\n"), describeSim(f))
		}
	}
}

func describeSim(f *simFleet) string {
	var b strings.Builder
	for _, id := range f.stream.order {
		sh := f.stream.shards[id]
		l, ok := f.leases[id]
		fmt.Fprintf(&b, "\n  %s parents=%v closed=%v trimmed=%v lease=%v cp=%s started=%d finished=%d",
			id, sh.node.Parents, sh.node.Closed, sh.trimmed, ok, l.Checkpoint, f.started[id], f.finished[id])
	}
	return b.String()
}
