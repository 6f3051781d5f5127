package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// shardList is a repeatable, comma-separated --shard flag.
type shardList []string

func (s *shardList) String() string { return strings.Join(*s, ",") }

func (s *shardList) Set(v string) error {
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); id == "" {
			return errors.New("empty shard ID")
		}
		*s = append(*s, id)
	}
	return nil
}

// target is where `replay --to` restarts the shards: an initial position,
// or the record at seq (when set).
type target struct {
	initial kcl.InitialPosition
	seq     kcl.ExtendedSequenceNumber
}

// String describes the target.
func (t target) String() string {
	if !t.seq.IsZero() {
		return "AT_SEQUENCE_NUMBER(" + t.seq.String() + ")"
	}
	return t.initial.String()
}

// replayed is a reset as `replay` prints it: the plan (or its result), the
// target asked for and whether it was a dry run.
type replayed struct {
	plan   lease.ResetPlan
	to     target
	dryRun bool
}

// replayChange is one lease reset as `replay` prints it.
type replayChange struct {
	Shard       string     `json:"shard"`
	Why         string     `json:"why"`
	Owner       string     `json:"previousOwner,omitempty"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	ToTimestamp *time.Time `json:"toTimestamp,omitempty"`
	Applied     bool       `json:"applied"`
	Counter     int64      `json:"counter"`
}

// replayReport is the output of `replay`.
type replayReport struct {
	Table    string         `json:"table"`
	Position string         `json:"position"`
	DryRun   bool           `json:"dryRun"`
	Changes  []replayChange `json:"changes"`
	Skipped  []skipRow      `json:"skipped,omitempty"`
}

type skipRow struct {
	Shard  string `json:"shard"`
	Reason string `json:"reason"`
}

func runReplay(ctx context.Context, e *env, args []string) error {
	var c common
	fs := newFlagSet(e, "replay", "--app APP --stream STREAM (--all | --shard ID...) --to POSITION [--dry-run] [--yes]", &c)
	var shards shardList
	fs.Var(&shards, "shard", "shard ID to reset (repeat, or separate with commas); its descendants follow, and for a time its ancestors")
	all := fs.Bool("all", false, "reset every shard of the application (of --stream in a multi-stream application)")
	to := fs.String("to", "", "position: trim_horizon, latest, an RFC 3339 time, a duration before now (-30m), or a sequence number of the one --shard (delivered again)")
	dryRun := fs.Bool("dry-run", false, "show what would change and change nothing")
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if err := parse(fs, &c, args); err != nil {
		return err
	}
	if err := c.needApp(); err != nil {
		return err
	}
	if err := c.needStream(); err != nil {
		return err
	}
	switch {
	case *all && len(shards) > 0:
		return usagef("--all and --shard exclude each other")
	case !*all && len(shards) == 0:
		return usagef("name the shards with --shard, or pass --all")
	case *to == "":
		return usagef("--to is required")
	}
	pos, err := parsePosition(*to, time.Now())
	if err != nil {
		return usagef("--to %q: %v", *to, err)
	}
	if !pos.seq.IsZero() && len(shards) != 1 {
		return usagef("a sequence number belongs to one shard: name exactly one with --shard")
	}

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kc, err := c.kinesisClient(ctx)
	if err != nil {
		return err
	}
	store, err := c.leaseStore(ctx)
	if err != nil {
		return err
	}
	listed, err := c.listShards(ctx, kc)
	if err != nil {
		return err
	}
	// The stream's leases in a multi-stream table (ignored in another).
	streamID, err := c.streamIdentifier(ctx, kc)
	if err != nil {
		return err
	}
	req := lease.ResetRequest{Stream: streamID, Shards: shards, Position: pos.initial, Sequence: pos.seq, DryRun: true}
	req.StreamShards = make([]string, 0, len(listed))
	for _, s := range listed {
		req.StreamShards = append(req.StreamShards, aws.ToString(s.ShardId))
	}
	if !pos.seq.IsZero() {
		if err := checkSequence(ctx, &c, kc, shards[0], pos.seq); err != nil {
			return err
		}
	}

	plan, err := store.Reset(ctx, req)
	if err != nil {
		return c.tableError(err)
	}
	if *dryRun || len(plan.Changes) == 0 {
		if err := printReplay(e.stdout, &c, replayed{plan, pos, true}); err != nil {
			return err
		}
		if len(plan.Changes) == 0 {
			fmt.Fprintln(e.stderr, "kclctl replay: no lease to reset")
		}
		return nil
	}
	if !*yes {
		if err := printReplayTable(e.stderr, replayed{plan, pos, true}); err != nil {
			return err
		}
		ok, err := confirmCtx(ctx, e, fmt.Sprintf(
			"Reset %d checkpoints of %s to %s? Workers holding these shards stop them, and the shards restart from there.",
			len(plan.Changes), c.table, pos))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("aborted: nothing changed")
		}
	}
	req.DryRun = false
	plan, err = store.Reset(ctx, req)
	if perr := printReplay(e.stdout, &c, replayed{plan, pos, false}); perr != nil && err == nil {
		err = perr
	}
	return c.tableError(err)
}

// confirmCtx asks for confirmation, giving up when ctx ends.
func confirmCtx(ctx context.Context, e *env, question string) (bool, error) {
	type answer struct {
		ok  bool
		err error
	}
	ch := make(chan answer, 1)
	go func() { // abandoned if ctx ends first: a blocked read of stdin cannot be interrupted
		ok, err := confirm(e, question)
		ch <- answer{ok, err}
	}()
	select {
	case a := <-ch:
		return a.ok, a.err
	case <-ctx.Done():
		fmt.Fprintln(e.stderr)
		return false, fmt.Errorf("no confirmation: %w", ctx.Err())
	}
}

// checkSequence asks Kinesis whether seq is a sequence number of shardID,
// so that a typo does not stop the shard.
func checkSequence(ctx context.Context, c *common, kc kinesisAPI, shardID string, seq kcl.ExtendedSequenceNumber) error {
	name, arn := c.streamRef()
	_, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: name, StreamARN: arn, ShardId: aws.String(shardID),
		ShardIteratorType:      ktypes.ShardIteratorTypeAtSequenceNumber,
		StartingSequenceNumber: aws.String(seq.SequenceNumber),
	})
	if err != nil {
		return fmt.Errorf("sequence number %s cannot be read in shard %s: %w", seq.SequenceNumber, shardID, err)
	}
	return nil
}

// isDigits reports whether s is 1 to maxLen decimal digits.
func isDigits(s string, maxLen int) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parsePosition reads a --to value.
func parsePosition(s string, now time.Time) (target, error) {
	v := strings.TrimSpace(s)
	switch strings.ToLower(strings.ReplaceAll(v, "-", "_")) {
	case "trim_horizon":
		return target{initial: kcl.StartAtTrimHorizon()}, nil
	case "latest":
		return target{initial: kcl.StartAtLatest()}, nil
	}
	if seq, sub, hasSub := strings.Cut(v, "/"); isDigits(seq, 128) && (!hasSub || isDigits(sub, 18)) {
		pos := kcl.NewSequence(seq)
		if hasSub {
			n, err := strconv.ParseInt(sub, 10, 64)
			if err != nil {
				return target{}, err
			}
			pos.SubSequenceNumber = n
		}
		return target{seq: pos}, nil
	}
	if ago, ok := strings.CutPrefix(v, "-"); ok {
		d, err := time.ParseDuration(ago)
		if err != nil || d < 0 || strings.HasPrefix(ago, "+") {
			return target{}, fmt.Errorf("-DURATION is a time before now, such as -30m; %q is not a positive duration", ago)
		}
		return target{initial: kcl.StartAtTimestamp(now.Add(-d))}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return target{}, errors.New("want trim_horizon, latest, an RFC 3339 time, -DURATION or a sequence number")
	}
	if t.After(now.Add(time.Minute)) {
		return target{}, fmt.Errorf("%s is in the future (now is %s): a replay starts at a past time",
			t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return target{initial: kcl.StartAtTimestamp(t)}, nil
}

func replayReportOf(c *common, r replayed) replayReport {
	rep := replayReport{Table: c.table, Position: r.to.String(), DryRun: r.dryRun, Changes: []replayChange{}}
	for _, ch := range r.plan.Changes {
		counter := ch.Before.Counter
		if ch.Applied {
			counter++ // the reset's write
		}
		rep.Changes = append(rep.Changes, replayChange{
			Shard:       ch.Shard,
			Why:         ch.Why,
			Owner:       ch.Before.Owner,
			From:        ch.Before.Checkpoint.String(),
			To:          ch.Checkpoint.String(),
			ToTimestamp: timePtr(ch.CheckpointTimestamp),
			Applied:     ch.Applied,
			Counter:     counter,
		})
	}
	for _, k := range slices.Sorted(maps.Keys(r.plan.Skipped)) {
		rep.Skipped = append(rep.Skipped, skipRow{Shard: k, Reason: r.plan.Skipped[k]})
	}
	return rep
}

// printReplay writes the plan or its result in the chosen format.
func printReplay(w io.Writer, c *common, r replayed) error {
	if c.output == "json" {
		return writeJSON(w, replayReportOf(c, r))
	}
	return printReplayTable(w, r)
}

func printReplayTable(w io.Writer, r replayed) error {
	t := newTable(w, "SHARD", "OWNER", "FROM", "TO", "WHY", "STATUS")
	for _, ch := range r.plan.Changes {
		status := "not reset"
		switch {
		case r.dryRun:
			status = "planned"
		case ch.Applied:
			status = "reset"
		}
		t.row(ch.Shard, ch.Before.Owner, describeCheckpoint(ch.Before.Checkpoint, ch.Before.CheckpointTimestamp),
			describeCheckpoint(ch.Checkpoint, ch.CheckpointTimestamp), ch.Why, status)
	}
	for _, k := range slices.Sorted(maps.Keys(r.plan.Skipped)) {
		t.row(k, "", "", "", "", "skipped: "+r.plan.Skipped[k])
	}
	return t.flush()
}
