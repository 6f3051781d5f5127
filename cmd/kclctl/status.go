package main

import (
	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/lease"
)

// Lease statuses of `kclctl leases`, from the lease table and the fleet row
// read once each.
const (
	leaseOK          = "ok"                 // held by a worker in the fleet row, nothing reported
	leaseFinished    = "finished"           // processed to SHARD_END
	leaseUnowned     = "unowned"            // no owner: any worker may take it
	leaseExpired     = "expired"            // its owner was declared dead (fenced): it is taken next
	leaseOwnerAbsent = "owner-absent"       // its owner has no heartbeat in the fleet row (stopped, or an older version)
	leaseStalled     = "stalled"            // its owner reported it stalled, with a reason
	leaseHandoff     = "handoff-pending"    // another worker asked for it
	leaseWaiting     = "waiting-for-parent" // a parent shard's lease is not finished yet
)

// statusView tells each lease's status.
type statusView struct {
	byKey   map[string]lease.Lease
	workers map[string]lease.Worker
}

func newStatusView(leases []lease.Lease, workers []lease.Worker) statusView {
	v := statusView{byKey: map[string]lease.Lease{}, workers: map[string]lease.Worker{}}
	for _, l := range leases {
		v.byKey[l.Key] = l
	}
	for _, w := range workers {
		v.workers[w.ID] = w
	}
	return v
}

// of returns the status of l and, when stalled, the reason its owner gave.
// The owner's stalls are those of its last heartbeat; a worker that died a
// moment ago still shows its last ones until it is declared dead.
func (v statusView) of(l lease.Lease) (status, stalled string) {
	if l.Checkpoint.IsShardEnd() {
		return leaseFinished, ""
	}
	if l.Owner == "" {
		return leaseUnowned, ""
	}
	w, ok := v.workers[l.Owner]
	switch {
	case !ok:
		return leaseOwnerAbsent, ""
	case w.Heartbeat < 0:
		return leaseExpired, ""
	}
	if r := w.Stalled[l.Key]; r != "" {
		return leaseStalled, r
	}
	if l.HandoffTo != "" {
		return leaseHandoff, ""
	}
	sid, _, _ := ilease.SplitKey(l.Key)
	for _, p := range l.ParentShardIDs {
		if pl, ok := v.byKey[ilease.MultiStreamKey(sid, p)]; ok && !pl.Checkpoint.IsShardEnd() {
			return leaseWaiting, ""
		}
	}
	return leaseOK, ""
}
