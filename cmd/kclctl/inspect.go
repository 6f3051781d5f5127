package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/javakcl"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// inspectLease is one lease as `inspect` reports it.
type inspectLease struct {
	Key             string `json:"key"`
	Stream          string `json:"stream,omitempty"` // multi-stream: account:stream:creationEpoch
	Owner           string `json:"owner,omitempty"`
	Checkpoint      string `json:"checkpoint"`
	Pending         string `json:"pendingCheckpoint,omitempty"`
	CheckpointOwner string `json:"checkpointOwner,omitempty"`
}

// skippedRow is a row that is not a lease.
type skippedRow struct {
	Key  string `json:"key"`
	What string `json:"what"`
}

// inspectReport is the output of `inspect`.
type inspectReport struct {
	Table string `json:"table"`
	// Writer is the Java KCL version whose format the table has (2.x,
	// 3.0-3.4, 3.5), or "" when no Java-written row was found.
	Writer string `json:"javaWriter,omitempty"`
	// Shardline is true when Shardline workers have run on the table.
	Shardline   bool           `json:"shardlineRan"`
	MultiStream bool           `json:"multiStream"`
	Streams     []string       `json:"streams,omitempty"`
	Leases      []inspectLease `json:"leases"`
	Skipped     []skippedRow   `json:"skippedRows,omitempty"`
	// TakeOver says whether this version's workers can take the table
	// over, and what to do first.
	TakeOver []string `json:"takeOver"`
	// RollBack says what a return to the Java KCL needs.
	RollBack []string `json:"rollBack"`
	// Unreadable maps rows the Java KCL would fail its whole lease
	// listing on to the reasons.
	Unreadable map[string][]string `json:"unreadableByJava,omitempty"`
}

func runInspect(ctx context.Context, e *env, args []string) error {
	var c common
	fs := newFlagSet(e, "inspect", "--app APP [flags]", &c)
	target := fs.String("java", "", "the Java KCL version a roll-back would run: 2.x, 3.0-3.4 or 3.5 (default: the version that wrote the table, else every one)")
	if err := parse(fs, &c, args); err != nil {
		return err
	}
	if err := c.needApp(); err != nil {
		return err
	}
	versions := javakcl.Versions
	if *target != "" {
		i := slices.IndexFunc(javakcl.Versions, func(v javakcl.Version) bool { return v.String() == *target })
		if i < 0 {
			return usagef("--java %q: want 2.x, 3.0-3.4 or 3.5", *target)
		}
		versions = javakcl.Versions[i : i+1]
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	dc, err := c.dynamoClient(ctx)
	if err != nil {
		return err
	}
	desc, err := dc.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)})
	if err != nil {
		return c.tableError(dynamoError(err))
	}
	var items []map[string]types.AttributeValue
	p := dynamodb.NewScanPaginator(dc, &dynamodb.ScanInput{TableName: aws.String(c.table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return c.tableError(dynamoError(err))
		}
		items = append(items, out.Items...)
	}
	ownerIndex := slices.ContainsFunc(desc.Table.GlobalSecondaryIndexes, func(g types.GlobalSecondaryIndexDescription) bool {
		return aws.ToString(g.IndexName) == "LeaseOwnerToLeaseKeyIndex"
	})
	r := inspectTable(c.table, items, ownerIndex, *target == "", versions)
	if c.output == "json" {
		return writeJSON(e.stdout, r)
	}
	return r.print(e.stdout)
}

// dynamoError marks a missing table as kcl.ErrTableNotFound.
func dynamoError(err error) error {
	if awsx.Classify(err) == awsx.NotFound {
		return fmt.Errorf("%w: %w", kcl.ErrTableNotFound, err)
	}
	return err
}

// inspectTable builds the report on a table's items. byWriter narrows the
// roll-back check to the version that wrote the table, if one did.
func inspectTable(table string, items []map[string]types.AttributeValue, ownerIndex, byWriter bool, versions []javakcl.Version) inspectReport {
	r := inspectReport{Table: table, Unreadable: map[string][]string{}}
	writer, javaWrote := javakcl.Writer(items, ownerIndex)
	if javaWrote {
		r.Writer = writer.String()
		if byWriter {
			versions = []javakcl.Version{writer}
		}
	}
	str := func(it map[string]types.AttributeValue, attr string) string {
		if v, ok := it[attr].(*types.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	for _, it := range items {
		if s := str(it, javakcl.AttrStreamName); s != "" && strings.Count(str(it, "leaseKey"), ":") >= 3 && !lease.IsWorkerKey(str(it, "leaseKey")) {
			r.MultiStream = true
			if !slices.Contains(r.Streams, s) {
				r.Streams = append(r.Streams, s)
			}
		}
	}
	var legacy, pending, handoffs, owners []string
	fleetRow := false
	for _, it := range items {
		key := str(it, "leaseKey")
		et := str(it, javakcl.AttrEntityType)
		switch {
		case lease.IsWorkerKey(key):
			r.Shardline = true
			if _, ok := it["shardlineHeartbeats"]; ok {
				fleetRow = true
				r.Skipped = append(r.Skipped, skippedRow{key, "Shardline fleet row (worker heartbeats)"})
			} else {
				legacy = append(legacy, key)
				r.Skipped = append(r.Skipped, skippedRow{key, "presence row of an earlier Shardline version"})
			}
		case et != "" && et != javakcl.EntityLease:
			r.Skipped = append(r.Skipped, skippedRow{key, "Java KCL 3.5 row of entityType " + et})
		default:
			l := inspectLease{Key: key, Owner: str(it, "leaseOwner"), Checkpoint: str(it, "checkpoint"),
				Pending: str(it, "pendingCheckpoint"), CheckpointOwner: str(it, "checkpointOwner")}
			if r.MultiStream {
				l.Stream = str(it, javakcl.AttrStreamName)
			}
			for attr := range it {
				if strings.HasPrefix(attr, "shardline") {
					r.Shardline = true
				}
			}
			if l.Pending != "" {
				pending = append(pending, key)
			}
			if l.CheckpointOwner != "" {
				handoffs = append(handoffs, key)
			}
			if l.Owner != "" && l.Checkpoint != kcl.ShardEnd.SequenceNumber && !slices.Contains(owners, l.Owner) {
				owners = append(owners, l.Owner)
			}
			r.Leases = append(r.Leases, l)
		}
		for _, v := range versions {
			for _, p := range javakcl.Problems(v, r.MultiStream, it) {
				r.Unreadable[key] = append(r.Unreadable[key], "Java "+v.String()+": "+p)
			}
		}
	}
	slices.SortFunc(r.Leases, func(a, b inspectLease) int { return strings.Compare(a.Key, b.Key) })
	slices.SortFunc(r.Skipped, func(a, b skippedRow) int { return strings.Compare(a.Key, b.Key) })
	slices.Sort(r.Streams)
	slices.Sort(owners)

	// Take-over.
	switch {
	case len(r.Leases) == 0:
		r.TakeOver = append(r.TakeOver, "no leases: a new application; workers create the leases from their initial position")
	case r.MultiStream:
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("multi-stream table (%d streams: %s): take it over only with a worker configured for all these streams in multi-stream mode; a single-stream worker must not run on it",
			len(r.Streams), strings.Join(r.Streams, ", ")))
	default:
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("yes: single-stream table of %d leases; every shard resumes after its checkpoint", len(r.Leases)))
	}
	if len(r.Skipped) > 0 {
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("%d rows are not leases and are skipped (never taken, planned or written)", len(r.Skipped)))
	}
	if len(owners) > 0 {
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("leases are owned by %s: stop every Java worker first (running side by side is not supported); a lease is taken once its counter has stood still for the lease duration",
			strings.Join(owners, ", ")))
	}
	if len(pending) > 0 {
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("pending (prepared) checkpoints on %s: kept, and handed to the processor's Initialize as PendingCheckpoint and PendingState", strings.Join(pending, ", ")))
	}
	if len(handoffs) > 0 {
		r.TakeOver = append(r.TakeOver, fmt.Sprintf("Java 3.x graceful hand-offs in progress (checkpointOwner) on %s: waited for like an owned lease; the take removes checkpointOwner", strings.Join(handoffs, ", ")))
	}

	// Roll-back.
	r.RollBack = append(r.RollBack, "stop every Shardline worker (after a graceful shutdown Java takes the released leases at once, after a crash once its lease duration passed)")
	if fleetRow {
		r.RollBack = append(r.RollBack, fmt.Sprintf(`delete the fleet row: Java reads it as a finished lease (SHARD_END) with a key that is no shard: aws dynamodb delete-item --table-name %s --key '{"leaseKey":{"S":"shardline:worker:*"}}'`, table))
	}
	for _, k := range legacy {
		r.RollBack = append(r.RollBack, fmt.Sprintf(`delete %s, which Java cannot read: aws dynamodb delete-item --table-name %s --key '{"leaseKey":{"S":"%s"}}'`, k, table, k))
	}
	var bad []string
	for k := range r.Unreadable {
		if !slices.Contains(legacy, k) {
			bad = append(bad, k)
		}
	}
	slices.Sort(bad)
	if len(bad) > 0 {
		r.RollBack = append(r.RollBack, fmt.Sprintf("rows Java cannot read (it fails its whole lease listing on them; see unreadableByJava): %s", strings.Join(bad, ", ")))
	}
	r.RollBack = append(r.RollBack, "Shardline's own lease attributes (shardline*) are ignored by Java; an AT_TIMESTAMP checkpoint resumes at the Java application's configured timestamp")
	if len(r.Unreadable) == 0 {
		r.Unreadable = nil
	}
	return r
}

// print writes the report for people.
func (r inspectReport) print(w io.Writer) error {
	writer := r.Writer
	if writer == "" {
		writer = "none found"
	}
	fmt.Fprintf(w, "table %s: Java KCL format %s; Shardline has run on it: %v; multi-stream: %v\n\n", r.Table, writer, r.Shardline, r.MultiStream)
	t := newTable(w, "LEASE", "OWNER", "CHECKPOINT", "PENDING", "CHECKPOINT OWNER")
	for _, l := range r.Leases {
		t.row(l.Key, l.Owner, l.Checkpoint, l.Pending, l.CheckpointOwner)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(w, "\nrows that are not leases (skipped):")
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Key, s.What)
		}
	}
	fmt.Fprintln(w, "\ntake-over by this version:")
	for _, s := range r.TakeOver {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	fmt.Fprintln(w, "\nroll-back to the Java KCL:")
	for _, s := range r.RollBack {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Unreadable)) {
		fmt.Fprintf(w, "  unreadable %s: %s\n", k, strings.Join(r.Unreadable[k], "; "))
	}
	return nil
}
