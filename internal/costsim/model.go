// Package costsim models what managing leases costs on DynamoDB: Shardline
// as measured by the fleet simulation in this package's tests (make cost),
// and the Java KCL 2.x and 3.x at their defaults, written down from their
// source as formulas of the fleet's size and the intervals they use.
//
// Every figure is on-demand capacity: read and write request units per
// second, and US dollars per 30-day month at the prices of package
// ddbcost. The application's own checkpoints are left out of every model.
package costsim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardline/shardline/internal/ddbcost"
)

// Fleet is the size of an application and of its items.
type Fleet struct {
	// Workers and Leases count the fleet's workers and shard leases.
	Workers, Leases int
	// LeaseBytes is the DynamoDB size of one lease item.
	LeaseBytes int
	// OwnerIndexBytes is the size of one lease in KCL 3.x's leaseOwner
	// index (KEYS_ONLY: leaseKey and leaseOwner).
	OwnerIndexBytes int
	// WorkerMetricsBytes is the size of one KCL 3.x worker metrics item.
	WorkerMetricsBytes int
}

// Rates are steady capacity units per second.
type Rates struct {
	// Reads and Writes are read and write request units per second.
	Reads, Writes float64
}

// USDPerMonth returns the month's on-demand bill at r.
func (r Rates) USDPerMonth() float64 { return ddbcost.USDPerMonth(r.Reads, r.Writes) }

// ScanUnits returns the read units of one Scan of a whole table holding
// items of itemBytes each, page by page (1 MB pages).
func ScanUnits(items, itemBytes int, consistent bool) float64 {
	const page = 1 << 20
	perPage := max(1, page/max(1, itemBytes))
	units := 0.0
	for left := items; left > 0 || units == 0; left -= perPage {
		units += ddbcost.ReadUnits(min(left, perPage)*itemBytes, consistent)
		if left <= perPage {
			break
		}
	}
	return units
}

// Intervals of the Java KCL at its defaults (failoverTimeMillis 10,000,
// epsilonMillis 25).
const (
	kclFailover = 10.0  // s, failoverTimeMillis
	kclEpsilon  = 0.025 // s, epsilonMillis
	// KCL 2.x: each worker's lease taker scans every 2 × (failover +
	// epsilon), eventually consistent; every lease is renewed every
	// failover/3 − epsilon.
	kcl2TakerScan = 2 * (kclFailover + kclEpsilon)
	kclRenew      = kclFailover/3 - kclEpsilon
	// KCL 3.x: the leader (lease assignment) scans every 20 s and the
	// shard-sync audit scans every 120 s, both eventually consistent; each
	// worker queries the leaseOwner index every ~10 s for its leases;
	// each worker writes its metrics every 30 s; the leader refreshes its
	// lock every 30 s; leases are renewed as in 2.x.
	kcl3LeaderScan   = 20.0
	kcl3AuditScan    = 120.0
	kcl3OwnerQuery   = 10.0
	kcl3MetricsWrite = 30.0
	kcl3LockRefresh  = 30.0
)

// KCL2 returns the lease-management rates of the Java KCL 2.x at its
// defaults: W eventually consistent full scans per 20.05 s, and one
// renewal of every lease per 3.308 s.
func KCL2(f Fleet) Rates {
	scan := ScanUnits(f.Leases, f.LeaseBytes, false)
	return Rates{
		Reads:  float64(f.Workers) * scan / kcl2TakerScan,
		Writes: float64(f.Leases) * ddbcost.WriteUnits(f.LeaseBytes) / kclRenew,
	}
}

// KCL3 returns the lease-management rates of the Java KCL 3.x at its
// defaults: one eventually consistent full scan per 20 s (leader) plus one
// per 120 s (shard-sync audit); per worker, one eventually consistent query
// of its leases on the leaseOwner index per 10 s and one metrics write per
// 30 s; one leader lock write per 30 s; one renewal of every lease per
// 3.308 s.
func KCL3(f Fleet) Rates {
	scan := ScanUnits(f.Leases, f.LeaseBytes, false)
	perWorker := (f.Leases + f.Workers - 1) / max(1, f.Workers)
	query := ddbcost.ReadUnits(perWorker*f.OwnerIndexBytes, false)
	return Rates{
		Reads: scan/kcl3LeaderScan + scan/kcl3AuditScan + float64(f.Workers)*query/kcl3OwnerQuery,
		Writes: float64(f.Leases)*ddbcost.WriteUnits(f.LeaseBytes)/kclRenew +
			float64(f.Workers)*ddbcost.WriteUnits(f.WorkerMetricsBytes)/kcl3MetricsWrite +
			1/kcl3LockRefresh,
	}
}

// CoalesceInterval is the checkpoint interval the report prices coalesced
// checkpoints at (worker.Config.CheckpointInterval).
const CoalesceInterval = 10 * time.Second

// Result is one size's line of the cost report.
type Result struct {
	Fleet
	// LeaseSeconds is the lease duration, in seconds.
	LeaseSeconds float64
	// Measured are Shardline's rates as measured in the simulation.
	Measured Rates
	// FailoverP99 is the 99th percentile, in seconds, of the time from a
	// worker's crash to another worker holding one of its leases.
	FailoverP99 float64
	// FailoverSamples is the number of leases whose failover was timed.
	FailoverSamples int
	// Checkpoint are the rates of the application's checkpoints at one
	// per shard per second, written at once and coalesced (reported
	// apart: the lease bill leaves them out).
	Checkpoint, CheckpointCoalesced Rates
}

// Line returns the machine-readable line of r (see make cost).
func (r Result) Line() string {
	usd, k2, k3 := r.Measured.USDPerMonth(), KCL2(r.Fleet).USDPerMonth(), KCL3(r.Fleet).USDPerMonth()
	return fmt.Sprintf("cost W=%d L=%d lease_s=%g rcu_s=%.3f wcu_s=%.3f usd_month=%.2f kcl2_usd_month=%.2f kcl3_usd_month=%.2f ratio_kcl3=%.3f failover_p99_s=%.2f",
		r.Workers, r.Leases, r.LeaseSeconds, r.Measured.Reads, r.Measured.Writes, usd, k2, k3, usd/k3, r.FailoverP99)
}

// WriteReport writes the lines of rs, then a table for people.
func WriteReport(w io.Writer, rs []Result) {
	for _, r := range rs {
		fmt.Fprintln(w, r.Line())
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workers × leases\tlease B\tRCU/s\tWCU/s\t$/month\tKCL 2.x $\tKCL 3.x $\tKCL 3.x RCU/s\t÷ KCL 3.x\tfailover p99 s (n)\tckpt 1/s $\tckpt 10 s $\t")
	for _, r := range rs {
		k2, k3 := KCL2(r.Fleet), KCL3(r.Fleet)
		fmt.Fprintf(tw, "%d × %d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.3f\t%.2f (%d)\t%.2f\t%.2f\t\n",
			r.Workers, r.Leases, r.LeaseBytes, r.Measured.Reads, r.Measured.Writes, r.Measured.USDPerMonth(),
			k2.USDPerMonth(), k3.USDPerMonth(), k3.Reads, r.Measured.USDPerMonth()/k3.USDPerMonth(),
			r.FailoverP99, r.FailoverSamples, r.Checkpoint.USDPerMonth(), r.CheckpointCoalesced.USDPerMonth())
	}
	_ = tw.Flush()
	fmt.Fprintln(w, strings.TrimSpace(`
KCL figures are models of their defaults (see package costsim); Shardline's are measured in virtual time
with every DynamoDB request charged from the sizes of the items it reads and writes. Checkpoint columns:
the application's checkpoints at one per shard per second, written at once or coalesced to one per 10 s
(worker.Config.CheckpointInterval), apart from the lease bill.`))
}
