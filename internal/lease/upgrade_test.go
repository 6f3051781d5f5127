package lease_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// TestUpgradeFromPresenceRows: a table written by the previous version
// (leases renewed one by one, one presence row per worker, no fleet row)
// is taken over by a worker of this version once the old owners' leases
// stand still for a lease duration, with every checkpoint kept.
func TestUpgradeFromPresenceRows(t *testing.T) {
	st, client := newDynamoStore(t)
	table := st.Table()
	checkpoints := map[string]string{}
	for i := range 4 {
		key := fmt.Sprintf("shardId-%012d", i)
		seq := fmt.Sprintf("4959%046d", 1000+i)
		checkpoints[key] = seq
		putRaw(t, client, table, map[string]types.AttributeValue{
			"leaseKey": attrS(key), "leaseOwner": attrS(fmt.Sprint("old-", i%2)), "leaseCounter": attrN("57"),
			"checkpoint": attrS(seq), "checkpointSubSequenceNumber": attrN("0"), "ownerSwitchesSinceCheckpoint": attrN("1"),
			"shardlineThroughput": attrN("12.5"),
		})
	}
	for i := range 2 {
		putRaw(t, client, table, map[string]types.AttributeValue{
			"leaseKey": attrS(fmt.Sprint("shardline:worker:old-", i)), "leaseOwner": attrS(fmt.Sprint("old-", i)),
			"leaseCounter": attrN("300"), "shardlineWorkerLeases": attrN("2"),
		})
	}
	const ld = 3 * time.Second
	acquired := make(chan *lease.Handle, 8)
	start := time.Now()
	m := lease.NewManager(lease.ManagerConfig{
		Store: st, WorkerID: "new-0", LeaseDuration: ld, RenewInterval: time.Second, TakeInterval: 500 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), OnAcquired: func(h *lease.Handle) { acquired <- h },
	})
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	timeout := time.After(ld + 10*time.Second)
	for range 4 {
		select {
		case h := <-acquired:
			l := h.Lease()
			if l.Checkpoint != kcl.NewSequence(checkpoints[l.Key]) || l.OwnerSwitchesSinceCheckpoint != 2 {
				t.Errorf("%s taken over with checkpoint %v and %d owner switches, want %s and 2", l.Key, l.Checkpoint, l.OwnerSwitchesSinceCheckpoint, checkpoints[l.Key])
			}
			if d := time.Since(start); d < ld {
				t.Errorf("%s taken %v after start, before the old owner's lease could expire (%v)", l.Key, d, ld)
			}
		case <-timeout:
			t.Fatalf("the new worker holds %d of 4 leases after %v", len(m.Held()), time.Since(start))
		}
	}
	// The checkpoints go on from where the old workers left them.
	for _, h := range m.Held() {
		if _, err := h.UpdateCheckpoint(t.Context(), func(l *lease.Lease) { l.Checkpoint = kcl.NewSequence(checkpoints[l.Key] + "1") }); err != nil {
			t.Errorf("checkpoint %s: %v", h.Key(), err)
		}
	}
	ls, err := st.List(t.Context())
	if err != nil || len(ls) != 4 {
		t.Fatalf("List: %d leases, %v; want the 4 leases alone", len(ls), err)
	}
	for _, l := range ls {
		if l.Owner != "new-0" || l.Checkpoint.SequenceNumber != checkpoints[l.Key]+"1" {
			t.Errorf("%s: owner %q checkpoint %v", l.Key, l.Owner, l.Checkpoint)
		}
	}
}
