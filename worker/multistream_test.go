package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// msRecorder records what the processors of a multi-stream fleet saw. A
// session is one processor (one lease acquisition); within a session the
// sequence numbers of a shard must increase.
type msRecorder struct {
	mu        sync.Mutex
	delivered map[string]map[string]bool // "stream/shard" -> sequence numbers delivered
	byWorker  map[string]int             // worker -> records delivered
	disorder  []string                   // order violations within a session
	dead      map[string]bool            // workers killed: their later deliveries are not counted
	batches   int                        // batches delivered
	first     map[string]int             // "stream/shard" -> number of the batch that first delivered it
	last      map[string]int             // "stream/shard" -> number of its last batch
	changed   chan struct{}
}

func newMSRecorder() *msRecorder {
	return &msRecorder{delivered: map[string]map[string]bool{}, byWorker: map[string]int{},
		dead: map[string]bool{}, first: map[string]int{}, last: map[string]int{}, changed: make(chan struct{}, 1)}
}

// factory returns the processor factory of one worker for one stream: the
// closure is how a processor learns its stream.
func (r *msRecorder) factory(workerID, stream string) kcl.ProcessorFactory {
	return func(shardID string) (kcl.RecordProcessor, error) {
		var last kcl.ExtendedSequenceNumber
		key := stream + "/" + shardID
		return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
			if in.ShardID != shardID {
				return fmt.Errorf("processor of %s got records of %s", shardID, in.ShardID)
			}
			r.mu.Lock()
			if r.dead[workerID] {
				r.mu.Unlock()
				return errors.New("worker killed")
			}
			if r.delivered[key] == nil {
				r.delivered[key] = map[string]bool{}
			}
			for _, rec := range in.Records {
				pos := kcl.NewSequence(rec.SequenceNumber)
				if !last.IsZero() && pos.Compare(last) <= 0 {
					r.disorder = append(r.disorder, fmt.Sprintf("%s: %s after %s", key, rec.SequenceNumber, last.SequenceNumber))
				}
				last = pos
				r.delivered[key][rec.SequenceNumber] = true
			}
			r.byWorker[workerID] += len(in.Records)
			r.batches++
			if _, ok := r.first[key]; !ok {
				r.first[key] = r.batches
			}
			r.last[key] = r.batches
			r.mu.Unlock()
			select {
			case r.changed <- struct{}{}:
			default:
			}
			return in.Checkpointer.Checkpoint(ctx)
		}), nil
	}
}

// missing returns how many of the produced records (stream -> shard ->
// sequence numbers) were not delivered.
func (r *msRecorder) missing(produced map[string]map[string][]string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for stream, shards := range produced {
		for shard, seqs := range shards {
			for _, s := range seqs {
				if !r.delivered[stream+"/"+shard][s] {
					n++
				}
			}
		}
	}
	return n
}

func (r *msRecorder) deliveredAny(stream string, seqs map[string][]string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for shard, ss := range seqs {
		for _, s := range ss {
			if r.delivered[stream+"/"+shard][s] {
				n++
			}
		}
	}
	return n
}

// waitUntil re-checks cond on every delivery and every 200ms, and fails the
// test after d.
func (r *msRecorder) waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-r.changed:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// produced collects what was put, by stream and shard.
type produced map[string]map[string][]string

func (p produced) add(stream string, got map[string][]string) {
	if p[stream] == nil {
		p[stream] = map[string][]string{}
	}
	for shard, seqs := range got {
		p[stream][shard] = append(p[stream][shard], seqs...)
	}
}

// rawLeases scans the lease table as DynamoDB holds it.
func rawLeases(t *testing.T, table string) []map[string]dtypes.AttributeValue {
	t.Helper()
	out, err := testenv.DynamoDB(t).Scan(context.Background(), &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var items []map[string]dtypes.AttributeValue
	for _, it := range out.Items {
		if k, _ := it["leaseKey"].(*dtypes.AttributeValueMemberS); k != nil && !lease.IsWorkerKey(k.Value) {
			items = append(items, it)
		}
	}
	return items
}

func attrS(it map[string]dtypes.AttributeValue, name string) string {
	if v, ok := it[name].(*dtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

// streamIdentifier returns ACCOUNT:NAME:EPOCH of a stream, as the Java KCL
// writes it.
func streamIdentifier(t *testing.T, kc *kinesis.Client, name string) string {
	t.Helper()
	d, err := kc.DescribeStreamSummary(context.Background(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	arn := strings.Split(aws.ToString(d.StreamDescriptionSummary.StreamARN), ":")
	return fmt.Sprintf("%s:%s:%d", arn[4], name, d.StreamDescriptionSummary.StreamCreationTimestamp.Unix())
}

func msConfig(t *testing.T, app, id string) worker.Config {
	return worker.Config{
		ApplicationName:      app,
		WorkerID:             id,
		Kinesis:              testenv.Kinesis(t),
		DynamoDB:             testenv.DynamoDB(t),
		InitialPosition:      kcl.StartAtTrimHorizon(),
		LeaseDuration:        3 * time.Second,
		RenewInterval:        time.Second,
		TakeInterval:         500 * time.Millisecond,
		ShardSyncInterval:    time.Second,
		IdleTimeBetweenReads: 100 * time.Millisecond,
		RetryInitialInterval: 50 * time.Millisecond,
		Logger:               slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// One worker consumes two streams, each shard in order, and writes its
// leases as the Java KCL's multi-stream mode does: key
// ACCOUNT:STREAM:EPOCH:SHARD, attributes streamName (the stream
// identifier) and shardId.
func TestMultiStreamOneWorkerTwoStreams(t *testing.T) {
	kc := testenv.Kinesis(t)
	a, b := testenv.CreateStream(t, kc, 2), testenv.CreateStream(t, kc, 2)
	want := produced{}
	want.add(a, put(t, kc, a, 100, "a"))
	want.add(b, put(t, kc, b, 100, "b"))
	rec := newMSRecorder()
	app := testenv.UniqueName("app")
	cfg := msConfig(t, app, "w1")
	// Stream b by ARN, a by name; b with its own initial position.
	arnOut, err := kc.DescribeStreamSummary(context.Background(), &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(b)})
	if err != nil {
		t.Fatal(err)
	}
	trim := kcl.StartAtTrimHorizon()
	cfg.InitialPosition = kcl.StartAtLatest() // b overrides it; a would miss its records
	cfg.Streams = []worker.StreamConfig{
		{Stream: a, ProcessorFactory: rec.factory("w1", a), InitialPosition: &trim},
		{Stream: aws.ToString(arnOut.StreamDescriptionSummary.StreamARN), ProcessorFactory: rec.factory("w1", b), InitialPosition: &trim},
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitUntil(t, 60*time.Second, "200 records of two streams", func() bool { return rec.missing(want) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(rec.disorder) > 0 {
		t.Fatalf("order violations: %v", rec.disorder)
	}
	ids := map[string]string{a: streamIdentifier(t, kc, a), b: streamIdentifier(t, kc, b)}
	items := rawLeases(t, app)
	if len(items) != 4 {
		t.Fatalf("%d leases, want 4", len(items))
	}
	perStream := map[string]int{}
	for _, it := range items {
		key, sn, shard := attrS(it, "leaseKey"), attrS(it, "streamName"), attrS(it, "shardId")
		if !strings.HasPrefix(shard, "shardId-") || key != sn+":"+shard {
			t.Errorf("lease %q: streamName %q shardId %q", key, sn, shard)
		}
		perStream[sn]++
		if attrS(it, "checkpoint") == "" || attrS(it, "leaseOwner") != "" {
			t.Errorf("lease %q: checkpoint %q owner %q after a graceful stop", key, attrS(it, "checkpoint"), attrS(it, "leaseOwner"))
		}
	}
	if perStream[ids[a]] != 2 || perStream[ids[b]] != 2 {
		t.Fatalf("leases per stream identifier %v, want 2 each of %v", perStream, slices.Collect(maps.Values(ids)))
	}
}

// killable returns Kinesis and DynamoDB clients for the emulators whose
// calls all fail once kill is called: the worker using them stops
// heartbeating and cannot release its leases, as if its process had died.
func killable(t *testing.T) (*kinesis.Client, *dynamodb.Client, func()) {
	t.Helper()
	fk, err := faults.NewKinesis(faults.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := faults.NewDynamoDB(faults.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint, o.HTTPClient = aws.String(testenv.KinesisEndpoint()), fk
	})
	d := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint, o.HTTPClient, o.DisableValidateResponseChecksum = aws.String(testenv.DynamoDBEndpoint()), fd, true
	})
	return k, d, func() { fk.Outage(faults.Refuse); fd.Outage(faults.Refuse) }
}

// owners counts the unfinished leases of the table per owner ("" for none),
// leaving out the streams of skip, and the leases per stream identifier
// held by anyone.
func owners(t *testing.T, table string, skip ...string) (perOwner map[string]int, heldPerStream map[string]int) {
	t.Helper()
	perOwner, heldPerStream = map[string]int{}, map[string]int{}
	for _, it := range rawLeases(t, table) {
		if attrS(it, "checkpoint") == kcl.ShardEnd.SequenceNumber || slices.Contains(skip, attrS(it, "streamName")) {
			continue
		}
		o := attrS(it, "leaseOwner")
		perOwner[o]++
		if o != "" {
			heldPerStream[attrS(it, "streamName")]++
		}
	}
	return perOwner, heldPerStream
}

// balanced reports whether the workers of ids hold the unfinished leases
// of the table evenly (within one), and nobody else holds any.
func balanced(perOwner map[string]int, ids []string) bool {
	total := 0
	for _, n := range perOwner {
		total += n
	}
	held := 0
	for _, id := range ids {
		n := perOwner[id]
		held += n
		if n < total/len(ids) || n > (total+len(ids)-1)/len(ids) {
			return false
		}
	}
	return held == total
}

// A fleet of three workers consumes three streams of four shards; a fourth
// stream is added and the first removed while it runs, and one worker is
// killed (it stops heartbeating and cannot release). Nothing is lost, every
// shard is delivered in order within each processor's session, the removed
// stream's later records are not read, and the leases of all streams are
// balanced across the live workers by number of shards.
func TestMultiStreamFleetAddRemoveKill(t *testing.T) {
	kc := testenv.Kinesis(t)
	a, b, c, d := testenv.CreateStream(t, kc, 4), testenv.CreateStream(t, kc, 4), testenv.CreateStream(t, kc, 4), testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("app")
	rec := newMSRecorder()

	var mu sync.Mutex
	current := []string{a, b, c}
	setStreams := func(names ...string) { mu.Lock(); current = names; mu.Unlock() }
	ids := []string{"w1", "w2", "w3"}
	kills := map[string]func(){}
	stops := map[string]func() error{}
	workers := map[string]*worker.Worker{}
	for _, id := range ids {
		cfg := msConfig(t, app, id)
		var kill func()
		cfg.Kinesis, cfg.DynamoDB, kill = killable(t)
		kills[id] = kill
		cfg.StreamsFunc = func(ctx context.Context) ([]worker.StreamConfig, error) {
			mu.Lock()
			defer mu.Unlock()
			out := make([]worker.StreamConfig, len(current))
			for i, name := range current {
				out[i] = worker.StreamConfig{Stream: name, ProcessorFactory: rec.factory(id, name)}
			}
			return out, nil
		}
		w, err := worker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		workers[id] = w
		stops[id] = start(t, w)
	}

	want := produced{}
	for _, s := range []string{a, b, c} {
		want.add(s, put(t, kc, s, 200, s))
	}
	rec.waitUntil(t, 90*time.Second, "600 records of three streams", func() bool { return rec.missing(want) == 0 })
	rec.waitUntil(t, 90*time.Second, "12 leases balanced 4/4/4", func() bool {
		per, _ := owners(t, app)
		return balanced(per, ids)
	})

	// Remove a, add d.
	idA := streamIdentifier(t, kc, a)
	setStreams(b, c, d)
	rec.waitUntil(t, 60*time.Second, "stream a's leases released", func() bool {
		_, held := owners(t, app)
		return held[idA] == 0 && held[streamIdentifier(t, kc, d)] == 4
	})
	lateA := put(t, kc, a, 100, "late-a") // not to be read: a is no longer consumed
	for _, s := range []string{b, c, d} {
		want.add(s, put(t, kc, s, 200, s+"-2"))
	}

	// Kill w1 while records keep coming.
	rec.mu.Lock()
	rec.dead["w1"] = true
	rec.mu.Unlock()
	kills["w1"]()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	killed := make(chan struct{})
	go func() { // a stop without any grace: processors cancelled, nothing released (every call fails)
		defer close(killed)
		_ = workers["w1"].Shutdown(ctx)
	}()
	t.Cleanup(func() { <-killed })
	for _, s := range []string{b, c, d} {
		want.add(s, put(t, kc, s, 200, s+"-3"))
	}
	rec.waitUntil(t, 120*time.Second, "every record of b, c, d and a's first 200", func() bool { return rec.missing(want) == 0 })
	live := []string{"w2", "w3"}
	rec.waitUntil(t, 90*time.Second, "12 leases of b, c, d balanced 6/6 on the live workers", func() bool {
		per, _ := owners(t, app, idA)
		return balanced(per, live)
	})
	for _, id := range live {
		if err := stops[id](); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if len(rec.disorder) > 0 {
		t.Fatalf("order violations: %v", rec.disorder)
	}
	if n := rec.deliveredAny(a, lateA); n > 0 {
		t.Errorf("%d records put on stream a after its removal were delivered", n)
	}
	rec.mu.Lock()
	t.Logf("records delivered per worker: %v", rec.byWorker)
	rec.mu.Unlock()
}

// A stream deleted and re-created under the same name is a new stream (its
// creation time, part of the stream identifier, differs): its shards get
// fresh leases from the initial position, whatever the old stream's leases
// say (its shard IDs are the same), and the old leases are deleted.
func TestMultiStreamRecreatedStream(t *testing.T) {
	kc := testenv.Kinesis(t)
	ctx := context.Background()
	name := testenv.CreateStream(t, kc, 2)
	other := testenv.CreateStream(t, kc, 1)
	app := testenv.UniqueName("app")
	rec := newMSRecorder()
	cfg := msConfig(t, app, "w1")
	cfg.ProcessorFactory = rec.factory("w1", name)
	cfg.Streams = []worker.StreamConfig{{Stream: name}, {Stream: other, ProcessorFactory: rec.factory("w1", other)}}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	first := produced{}
	first.add(name, put(t, kc, name, 50, "old"))
	rec.waitUntil(t, 60*time.Second, "the first stream's records", func() bool { return rec.missing(first) == 0 })
	oldID := streamIdentifier(t, kc, name)

	if _, err := kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	rec.waitUntil(t, 60*time.Second, "the stream's deletion", func() bool {
		_, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		return err != nil
	})
	// Creation times are compared in seconds: the new stream must be
	// created in a later second than the old one (a wait for the clock,
	// not for an event).
	_, _, oldEpoch, _ := lease.ParseStreamIdentifier(oldID)
	for time.Now().Unix() <= oldEpoch {
		time.Sleep(50 * time.Millisecond)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := testenv.CreateStreamNamed(cctx, kc, name, 2); err != nil {
		t.Fatal(err)
	}
	newID := streamIdentifier(t, kc, name)
	if newID == oldID {
		t.Fatalf("re-created stream has the same identifier %s", oldID)
	}
	second := produced{}
	second.add(name, put(t, kc, name, 50, "new"))
	rec.waitUntil(t, 60*time.Second, "the re-created stream's records", func() bool { return rec.missing(second) == 0 })
	rec.waitUntil(t, 30*time.Second, "the old stream's leases deleted", func() bool {
		for _, it := range rawLeases(t, app) {
			if attrS(it, "streamName") == oldID {
				return false
			}
		}
		return true
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(rec.disorder) > 0 {
		t.Fatalf("order violations: %v", rec.disorder)
	}
	n := 0
	for _, it := range rawLeases(t, app) {
		if attrS(it, "streamName") == newID {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d leases of the re-created stream %s, want 2", n, newID)
	}
}

// A stream removed from the configuration stops at once by default: the
// batch in flight completes, the checkpoint is written and the lease
// released. With DrainRemovedStreams its shards are read up to the tip
// first.
func TestMultiStreamRemovedStreamStopsOrDrains(t *testing.T) {
	for _, drain := range []bool{false, true} {
		t.Run(fmt.Sprintf("drain=%v", drain), func(t *testing.T) {
			kc := testenv.Kinesis(t)
			a, b := testenv.CreateStream(t, kc, 1), testenv.CreateStream(t, kc, 1)
			want := produced{}
			want.add(a, put(t, kc, a, 300, "a"))
			app := testenv.UniqueName("app")
			rec := newMSRecorder()
			firstIn, unblock := make(chan struct{}), make(chan struct{})
			var once sync.Once
			gated := func(shardID string) (kcl.RecordProcessor, error) {
				p, err := rec.factory("w1", a)(shardID)
				return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
					once.Do(func() { close(firstIn); <-unblock })
					return p.ProcessRecords(ctx, in)
				}), err
			}
			var mu sync.Mutex
			current, calls := []string{a, b}, 0
			cfg := msConfig(t, app, "w1")
			cfg.MaxRecords = 10
			cfg.DrainRemovedStreams = drain
			cfg.StreamsFunc = func(context.Context) ([]worker.StreamConfig, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				var out []worker.StreamConfig
				for _, s := range current {
					f := rec.factory("w1", s)
					if s == a {
						f = gated
					}
					out = append(out, worker.StreamConfig{Stream: s, ProcessorFactory: f})
				}
				return out, nil
			}
			w, err := worker.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			stop := start(t, w)
			select {
			case <-firstIn:
			case <-time.After(60 * time.Second):
				t.Fatal("no delivery on stream a")
			}
			mu.Lock()
			current, calls = []string{b}, 0
			mu.Unlock()
			// The second call after the change comes after the refresh that
			// removed a (refreshes run one at a time).
			rec.waitUntil(t, 30*time.Second, "two refreshes without stream a", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return calls >= 2
			})
			close(unblock)
			idA := streamIdentifier(t, kc, a)
			rec.waitUntil(t, 60*time.Second, "stream a's lease released", func() bool {
				_, held := owners(t, app)
				return held[idA] == 0 && rec.deliveredAny(a, want[a]) > 0
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			got := rec.deliveredAny(a, want[a])
			if drain && got != 300 || !drain && got != 10 {
				t.Errorf("%d records of the removed stream delivered; want %d", got, map[bool]int{false: 10, true: 300}[drain])
			}
			if len(rec.disorder) > 0 {
				t.Fatalf("order violations: %v", rec.disorder)
			}
			// The checkpoint is the last record delivered.
			for _, it := range rawLeases(t, app) {
				if attrS(it, "streamName") != idA {
					continue
				}
				seqs := want[a][attrS(it, "shardId")]
				if cp := attrS(it, "checkpoint"); cp != seqs[got-1] {
					t.Errorf("checkpoint %s, want the last record delivered %s", cp, seqs[got-1])
				}
			}
		})
	}
}

// With enhanced fan-out, a multi-stream worker registers the application's
// consumer on every stream and reads each through its own.
func TestMultiStreamFanOut(t *testing.T) {
	kc := efotest.EmulatorKinesis(t)
	a, b := testenv.CreateStream(t, kc, 2), testenv.CreateStream(t, kc, 2)
	want := produced{}
	want.add(a, put(t, kc, a, 60, "a"))
	want.add(b, put(t, kc, b, 60, "b"))
	app := testenv.UniqueName("app")
	rec := newMSRecorder()
	cfg := msConfig(t, app, "w1")
	cfg.Kinesis = kc
	cfg.FanOut = &fanout.Options{}
	cfg.Streams = []worker.StreamConfig{{Stream: a, ProcessorFactory: rec.factory("w1", a)}, {Stream: b, ProcessorFactory: rec.factory("w1", b)}}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	rec.waitUntil(t, 60*time.Second, "120 records through fan-out", func() bool { return rec.missing(want) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(rec.disorder) > 0 {
		t.Fatalf("order violations: %v", rec.disorder)
	}
	for _, s := range []string{a, b} {
		arn, err := awsx.StreamOf(s).ResolveARN(t.Context(), kc)
		if err != nil {
			t.Fatal(err)
		}
		consumers, err := fanout.ListConsumers(t.Context(), kc, arn)
		if err != nil || len(consumers) != 1 || consumers[0].Name != app {
			t.Errorf("consumers of %s: %+v, %v; want one named %s", s, consumers, err, app)
		}
	}
}

// A split in one stream of a multi-stream worker: the parent is read to its
// end before its children; the children's leases carry the stream's key
// prefix and name their parent by shard ID, as the Java KCL writes them;
// the other stream goes on meanwhile.
func TestMultiStreamSplitShard(t *testing.T) {
	kc := testenv.Kinesis(t)
	ctx := context.Background()
	a, b := testenv.CreateStream(t, kc, 1), testenv.CreateStream(t, kc, 1)
	app := testenv.UniqueName("app")
	rec := newMSRecorder()
	cfg := msConfig(t, app, "w1")
	cfg.Streams = []worker.StreamConfig{{Stream: a, ProcessorFactory: rec.factory("w1", a)}, {Stream: b, ProcessorFactory: rec.factory("w1", b)}}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	want := produced{}
	want.add(a, put(t, kc, a, 50, "before"))
	want.add(b, put(t, kc, b, 50, "b"))
	rec.waitUntil(t, 60*time.Second, "the records before the split", func() bool { return rec.missing(want) == 0 })

	shards, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(a)})
	if err != nil {
		t.Fatal(err)
	}
	parent := shards.Shards[0]
	pid := aws.ToString(parent.ShardId)
	if _, err := kc.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(a), ShardToSplit: parent.ShardId,
		NewStartingHashKey: aws.String(midpoint(parent))}); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := testenv.WaitStreamActive(actx, kc, a); err != nil {
		t.Fatal(err)
	}
	after := put(t, kc, a, 100, "after")
	want.add(a, after)
	want.add(b, put(t, kc, b, 50, "b2"))
	rec.waitUntil(t, 60*time.Second, "every record after the split", func() bool { return rec.missing(want) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(rec.disorder) > 0 {
		t.Fatalf("order violations: %v", rec.disorder)
	}
	if len(after) != 2 {
		t.Fatalf("records after the split went to shards %v, want the two children", slices.Collect(maps.Keys(after)))
	}
	rec.mu.Lock()
	for child := range after {
		if rec.first[a+"/"+child] <= rec.last[a+"/"+pid] {
			t.Errorf("child %s delivered (batch %d) before its parent's last batch (%d)", child, rec.first[a+"/"+child], rec.last[a+"/"+pid])
		}
	}
	rec.mu.Unlock()
	id := streamIdentifier(t, kc, a)
	items := map[string]map[string]dtypes.AttributeValue{}
	for _, it := range rawLeases(t, app) {
		items[attrS(it, "leaseKey")] = it
	}
	p := items[id+":"+pid]
	if attrS(p, "checkpoint") != kcl.ShardEnd.SequenceNumber {
		t.Errorf("parent lease %s: checkpoint %q, want SHARD_END", id+":"+pid, attrS(p, "checkpoint"))
	}
	if cs, _ := p["childShardIds"].(*dtypes.AttributeValueMemberSS); cs == nil || len(cs.Value) != 2 {
		t.Errorf("parent lease childShardIds %v, want the two children", p["childShardIds"])
	}
	for child := range after {
		c := items[id+":"+child]
		ps, _ := c["parentShardId"].(*dtypes.AttributeValueMemberSS)
		if c == nil || ps == nil || !slices.Equal(ps.Value, []string{pid}) || attrS(c, "shardId") != child || attrS(c, "streamName") != id {
			t.Errorf("child lease %s: %v", id+":"+child, c)
		}
	}
}
