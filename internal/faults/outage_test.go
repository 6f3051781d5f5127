package faults_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

const (
	outageLease = 3 * time.Second
	// outageMargin is the lease's safety margin: a worker stops acting on a
	// lease this long before the lease duration after its last write.
	outageMargin = outageLease / 10
)

// batchCall is one ProcessRecords call, from its start to the end of its
// checkpoint.
type batchCall struct {
	worker, shard string
	start, end    time.Time
	held          bool // the processor held the batch for the outage
	cancelled     bool // the call's context had ended when it returned
}

// outageRig is one outage scenario: a worker w1 whose DynamoDB client can
// be cut off, its calls and writes, and what its processors did.
type outageRig struct {
	t      *testing.T
	stream string
	app    string
	prod   *fleet.Producer
	sink   *sink
	dw     *faults.Client // w1's DynamoDB HTTP calls go through it
	meter  *meter
	down   atomic.Bool // set while the outage lasts
	block  map[string]bool

	mu        sync.Mutex
	lastWrite map[string]time.Time // shard -> start of w1's last successful lease write
	calls     []batchCall
}

func newOutageRig(t *testing.T, shards int) *outageRig {
	kc := testenv.Kinesis(t)
	testenv.Require(t)
	r := &outageRig{t: t, stream: testenv.CreateStream(t, kc, shards), app: testenv.UniqueName("app"),
		sink: newSink(), meter: newMeter(), lastWrite: map[string]time.Time{}, block: map[string]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if r.prod, err = fleet.NewProducer(ctx, kc, r.stream, 3); err != nil {
		t.Fatal(err)
	}
	r.dw, err = faults.NewDynamoDB(faults.Config{Observer: r.observe, HangLimit: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// observe notes the start of every successful lease write: the lease's
// deadline in w1's eyes, and the earliest time at which another worker can
// consider it expired, count from there.
func (r *outageRig) observe(c faults.Call) {
	r.meter.observe(c)
	if c.Op != "UpdateItem" || !c.OK() {
		return
	}
	var in struct {
		Key struct {
			LeaseKey struct{ S string } `json:"leaseKey"`
		}
	}
	if err := json.Unmarshal(c.Body, &in); err != nil || in.Key.LeaseKey.S == "" {
		return
	}
	key := in.Key.LeaseKey.S
	r.mu.Lock()
	if c.Start.After(r.lastWrite[key]) {
		r.lastWrite[key] = c.Start
	}
	r.mu.Unlock()
}

// worker returns a worker; w1 uses the wrapped DynamoDB client. During the
// outage, w1's processors of the shards in r.block hold their batch until
// their context ends.
func (r *outageRig) worker(id string, dc lease.DynamoDBAPI) *worker.Worker {
	hold := func(ctx context.Context, in kcl.ProcessRecordsInput) bool { return false }
	if id == "w1" {
		hold = func(ctx context.Context, in kcl.ProcessRecordsInput) bool {
			if !r.down.Load() || !r.block[in.ShardID] {
				return false
			}
			t := time.NewTimer(30 * time.Second) // a bound; the test fails if it is reached
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			return true
		}
	}
	w, err := worker.New(worker.Config{
		StreamName: r.stream, ApplicationName: r.app, WorkerID: id,
		Kinesis: testenv.Kinesis(r.t), DynamoDB: dc,
		ProcessorFactory: r.sink.factory(id, func(ctx context.Context, in kcl.ProcessRecordsInput) func() {
			start := time.Now()
			held := hold(ctx, in)
			return func() { // after the batch's checkpoint
				r.mu.Lock()
				r.calls = append(r.calls, batchCall{worker: id, shard: in.ShardID, start: start, end: time.Now(),
					held: held, cancelled: ctx.Err() != nil})
				r.mu.Unlock()
			}
		}),
		InitialPosition: kcl.StartAtTrimHorizon(),
		LeaseDuration:   outageLease, RenewInterval: time.Second, TakeInterval: 500 * time.Millisecond,
		IdleTimeBetweenReads: 100 * time.Millisecond, RetryInitialInterval: 50 * time.Millisecond,
		ShutdownTimeout: 10 * time.Second,
		Logger:          quietLogger(r.t),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return w
}

// snapshot returns the last lease writes and the batch calls so far.
func (r *outageRig) snapshot() (map[string]time.Time, []batchCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lw := make(map[string]time.Time, len(r.lastWrite))
	for k, v := range r.lastWrite {
		lw[k] = v
	}
	return lw, slices.Clone(r.calls)
}

// waitDelivering waits until worker id has delivered records on n shards
// since since.
func (r *outageRig) waitDelivering(id string, n int, since time.Time, d time.Duration) {
	r.t.Helper()
	r.sink.waitFor(r.t, d, fmt.Sprintf("%s delivering on %d shards", id, n), func() (bool, string) {
		shards := map[string]bool{}
		for _, ev := range r.sink.events().Records {
			if ev.Type == fleet.EventRecord && ev.Worker == id && !ev.Time.Before(since) {
				shards[ev.Shard] = true
			}
		}
		return len(shards) >= n, fmt.Sprintf("%d shards", len(shards))
	})
}

// checkStoppedInTime checks w1's behaviour during an outage that began at
// downAt and ended at upAt: no batch began after its lease's deadline,
// every held batch saw its context cancelled before another worker could
// take the lease, and every shard reported LeaseLost.
func (r *outageRig) checkStoppedInTime(shards []string, lastWrite map[string]time.Time, downAt, upAt time.Time) {
	t := r.t
	t.Helper()
	_, calls := r.snapshot()
	// Scheduling slack for the work between the validity check and the
	// processor's clock reading, and for the expiry timer to run; the
	// margin (300ms) keeps both clear of the lease's expiry in others' eyes.
	const slack = 100 * time.Millisecond
	lost := map[string]time.Time{}
	heldAny, blocked := false, 0
	for _, ev := range r.sink.events().Records {
		if ev.Type == fleet.EventLeaseLost && ev.Worker == "w1" && ev.Time.After(downAt) && ev.Time.Before(upAt) {
			if _, ok := lost[ev.Shard]; !ok {
				lost[ev.Shard] = ev.Time
			}
		}
	}
	for _, shard := range shards {
		lw, ok := lastWrite[shard]
		if !ok || !lw.Before(downAt) {
			t.Errorf("%s: no lease write before the outage (last %v)", shard, lw)
			continue
		}
		stopBy := lw.Add(outageLease - outageMargin) // Valid() turns false
		othersAt := lw.Add(outageLease)              // the earliest expiry in others' eyes
		n, held := 0, 0
		for _, c := range calls {
			if c.worker != "w1" || c.shard != shard || c.end.Before(downAt) || c.start.After(upAt) {
				continue
			}
			n++
			if !c.start.Before(stopBy.Add(slack)) || !c.start.Before(othersAt) {
				t.Errorf("%s: batch began %v after the last lease write, past the deadline %v",
					shard, c.start.Sub(lw), outageLease-outageMargin)
			}
			// A held batch, or one whose checkpoint met the outage, waits
			// for its context.
			if r.block[shard] && (c.held || c.start.Before(downAt) && c.cancelled) {
				held++
				if !c.cancelled {
					t.Errorf("%s: held batch returned without its context cancelled", shard)
				}
				if !c.end.Before(othersAt) {
					t.Errorf("%s: held batch cancelled %v after the last lease write, not before the lease could expire (%v)",
						shard, c.end.Sub(lw), outageLease)
				}
			}
		}
		if r.block[shard] {
			// Whether a blocked shard's batch was in the processor when
			// the outage began depends on scheduling (its batch may have
			// ended just before); one of them must have been.
			blocked++
			if held > 0 {
				heldAny = true
			} else {
				t.Logf("%s: no batch held during the outage", shard)
			}
		}
		at, ok := lost[shard]
		switch {
		case !ok:
			t.Errorf("%s: no LeaseLost during the outage", shard)
		case at.After(othersAt.Add(time.Second)):
			t.Errorf("%s: LeaseLost %v after the last lease write", shard, at.Sub(lw))
		default:
			t.Logf("%s: last lease write %v before the outage; %d batches after it began; LeaseLost %v after the last write",
				shard, downAt.Sub(lw).Round(time.Millisecond), n, at.Sub(lw).Round(time.Millisecond))
		}
	}
	if blocked > 0 && !heldAny {
		t.Errorf("none of the %d blocked shards had a batch held during the outage", blocked)
	}
}

// checkDelivery waits for every produced record and checks the whole run.
func (r *outageRig) checkDelivery() fleet.Report {
	t := r.t
	t.Helper()
	if err := r.prod.Stop(); err != nil {
		t.Fatal(err)
	}
	r.sink.waitFor(t, 45*time.Second, "every record delivered", func() (bool, string) {
		rep := fleet.Check(r.prod.Records(), r.sink.events())
		return len(rep.Lost) == 0, fmt.Sprintf("%d of %d not delivered", len(rep.Lost), rep.Produced)
	})
	rep := fleet.Check(r.prod.Records(), r.sink.events())
	t.Logf("delivery report:\n%s", rep)
	if err := rep.Err(); err != nil {
		t.Error(err)
	}
	// A loop retrying without a pause makes thousands of calls a second
	// against a refusing or local service; the bound is far above what
	// backing off allows, so that a loaded machine never fails it.
	peaks := r.meter.peaks()
	t.Logf("w1's peak DynamoDB HTTP calls per second:%s", formatPeaks(peaks))
	for op, n := range peaks {
		if n > hotLoop {
			t.Errorf("%s: %d calls in one second: a retry loop without backoff?", op, n)
		}
	}
	return rep
}

// DynamoDB refuses connections for twice the lease duration. The worker,
// alone, stops every shard before its lease could expire in another
// worker's eyes, and once DynamoDB is back it takes its leases again and
// resumes from the checkpoints: nothing lost, nothing out of order.
func TestDynamoDBOutageStopsAndResumes(t *testing.T) {
	const shards = 4
	r := newOutageRig(t, shards)
	r.block["shardId-000000000000"] = true
	r.block["shardId-000000000001"] = true
	stop := runWorker(t, r.worker("w1", dynamoVia(r.dw)))
	r.prod.Start(100*time.Millisecond, 8)
	r.waitDelivering("w1", shards, time.Now(), 30*time.Second)

	downAt := time.Now()
	r.down.Store(true)
	r.dw.Outage(faults.Refuse)
	all := []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003"}
	r.sink.waitFor(t, outageLease+5*time.Second, "LeaseLost on every shard", func() (bool, string) {
		n := len(r.sink.events().Filter(func(ev fleet.Event) bool { return ev.Type == fleet.EventLeaseLost && ev.Time.After(downAt) }))
		return n >= shards, fmt.Sprintf("%d shards", n)
	})
	// Keep DynamoDB away for twice the lease duration in all.
	outage := time.NewTimer(time.Until(downAt.Add(2 * outageLease)))
	<-outage.C
	lastWrite, _ := r.snapshot()
	upAt := time.Now()
	r.down.Store(false)
	r.dw.Restore()

	// Nothing was delivered between the losses and the end of the outage.
	for _, ev := range r.sink.events().Records {
		if ev.Type == fleet.EventRecord && ev.Time.After(downAt.Add(outageLease)) && ev.Time.Before(upAt) {
			t.Errorf("record %s/%s delivered %v into the outage", ev.Shard, ev.Seq, ev.Time.Sub(downAt))
		}
	}
	r.waitDelivering("w1", shards, upAt, 30*time.Second)
	t.Logf("outage of %v; every shard delivering again %v after it ended", upAt.Sub(downAt).Round(time.Millisecond),
		time.Since(upAt).Round(time.Millisecond))
	r.checkStoppedInTime(all, lastWrite, downAt, upAt)
	r.checkDelivery()
	if err := stop(); err != nil {
		t.Error(err)
	}
	// Every shard started again from a checkpoint after the outage.
	for _, shard := range all {
		n := len(r.sink.events().Filter(func(ev fleet.Event) bool {
			return ev.Type == fleet.EventInitialize && ev.Shard == shard && ev.Time.After(upAt)
		}))
		if n == 0 {
			t.Errorf("%s not initialized again after the outage", shard)
		}
	}
}

// DynamoDB stops answering w1 (its calls hang) for twice the lease duration
// while w2 still reaches it. w1 stops every shard before w2 can take it;
// w2 takes them all and never processes a shard while w1 still does; when
// DynamoDB answers again w1 rejoins and gets its share by hand-over.
func TestDynamoDBHangingForOneWorkerFencesIt(t *testing.T) {
	const shards = 4
	r := newOutageRig(t, shards)
	r.block["shardId-000000000000"] = true
	r.block["shardId-000000000002"] = true
	stop1 := runWorker(t, r.worker("w1", dynamoVia(r.dw)))
	r.prod.Start(100*time.Millisecond, 8)
	r.waitDelivering("w1", shards, time.Now(), 30*time.Second)

	downAt := time.Now()
	r.down.Store(true)
	r.dw.Outage(faults.Hang)
	stop2 := runWorker(t, r.worker("w2", testenv.DynamoDB(t)))
	r.waitDelivering("w2", shards, downAt, outageLease+15*time.Second)
	outage := time.NewTimer(time.Until(downAt.Add(2 * outageLease)))
	<-outage.C
	lastWrite, _ := r.snapshot()
	upAt := time.Now()
	r.down.Store(false)
	r.dw.Restore()
	all := []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003"}
	r.checkStoppedInTime(all, lastWrite, downAt, upAt)

	// w2 began each shard only after w1's last batch on it had returned.
	_, calls := r.snapshot()
	for _, shard := range all {
		var w1End, w2Start time.Time
		for _, c := range calls {
			if c.shard != shard || c.start.After(upAt) {
				continue
			}
			if c.worker == "w1" && c.end.After(w1End) {
				w1End = c.end
			}
			if c.worker == "w2" && (w2Start.IsZero() || c.start.Before(w2Start)) {
				w2Start = c.start
			}
		}
		if !w2Start.After(w1End) {
			t.Errorf("%s: w2 began a batch %v before w1's last one returned", shard, w1End.Sub(w2Start))
		} else {
			t.Logf("%s: w2's first batch %v after w1's last returned", shard, w2Start.Sub(w1End).Round(time.Millisecond))
		}
	}

	// w1 rejoins and gets shards back.
	r.waitDelivering("w1", 1, upAt, 30*time.Second)
	r.checkDelivery()
	if err := stop2(); err != nil {
		t.Error(err)
	}
	if err := stop1(); err != nil {
		t.Error(err)
	}
}
