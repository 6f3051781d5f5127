package lease

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// ResetPosition is where a replay restarts shards: TRIM_HORIZON, LATEST, a
// timestamp, or a record's sequence number. Build one with
// [ResetToTrimHorizon], [ResetToLatest], [ResetToTimestamp] or
// [ResetToSequence].
type ResetPosition struct {
	// Initial is TRIM_HORIZON, LATEST or AT_TIMESTAMP (with its timestamp).
	// It is ignored when Sequence is set.
	Initial kcl.InitialPosition
	// Sequence, when not zero, is the first record to deliver again: the
	// stored checkpoint becomes the position just before it
	// ([kcl.ExtendedSequenceNumber.Before]).
	Sequence kcl.ExtendedSequenceNumber
}

// ResetToTrimHorizon replays everything the stream still retains.
func ResetToTrimHorizon() ResetPosition { return ResetPosition{Initial: kcl.StartAtTrimHorizon()} }

// ResetToLatest skips every record written so far.
func ResetToLatest() ResetPosition { return ResetPosition{Initial: kcl.StartAtLatest()} }

// ResetToTimestamp replays every record that arrived at or after t.
func ResetToTimestamp(t time.Time) ResetPosition {
	return ResetPosition{Initial: kcl.StartAtTimestamp(t)}
}

// ResetToSequence replays the record at pos and every record after it in
// its shard (and the shard's descendants). pos is a record's position, such
// as kcl.NewSequence("4959...") or Record.Position().
func ResetToSequence(pos kcl.ExtendedSequenceNumber) ResetPosition {
	return ResetPosition{Sequence: pos}
}

// maxClockSkew is how far in the future a reset time may lie (the time may
// come from another machine's clock). A later time would make the shards
// read nothing until then; Kinesis itself refuses future timestamps.
const maxClockSkew = time.Minute

// Validate reports a position that cannot be used, such as a time more than
// a minute in the future; the error matches kcl.ErrInvalidCheckpoint.
func (p ResetPosition) Validate() error {
	if !p.Sequence.IsZero() {
		if p.Sequence.IsSentinel() || p.Sequence.Validate() != nil || p.Sequence.SubSequenceNumber < 0 {
			return fmt.Errorf("%w: reset: %q is not a record's sequence number", kcl.ErrInvalidCheckpoint, p.Sequence.String())
		}
		return nil
	}
	if err := p.Initial.Validate(); err != nil {
		return fmt.Errorf("%w: reset: %w", kcl.ErrInvalidCheckpoint, err)
	}
	if p.Initial.Type == kcl.PositionAtTimestamp && p.Initial.Timestamp.After(time.Now().Add(maxClockSkew)) {
		return fmt.Errorf("%w: reset: %s is in the future; a replay starts at a past time",
			kcl.ErrInvalidCheckpoint, p.Initial.Timestamp.UTC().Format(time.RFC3339))
	}
	return nil
}

// String describes the position.
func (p ResetPosition) String() string {
	if !p.Sequence.IsZero() {
		return "AT_SEQUENCE_NUMBER(" + p.Sequence.String() + ")"
	}
	return p.Initial.String()
}

// checkpoint returns the checkpoint and timestamp that make a shard start at
// p.
func (p ResetPosition) checkpoint() (kcl.ExtendedSequenceNumber, time.Time) {
	if !p.Sequence.IsZero() {
		return p.Sequence.Before(), time.Time{}
	}
	if p.Initial.Type == kcl.PositionAtTimestamp {
		return kcl.AtTimestamp, p.Initial.Timestamp
	}
	return p.Initial.Sequence(), time.Time{}
}

// ResetRequest asks for a replay: the checkpoints of some or all shards of
// an application move to Position.
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
	// (of the Stream). A sequence-number position needs exactly one shard.
	Shards []string
	// Position is where the shards restart.
	Position ResetPosition
	// StreamShards lists the IDs of the shards the stream has now, open and
	// closed (from ListShards). When it is set, leases of shards missing from
	// it (trimmed by retention: reading them would fail) are left alone, and
	// finished leases may be reopened. When it is nil, finished leases
	// (SHARD_END) are reopened only when named in Shards.
	StreamShards []string
	// DryRun plans the reset without writing anything.
	DryRun bool
	// Logger receives one line per lease reset (default: discard).
	Logger *slog.Logger
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
	// After is the lease as stored by the reset; its Key is empty in a dry
	// run or when the reset of this lease was not done.
	After Lease
}

// Applied reports whether the change was written.
func (c ResetChange) Applied() bool { return c.After.Key != "" }

// ResetSkip is a lease the reset leaves alone, with the reason.
type ResetSkip struct {
	// Shard is the lease key.
	Shard string
	// Reason says why it is left alone.
	Reason string
}

// ResetPlan is what a reset changes (or, in a dry run, would change).
type ResetPlan struct {
	// Position is the requested position.
	Position ResetPosition
	// Changes are in the order they are written: ancestors before
	// descendants, so that a child never restarts while its parent still
	// looks finished.
	Changes []ResetChange
	// Skipped are leases of the lineage left alone.
	Skipped []ResetSkip
	// DryRun is true when nothing was written.
	DryRun bool
}

// maxResetAttempts bounds the re-reads of one lease whose counter keeps
// moving (each renewal by its owner moves it, a few times per lease period).
const maxResetAttempts = 10

// Reset replays shards: it plans the request against the table's leases
// (see [ResetRequest] and [PlanReset]) and, unless it is a dry run, resets
// each lease with one conditional write that also
// fences the owner: the owner's next renewal or checkpoint is refused, it
// stops the shard (its processor sees LeaseLost), and any worker takes the
// lease and restarts it from the new position, within about a lease period.
// A write refused because the counter moved is retried on a fresh read.
//
// It stops at the first lease it cannot reset and returns the plan, in which
// the changes written so far have After set, with the error. Errors:
// kcl.ErrInvalidCheckpoint for a bad position, ErrNotFound for a named shard
// without a lease, ErrInvalidArgument for a bad selection, and store errors.
func (t *Table) Reset(ctx context.Context, req ResetRequest) (ResetPlan, error) {
	if err := req.Position.Validate(); err != nil {
		return ResetPlan{}, err
	}
	leases, err := t.List(ctx)
	if err != nil {
		return ResetPlan{}, fmt.Errorf("lease: reset: %w", err)
	}
	plan, err := PlanReset(leases, req)
	if err != nil || req.DryRun {
		return plan, err
	}
	log := req.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for i := range plan.Changes {
		c := &plan.Changes[i]
		if err := resetOne(ctx, t.store, c); err != nil {
			return plan, fmt.Errorf("lease: reset %s: %w (%d of %d leases reset)", c.Shard, err, i, len(plan.Changes))
		}
		log.InfoContext(ctx, "lease: checkpoint reset", "shard", c.Shard, "why", c.Why,
			"from", c.Before.Checkpoint.String(), "to", c.Checkpoint.String(),
			"previous_owner", c.Before.Owner, "counter", c.After.Counter)
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
		after, err := store.ResetCheckpoint(ctx, l)
		if err == nil {
			c.Before, c.After = fromInternal(cur), fromInternal(after)
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

// PlanReset decides which of leases a reset changes, and how; it writes
// nothing. See [ResetRequest] for the rules. The plan's DryRun is
// req.DryRun.
func PlanReset(leases []Lease, req ResetRequest) (ResetPlan, error) {
	streamID, leases, err := streamLeases(leases, req.Stream)
	if err != nil {
		return ResetPlan{Position: req.Position, DryRun: req.DryRun}, err
	}
	plan, err := planReset(leases, req)
	if streamID != "" { // back from shard IDs to lease keys
		for i := range plan.Changes {
			c := &plan.Changes[i]
			c.Shard = ilease.MultiStreamKey(streamID, c.Shard)
			c.Before.Key = c.Shard
		}
		for i := range plan.Skipped {
			plan.Skipped[i].Shard = ilease.MultiStreamKey(streamID, plan.Skipped[i].Shard)
		}
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

// planReset is PlanReset over the leases of one stream, keyed by shard ID.
func planReset(leases []Lease, req ResetRequest) (ResetPlan, error) {
	plan := ResetPlan{Position: req.Position, DryRun: req.DryRun}
	if err := req.Position.Validate(); err != nil {
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
	sequence := !req.Position.Sequence.IsZero()
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
	if req.Position.Initial.Type == kcl.PositionAtTimestamp && !sequence {
		walk(named, parents, "ancestor of", nil)
	}

	var existing map[string]bool
	if req.StreamShards != nil {
		existing = make(map[string]bool, len(req.StreamShards))
		for _, id := range req.StreamShards {
			existing[id] = true
		}
	}
	cp, ts := req.Position.checkpoint()
	for k, reason := range why {
		l := byKey[k]
		switch {
		case existing != nil && !existing[k]:
			plan.Skipped = append(plan.Skipped, ResetSkip{Shard: k, Reason: "shard no longer in the stream (trimmed by retention)"})
			continue
		case l.Finished() && existing == nil && !(explicit && isNamed[k]):
			plan.Skipped = append(plan.Skipped, ResetSkip{Shard: k, Reason: "finished; not reopened without the stream's shard list"})
			continue
		case l.Finished() && req.Position.Sequence.IsZero() && req.Position.Initial.Type == kcl.PositionLatest:
			plan.Skipped = append(plan.Skipped, ResetSkip{Shard: k, Reason: "finished; nothing to skip"})
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
	slices.SortFunc(plan.Skipped, func(a, b ResetSkip) int { return cmp.Compare(a.Shard, b.Shard) })
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
