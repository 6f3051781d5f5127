package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Worker statuses.
const (
	statusLive    = "live"    // heartbeat moved during the probe
	statusStale   = "stale"   // heartbeat stood still during the probe
	statusGone    = "gone"    // left the fleet row during the probe (stopped)
	statusPresent = "present" // in the fleet row, no probe
	statusNoRow   = "not in fleet row"
)

// workerRow is one worker as `workers` prints it: a member of the fleet row
// (see lease.Table.Workers) or an owner of leases.
type workerRow struct {
	ID        string   `json:"id"`
	Status    string   `json:"status"`
	Leases    int      `json:"leases"`
	SharePct  float64  `json:"sharePercent"`
	Heartbeat *int64   `json:"heartbeat,omitempty"`
	Shards    []string `json:"shards,omitempty"`
}

// workersReport is the output of `workers`.
type workersReport struct {
	Workers      []workerRow `json:"workers"`
	ActiveLeases int         `json:"activeLeases"`
	Unowned      []string    `json:"unowned,omitempty"`
}

// fleetMember is one worker's heartbeat in the fleet row.
func runWorkers(ctx context.Context, e *env, args []string) error {
	var c common
	fs := newFlagSet(e, "workers", "--app APP [--probe DURATION] [flags]", &c)
	probe := fs.Duration("probe", 0, "read the fleet row twice this far apart (a little more than the workers' heartbeat period, min(RenewInterval, TakeInterval)) to tell live workers from dead ones")
	if err := parse(fs, &c, args); err != nil {
		return err
	}
	if err := c.needApp(); err != nil {
		return err
	}
	if *probe < 0 || *probe >= c.timeout {
		return usagef("--probe %v must be positive and below --timeout %v", *probe, c.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	store, err := c.leaseStore(ctx)
	if err != nil {
		return err
	}
	first, err := store.Workers(ctx)
	if err != nil {
		return c.tableError(err)
	}
	rows := map[string]*workerRow{}
	for _, w := range first {
		hb := w.Heartbeat
		rows[w.ID] = &workerRow{ID: w.ID, Status: statusPresent, Heartbeat: &hb}
	}
	if *probe > 0 {
		t := time.NewTimer(*probe)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		second, err := store.Workers(ctx)
		if err != nil {
			return c.tableError(err)
		}
		for _, r := range rows {
			r.Status = statusGone
		}
		for _, w := range second {
			hb := w.Heartbeat
			r := rows[w.ID]
			switch {
			case r == nil:
				rows[w.ID] = &workerRow{ID: w.ID, Status: statusLive, Heartbeat: &hb}
			case *r.Heartbeat != w.Heartbeat:
				r.Status, r.Heartbeat = statusLive, &hb
			default:
				r.Status = statusStale
			}
		}
	}
	leases, err := store.List(ctx)
	if err != nil {
		return c.tableError(err)
	}
	rep := workersReport{}
	for _, l := range leases {
		if l.Checkpoint.IsShardEnd() {
			continue
		}
		rep.ActiveLeases++
		if l.Owner == "" {
			rep.Unowned = append(rep.Unowned, l.Key)
			continue
		}
		r := rows[l.Owner]
		if r == nil {
			r = &workerRow{ID: l.Owner, Status: statusNoRow}
			rows[l.Owner] = r
		}
		r.Leases++
		r.Shards = append(r.Shards, l.Key)
	}
	for _, r := range rows {
		if rep.ActiveLeases > 0 {
			r.SharePct = float64(r.Leases) * 100 / float64(rep.ActiveLeases)
		}
		rep.Workers = append(rep.Workers, *r)
	}
	slices.SortFunc(rep.Workers, func(a, b workerRow) int { return cmp.Compare(a.ID, b.ID) })

	if c.output == "json" {
		return writeJSON(e.stdout, rep)
	}
	t := newTable(e.stdout, "WORKER", "STATUS", "LEASES", "SHARE", "HEARTBEAT", "SHARDS")
	for _, r := range rep.Workers {
		hb := ""
		if r.Heartbeat != nil {
			hb = strconv.FormatInt(*r.Heartbeat, 10)
		}
		t.row(r.ID, r.Status, strconv.Itoa(r.Leases), fmt.Sprintf("%.0f%%", r.SharePct), hb, strings.Join(r.Shards, ","))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "\n%d workers, %d active leases, %d unowned\n", len(rep.Workers), rep.ActiveLeases, len(rep.Unowned))
	return nil
}
