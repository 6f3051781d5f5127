package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
)

// Timing given to both libraries on the emulators: lease duration (the
// peer's FailoverTimeMillis) and the pause after an empty read.
const (
	fleetLease = 3 * time.Second
	fleetIdle  = 100 * time.Millisecond
)

// lib is a consumer program: Shardline's internal/cmd/fleetworker or the peer's
// bench/cmd/vmwarekcl. Both take internal/fleet's flags.
type lib struct {
	name   string
	binary string
	extra  []string
	// defaults runs the program with its own default lease duration and
	// idle time instead of fleetLease and fleetIdle.
	defaults bool
}

// run is one scenario's stream, lease table, fleet and producer.
type run struct {
	b      *bench
	lib    lib
	stream string
	app    string
	f      *fleet.Fleet
	prod   *fleet.Producer
	shards []string
}

func (b *bench) newRun(ctx context.Context, l lib, shards, keysPerShard int) (*run, error) {
	r := &run{b: b, lib: l, stream: testenv.UniqueName("bench"), app: testenv.UniqueName("bench-" + l.name)}
	leaseDuration, idle := fleetLease, fleetIdle
	if l.defaults {
		leaseDuration, idle = 0, 0
	}
	if err := testenv.CreateStreamNamed(ctx, b.kc, r.stream, shards); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(b.tmp, l.name+"-")
	if err != nil {
		r.close()
		return nil, err
	}
	r.f, err = fleet.New(fleet.Config{
		Binary: l.binary, Dir: dir, Stream: r.stream, App: r.app,
		KinesisEndpoint: testenv.KinesisEndpoint(), DynamoDBEndpoint: testenv.DynamoDBEndpoint(),
		InitialPosition: "trim_horizon", LeaseDuration: leaseDuration, IdleTime: idle,
		ExtraArgs: l.extra,
	})
	if err != nil {
		r.close()
		return nil, err
	}
	if r.prod, err = fleet.NewProducer(ctx, b.kc, r.stream, keysPerShard); err != nil {
		r.close()
		return nil, err
	}
	out, err := b.kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(r.stream)})
	if err != nil {
		r.close()
		return nil, err
	}
	for _, s := range out.Shards {
		r.shards = append(r.shards, aws.ToString(s.ShardId))
	}
	return r, nil
}

// close kills the processes and deletes the stream and the lease table.
func (r *run) close() {
	if r.prod != nil {
		_ = r.prod.Stop()
	}
	if r.f != nil {
		r.f.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = fleet.DeleteTable(ctx, r.b.dc, r.app)
	_, _ = r.b.kc.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(r.stream), EnforceConsumerDeletion: aws.Bool(true)})
}

func (r *run) events() fleet.Events {
	evs, err := r.f.Events()
	if err != nil {
		logf("reading events: %v", err)
	}
	return evs
}

// start starts workers one after the other, as fast as processes start.
func (r *run) start(ids ...string) error {
	for _, id := range ids {
		if _, err := r.f.Start(id); err != nil {
			return err
		}
	}
	return nil
}

// poll waits for cond, checked every interval, for at most limit.
func poll(ctx context.Context, limit, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return fleet.Poll(ctx, interval, what, func(context.Context) (bool, error) { return cond() })
}

// latest returns the shard -> worker of the most recent record event of
// each shard at or after since.
func latest(evs fleet.Events, since time.Time) map[string]string {
	at := map[string]time.Time{}
	owner := map[string]string{}
	for _, e := range evs.Records {
		if e.Type == fleet.EventRecord && !e.Time.Before(since) && !e.Time.Before(at[e.Shard]) {
			at[e.Shard], owner[e.Shard] = e.Time, e.Worker
		}
	}
	return owner
}

// settle waits until every shard is being delivered and its deliverer has
// stayed the same for two checks a second apart; it returns the owners.
func (r *run) settle(ctx context.Context) (map[string]string, error) {
	return r.settleWithin(ctx, 90*time.Second, time.Second)
}

// settleWithin is settle, waiting at most limit, with a shard delivering
// when it delivered within the last window.
func (r *run) settleWithin(ctx context.Context, limit, window time.Duration) (map[string]string, error) {
	var prev map[string]string
	stable := 0
	var owners map[string]string
	err := poll(ctx, limit, time.Second, "every shard delivering with stable owners", func() (bool, error) {
		owners = latest(r.events(), time.Now().Add(-window))
		if len(owners) < len(r.shards) {
			stable = 0
			prev = owners
			return false, fmt.Errorf("%d of %d shards delivering", len(owners), len(r.shards))
		}
		if maps.Equal(owners, prev) {
			stable++
		} else {
			stable = 0
		}
		prev = owners
		return stable >= 2, nil
	})
	return owners, err
}

func maxSince(first map[string]fleet.Event, since time.Time) time.Duration {
	var d time.Duration
	for _, e := range first {
		d = max(d, e.Time.Sub(since))
	}
	return d
}

// coldStart: records are waiting on 8 shards; 3 workers start together.
// The figure is the time from the first start until every shard has
// delivered a record.
func (b *bench) coldStart(ctx context.Context, l lib) (float64, error) {
	r, err := b.newRun(ctx, l, 8, 2)
	if err != nil {
		return 0, err
	}
	defer r.close()
	if err := r.prod.Put(ctx, 8*25); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := r.start("w1", "w2", "w3"); err != nil {
		return 0, err
	}
	limit := 3 * time.Minute
	if l.defaults {
		limit = 8 * time.Minute // the peer's first lease comes 30-90 s after start
	}
	first, err := r.firstFromEach(ctx, t0, limit, 100*time.Millisecond)
	if err != nil {
		return 0, err
	}
	return maxSince(first, t0).Seconds(), nil
}

// firstFromEach waits (at most limit, looking every interval) until every
// shard has delivered a record since t0 and returns each one's first.
func (r *run) firstFromEach(ctx context.Context, t0 time.Time, limit, interval time.Duration) (map[string]fleet.Event, error) {
	var first map[string]fleet.Event
	err := poll(ctx, limit, interval, "a record from every shard", func() (bool, error) {
		first = r.events().FirstDeliveries(r.shards, t0, "")
		if len(first) < len(r.shards) {
			return false, fmt.Errorf("%d of %d shards processed after %v", len(first), len(r.shards), time.Since(t0).Round(time.Second))
		}
		return true, nil
	})
	return first, err
}

// mostShards returns the worker delivering the most shards (the first by
// ID among equals) and the shards each worker delivers.
func mostShards(owners map[string]string) (string, map[string][]string) {
	held := map[string][]string{}
	for shard, w := range owners {
		held[w] = append(held[w], shard)
	}
	victim := ""
	for _, w := range slices.Sorted(maps.Keys(held)) {
		if victim == "" || len(held[w]) > len(held[victim]) {
			victim = w
		}
	}
	return victim, held
}

// failover: 3 workers share 8 shards under a steady producer; the one
// holding the most shards gets SIGKILL. The figure is the time from the kill
// until every one of its shards has delivered a record from another worker.
func (b *bench) failover(ctx context.Context, l lib) (float64, error) {
	r, err := b.newRun(ctx, l, 8, 2)
	if err != nil {
		return 0, err
	}
	defer r.close()
	r.prod.Start(100*time.Millisecond, 8)
	if err := r.start("w1", "w2", "w3"); err != nil {
		return 0, err
	}
	owners, err := r.settle(ctx)
	if err != nil {
		return 0, err
	}
	victim, held := mostShards(owners)
	killedAt, err := r.f.Process(victim).Kill()
	if err != nil {
		return 0, err
	}
	var first map[string]fleet.Event
	err = poll(ctx, 2*time.Minute, 100*time.Millisecond, "a new owner for every shard of the killed worker", func() (bool, error) {
		first = r.events().FirstDeliveries(held[victim], killedAt, victim)
		return len(first) == len(held[victim]), nil
	})
	if err != nil {
		return 0, err
	}
	return maxSince(first, killedAt).Seconds(), nil
}

// drain: 8 shards hold 1,000 records each; one worker starts. The figure is
// the time from its start until every record has been delivered.
func (b *bench) drain(ctx context.Context, l lib) (float64, error) {
	r, err := b.newRun(ctx, l, 8, 4)
	if err != nil {
		return 0, err
	}
	defer r.close()
	if err := r.prod.Put(ctx, 8*1000); err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, p := range r.prod.Records() {
		want[p.Data] = true
	}
	t0 := time.Now()
	if err := r.start("w1"); err != nil {
		return 0, err
	}
	var last time.Time
	err = poll(ctx, 5*time.Minute, 250*time.Millisecond, "every record delivered", func() (bool, error) {
		seen := map[string]time.Time{}
		for _, e := range r.events().Records {
			if e.Type == fleet.EventRecord && want[e.Data] {
				if t, ok := seen[e.Data]; !ok || e.Time.Before(t) {
					seen[e.Data] = e.Time
				}
			}
		}
		if len(seen) < len(want) {
			return false, fmt.Errorf("%d of %d delivered", len(seen), len(want))
		}
		for _, t := range seen {
			if t.After(last) {
				last = t
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	return last.Sub(t0).Seconds(), nil
}

// handoff: one worker processes 8 shards under a steady producer; a second
// one joins. Figures: the time from the join until the newcomer delivers on
// its share (4 shards), and the longest idle time of a moved shard (from the
// old owner's last record to the new owner's first).
func (b *bench) handoff(ctx context.Context, l lib) (joined, idle float64, err error) {
	r, err := b.newRun(ctx, l, 8, 2)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	r.prod.Start(100*time.Millisecond, 8)
	if err := r.start("w1"); err != nil {
		return 0, 0, err
	}
	window := time.Second
	if l.defaults {
		window = 5 * time.Second // a shard is read about once a second (idle 1 s)
	}
	if _, err := r.settleWithin(ctx, 90*time.Second, window); err != nil {
		return 0, 0, err
	}
	tJoin := time.Now()
	if err := r.start("w2"); err != nil {
		return 0, 0, err
	}
	var first map[string]fleet.Event
	var evs fleet.Events
	err = poll(ctx, 2*time.Minute, 100*time.Millisecond, "the new worker delivering on half the shards", func() (bool, error) {
		evs = r.events()
		first = evs.FirstDeliveries(r.shards, tJoin, "w1")
		return len(first) >= len(r.shards)/2, nil
	})
	if err != nil {
		return 0, 0, err
	}
	var gap time.Duration
	for shard, e := range first {
		var lastOld time.Time
		for _, o := range evs.Records {
			if o.Type == fleet.EventRecord && o.Shard == shard && o.Worker == "w1" && o.Time.Before(e.Time) && o.Time.After(lastOld) {
				lastOld = o.Time
			}
		}
		if !lastOld.IsZero() {
			gap = max(gap, e.Time.Sub(lastOld))
		}
	}
	return maxSince(first, tJoin).Seconds(), gap.Seconds(), nil
}

// latency: one worker reads 8 shards while a producer writes 80 records/s
// for 10 s. The figures are the 50th and 99th percentiles of the time from
// PutRecords returning to the record's delivery.
func (b *bench) latency(ctx context.Context, l lib) (p50, p99 float64, err error) {
	r, err := b.newRun(ctx, l, 8, 2)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	r.prod.Start(100*time.Millisecond, 8)
	if err := r.start("w1"); err != nil {
		return 0, 0, err
	}
	if _, err := r.settle(ctx); err != nil {
		return 0, 0, err
	}
	from := time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(10 * time.Second): // the measurement window
	}
	if err := r.prod.Stop(); err != nil {
		return 0, 0, err
	}
	var sent []fleet.Produced
	for _, p := range r.prod.Records() {
		if !p.Time.Before(from) {
			sent = append(sent, p)
		}
	}
	var lat []time.Duration
	err = poll(ctx, time.Minute, 250*time.Millisecond, "every measured record delivered", func() (bool, error) {
		first := map[string]time.Time{}
		for _, e := range r.events().Records {
			if e.Type == fleet.EventRecord {
				if t, ok := first[e.Data]; !ok || e.Time.Before(t) {
					first[e.Data] = e.Time
				}
			}
		}
		lat = lat[:0]
		for _, p := range sent {
			t, ok := first[p.Data]
			if !ok {
				return false, fmt.Errorf("record %s not delivered yet", p.Data)
			}
			lat = append(lat, t.Sub(p.Time))
		}
		return true, nil
	})
	if err != nil {
		return 0, 0, err
	}
	if len(lat) == 0 {
		return 0, 0, errors.New("no record measured")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))].Seconds() }
	return pct(0.50), pct(0.99), nil
}

// libs builds both consumer programs.
func (b *bench) libs(ctx context.Context) (ours, peer lib, err error) {
	ours = lib{name: "shardline", binary: b.tmp + "/consumer"}
	if err := b.build(ctx, b.root, ours.binary, "./internal/cmd/fleetworker"); err != nil {
		return ours, peer, err
	}
	// The peer's shard sync loop is also its lease-taking loop (one lease per
	// iteration, every 0.5-1.5 × ShardSyncIntervalMillis); 500ms matches
	// Shardline's taking interval at a 3s lease. LeaseRefreshWaitTime 1s
	// matches Shardline's renewal interval.
	peer = lib{name: "vmware", binary: b.tmp + "/vmwarekcl",
		extra: []string{"-shard-sync-interval", "500ms", "-lease-refresh", "1s"}}
	if err := b.build(ctx, b.benchDir, peer.binary, "./cmd/vmwarekcl"); err != nil {
		return ours, peer, err
	}
	return ours, peer, nil
}

// peerDefaults runs the cold start once with both programs at their
// defaults (no timing flags at all): Shardline lease 10s, idle 1s;
// vmware-go-kcl-v2 FailoverTimeMillis 10s, ShardSyncIntervalMillis 60s,
// LeaseRefreshWaitTime 2.5s, IdleTimeBetweenReadsInMillis 1s. Not in the
// default sections: the peer needs minutes.
func (b *bench) peerDefaults(ctx context.Context) ([]Row, error) {
	ours, peer, err := b.libs(ctx)
	if err != nil {
		return nil, err
	}
	ours.defaults, peer.defaults, peer.extra = true, true, nil
	var o, p Sample
	for _, l := range []lib{ours, peer} {
		v, err := b.coldStart(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("%s cold start at defaults: %w", l.name, err)
		}
		logf("  %s cold start at defaults: %.3fs", l.name, v)
		if l.name == ours.name {
			o = append(o, v)
		} else {
			p = append(p, v)
		}
	}
	return []Row{{Section: "3-4 fleet on the emulators, side by side with vmware-go-kcl-v2",
		Figure: "cold start at both libraries' defaults: 3 workers, 8 shards (s)", Unit: UnitSeconds,
		Value: o, Baseline: p, BaselineName: "vmware-go-kcl-v2", Note: "1 run; no timing settings at all"}}, nil
}

// fleetRows is items 3 and 4: Shardline's fleet on the emulators, side by
// side with vmware-go-kcl-v2 where the peer can do the same.
func (b *bench) fleetRows(ctx context.Context) ([]Row, error) {
	consumer, peer, err := b.libs(ctx)
	if err != nil {
		return nil, err
	}
	type pair struct{ ours, theirs Sample }
	var cold, fail, drain pair
	var joined, idle, p50, p99, fo50, fo99 Sample
	fanOut := consumer
	fanOut.name = "shardline-fanout"
	fanOut.extra = []string{"-fanout", "-emulator-fanout-shim"}
	measure := func(name string, s *Sample, f func() (float64, error)) error {
		v, err := f()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		logf("  %s: %.3fs", name, v)
		*s = append(*s, v)
		return nil
	}
	for i := range b.runs {
		logf("fleet: run %d of %d", i+1, b.runs)
		for _, l := range []lib{consumer, peer} {
			c, f, d := &cold.ours, &fail.ours, &drain.ours
			if l.name != consumer.name {
				c, f, d = &cold.theirs, &fail.theirs, &drain.theirs
			}
			if err := measure(l.name+" drain 8×1,000", d, func() (float64, error) { return b.drain(ctx, l) }); err != nil {
				return nil, err
			}
			if err := measure(l.name+" cold start", c, func() (float64, error) { return b.coldStart(ctx, l) }); err != nil {
				return nil, err
			}
			if err := measure(l.name+" failover", f, func() (float64, error) { return b.failover(ctx, l) }); err != nil {
				return nil, err
			}
		}
		j, g, err := b.handoff(ctx, consumer)
		if err != nil {
			return nil, fmt.Errorf("handoff: %w", err)
		}
		logf("  shardline handoff: joined %.3fs, longest idle %.3fs", j, g)
		joined, idle = append(joined, j), append(idle, g)
		l50, l99, err := b.latency(ctx, consumer)
		if err != nil {
			return nil, fmt.Errorf("latency: %w", err)
		}
		logf("  shardline latency: p50 %.3fs p99 %.3fs", l50, l99)
		p50, p99 = append(p50, l50), append(p99, l99)
		l50, l99, err = b.latency(ctx, fanOut)
		if err != nil {
			return nil, fmt.Errorf("fan-out latency: %w", err)
		}
		logf("  shardline fan-out latency: p50 %.3fs p99 %.3fs", l50, l99)
		fo50, fo99 = append(fo50, l50), append(fo99, l99)
	}
	section := "3-4 fleet on the emulators, side by side with vmware-go-kcl-v2"
	peerName := "vmware-go-kcl-v2"
	settings := fmt.Sprintf("lease %v, idle %v, checkpoint every batch", fleetLease, fleetIdle)
	return []Row{
		{Section: section, Figure: "drain a backlog of 8 shards × 1,000 records, 1 worker (s)", Unit: UnitSeconds,
			Value: drain.ours, Baseline: drain.theirs, BaselineName: peerName,
			Note: "emulator-bound (kinesis-mock GetRecords); from process start; " + settings},
		{Section: section, Figure: "cold start: 3 workers, every one of 8 shards processed (s)", Unit: UnitSeconds,
			Value: cold.ours, Baseline: cold.theirs, BaselineName: peerName,
			Note: "from the first process start; includes process start-up"},
		{Section: section, Figure: "failover after SIGKILL of 1 of 3 workers (s)", Unit: UnitSeconds,
			Value: fail.ours, Baseline: fail.theirs, BaselineName: peerName,
			Note: fmt.Sprintf("until each of its shards delivers elsewhere; bound by lease timing (%v lease)", fleetLease)},
		{Section: section, Figure: "planned hand-off: 2nd worker joins 1, until it delivers on 4 of 8 shards (s)", Unit: UnitSeconds,
			Value: joined, Note: "Shardline only (the peer's lease stealing is off by default)"},
		{Section: section, Figure: "planned hand-off: longest idle time of a moved shard (s)", Unit: UnitSeconds,
			Value: idle, Note: "old owner's last record → new owner's first; producer writes 1 record/100 ms per shard"},
		{Section: section, Figure: "put→process latency p50, polling (s)", Unit: UnitSeconds, Value: p50,
			Note: "1 worker, 8 shards, 80 records/s; emulator-bound; " + settings},
		{Section: section, Figure: "put→process latency p99, polling (s)", Unit: UnitSeconds, Value: p99},
		{Section: section, Figure: "put→process latency p50, fan-out (s)", Unit: UnitSeconds, Value: fo50,
			Note: "same; emulator-bound: kinesis-mock sends an event about once a second"},
		{Section: section, Figure: "put→process latency p99, fan-out (s)", Unit: UnitSeconds, Value: fo99},
	}, nil
}
