package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
)

// msEnv is the multi-stream test's fleet: one application whose workers
// consume the streams named in a file, one producer per stream.
type msEnv struct {
	*env
	streamsFile string
	prods       map[string]*fleet.Producer
}

// setStreams rewrites the streams file; the workers read it at their next
// shard sync.
func (m *msEnv) setStreams(streams ...string) {
	m.t.Helper()
	tmp := m.streamsFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(streams, "\n")+"\n"), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, m.streamsFile); err != nil { // never a half-written file
		m.t.Fatal(err)
	}
}

// streamEvents returns the events of one stream (and the processes' start
// and stop lines, which carry no stream).
func streamEvents(all fleet.Events, stream string) fleet.Events {
	return fleet.Events{Damaged: all.Damaged, Records: all.Filter(func(ev fleet.Event) bool { return ev.Stream == stream })}
}

// check compares one stream's produced records with its deliveries.
func (m *msEnv) check(all fleet.Events, stream string) fleet.Report {
	return fleet.Check(m.prods[stream].Records(), streamEvents(all, stream))
}

// streamOf returns the stream name of a multi-stream lease key.
func streamOf(key string) string {
	id, _, ok := lease.SplitKey(key)
	if !ok {
		return ""
	}
	_, name, _, _ := lease.ParseStreamIdentifier(id)
	return name
}

// leasesOf returns the leases of the given streams.
func leasesOf(ls []lease.Lease, streams []string) []lease.Lease {
	var out []lease.Lease
	for _, l := range ls {
		if slices.Contains(streams, streamOf(l.Key)) {
			out = append(out, l)
		}
	}
	return out
}

// waitState polls until the leases of streams are spread evenly (slack 0)
// over workers, the leases of gone have no owner, and every record produced
// on streams before the wait began was delivered.
func (m *msEnv) waitState(ctx context.Context, what string, streams, gone, workers []string) []lease.Lease {
	m.t.Helper()
	var ls []lease.Lease
	began := time.Now()
	err := fleet.Poll(ctx, 200*time.Millisecond, what, func(ctx context.Context) (bool, error) {
		all, err := fleet.Leases(ctx, m.dc, m.app)
		if err != nil {
			return false, err
		}
		ls = leasesOf(all, streams)
		if len(ls) != 4*len(streams) {
			return false, fmt.Errorf("%d leases of %v", len(ls), streams)
		}
		if !fleet.Balanced(ls, workers, 0) {
			return false, fmt.Errorf("ownership %v", fleet.Ownership(ls))
		}
		for _, l := range leasesOf(all, gone) {
			if l.Owner != "" {
				return false, fmt.Errorf("%s of a removed stream still held by %s", l.Key, l.Owner)
			}
		}
		evs := m.events()
		for _, s := range streams {
			// Lost is in shard order: look at every record.
			for _, p := range m.check(evs, s).Lost {
				if p.Time.Before(began) {
					return false, fmt.Errorf("%s: record %s of %s not delivered yet", s, p.Data, p.Shard)
				}
			}
		}
		return true, nil
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return ls
}

// TestMultiStreamFleet: three worker processes consume three 4-shard streams
// as one multi-stream application, balanced 4/4/4 by the shards of all
// streams. A fourth stream is added and the first removed (by rewriting the
// streams file the workers read at every shard sync); one worker is
// SIGKILLed, its shards move to the other two (6/6), and it is restarted
// (4/4/4 again). Every record of the consumed streams is delivered in order
// per shard; the removed stream's records are all delivered up to its
// removal and none written after; the only duplicates are records of the
// killed worker's shards after their checkpoint at the kill.
func TestMultiStreamFleet(t *testing.T) {
	testenv.Require(t)
	kc, dc := testenv.Kinesis(t), testenv.DynamoDB(t)
	bin := consumerBinary(t)
	streams := make([]string, 4)
	for i := range streams {
		streams[i] = testenv.CreateStream(t, kc, 4)
	}
	dir := t.TempDir()
	app := testenv.UniqueName("app")
	f, err := fleet.New(fleet.Config{
		Binary:           bin,
		Dir:              dir,
		StreamsFile:      filepath.Join(dir, "streams"),
		App:              app,
		KinesisEndpoint:  testenv.KinesisEndpoint(),
		DynamoDBEndpoint: testenv.DynamoDBEndpoint(),
		LeaseDuration:    leaseDuration,
		IdleTime:         idleTime,
		// Checkpointing once a second leaves processed records behind each
		// checkpoint, so the kill has duplicates to classify.
		CheckpointInterval: time.Second,
		ShutdownTimeout:    15 * time.Second,
		ExtraArgs:          []string{"-shard-sync-interval", "1s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m := &msEnv{env: &env{t: t, kc: kc, dc: dc, app: app, fleet: f}, streamsFile: f.Config().StreamsFile,
		prods: make(map[string]*fleet.Producer)}
	t.Cleanup(func() {
		for _, p := range m.prods {
			_ = p.Stop()
		}
		m.teardown()
	})
	// About 20 records/s per stream, five a second per shard; the fourth
	// stream is written from the start, before the workers know it.
	for _, s := range streams {
		p, err := fleet.NewProducer(ctx, kc, s, 2)
		if err != nil {
			t.Fatal(err)
		}
		m.prods[s] = p
		p.Start(100*time.Millisecond, 2)
	}

	workers := []string{"w1", "w2", "w3"}
	m.setStreams(streams[:3]...)
	started := time.Now()
	m.start(workers...)
	m.waitState(ctx, "three streams balanced and delivered", streams[:3], nil, workers)
	t.Logf("3 streams x 4 shards balanced 4/4/4 and delivering %v after start", time.Since(started).Round(time.Millisecond))

	// Remove the first stream once everything written to it was delivered
	// (a stream removed at once may leave records behind: they are its
	// checkpoints' business, not lost), and add the fourth.
	if err := m.prods[streams[0]].Stop(); err != nil {
		t.Fatal(err)
	}
	removedCount := m.prods[streams[0]].Count()
	consumed := streams[1:]
	m.waitState(ctx, "first stream drained", streams[:3], nil, workers)
	changed := time.Now()
	m.setStreams(consumed...)
	m.waitState(ctx, "fourth stream added, first removed", consumed, streams[:1], workers)
	t.Logf("streams changed: 4/4/4 over the new streams and the removed one released %v after the file changed",
		time.Since(changed).Round(time.Millisecond))
	// Records written to the removed stream now are read by nobody.
	if err := m.prods[streams[0]].Put(ctx, 16); err != nil {
		t.Fatal(err)
	}

	// SIGKILL the worker holding the most shards.
	own := fleet.Ownership(m.waitState(ctx, "balanced before the kill", consumed, streams[:1], workers))
	victim := slices.MaxFunc(workers, func(a, b string) int { return len(own[a]) - len(own[b]) })
	victimLeases := own[victim]
	killedAt, err := f.Process(victim).Kill()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody takes the victim's leases before they expire: these are the
	// checkpoints its shards had when it died.
	lastCheckpoint := fleet.Checkpoints(m.leases(ctx))
	t.Logf("killed %s holding %v", victim, victimLeases)
	survivors := slices.DeleteFunc(slices.Clone(workers), func(w string) bool { return w == victim })

	var slowest time.Duration
	err = fleet.Poll(ctx, 100*time.Millisecond, "a new owner delivering on every shard of the killed worker", func(context.Context) (bool, error) {
		first := make(map[string]time.Time) // lease key -> first delivery by another worker after the kill
		evs := m.events()
		for _, ev := range evs.Records {
			if ev.Type != fleet.EventRecord || ev.Worker == victim || ev.Time.Before(killedAt) {
				continue
			}
			for _, k := range victimLeases {
				if _, shard, _ := lease.SplitKey(k); shard == ev.Shard && streamOf(k) == ev.Stream {
					if t0, ok := first[k]; !ok || ev.Time.Before(t0) {
						first[k] = ev.Time
					}
				}
			}
		}
		if len(first) < len(victimLeases) {
			return false, fmt.Errorf("%d of %d shards moved", len(first), len(victimLeases))
		}
		slowest = 0
		for _, at := range first {
			slowest = max(slowest, at.Sub(killedAt))
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slowest failover %v (typical: lease duration + take interval = %v; bound %v)",
		slowest.Round(time.Millisecond), leaseDuration+takeInterval, failoverBound)
	if slowest > failoverBound {
		t.Errorf("failover took %v, want at most %v", slowest, failoverBound)
	}
	m.waitState(ctx, "6/6 on the survivors", consumed, streams[:1], survivors)

	restarted := time.Now()
	m.start(victim)
	for _, s := range consumed {
		if err := m.prods[s].Stop(); err != nil {
			t.Fatal(err)
		}
	}
	ls := m.waitState(ctx, "4/4/4 again after the restart, everything delivered", consumed, streams[:1], workers)
	t.Logf("4/4/4 again and every record delivered %v after the restart", time.Since(restarted).Round(time.Millisecond))
	t.Logf("lease table:\n%s", fleet.OwnershipTable(leasesOf(ls, consumed), workers, m.events().DeliveredBy()))

	evs := m.events()
	total := map[string]int{}
	for _, s := range streams {
		r := m.check(evs, s)
		t.Logf("stream %s:\n%s", s, r)
		total["produced"] += r.Produced
		total["delivered"] += r.Delivered
		total["duplicates"] += r.Duplicates
		if s == streams[0] {
			// Every record up to the removal, none written after it.
			if len(r.Lost) != r.Produced-removedCount {
				t.Errorf("removed stream: %d records not delivered, want the %d written after its removal", len(r.Lost), r.Produced-removedCount)
			}
			r.Lost = nil
		}
		if err := r.Err(); err != nil {
			t.Errorf("stream %s: %v", s, err)
		}
		for _, d := range r.DuplicateDeliveries {
			key := ""
			for _, k := range victimLeases {
				if _, shard, _ := lease.SplitKey(k); shard == d.Shard && streamOf(k) == s {
					key = k
				}
			}
			if key == "" || d.Time.Before(killedAt) {
				t.Errorf("duplicate of a record the killed worker did not hold, or before the kill: %+v", d)
				continue
			}
			pos, err := fleet.ParsePosition(d.Seq)
			if err != nil {
				t.Fatal(err)
			}
			if cp := lastCheckpoint[key]; !cp.IsSentinel() && !cp.IsZero() && pos.Compare(cp) <= 0 {
				t.Errorf("duplicate %s on %s at or before the checkpoint %s it had at the kill", d.Seq, key, cp)
			}
		}
	}
	t.Logf("all streams: %d records produced, %d deliveries, %d duplicates (after the kill, after checkpoints)",
		total["produced"], total["delivered"], total["duplicates"])
}
