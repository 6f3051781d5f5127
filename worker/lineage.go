package worker

import (
	"cmp"
	"errors"
	"slices"
	"sync"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Resharding (SplitShard, MergeShards, UpdateShardCount, on-demand scaling)
// turns a stream's shards into a graph: a closed shard continues in two
// children (split) or, together with an adjacent shard, in one (merge). The
// records of one partition key stay in order only if every parent is read to
// its end before any of its children is read.
//
// This file decides, as pure functions of the stream's shard listing and the
// lease table, which leases to create, which parent a child still waits for,
// and which finished leases may be deleted. The rules:
//
//   - A lease is created only when each parent of its shard has a lease, or
//     never will have one again: the parent is gone from the stream
//     (trimmed), lies before the initial position, or was finished and its
//     lease cleaned up (it then has leased descendants). So a parent lease
//     that does not exist never holds a child back.
//   - A child is processed only once every parent lease that exists is at
//     SHARD_END ([pendingParent]).
//   - A shard that has a leased descendant is never leased again: a closed
//     shard whose lease was cleaned up is not re-read forever.
//   - Children start at TRIM_HORIZON (AT_TIMESTAMP when the application
//     starts at a timestamp: that reads the same records, minus those before
//     the timestamp), so nothing between a parent's end and a child's start
//     is missed.
//   - On a fresh table, TRIM_HORIZON and AT_TIMESTAMP lease the oldest
//     shards the stream retains (every retained record must be read, in
//     lineage order); LATEST leases only open shards (records of closed
//     shards are all older than LATEST).
//   - One generation per sync: a shard whose parent got its lease in the
//     same sync waits for the next sync or its parent's end, unless it is
//     needed to cover a hash-key range that no unfinished lease covers (a
//     merge child whose other parent is gone is the earliest unfinished
//     shard for that parent's keys).

// shardNode is one shard as the stream lists it.
type shardNode struct {
	ID string
	// Parents are the ParentShardId and AdjacentParentShardId, when set.
	Parents []string
	// Closed is set when the shard has an ending sequence number. (The value
	// itself is never compared: kinesis-mock reports a fake one.)
	Closed bool
	// StartingHashKey and EndingHashKey bound the shard's hash keys
	// (decimal).
	StartingHashKey, EndingHashKey string
}

// parseRange reads a hash key range; ok is false for a malformed one.
func parseRange(start, end string) (r hashkey.Range, ok bool) {
	r, err := hashkey.ParseRange(start, end)
	return r, err == nil
}

// lineage is the shard graph known from one listing of the stream and one
// read of the lease table.
type lineage struct {
	shards   map[string]shardNode
	leases   map[string]lease.Lease
	planned  map[string]bool // leases created by the plan being made
	children map[string][]string
	order    []string        // listed shard IDs, parents before children
	below    map[string]bool // memo of leasedBelow
	belowOld map[string]bool // memo of leasedBelowBefore
	above    map[string]bool // memo of leasedAbove
}

func newLineage(shards []shardNode, leases []lease.Lease) *lineage {
	g := &lineage{
		shards:   make(map[string]shardNode, len(shards)),
		leases:   make(map[string]lease.Lease, len(leases)),
		planned:  map[string]bool{},
		children: map[string][]string{},
	}
	for _, s := range shards {
		g.shards[s.ID] = s
	}
	for _, l := range leases {
		g.leases[l.Key] = l
	}
	addChild := func(parent, child string) {
		if parent != "" && child != "" && parent != child && !slices.Contains(g.children[parent], child) {
			g.children[parent] = append(g.children[parent], child)
		}
	}
	for _, s := range shards {
		for _, p := range s.Parents {
			addChild(p, s.ID)
		}
	}
	for _, l := range leases {
		for _, c := range l.ChildShardIDs {
			addChild(l.Key, c)
		}
		for _, p := range l.ParentShardIDs {
			addChild(p, l.Key)
		}
	}
	for _, c := range g.children {
		slices.Sort(c)
	}
	g.order = g.topoOrder()
	g.reset()
	return g
}

// topoOrder sorts the listed shards parents first (ties by ID, which Kinesis
// assigns in creation order). A malformed graph with a cycle still yields
// every shard once.
func (g *lineage) topoOrder() []string {
	ids := make([]string, 0, len(g.shards))
	for id := range g.shards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	state := map[string]int{} // 1 visiting, 2 done
	out := make([]string, 0, len(ids))
	var visit func(id string)
	visit = func(id string) {
		if state[id] != 0 {
			return
		}
		state[id] = 1
		ps := slices.Clone(g.shards[id].Parents)
		slices.Sort(ps)
		for _, p := range ps {
			if _, ok := g.shards[p]; ok {
				visit(p)
			}
		}
		state[id] = 2
		out = append(out, id)
	}
	for _, id := range ids {
		visit(id)
	}
	return out
}

func (g *lineage) reset() {
	g.below = map[string]bool{}
	g.belowOld = map[string]bool{}
	g.above = map[string]bool{}
}

func (g *lineage) listed(id string) bool { _, ok := g.shards[id]; return ok }
func (g *lineage) leased(id string) bool { _, ok := g.leases[id]; return ok }

// parents returns a shard's parents, from the listing or else its lease.
func (g *lineage) parents(id string) []string {
	if s, ok := g.shards[id]; ok {
		return s.Parents
	}
	return g.leases[id].ParentShardIDs
}

func (g *lineage) childrenOf(id string) []string { return g.children[id] }

// leasedBelow reports whether a strict descendant of id has a lease,
// counting those this plan creates.
func (g *lineage) leasedBelow(id string) bool {
	return g.search(id, g.below, g.childrenOf, g.leased)
}

// leasedBelowBefore reports whether a strict descendant of id had a lease
// before this plan: then id itself was finished and its lease cleaned up.
// (A lease this plan creates for a sibling says nothing about id.)
func (g *lineage) leasedBelowBefore(id string) bool {
	return g.search(id, g.belowOld, g.childrenOf, func(id string) bool { return g.leased(id) && !g.planned[id] })
}

// leasedAbove reports whether a strict ancestor of id has a lease.
func (g *lineage) leasedAbove(id string) bool {
	return g.search(id, g.above, g.parents, g.leased)
}

// search reports whether a node reachable from id through next (id itself
// excluded) satisfies is, memoizing in memo.
func (g *lineage) search(id string, memo map[string]bool, next func(string) []string, is func(string) bool) bool {
	if v, ok := memo[id]; ok {
		return v
	}
	memo[id] = false // cycle guard
	found := false
	for _, n := range next(id) {
		if is(n) || g.search(n, memo, next, is) {
			found = true
			break
		}
	}
	memo[id] = found
	return found
}

// rangeOf returns a shard's hash key range, from the listing or else its
// lease.
func (g *lineage) rangeOf(id string) (hashkey.Range, bool) {
	if s, ok := g.shards[id]; ok {
		if r, ok := parseRange(s.StartingHashKey, s.EndingHashKey); ok {
			return r, true
		}
	}
	if l, ok := g.leases[id]; ok {
		return parseRange(l.StartingHashKey, l.EndingHashKey)
	}
	return hashkey.Range{}, false
}

// childStart is where a child lease starts: TRIM_HORIZON, or AT_TIMESTAMP
// for an application that starts at a timestamp.
func childStart(initial kcl.InitialPosition) kcl.ExtendedSequenceNumber {
	if initial.Sequence() == kcl.AtTimestamp {
		return kcl.AtTimestamp
	}
	return kcl.TrimHorizon
}

// candidate returns the lease to create for shard id, if one is due. With
// anyGeneration, parents whose leases this plan creates count as leased.
func (g *lineage) candidate(id string, initial kcl.InitialPosition, anyGeneration bool) (lease.Lease, bool) {
	n := g.shards[id]
	if g.leased(id) || g.leasedBelow(id) {
		return lease.Lease{}, false
	}
	continues := false // some parent is (or was) leased: id continues it
	for _, p := range n.Parents {
		switch {
		case g.leased(p):
			if g.planned[p] && !anyGeneration {
				return lease.Lease{}, false
			}
			continues = true
		case !g.listed(p):
			// Gone from the stream (trimmed): nothing left to read.
		case g.leasedBelowBefore(p):
			continues = true // finished, and its lease cleaned up
		case initial == kcl.StartAtLatest() && !g.leasedAbove(p):
			// Closed before the application started at LATEST: never read.
		default:
			return lease.Lease{}, false // the parent must be leased and read first
		}
	}
	l := lease.Lease{
		Key:             id,
		ParentShardIDs:  slices.Clone(n.Parents),
		StartingHashKey: n.StartingHashKey,
		EndingHashKey:   n.EndingHashKey,
	}
	switch {
	case continues:
		l.Checkpoint = childStart(initial)
	case initial == kcl.StartAtLatest() && n.Closed:
		return lease.Lease{}, false // nothing of it lies after LATEST
	default:
		l.Checkpoint = initial.Sequence()
	}
	return l, true
}

func (g *lineage) add(l lease.Lease) {
	g.leases[l.Key] = l
	g.planned[l.Key] = true
	g.reset()
}

// plan returns the leases to create, parents before children, and the
// hash-key ranges that no unfinished lease covers even with them.
//
// First pass: every shard whose parents all have leases (or never will)
// gets one. Second pass, the repair: while some hash-key range is covered by
// no unfinished lease, the listed shards overlapping it get leases under the
// same rules, counting the leases of this plan as existing.
func (g *lineage) plan(initial kcl.InitialPosition) (create []lease.Lease, gaps []hashkey.Range) {
	for _, id := range g.order {
		if l, ok := g.candidate(id, initial, false); ok {
			g.add(l)
			create = append(create, l)
		}
	}
	for {
		gaps = g.gaps()
		if len(gaps) == 0 {
			return create, nil
		}
		added := false
		for _, id := range g.order {
			r, ok := g.rangeOf(id)
			if !ok || !slices.ContainsFunc(gaps, r.Overlaps) {
				continue
			}
			if l, ok := g.candidate(id, initial, true); ok {
				g.add(l)
				create = append(create, l)
				added = true
			}
		}
		if !added {
			return create, gaps
		}
	}
}

// gaps returns the hash-key ranges that no unfinished lease covers, in
// order. Leases without a known range are ignored. With no unfinished lease
// at all (nothing to cover yet, or a stream that has none), the whole space
// is one gap.
func (g *lineage) gaps() []hashkey.Range {
	var rs []hashkey.Range
	for key, l := range g.leases {
		if l.Finished() {
			continue
		}
		if r, ok := g.rangeOf(key); ok {
			rs = append(rs, r)
		}
	}
	return hashkey.Uncovered(rs)
}

// cleanupCandidate is a finished lease whose children have all progressed
// past their start.
type cleanupCandidate struct {
	Lease lease.Lease
	// Gone is set when the stream no longer lists the shard: the lease may be
	// deleted now. Otherwise the shard may still hold records and the lease
	// is kept until the stream's retention period has passed.
	Gone bool
}

// progressed reports whether a checkpoint has moved past a lease's start.
func progressed(cp kcl.ExtendedSequenceNumber) bool {
	return cp.IsShardEnd() || (!cp.IsZero() && !cp.IsSentinel())
}

// cleanable returns the finished leases whose children (recorded on the
// lease or listed by the stream) have all progressed past their start: a
// child's lease has a record checkpoint or SHARD_END, or the child has no
// lease because its own lease was cleaned up (it has leased descendants) or
// because it is gone together with its parent. A finished lease with no
// known child qualifies only once its shard is gone.
func (g *lineage) cleanable() []cleanupCandidate {
	var out []cleanupCandidate
	for key, l := range g.leases {
		if !l.Finished() || g.planned[key] {
			continue
		}
		gone := !g.listed(key)
		kids := g.children[key]
		if len(kids) == 0 && !gone {
			continue
		}
		ok := true
		for _, c := range kids {
			if cl, has := g.leases[c]; has {
				ok = progressed(cl.Checkpoint) && !g.planned[c]
			} else {
				ok = g.leasedBelow(c) || (gone && !g.listed(c))
			}
			if !ok {
				break
			}
		}
		if ok {
			out = append(out, cleanupCandidate{Lease: l, Gone: gone})
		}
	}
	slices.SortFunc(out, func(a, b cleanupCandidate) int { return cmp.Compare(a.Lease.Key, b.Lease.Key) })
	return out
}

// pendingParent returns the first parent whose lease exists and has not
// reached SHARD_END, or "" when the child may start. A parent without a
// lease does not hold the child back: leases are only created for children
// whose parents are leased or will never be read again (see the rules
// above). get returns an error matching lease.ErrNotFound for a missing
// lease; any other error is returned.
func pendingParent(parents []string, get func(key string) (lease.Lease, error)) (string, error) {
	for _, p := range parents {
		l, err := get(p)
		if errors.Is(err, lease.ErrNotFound) {
			continue
		}
		if err != nil {
			return p, err
		}
		if !l.Finished() {
			return p, nil
		}
	}
	return "", nil
}

// children returns the children of shard id known from the listing.
func childrenInListing(shards []shardNode, id string) []string {
	var out []string
	for _, s := range shards {
		if slices.Contains(s.Parents, id) {
			out = append(out, s.ID)
		}
	}
	return out
}

// endSignal lets consumers of this worker wake up when a shard ends in it: a
// child waiting for that parent then checks at once instead of at its next
// periodic check. The zero value is ready to use.
type endSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next notify. Take it before checking
// the condition, so that no notification is missed.
func (e *endSignal) wait() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch == nil {
		e.ch = make(chan struct{})
	}
	return e.ch
}

// notify wakes every waiter.
func (e *endSignal) notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ch != nil {
		close(e.ch)
		e.ch = nil
	}
}
