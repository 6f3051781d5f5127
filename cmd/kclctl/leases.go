package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// Lag probing: at most this many shards at once, each bounded in time.
const (
	lagConcurrency = 4
	lagTimeout     = 10 * time.Second
)

// leaseRow is one lease as `leases` prints it.
type leaseRow struct {
	Shard               string     `json:"shard"`
	Owner               string     `json:"owner,omitempty"`
	Counter             int64      `json:"counter"`
	Checkpoint          string     `json:"checkpoint"`
	CheckpointTimestamp *time.Time `json:"checkpointTimestamp,omitempty"`
	PendingCheckpoint   string     `json:"pendingCheckpoint,omitempty"`
	OwnerSwitches       int64      `json:"ownerSwitchesSinceCheckpoint"`
	HandoffTo           string     `json:"handoffTo,omitempty"`
	Parents             []string   `json:"parents,omitempty"`
	Children            []string   `json:"children,omitempty"`
	Lag                 *lagInfo   `json:"lag,omitempty"`
	// Status is what holds the shard up, if anything (see leaseStatus);
	// Stalled is the reason its owner reported it stalled.
	Status  string `json:"status"`
	Stalled string `json:"stalled,omitempty"`

	display string // the checkpoint for people
}

// lagInfo is how far a shard's checkpoint is behind the tip of the shard.
type lagInfo struct {
	// MillisBehindLatest is what GetRecords reports for a read of one record
	// at the checkpoint.
	MillisBehindLatest *int64 `json:"millisBehindLatest,omitempty"`
	// CheckpointArrival is when the checkpointed record arrived in the
	// stream.
	CheckpointArrival *time.Time `json:"checkpointArrival,omitempty"`
	// Error explains a lag that could not be measured.
	Error string `json:"error,omitempty"`
}

func runLeases(ctx context.Context, e *env, args []string) error {
	var c common
	fs := newFlagSet(e, "leases", "--app APP [--stream STREAM] [flags]", &c)
	lag := fs.Bool("lag", true, "measure each shard's lag (needs --stream): one GetShardIterator and one GetRecords of one record per unfinished shard")
	if err := parse(fs, &c, args); err != nil {
		return err
	}
	if err := c.needApp(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	store, err := c.leaseStore(ctx)
	if err != nil {
		return err
	}
	leases, err := store.List(ctx)
	if err != nil {
		return c.tableError(err)
	}
	workers, err := store.Workers(ctx)
	if err != nil {
		return c.tableError(err)
	}
	status := newStatusView(leases, workers)
	rows := make([]leaseRow, len(leases))
	for i, l := range leases {
		rows[i] = leaseRow{
			Shard:               l.Key,
			Owner:               l.Owner,
			Counter:             l.Counter,
			Checkpoint:          l.Checkpoint.String(),
			CheckpointTimestamp: timePtr(l.CheckpointTimestamp),
			PendingCheckpoint:   l.PendingCheckpoint.String(),
			OwnerSwitches:       l.OwnerSwitchesSinceCheckpoint,
			HandoffTo:           l.HandoffTo,
			Parents:             l.ParentShardIDs,
			Children:            l.ChildShardIDs,
			display:             describeCheckpoint(l.Checkpoint, l.CheckpointTimestamp),
		}
		rows[i].Status, rows[i].Stalled = status.of(l)
	}
	if *lag && c.stream != "" {
		kc, err := c.kinesisClient(ctx)
		if err != nil {
			return err
		}
		measureLags(ctx, &c, kc, leases, rows)
	}

	if c.output == "json" {
		return writeJSON(e.stdout, rows)
	}
	t := newTable(e.stdout, "SHARD", "OWNER", "STATUS", "COUNTER", "CHECKPOINT", "PARENTS", "CHILDREN", "LAG")
	for _, r := range rows {
		lagCell := ""
		switch {
		case r.Lag == nil:
		case r.Lag.Error != "":
			lagCell = "?"
		case r.Lag.MillisBehindLatest != nil:
			lagCell = formatLag(*r.Lag.MillisBehindLatest)
		}
		owner := r.Owner
		if r.HandoffTo != "" {
			owner += " -> " + r.HandoffTo
		}
		st := r.Status
		if r.Stalled != "" {
			st += ":" + r.Stalled
		}
		t.row(r.Shard, owner, st, strconv.FormatInt(r.Counter, 10), r.display,
			strings.Join(r.Parents, ","), strings.Join(r.Children, ","), lagCell)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Lag != nil && r.Lag.Error != "" {
			fmt.Fprintf(e.stderr, "kclctl leases: lag of %s: %s\n", r.Shard, r.Lag.Error)
		}
	}
	return nil
}

// measureLags fills the lag of every unfinished lease, a few shards at a
// time.
func measureLags(ctx context.Context, c *common, kc kinesisAPI, leases []lease.Lease, rows []leaseRow) {
	sem := make(chan struct{}, lagConcurrency)
	var wg sync.WaitGroup
	// In a multi-stream table, only the leases of --stream are measured.
	streamID := ""
	if slices.ContainsFunc(leases, func(l lease.Lease) bool { return ilease.StreamOfKey(l.Key) != "" }) {
		id, err := c.streamIdentifier(ctx, kc)
		if err != nil {
			for i := range rows {
				rows[i].Lag = &lagInfo{Error: err.Error()}
			}
			return
		}
		streamID = id
	}
	for i, l := range leases {
		if l.Checkpoint.IsShardEnd() || ilease.StreamOfKey(l.Key) != streamID {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lctx, cancel := context.WithTimeout(ctx, lagTimeout)
			defer cancel()
			info := measureLag(lctx, c, kc, l)
			rows[i].Lag = &info
		}()
	}
	wg.Wait()
}

// measureLag reads one record at the lease's checkpoint: GetRecords reports
// how far that is behind the tip of the shard, and the record when it arrived.
func measureLag(ctx context.Context, c *common, kc kinesisAPI, l lease.Lease) lagInfo {
	name, arn := c.streamRef()
	in := &kinesis.GetShardIteratorInput{StreamName: name, StreamARN: arn, ShardId: aws.String(ilease.ShardIDOf(l.Key))}
	cp := l.Checkpoint
	switch {
	case cp.SequenceNumber == kcl.Latest.SequenceNumber:
		zero := int64(0)
		return lagInfo{MillisBehindLatest: &zero}
	case cp.SequenceNumber == kcl.TrimHorizon.SequenceNumber:
		in.ShardIteratorType = ktypes.ShardIteratorTypeTrimHorizon
	case cp.SequenceNumber == kcl.AtTimestamp.SequenceNumber:
		if l.CheckpointTimestamp.IsZero() {
			return lagInfo{Error: "AT_TIMESTAMP from the workers' configuration: time unknown here"}
		}
		in.ShardIteratorType = ktypes.ShardIteratorTypeAtTimestamp
		in.Timestamp = aws.Time(l.CheckpointTimestamp)
	case cp.IsSentinel() || cp.Validate() != nil:
		return lagInfo{Error: fmt.Sprintf("checkpoint %q", cp.String())}
	default:
		in.ShardIteratorType = ktypes.ShardIteratorTypeAtSequenceNumber
		in.StartingSequenceNumber = aws.String(cp.SequenceNumber)
	}
	it, err := kc.GetShardIterator(ctx, in)
	if err != nil {
		return lagInfo{Error: oneLine(c.streamError("get shard iterator", err))}
	}
	out, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator, Limit: aws.Int32(1), StreamARN: arn})
	if err != nil {
		return lagInfo{Error: oneLine(fmt.Errorf("get records: %w", err))}
	}
	info := lagInfo{MillisBehindLatest: out.MillisBehindLatest}
	if len(out.Records) > 0 && aws.ToString(out.Records[0].SequenceNumber) == cp.SequenceNumber {
		info.CheckpointArrival = timePtr(aws.ToTime(out.Records[0].ApproximateArrivalTimestamp))
	}
	if info.MillisBehindLatest == nil {
		zero := int64(0)
		info.MillisBehindLatest = &zero
	}
	return info
}
