package integration

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/fleet"
	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
	"github.com/shardline/shardline/worker"
)

// The replay tests run in-process workers, so that every delivered record's
// arrival time and delivery order can be checked.

// delivery is one record handed to a processor.
type delivery struct {
	worker, shard, data, seq string
	arrival                  time.Time
}

// deliveries records what every processor of an in-process fleet received.
type deliveries struct {
	mu        sync.Mutex
	all       []delivery // in the order the processors received them
	batches   int        // ProcessRecords calls, empty batches included
	leaseLost int
	changed   chan struct{}
}

func newDeliveries() *deliveries { return &deliveries{changed: make(chan struct{}, 1)} }

func (d *deliveries) notify() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// processor records each batch and checkpoints it.
type processor struct {
	d      *deliveries
	worker string
}

func (p *processor) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.d.mu.Lock()
	p.d.batches++
	for _, r := range in.Records {
		p.d.all = append(p.d.all, delivery{p.worker, in.ShardID, string(r.Data), r.SequenceNumber, r.ApproximateArrivalTimestamp})
	}
	p.d.mu.Unlock()
	p.d.notify()
	return in.Checkpointer.Checkpoint(ctx)
}

func (p *processor) LeaseLost(context.Context, kcl.LeaseLostInput) error {
	p.d.mu.Lock()
	p.d.leaseLost++
	p.d.mu.Unlock()
	p.d.notify()
	return nil
}

// since returns the deliveries from index i on.
func (d *deliveries) since(i int) []delivery {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.all[i:])
}

func (d *deliveries) mark() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.all)
}

func (d *deliveries) lost() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.leaseLost
}

// count returns how many times each record (by data) was delivered.
func count(ds []delivery) map[string]int {
	n := map[string]int{}
	for _, d := range ds {
		n[d.data]++
	}
	return n
}

// waitUntil re-checks cond whenever a processor received something (and at
// least every 200ms, for conditions on the lease table), until it holds or
// the timeout passes.
func (d *deliveries) waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		select {
		case <-d.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, state)
		}
	}
}

// waitDeliveredTimes waits until every record of recs was delivered at
// least n times since index from.
func (d *deliveries) waitDeliveredTimes(t *testing.T, from int, recs []string, n int) {
	t.Helper()
	d.waitUntil(t, 60*time.Second, fmt.Sprintf("%d records delivered %d times", len(recs), n), func() (bool, string) {
		c := count(d.since(from))
		missing := 0
		for _, r := range recs {
			if c[r] < n {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d short", missing, len(recs))
	})
}

// replayFleet is a stream, an application and in-process workers.
type replayFleet struct {
	t      *testing.T
	kc     *kinesis.Client
	stream string
	app    string
	store  *ilease.DynamoStore
	table  *lease.Table
	d      *deliveries
}

// newReplayFleet creates a stream and starts workers with the given IDs,
// reading from TRIM_HORIZON.
func newReplayFleet(t *testing.T, shards int, workers ...string) *replayFleet {
	t.Helper()
	f := newReplayStream(t, shards)
	f.start(nil, workers...)
	return f
}

// newReplayStream creates a stream and an application name; no worker runs.
func newReplayStream(t *testing.T, shards int) *replayFleet {
	t.Helper()
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	f := &replayFleet{t: t, kc: kc, stream: testenv.CreateStream(t, kc, shards), app: testenv.UniqueName("replay"), d: newDeliveries()}
	store, err := ilease.NewDynamoStore(dc, f.app)
	if err != nil {
		t.Fatal(err)
	}
	f.store = store
	if f.table, err = lease.NewTable(dc, f.app); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, dc, f.app)
	})
	return f
}

// start runs in-process workers until the test ends; configure, if not
// nil, adjusts their configuration.
func (f *replayFleet) start(configure func(*worker.Config), workers ...string) {
	t := f.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, id := range workers {
		cfg := worker.Config{
			StreamName:           f.stream,
			ApplicationName:      f.app,
			WorkerID:             id,
			Kinesis:              f.kc,
			DynamoDB:             testenv.DynamoDB(t),
			ProcessorFactory:     func(string) (kcl.RecordProcessor, error) { return &processor{d: f.d, worker: id}, nil },
			InitialPosition:      kcl.StartAtTrimHorizon(),
			LeaseDuration:        leaseDuration,
			RenewInterval:        renewInterval,
			TakeInterval:         500 * time.Millisecond,
			IdleTimeBetweenReads: idleTime,
			RetryInitialInterval: 50 * time.Millisecond,
			ShutdownTimeout:      10 * time.Second,
			Logger:               log.With("worker", id),
		}
		if configure != nil {
			configure(&cfg)
		}
		w, err := worker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- w.Run(context.Background()) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := w.Shutdown(ctx); err != nil {
				t.Errorf("shutdown %s: %v", id, err)
			}
			if err := <-done; err != nil {
				t.Errorf("run %s: %v", id, err)
			}
		})
	}
}

// testLog sends worker logs to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// put writes one record per name, with partition keys spread over the hash
// key space, and returns the names.
func (f *replayFleet) put(prefix string, n int) []string {
	f.t.Helper()
	names := make([]string, n)
	entries := make([]ktypes.PutRecordsRequestEntry, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s-%03d", prefix, i)
		entries[i] = ktypes.PutRecordsRequestEntry{PartitionKey: aws.String(names[i]), Data: []byte(names[i])}
	}
	out, err := f.kc.PutRecords(f.t.Context(), &kinesis.PutRecordsInput{StreamName: aws.String(f.stream), Records: entries})
	if err != nil {
		f.t.Fatal(err)
	}
	if aws.ToInt32(out.FailedRecordCount) != 0 {
		f.t.Fatalf("%d records not written", aws.ToInt32(out.FailedRecordCount))
	}
	return names
}

// shardIDs lists the stream's shards, as kclctl passes them to a reset.
func (f *replayFleet) shardIDs() []string {
	f.t.Helper()
	out, err := f.kc.ListShards(f.t.Context(), &kinesis.ListShardsInput{StreamName: aws.String(f.stream)})
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	for _, s := range out.Shards {
		ids = append(ids, aws.ToString(s.ShardId))
	}
	return ids
}

// reset replays and checks that every planned change was written.
func (f *replayFleet) reset(req lease.ResetRequest) lease.ResetPlan {
	f.t.Helper()
	req.StreamShards = f.shardIDs()
	plan, err := f.table.Reset(f.t.Context(), req)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, c := range plan.Changes {
		if !c.Applied {
			f.t.Errorf("change of %s not applied", c.Shard)
		}
		f.t.Logf("reset %s (%s): %s owned by %q -> %s", c.Shard, c.Why, c.Before.Checkpoint, c.Before.Owner, c.Checkpoint)
	}
	return plan
}

// arrivals returns the earliest and latest arrival of the given records
// among deliveries.
func arrivals(ds []delivery, recs []string) (first, last time.Time) {
	want := map[string]bool{}
	for _, r := range recs {
		want[r] = true
	}
	for _, d := range ds {
		if !want[d.data] {
			continue
		}
		if first.IsZero() || d.arrival.Before(first) {
			first = d.arrival
		}
		if d.arrival.After(last) {
			last = d.arrival
		}
	}
	return first, last
}

// checkReplayed checks the deliveries since a replay from at: every record
// that arrived at or after at was delivered again, and no older one.
func checkReplayed(t *testing.T, ds []delivery, at time.Time, older, newer []string) {
	t.Helper()
	c := count(ds)
	for _, r := range older {
		if c[r] > 0 {
			t.Errorf("record %s (older than the replay time) delivered again", r)
		}
	}
	for _, r := range newer {
		if c[r] == 0 {
			t.Errorf("record %s not delivered again", r)
		}
	}
	for _, d := range ds {
		if d.arrival.Before(at) {
			t.Errorf("record %s arrived at %v, before the replay time %v, and was delivered again", d.data, d.arrival, at)
		}
	}
}

// TestReplayFromTimestampWhileFleetRuns: two workers consume two shards;
// a replay from a time between two phases of records makes the fleet, while
// it runs, deliver every record of the second phase again and none of the
// first. The owners are fenced: each stops its shard (LeaseLost).
func TestReplayFromTimestampWhileFleetRuns(t *testing.T) {
	f := newReplayFleet(t, 2, "w1", "w2")
	first := f.put("a", 40)
	f.d.waitDeliveredTimes(t, 0, first, 1)
	second := f.put("b", 40)
	f.d.waitDeliveredTimes(t, 0, second, 1)

	all := f.d.since(0)
	_, lastA := arrivals(all, first)
	at, _ := arrivals(all, second)
	if !lastA.Before(at) {
		t.Fatalf("phases overlap in arrival time: last of the first %v, first of the second %v", lastA, at)
	}
	ls, err := f.store.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Owner == "" {
			t.Fatalf("lease %s has no owner before the replay", l.Key)
		}
	}

	mark, lostBefore := f.d.mark(), f.d.lost()
	start := time.Now()
	plan := f.reset(lease.ResetRequest{Position: kcl.StartAtTimestamp(at)})
	if len(plan.Changes) != 2 {
		t.Fatalf("%d changes, want 2", len(plan.Changes))
	}
	f.d.waitDeliveredTimes(t, mark, second, 1)
	t.Logf("second phase delivered again %v after the reset", time.Since(start).Round(time.Millisecond))

	// Records written after the replay follow it: once they are delivered,
	// every shard is past the replayed range.
	third := f.put("c", 10)
	f.d.waitDeliveredTimes(t, mark, third, 1)
	checkReplayed(t, f.d.since(mark), at, first, second)
	if lost := f.d.lost() - lostBefore; lost < 2 {
		t.Errorf("%d LeaseLost calls after the reset, want one per fenced owner (2)", lost)
	}
}

// TestReplayFromTimestampAcrossASplit: a shard is split after a replay time
// T1. A replay from T1 reopens the finished parent (it was open at T1), which
// delivers its records since T1 again before its children deliver theirs.
// A replay from T2, after the split, reopens the parent too: it delivers
// nothing and ends at once, and the children deliver their records since T2.
func TestReplayFromTimestampAcrossASplit(t *testing.T) {
	ctx := t.Context()
	f := newReplayFleet(t, 1, "w1")
	a := f.put("a", 15)
	f.d.waitDeliveredTimes(t, 0, a, 1)
	b := f.put("b", 15)
	f.d.waitDeliveredTimes(t, 0, b, 1)

	parent := "shardId-000000000000"
	mid := new(big.Int).Lsh(big.NewInt(1), 127)
	if _, err := f.kc.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName: aws.String(f.stream), ShardToSplit: aws.String(parent), NewStartingHashKey: aws.String(mid.String()),
	}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitStreamActive(ctx, f.kc, f.stream); err != nil {
		t.Fatal(err)
	}
	// Once the parent is finished, its children have leases (a shard end
	// makes the worker sync shards).
	f.d.waitUntil(t, 30*time.Second, "the parent to finish", func() (bool, string) {
		l, err := f.store.Get(ctx, parent)
		if err != nil {
			return false, err.Error()
		}
		return l.Finished(), "checkpoint " + l.Checkpoint.String()
	})
	c := f.put("c", 20)
	f.d.waitDeliveredTimes(t, 0, c, 1)
	all := f.d.since(0)
	if shards := shardsOf(all, c); len(shards) != 2 {
		t.Fatalf("records after the split went to %v, want both children", shards)
	}

	// Replay from T1, before the split.
	t1, _ := arrivals(all, b)
	mark := f.d.mark()
	plan := f.reset(lease.ResetRequest{Position: kcl.StartAtTimestamp(t1)})
	if len(plan.Changes) != 3 {
		t.Fatalf("%d changes, want the parent and both children", len(plan.Changes))
	}
	if plan.Changes[0].Shard != parent {
		t.Errorf("first change %s, want the parent first", plan.Changes[0].Shard)
	}
	f.d.waitDeliveredTimes(t, mark, slices.Concat(b, c), 1)
	d := f.put("d", 10)
	f.d.waitDeliveredTimes(t, mark, d, 1)
	replayed := f.d.since(mark)
	checkReplayed(t, replayed, t1, a, slices.Concat(b, c))
	lastB, firstC := -1, len(replayed)
	for i, r := range replayed {
		switch {
		case strings.HasPrefix(r.data, "b-"):
			lastB = i
		case strings.HasPrefix(r.data, "c-"):
			firstC = min(firstC, i)
		}
	}
	if lastB > firstC {
		t.Errorf("a child delivered %s (#%d) before the parent delivered %s (#%d) again",
			replayed[firstC].data, firstC, replayed[lastB].data, lastB)
	}

	// Replay from T2, after the split.
	t2, _ := arrivals(f.d.since(0), c)
	mark = f.d.mark()
	f.reset(lease.ResetRequest{Position: kcl.StartAtTimestamp(t2)})
	f.d.waitDeliveredTimes(t, mark, c, 1)
	e := f.put("e", 10)
	f.d.waitDeliveredTimes(t, mark, e, 1)
	checkReplayed(t, f.d.since(mark), t2, slices.Concat(a, b), c)
	f.d.waitUntil(t, 30*time.Second, "the parent to finish again", func() (bool, string) {
		l, err := f.store.Get(ctx, parent)
		if err != nil {
			return false, err.Error()
		}
		return l.Finished(), "checkpoint " + l.Checkpoint.String()
	})
}

// TestReplayFromSequenceNumber: a replay from a record's sequence number
// delivers that record and every later one again, and no earlier one.
func TestReplayFromSequenceNumber(t *testing.T) {
	f := newReplayFleet(t, 1, "w1")
	recs := f.put("s", 20)
	f.d.waitDeliveredTimes(t, 0, recs, 1)
	var from delivery
	for _, d := range f.d.since(0) {
		if d.data == recs[10] {
			from = d
		}
	}
	mark := f.d.mark()
	f.reset(lease.ResetRequest{Shards: []string{from.shard}, Sequence: kcl.NewSequence(from.seq)})
	f.d.waitDeliveredTimes(t, mark, recs[10:], 1)
	after := f.put("t", 5)
	f.d.waitDeliveredTimes(t, mark, after, 1)

	var got []string
	for _, d := range f.d.since(mark) {
		got = append(got, d.data)
	}
	if want := slices.Concat(recs[10:], after); !slices.Equal(got, want) {
		t.Errorf("delivered after the replay:\n got %v\nwant %v", got, want)
	}
}

// shardsOf returns the shards the given records were delivered from.
func shardsOf(ds []delivery, recs []string) []string {
	want := map[string]bool{}
	for _, r := range recs {
		want[r] = true
	}
	var out []string
	for _, d := range ds {
		if want[d.data] && !slices.Contains(out, d.shard) {
			out = append(out, d.shard)
		}
	}
	slices.Sort(out)
	return out
}

// arrivalsInStream reads the shard from TRIM_HORIZON and returns the
// arrival time of each record by data.
func (f *replayFleet) arrivalsInStream(shard string) map[string]time.Time {
	f.t.Helper()
	ctx := f.t.Context()
	it, err := f.kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(f.stream), ShardId: aws.String(shard), ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	out, err := f.kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: it.ShardIterator})
	if err != nil {
		f.t.Fatal(err)
	}
	at := map[string]time.Time{}
	for _, r := range out.Records {
		at[string(r.Data)] = aws.ToTime(r.ApproximateArrivalTimestamp)
	}
	return at
}

// TestInitialPositionsOfNewLeases: an application starting AT_TIMESTAMP
// reads the records that arrived from then on, one starting at LATEST only
// those written after it started reading.
func TestInitialPositionsOfNewLeases(t *testing.T) {
	t.Run("AT_TIMESTAMP", func(t *testing.T) {
		f := newReplayStream(t, 1)
		old := f.put("old", 10)
		// A record is read back before the next phase is written, so the two
		// phases' arrival times are apart.
		if got := f.arrivalsInStream("shardId-000000000000"); len(got) != len(old) {
			t.Fatalf("%d records in the stream, want %d", len(got), len(old))
		}
		recent := f.put("new", 10)
		arrived := f.arrivalsInStream("shardId-000000000000")
		at := arrived[recent[0]]
		if !arrived[old[len(old)-1]].Before(at) {
			t.Fatalf("phases overlap in arrival time")
		}
		f.start(func(c *worker.Config) { c.InitialPosition = kcl.StartAtTimestamp(at) }, "w1")
		f.d.waitDeliveredTimes(t, 0, recent, 1)
		later := f.put("later", 5)
		f.d.waitDeliveredTimes(t, 0, later, 1)
		checkReplayed(t, f.d.since(0), at, old, recent)
	})
	t.Run("LATEST", func(t *testing.T) {
		f := newReplayStream(t, 1)
		old := f.put("old", 10)
		f.start(func(c *worker.Config) {
			c.InitialPosition = kcl.StartAtLatest()
			c.CallProcessorOnEmptyBatches = true // the first (empty) batch shows the reader is reading
		}, "w1")
		f.d.waitUntil(t, 30*time.Second, "the first batch", func() (bool, string) {
			f.d.mu.Lock()
			defer f.d.mu.Unlock()
			return f.d.batches > 0, "no batch yet"
		})
		recent := f.put("new", 10)
		f.d.waitDeliveredTimes(t, 0, recent, 1)
		c := count(f.d.since(0))
		for _, r := range old {
			if c[r] > 0 {
				t.Errorf("record %s, written before the start at LATEST, delivered", r)
			}
		}
		// The processor checkpoints each batch after recording it.
		f.d.waitUntil(t, 10*time.Second, "a record's checkpoint", func() (bool, string) {
			l, err := f.store.Get(t.Context(), "shardId-000000000000")
			if err != nil {
				return false, err.Error()
			}
			return !l.Checkpoint.IsSentinel(), "checkpoint " + l.Checkpoint.String()
		})
	})
}
