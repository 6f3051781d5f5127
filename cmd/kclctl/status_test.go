package main

import (
	"strings"
	"testing"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

func TestLeaseStatus(t *testing.T) {
	leases := []lease.Lease{
		{Key: "done", Owner: "w1", Checkpoint: kcl.ShardEnd},
		{Key: "free", Checkpoint: kcl.TrimHorizon},
		{Key: "fenced", Owner: "dead", Checkpoint: kcl.TrimHorizon},
		{Key: "absent", Owner: "ghost", Checkpoint: kcl.TrimHorizon},
		{Key: "stuck", Owner: "w1", Checkpoint: kcl.TrimHorizon, HandoffTo: "w2"},
		{Key: "asked", Owner: "w1", Checkpoint: kcl.TrimHorizon, HandoffTo: "w2"},
		{Key: "child", Owner: "w2", Checkpoint: kcl.TrimHorizon, ParentShardIDs: []string{"free", "done"}},
		{Key: "orphan", Owner: "w2", Checkpoint: kcl.TrimHorizon, ParentShardIDs: []string{"deleted"}},
	}
	workers := []lease.Worker{
		{ID: "w1", Heartbeat: 7, Stalled: map[string]string{"stuck": "processor-failing"}},
		{ID: "w2", Heartbeat: 3},
		{ID: "dead", Heartbeat: -1, Stalled: map[string]string{"fenced": "no-progress"}},
	}
	want := map[string]string{
		"done": leaseFinished, "free": leaseUnowned, "fenced": leaseExpired, "absent": leaseOwnerAbsent,
		"stuck": "stalled:processor-failing", "asked": leaseHandoff, "child": leaseWaiting, "orphan": leaseOK,
	}
	v := newStatusView(leases, workers)
	for _, l := range leases {
		st, r := v.of(l)
		if r != "" {
			st += ":" + r
		}
		if st != want[l.Key] {
			t.Errorf("%s: status %q, want %q", l.Key, st, want[l.Key])
		}
	}
}

// The STATUS column shows what the owner wrote in the fleet row with its
// heartbeat, and what kclctl derives from the table.
func TestLeasesStatusFromFleetRow(t *testing.T) {
	f := newFixture(t)
	fl, err := f.store.ReadFleet(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Beat(t.Context(), "w1", fl.Members["w1"], false, false,
		map[string]string{"shardId-000000000000": "processor-failing"}); err != nil {
		t.Fatal(err)
	}
	rows := decode[[]leaseRow](t, kclctl(t, "", f.args("leases", "-o", "json")...))
	if len(rows) != 2 || rows[0].Status != leaseStalled || rows[0].Stalled != "processor-failing" ||
		rows[1].Status != leaseUnowned || rows[1].Stalled != "" {
		t.Fatalf("rows %+v, want shard 0 stalled (processor-failing) and shard 1 unowned", rows)
	}
	table := kclctl(t, "", f.args("leases", "--lag=false")...)
	lines := strings.Split(strings.TrimSpace(table.stdout), "\n")
	if table.code != exitOK || len(lines) != 3 || !strings.Contains(lines[0], "STATUS") ||
		!strings.Contains(lines[1], "stalled:processor-failing") || !strings.Contains(lines[2], "unowned") {
		t.Errorf("table (status %d):\n%s%s", table.code, table.stdout, table.stderr)
	}
}
