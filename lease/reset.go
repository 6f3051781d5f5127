package lease

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// maxClockSkew is how far in the future a reset time may lie (the time may
// come from another machine's clock). A later time would make the shards
// read nothing until then; Kinesis itself refuses future timestamps.
const maxClockSkew = time.Minute

// ResetRequest asks for a replay: the checkpoints of some or all shards of
// an application move to Position, or to just before Sequence.
//
// Which leases are reset: the shards named in Shards (all leases when it is
// empty) and their descendants (the shards that continue them after a split
// or merge), so that the replay goes on past a resharding. A timestamp also
// takes in the ancestors of the named shards, since one of them may have
// been open at that time. Every shard of a timestamp replay restarts
// AT_TIMESTAMP: a shard created after the timestamp then reads from its
// start, one closed before it reads nothing and ends at once, so no
// creation time is needed to choose. Descendants of a sequence-number
// replay restart at TRIM_HORIZON, other descendants at the same position.
// Children wait for their parents to finish again, as always.
type ResetRequest struct {
	// Stream selects one stream's leases in the table of a multi-stream
	// application (lease keys ACCOUNT:STREAM:EPOCH:SHARD): its identifier
	// ACCOUNT:STREAM:EPOCH, or its name when one identifier of the table has
	// it. Shards then names shard IDs, and leases of other streams are left
	// alone. Required when the table holds multi-stream leases; ignored when
	// it holds none.
	Stream string
	// Shards names the shards to reset; empty means every lease of the table
	// (of the Stream). A Sequence needs exactly one shard.
	Shards []string
	// Position is where the shards restart: TRIM_HORIZON, LATEST (the zero
	// value, which skips every record written so far) or a timestamp no
	// more than a minute in the future. It is ignored when Sequence is set.
	Position kcl.InitialPosition
	// Sequence, when not zero, is the first record to deliver again (such
	// as kcl.NewSequence("4959...") or Record.Position()): the stored
	// checkpoint becomes the position just before it
	// ([kcl.ExtendedSequenceNumber.Before]).
	Sequence kcl.ExtendedSequenceNumber
	// StreamShards lists the IDs of the shards the stream has now, open and
	// closed (from ListShards). When it is set, leases of shards missing from
	// it (trimmed by retention: reading them would fail) are left alone, and
	// finished leases may be reopened. When it is nil, finished leases
	// (SHARD_END) are reopened only when named in Shards.
	StreamShards []string
	// DryRun plans the reset without writing anything.
	DryRun bool
}

// validate reports a target that cannot be used, such as a time more than a
// minute in the future; the error matches kcl.ErrInvalidCheckpoint.
func (r ResetRequest) validate() error {
	if !r.Sequence.IsZero() {
		if r.Sequence.IsSentinel() || r.Sequence.Validate() != nil || r.Sequence.SubSequenceNumber < 0 {
			return fmt.Errorf("%w: reset: %q is not a record's sequence number", kcl.ErrInvalidCheckpoint, r.Sequence.String())
		}
		return nil
	}
	if err := r.Position.Validate(); err != nil {
		return fmt.Errorf("%w: reset: %w", kcl.ErrInvalidCheckpoint, err)
	}
	if at := r.Position.Timestamp(); at.After(time.Now().Add(maxClockSkew)) {
		return fmt.Errorf("%w: reset: %s is in the future; a replay starts at a past time",
			kcl.ErrInvalidCheckpoint, at.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkpoint returns the checkpoint and timestamp that make a shard start
// where r asks.
func (r ResetRequest) checkpoint() (kcl.ExtendedSequenceNumber, time.Time) {
	if !r.Sequence.IsZero() {
		return r.Sequence.Before(), time.Time{}
	}
	return r.Position.Sequence(), r.Position.Timestamp()
}

// ResetChange is the reset of one lease.
type ResetChange struct {
	// Shard is the lease key.
	Shard string
	// Why says why the shard is part of the reset ("selected", "ancestor
	// of ...", "descendant of ...").
	Why string
	// Before is the lease as read before the write (re-read after a
	// conflict).
	Before Lease
	// Checkpoint is the new checkpoint; CheckpointTimestamp goes with an
	// AT_TIMESTAMP checkpoint.
	Checkpoint          kcl.ExtendedSequenceNumber
	CheckpointTimestamp time.Time
	// Applied reports that the change was written: the lease then has the
	// new checkpoint, no owner, and the counter Before.Counter+1.
	Applied bool
}

// ResetPlan is what a reset changes (or, in a dry run, would change).
type ResetPlan struct {
	// Changes are in the order they are written: ancestors before
	// descendants, so that a child never restarts while its parent still
	// looks finished.
	Changes []ResetChange
	// Skipped are the leases of the lineage left alone: lease key ->
	// reason.
	Skipped map[string]string
}

// maxResetAttempts bounds the re-reads of one lease whose counter keeps
// moving (each renewal by its owner moves it, a few times per lease period).
const maxResetAttempts = 10

// Reset replays shards: it plans the request against the table's leases
// (see [ResetRequest]) and, unless it is a dry run, resets
// each lease with one conditional write that also
// fences the owner: the owner's next renewal or checkpoint is refused, it
// stops the shard (its processor sees LeaseLost), and any worker takes the
// lease and restarts it from the new position, within about a lease period.
// A write refused because the counter moved is retried on a fresh read.
//
// It stops at the first lease it cannot reset and returns the plan, in which
// the changes written so far are Applied, with the error. Errors:
// kcl.ErrInvalidCheckpoint for a bad position, ErrNotFound for a named shard
// without a lease, ErrInvalidArgument for a bad selection, and store errors.
func (t *Table) Reset(ctx context.Context, req ResetRequest) (ResetPlan, error) {
	if err := req.validate(); err != nil {
		return ResetPlan{}, err
	}
	leases, err := t.List(ctx)
	if err != nil {
		return ResetPlan{}, fmt.Errorf("lease: reset: %w", err)
	}
	plan, err := planReset(leases, req)
	if err != nil || req.DryRun {
		return plan, err
	}
	for i := range plan.Changes {
		c := &plan.Changes[i]
		if err := resetOne(ctx, t.store, c); err != nil {
			return plan, fmt.Errorf("lease: reset %s: %w (%d of %d leases reset)", c.Shard, err, i, len(plan.Changes))
		}
	}
	return plan, nil
}

// resetOne writes one change, re-reading the lease after each conflict.
func resetOne(ctx context.Context, store ilease.Store, c *ResetChange) error {
	cur := toInternal(c.Before)
	for attempt := 1; ; attempt++ {
		l := cur.Clone()
		l.Checkpoint = c.Checkpoint
		l.CheckpointTimestamp = c.CheckpointTimestamp
		_, err := store.ResetCheckpoint(ctx, l)
		if err == nil {
			c.Before, c.Applied = fromInternal(cur), true
			return nil
		}
		var ce *ilease.ConflictError
		if !errors.As(err, &ce) || attempt == maxResetAttempts {
			return err
		}
		if ce.Current != nil {
			cur = ce.Current.Clone()
			continue
		}
		if cur, err = store.Get(ctx, c.Shard); err != nil {
			return err // gone: ErrNotFound
		}
	}
}

// planReset decides which of leases a reset changes, and how; it writes
// nothing. See [ResetRequest] for the rules.
func planReset(leases []Lease, req ResetRequest) (ResetPlan, error) {
	streamID, leases, err := streamLeases(leases, req.Stream)
	if err != nil {
		return ResetPlan{Skipped: map[string]string{}}, err
	}
	plan, err := planStream(leases, req)
	if streamID != "" { // back from shard IDs to lease keys
		for i := range plan.Changes {
			c := &plan.Changes[i]
			c.Shard = ilease.MultiStreamKey(streamID, c.Shard)
			c.Before.Key = c.Shard
		}
		skipped := make(map[string]string, len(plan.Skipped))
		for shard, why := range plan.Skipped {
			skipped[ilease.MultiStreamKey(streamID, shard)] = why
		}
		plan.Skipped = skipped
	}
	return plan, err
}

// streamLeases returns the leases of the stream a reset names (see
// ResetRequest.Stream), keyed by shard ID, with the stream's identifier;
// the leases as they are, and "", for a table without multi-stream leases.
func streamLeases(leases []Lease, stream string) (string, []Lease, error) {
	ids := map[string]bool{}
	for _, l := range leases {
		if id := ilease.StreamOfKey(l.Key); id != "" {
			ids[id] = true
		}
	}
	if len(ids) == 0 {
		return "", leases, nil
	}
	var match []string
	for id := range ids {
		_, name, _, _ := ilease.ParseStreamIdentifier(id)
		if id == stream || name == stream {
			match = append(match, id)
		}
	}
	slices.Sort(match)
	switch {
	case stream == "":
		return "", nil, fmt.Errorf("lease: reset: %w: the table holds the leases of several streams (multi-stream); name one", ErrInvalidArgument)
	case len(match) == 0:
		return "", nil, fmt.Errorf("lease: reset: stream %s: %w (no lease in the table)", stream, ErrNotFound)
	case len(match) > 1:
		return "", nil, fmt.Errorf("lease: reset: %w: stream name %s matches %v; name one by ACCOUNT:STREAM:EPOCH", ErrInvalidArgument, stream, match)
	}
	var out []Lease
	for _, l := range leases {
		if sid, shard, ok := ilease.SplitKey(l.Key); ok && sid == match[0] {
			l.Key = shard
			out = append(out, l)
		}
	}
	return match[0], out, nil
}

// planStream is planReset over the leases of one stream, keyed by shard ID.
func planStream(leases []Lease, req ResetRequest) (ResetPlan, error) {
	plan := ResetPlan{Skipped: map[string]string{}}
	if err := req.validate(); err != nil {
		return plan, err
	}
	byKey := make(map[string]Lease, len(leases))
	for _, l := range leases {
		byKey[l.Key] = l
	}
	// The lineage, from both sides: a child lists its parents from the
	// start, a parent its children once it ended. Only shards with leases
	// take part.
	children, parents := make(map[string][]string), make(map[string][]string)
	link := func(parent, child string) {
		_, okp := byKey[parent]
		_, okc := byKey[child]
		if okp && okc && parent != child && !slices.Contains(children[parent], child) {
			children[parent] = append(children[parent], child)
			parents[child] = append(parents[child], parent)
		}
	}
	for _, l := range leases {
		for _, p := range l.ParentShardIDs {
			link(p, l.Key)
		}
		for _, c := range l.ChildShardIDs {
			link(l.Key, c)
		}
	}

	for _, k := range req.Shards {
		if err := ilease.CheckLeaseKey("reset", k); err != nil {
			return plan, err
		}
	}
	named := ilease.NormalizeShardSet(slices.Clone(req.Shards))
	sequence := !req.Sequence.IsZero()
	if sequence && len(named) != 1 {
		return plan, fmt.Errorf("lease: reset: %w: a sequence number belongs to one shard; name exactly one (got %d)", ErrInvalidArgument, len(named))
	}
	for _, k := range named {
		if _, ok := byKey[k]; !ok {
			return plan, fmt.Errorf("lease: reset: shard %s: %w (no lease in the table)", k, ErrNotFound)
		}
	}
	explicit := len(named) > 0
	if !explicit {
		for _, l := range leases {
			named = append(named, l.Key)
		}
	}

	// why records each lease of the reset with its reason; selected ones
	// first, then descendants and, for a timestamp, ancestors.
	why := make(map[string]string)
	isNamed := make(map[string]bool, len(named))
	for _, k := range named {
		why[k] = "selected"
		isNamed[k] = true
	}
	// Each walk has its own visited set, so that a shard reached first as
	// a descendant is still walked through as an ancestor.
	descendant := make(map[string]bool)
	walk := func(starts []string, next map[string][]string, label string, mark map[string]bool) {
		visited := make(map[string]bool)
		for _, start := range starts {
			stack := []string{start}
			for len(stack) > 0 {
				k := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				for _, n := range next[k] {
					if visited[n] {
						continue
					}
					visited[n] = true
					if _, labelled := why[n]; !labelled {
						why[n] = label + " " + start
					}
					if mark != nil && !isNamed[n] {
						mark[n] = true
					}
					stack = append(stack, n)
				}
			}
		}
	}
	walk(named, children, "descendant of", descendant)
	if req.Position.Sequence() == kcl.AtTimestamp && !sequence {
		walk(named, parents, "ancestor of", nil)
	}

	var existing map[string]bool
	if req.StreamShards != nil {
		existing = make(map[string]bool, len(req.StreamShards))
		for _, id := range req.StreamShards {
			existing[id] = true
		}
	}
	cp, ts := req.checkpoint()
	for k, reason := range why {
		l := byKey[k]
		switch {
		case existing != nil && !existing[k]:
			plan.Skipped[k] = "shard no longer in the stream (trimmed by retention)"
			continue
		case finished(l) && existing == nil && !(explicit && isNamed[k]):
			plan.Skipped[k] = "finished; not reopened without the stream's shard list"
			continue
		case finished(l) && !sequence && req.Position == kcl.StartAtLatest():
			plan.Skipped[k] = "finished; nothing to skip"
			continue
		}
		c := ResetChange{Shard: k, Why: reason, Before: l.clone(), Checkpoint: cp, CheckpointTimestamp: ts}
		if sequence && descendant[k] {
			c.Checkpoint, c.CheckpointTimestamp = kcl.TrimHorizon, time.Time{}
		}
		plan.Changes = append(plan.Changes, c)
	}

	depth := lineageDepths(byKey, parents)
	slices.SortFunc(plan.Changes, func(a, b ResetChange) int {
		return cmp.Or(cmp.Compare(depth[a.Shard], depth[b.Shard]), cmp.Compare(a.Shard, b.Shard))
	})
	return plan, nil
}

// lineageDepths returns, for each lease, the length of its longest chain of
// ancestors that have leases (0 for a shard without one). A cycle (a
// corrupt table) ends the chain.
func lineageDepths(byKey map[string]Lease, parents map[string][]string) map[string]int {
	depth := make(map[string]int, len(byKey))
	const visiting = -1
	var visit func(k string) int
	visit = func(k string) int {
		if d, ok := depth[k]; ok {
			return max(d, 0)
		}
		depth[k] = visiting
		d := 0
		for _, p := range parents[k] {
			d = max(d, visit(p)+1)
		}
		depth[k] = d
		return d
	}
	for k := range byKey {
		visit(k)
	}
	return depth
}
