package main

import (
	"context"
	"fmt"
	"time"

	"github.com/shardline/shardline/internal/fleet"
)

// Reaction times at both libraries' defaults (issue 17): no timing flags at
// all, so Shardline runs with a 10 s lease (heartbeat every 1.67 s) and
// vmware-go-kcl-v2 with its own defaults (FailoverTimeMillis 10 s,
// ShardSyncIntervalMillis 60 s, LeaseRefreshWaitTime 2.5 s, idle 1 s).

// reactLimit bounds each wait of the section: the peer at its defaults
// takes one lease per shard-sync iteration, about a minute apart.
const reactLimit = 8 * time.Minute

// startAndRelease is one run of the cold start and graceful release
// figures: records wait on 8 shards and a producer writes one record per
// 100 ms per shard; 3 workers start together. Then, once every shard
// delivers with stable owners, the worker holding the most shards gets
// SIGTERM.
type startAndRelease struct {
	first, all float64 // first record, every shard: from the first process start
	release    float64 // SIGTERM until each of the stopped worker's shards delivers elsewhere
	duplicates int     // records delivered more than once in the whole run
}

func (b *bench) startAndRelease(ctx context.Context, l lib) (startAndRelease, error) {
	var res startAndRelease
	r, err := b.newRun(ctx, l, 8, 2)
	if err != nil {
		return res, err
	}
	defer r.close()
	if err := r.prod.Put(ctx, 8*25); err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := r.start("w1", "w2", "w3"); err != nil {
		return res, err
	}
	r.prod.Start(100*time.Millisecond, 8)
	first, err := r.firstFromEach(ctx, t0, reactLimit, 50*time.Millisecond)
	if err != nil {
		return res, err
	}
	res.all = maxSince(first, t0).Seconds()
	res.first = res.all
	for _, e := range first {
		res.first = min(res.first, e.Time.Sub(t0).Seconds())
	}

	// At the defaults a shard is read every second or so (idle 1 s after
	// an empty read; slower on a loaded machine): look back 5 s.
	owners, err := r.settleWithin(ctx, reactLimit, 5*time.Second)
	if err != nil {
		return res, err
	}
	victim, held := mostShards(owners)
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	termAt, err := r.f.Process(victim).Terminate(tctx)
	if err != nil {
		return res, err
	}
	err = poll(ctx, reactLimit, 50*time.Millisecond, "a new deliverer for every shard of the stopped worker", func() (bool, error) {
		first = r.events().FirstDeliveries(held[victim], termAt, victim)
		return len(first) == len(held[victim]), nil
	})
	if err != nil {
		return res, err
	}
	res.release = maxSince(first, termAt).Seconds()
	seen := map[string]bool{}
	for _, e := range r.events().Records {
		if e.Type == fleet.EventRecord {
			if seen[e.Data] {
				res.duplicates++
			}
			seen[e.Data] = true
		}
	}
	return res, nil
}

// reactRows measures the reaction times at both libraries' defaults: cold
// start and graceful release side by side, the join for Shardline only
// (the peer's lease stealing is off by default: a joining worker gets no
// share).
func (b *bench) reactRows(ctx context.Context) ([]Row, error) {
	ours, peer, err := b.libs(ctx)
	if err != nil {
		return nil, err
	}
	ours.defaults, peer.defaults, peer.extra = true, true, nil
	type pair struct{ ours, theirs Sample }
	var first, all, release, dups pair
	var joined, idle Sample
	for i := range b.runs {
		logf("react: run %d of %d", i+1, b.runs)
		for _, l := range []lib{ours, peer} {
			if l.name != ours.name && !b.reactPeer {
				continue
			}
			res, err := b.startAndRelease(ctx, l)
			if err != nil {
				return nil, fmt.Errorf("%s cold start and release at defaults: %w", l.name, err)
			}
			logf("  %s at defaults: first record %.3fs, every shard %.3fs, graceful release %.3fs, %d duplicates",
				l.name, res.first, res.all, res.release, res.duplicates)
			p := &first.ours
			a, rel, d := &all.ours, &release.ours, &dups.ours
			if l.name != ours.name {
				p, a, rel, d = &first.theirs, &all.theirs, &release.theirs, &dups.theirs
			}
			*p, *a, *rel, *d = append(*p, res.first), append(*a, res.all), append(*rel, res.release), append(*d, float64(res.duplicates))
		}
		j, g, err := b.handoff(ctx, ours)
		if err != nil {
			return nil, fmt.Errorf("join at defaults: %w", err)
		}
		logf("  shardline join at defaults: share delivering %.3fs after start, longest idle %.3fs", j, g)
		joined, idle = append(joined, j), append(idle, g)
	}
	section := "5 reaction times at both libraries' defaults (lease 10 s; the peer's sync 60 s)"
	peerName := "vmware-go-kcl-v2"
	return []Row{
		{Section: section, Figure: "cold start, 3 workers, 8 shards: first record (s)", Unit: UnitSeconds,
			Value: first.ours, Baseline: first.theirs, BaselineName: peerName,
			Note: "from the first process start (table and stream exist; leases created by the first worker)"},
		{Section: section, Figure: "cold start, 3 workers, 8 shards: every shard processing (s)", Unit: UnitSeconds,
			Value: all.ours, Baseline: all.theirs, BaselineName: peerName},
		{Section: section, Figure: "graceful stop (SIGTERM) of 1 of 3: each of its shards delivering elsewhere (s)", Unit: UnitSeconds,
			Value: release.ours, Baseline: release.theirs, BaselineName: peerName,
			Note: "from the signal; the worker holding the most shards; 1 record/100 ms per shard"},
		{Section: section, Figure: "graceful stop: records delivered twice in the run", Unit: UnitCount,
			Value: dups.ours, Baseline: dups.theirs, BaselineName: peerName},
		{Section: section, Figure: "join: 2nd worker next to 1 holding 8 shards, delivering on its 4 (s)", Unit: UnitSeconds,
			Value: joined, Note: "from the joiner's process start; Shardline only (the peer's lease stealing is off by default)"},
		{Section: section, Figure: "join: longest idle time of a moved shard (s)", Unit: UnitSeconds,
			Value: idle, Note: "old owner's last record → new owner's first"},
	}, nil
}
