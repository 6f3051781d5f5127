package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/javakcl"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// The migration tests take over lease tables written item for item as the
// Java KCL writes them (internal/javakcl), and check that what Shardline
// leaves behind can be read by Java again.

// initProcessor is a processor that also records how each shard was
// initialised.
type initProcessor struct {
	processor
	inits *sync.Map // shard ID -> kcl.InitializeInput
}

func (p *initProcessor) Initialize(_ context.Context, in kcl.InitializeInput) error {
	p.inits.Store(in.ShardID, in)
	return nil
}

// shardRecords reads every record of the stream, shard by shard, in order.
func shardRecords(t *testing.T, kc *kinesis.Client, stream string) (map[string][]ktypes.Record, []ktypes.Shard) {
	t.Helper()
	ctx := t.Context()
	out, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string][]ktypes.Record{}
	for _, s := range out.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: s.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			r, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			recs[aws.ToString(s.ShardId)] = append(recs[aws.ToString(s.ShardId)], r.Records...)
			if len(r.Records) == 0 {
				break
			}
			iter = r.NextShardIterator
		}
	}
	return recs, out.Shards
}

// javaTakeOverLeases returns the leases a stopped Java application left on
// four shards, each shard with at least 8 records: shard 0 checkpointed at
// its 3rd record and owned by java-a; shard 1 checkpointed at its 5th with
// a prepared checkpoint at its 7th (and, from 3.x, a graceful hand-off from
// java-a to java-b in progress and a measured load); shard 2 never
// checkpointed and unowned; shard 3 checkpointed at its last record. want
// maps each shard to the sequence numbers that must be delivered: those
// strictly after its checkpoint.
func javaTakeOverLeases(t *testing.T, streamID string, recs map[string][]ktypes.Record, shards []ktypes.Shard) (ls []javakcl.Lease, want map[string][]string) {
	t.Helper()
	want = map[string][]string{}
	seq := func(shard string, i int) string { return aws.ToString(recs[shard][i].SequenceNumber) }
	after := func(shard string, i int) []string {
		var out []string
		for _, r := range recs[shard][i+1:] {
			out = append(out, aws.ToString(r.SequenceNumber))
		}
		return out
	}
	for i, s := range shards {
		id := aws.ToString(s.ShardId)
		if len(recs[id]) < 8 {
			t.Fatalf("shard %s has %d records, want at least 8", id, len(recs[id]))
		}
		l := javakcl.Lease{
			StreamID: streamID, ShardID: id, Counter: 300 + int64(i), OwnerSwitches: 1,
			StartHash: aws.ToString(s.HashKeyRange.StartingHashKey), EndHash: aws.ToString(s.HashKeyRange.EndingHashKey),
		}
		switch i {
		case 0:
			l.Owner, l.Checkpoint, want[id] = "java-a", seq(id, 2), after(id, 2)
		case 1:
			l.Owner, l.Checkpoint, want[id] = "java-b", seq(id, 4), after(id, 4)
			l.Pending, l.PendingState = seq(id, 6), []byte("prepared-state")
			l.CheckpointOwner, l.ThroughputKBps = "java-a", 1.75
		case 2:
			l.Checkpoint, l.OwnerSwitches, want[id] = "TRIM_HORIZON", 0, after(id, -1)
		default:
			last := len(recs[id]) - 1
			l.Owner, l.Checkpoint, want[id] = "java-a", seq(id, last), nil
		}
		ls = append(ls, l)
	}
	return ls, want
}

// TestTakeOverFromJavaKCL: for each Java KCL table format (2.x, 3.0-3.4,
// 3.5 single-table), a Shardline worker takes over a single-stream table a
// stopped Java application left, and every shard resumes strictly after
// its checkpoint: nothing at or before it is delivered again, everything
// after it is delivered once and in order, and a prepared checkpoint
// reaches the processor.
func TestTakeOverFromJavaKCL(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	for _, v := range javakcl.Versions {
		t.Run(v.String(), func(t *testing.T) {
			f, leases, want := javaTable(t, v, false)
			checkTakeOver(t, f, false, leases, want)
		})
	}
}

// javaTable creates a stream of four shards with records and the lease
// table a stopped Java application of version v left on it (see
// javaTakeOverLeases), single- or multi-stream; for 3.5 with its leader
// lock, migration state, worker metrics (and stream info) rows. Every
// fixture is one the Java reader reads.
func javaTable(t *testing.T, v javakcl.Version, multiStream bool) (*replayFleet, []javakcl.Lease, map[string][]string) {
	t.Helper()
	f := newReplayStream(t, 4)
	f.put("rec", 100)
	recs, shards := shardRecords(t, f.kc, f.stream)
	ctx := t.Context()
	dc := testenv.DynamoDB(t)
	if err := javakcl.CreateTable(ctx, dc, f.app, v); err != nil {
		t.Fatal(err)
	}
	var streamID string
	var streams []string
	if multiStream {
		desc, err := f.kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(f.stream)})
		if err != nil {
			t.Fatal(err)
		}
		streamID = fmt.Sprintf("000000000000:%s:%d", f.stream, aws.ToTime(desc.StreamDescriptionSummary.StreamCreationTimestamp).Unix())
		streams = []string{streamID}
	}
	leases, want := javaTakeOverLeases(t, streamID, recs, shards)
	for _, l := range leases {
		item := javakcl.Item(v, l)
		if p := javakcl.Problems(v, multiStream, item); len(p) > 0 {
			t.Fatalf("fixture %s unreadable by Java %s: %v", l.Key(), v, p)
		}
		if err := javakcl.Put(ctx, dc, f.app, item); err != nil {
			t.Fatal(err)
		}
	}
	if v == javakcl.V35 {
		if err := javakcl.Put(ctx, dc, f.app, javakcl.EntityRows([]string{"java-a", "java-b"}, streams, time.Now())...); err != nil {
			t.Fatal(err)
		}
	}
	return f, leases, want
}

// checkTakeOver runs a Shardline worker on f's table (a multi-stream
// worker consuming f's stream when multiStream is set) and checks what it
// delivers against want (shard -> sequence numbers after the checkpoint).
func checkTakeOver(t *testing.T, f *replayFleet, multiStream bool, leases []javakcl.Lease, want map[string][]string) {
	t.Helper()
	inits := &sync.Map{}
	f.start(func(c *worker.Config) {
		c.ProcessorFactory = func(string) (kcl.RecordProcessor, error) {
			return &initProcessor{processor: processor{d: f.d, worker: "go-1"}, inits: inits}, nil
		}
		if multiStream {
			c.StreamName, c.Streams = "", []worker.StreamConfig{{Stream: f.stream}}
		}
	}, "go-1")
	total := 0
	for _, w := range want {
		total += len(w)
	}
	f.d.waitUntil(t, 90*time.Second, "every record after the Java checkpoints", func() (bool, string) {
		n := len(f.d.since(0))
		return n >= total, fmt.Sprintf("%d of %d delivered", n, total)
	})
	got := map[string][]string{}
	for _, d := range f.d.since(0) {
		got[d.shard] = append(got[d.shard], d.seq)
	}
	for shard, w := range want {
		if !slices.Equal(got[shard], w) {
			t.Errorf("shard %s delivered %d records %v,\nwant the %d after its Java checkpoint %v", shard, len(got[shard]), got[shard], len(w), w)
		}
	}
	for _, l := range leases {
		in, ok := inits.Load(l.ShardID)
		if !ok {
			if len(want[l.ShardID]) > 0 {
				t.Errorf("shard %s never initialised", l.ShardID)
			}
			continue
		}
		ii := in.(kcl.InitializeInput)
		if l.Pending != "" && (ii.PendingCheckpoint.SequenceNumber != l.Pending || string(ii.PendingState) != string(l.PendingState)) {
			t.Errorf("shard %s initialised with pending checkpoint %v state %q, want %s %q", l.ShardID, ii.PendingCheckpoint, ii.PendingState, l.Pending, l.PendingState)
		}
		if ii.Checkpoint.SequenceNumber != l.Checkpoint {
			t.Errorf("shard %s initialised at %v, want the Java checkpoint %s", l.ShardID, ii.Checkpoint, l.Checkpoint)
		}
	}
}

// TestTakeOverFromJavaKCLMultiStream: as TestTakeOverFromJavaKCL, for a
// multi-stream application (lease keys account:stream:creationEpoch:shardId
// with streamName and shardId attributes) of every Java format.
func TestTakeOverFromJavaKCLMultiStream(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	for _, v := range javakcl.Versions {
		t.Run(v.String(), func(t *testing.T) {
			f, leases, want := javaTable(t, v, true)
			checkTakeOver(t, f, true, leases, want)
		})
	}
}

// TestRollBackToJavaAfterKill: after Shardline workers were SIGKILLed
// mid-run (no graceful shutdown), every item they left in the lease table
// can be read by every Java KCL version with its lease reader's rules, in
// single- and multi-stream mode for the fleet row.
func TestRollBackToJavaAfterKill(t *testing.T) {
	e := setup(t, 4, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e.prod.Start(100*time.Millisecond, 4)
	e.start("w1", "w2")
	ls := e.waitBalanced(ctx, []string{"w1", "w2"}, 1)
	waitEveryShardDelivering(ctx, t, e, len(ls))
	for _, id := range []string{"w1", "w2"} {
		if _, err := e.fleet.Process(id).Kill(); err != nil {
			t.Fatal(err)
		}
	}
	items, err := scanAll(ctx, e.dc, e.app)
	if err != nil {
		t.Fatal(err)
	}
	leases, fleetRows := 0, 0
	for _, it := range items {
		key := it["leaseKey"].(*ddbS).Value
		owned := it["leaseOwner"] != nil
		switch {
		case key == "shardline:worker:*":
			fleetRows++
		case owned:
			leases++
		}
		for _, v := range javakcl.Versions {
			for _, multi := range []bool{false, true} {
				if multi && key != "shardline:worker:*" {
					continue // a single-stream application's leases are not read in multi-stream mode
				}
				if p := javakcl.Problems(v, multi, it); len(p) > 0 {
					t.Errorf("Java %s (multi-stream %v) cannot read %s left by killed workers: %v", v, multi, key, p)
				}
			}
		}
	}
	if fleetRows != 1 || leases != 4 {
		t.Fatalf("table holds %d fleet rows and %d owned leases, want 1 and 4 (killed workers' leases): %v", fleetRows, leases, javakcl.SortedKeys(items))
	}
}

type ddbS = dtypes.AttributeValueMemberS

// scanAll reads every item of a table, consistently.
func scanAll(ctx context.Context, dc *dynamodb.Client, table string) ([]map[string]dtypes.AttributeValue, error) {
	var items []map[string]dtypes.AttributeValue
	p := dynamodb.NewScanPaginator(dc, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		items = append(items, out.Items...)
	}
	return items, nil
}
