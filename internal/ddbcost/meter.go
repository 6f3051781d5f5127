package ddbcost

import (
	"maps"
	"sync"
)

// On-demand prices in US dollars (us-east-1, standard table class).
const (
	// USDPerMillionReads is the price of a million read request units.
	USDPerMillionReads = 0.125
	// USDPerMillionWrites is the price of a million write request units.
	USDPerMillionWrites = 0.625
	// MonthSeconds is the length of the month the prices are quoted for:
	// 30 days.
	MonthSeconds = 30 * 24 * 3600
)

// USDPerMonth returns the on-demand bill of a month at the given steady
// rates of read and write units per second.
func USDPerMonth(readsPerSec, writesPerSec float64) float64 {
	return (readsPerSec*USDPerMillionReads + writesPerSec*USDPerMillionWrites) * MonthSeconds / 1e6
}

// Meter adds up capacity units, in all and per operation. It is safe for
// concurrent use; the zero value is ready.
type Meter struct {
	mu            sync.Mutex
	reads, writes float64
	byOp          map[string]float64
	calls         map[string]int
}

// Usage is what a Meter counted.
type Usage struct {
	// Reads and Writes are the read and write units charged.
	Reads, Writes float64
	// ByOp holds the units (reads and writes alike) per operation name.
	ByOp map[string]float64
	// Calls holds the number of requests per operation name.
	Calls map[string]int
}

// Read charges units of read capacity to op.
func (m *Meter) Read(op string, units float64) { m.add(op, units, 0) }

// Write charges units of write capacity to op.
func (m *Meter) Write(op string, units float64) { m.add(op, 0, units) }

func (m *Meter) add(op string, r, w float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byOp == nil {
		m.byOp, m.calls = map[string]float64{}, map[string]int{}
	}
	m.reads += r
	m.writes += w
	m.byOp[op] += r + w
	m.calls[op]++
}

// Usage returns what was counted so far.
func (m *Meter) Usage() Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Usage{Reads: m.reads, Writes: m.writes, ByOp: maps.Clone(m.byOp), Calls: maps.Clone(m.calls)}
}

// Sub returns u less an earlier reading e of the same meter.
func (u Usage) Sub(e Usage) Usage {
	out := Usage{Reads: u.Reads - e.Reads, Writes: u.Writes - e.Writes, ByOp: map[string]float64{}, Calls: map[string]int{}}
	for k, v := range u.ByOp {
		if d := v - e.ByOp[k]; d != 0 {
			out.ByOp[k] = d
		}
	}
	for k, v := range u.Calls {
		if d := v - e.Calls[k]; d != 0 {
			out.Calls[k] = d
		}
	}
	return out
}
