package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// shardCounters are the per-shard records and bytes counters. They are
// kept so that rate() and increase() count every record: a shard's series
// is scraped at 0 before it counts anything (a series' first sample is only
// a base, and a new owner processes its first batch within milliseconds of
// starting), and at its final value before it is removed when the shard's
// consumer stops. Until its first scrape, a shard's counts are held back.
type shardCounters struct {
	records, bytes *prometheus.Desc

	mu     sync.Mutex
	shards map[string]*shardCount // guarded by mu
}

// shardCount is the state of one shard's series.
type shardCount struct {
	records, bytes float64 // the values scraped
	heldRecords    float64 // counted while fresh, exposed after the first scrape
	heldBytes      float64
	fresh          bool // not scraped yet
	stopped        bool // the consumer stopped: the series goes after a scrape
}

func newShardCounters(records, bytes *prometheus.Desc) *shardCounters {
	return &shardCounters{records: records, bytes: bytes, shards: map[string]*shardCount{}}
}

// start creates the shard's series at 0 (or keeps them if the shard's
// consumer restarts before they went).
func (c *shardCounters) start(shard string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc := c.shards[shard]; sc != nil {
		sc.stopped = false
		return
	}
	c.shards[shard] = &shardCount{fresh: true}
}

// add counts a batch. A batch of a shard not started (the worker does not
// report one) starts its series.
func (c *shardCounters) add(shard string, records, bytes float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.shards[shard]
	switch {
	case sc == nil:
		c.shards[shard] = &shardCount{records: records, bytes: bytes}
	case sc.fresh:
		sc.heldRecords += records
		sc.heldBytes += bytes
	default:
		sc.records += records
		sc.bytes += bytes
	}
}

// stop marks the shard's series for removal after the next scrape.
func (c *shardCounters) stop(shard string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc := c.shards[shard]; sc != nil {
		sc.stopped = true
	}
}

// collect sends the series as they are, then releases the counts held back
// from the fresh shards and removes the stopped ones.
func (c *shardCounters) collect(ch chan<- prometheus.Metric, stream, worker string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, sc := range c.shards {
		st, shard := shardLabels(stream, key)
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, sc.records, st, worker, shard)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, sc.bytes, st, worker, shard)
		switch {
		case sc.fresh:
			sc.fresh = false
			sc.records, sc.bytes = sc.heldRecords, sc.heldBytes
			sc.heldRecords, sc.heldBytes = 0, 0
		case sc.stopped:
			delete(c.shards, key)
		}
	}
}
