package lease_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/ddbcost"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// TestCostMatchesDynamoDBLocal runs three managers on eight leases on
// DynamoDB Local through the counting client, checkpointing every lease
// they hold, and checks that the capacity the client computes from item
// sizes agrees within 10% with what DynamoDB Local reports
// (ReturnConsumedCapacity TOTAL), reads and writes apart.
func TestCostMatchesDynamoDBLocal(t *testing.T) {
	raw := testenv.DynamoDB(t)
	var counted, reported ddbcost.Meter
	client := ddbcost.NewClient(raw, &counted, []string{"leaseKey"})
	client.Reported = &reported
	st, err := lease.NewDynamoStore(client, newTable(t, raw))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := st.EnsureTable(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if err := st.Create(ctx, lease.Lease{Key: fmt.Sprintf("shardId-%012d", i), Checkpoint: kcl.TrimHorizon,
			StartingHashKey: "0", EndingHashKey: "340282366920938463463374607431768211455"}); err != nil {
			t.Fatal(err)
		}
	}
	var ms []*lease.Manager
	stop := make(chan struct{})
	done := make(chan struct{})
	for i := range 3 {
		m := lease.NewManager(lease.ManagerConfig{
			Store: st, WorkerID: fmt.Sprintf("worker-%d", i),
			LeaseDuration: 3 * time.Second, RenewInterval: time.Second, TakeInterval: 500 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	// One checkpoint per held lease every 300 ms, like an application.
	go func() {
		defer close(done)
		seq := 0
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			for _, m := range ms {
				for _, h := range m.Held() {
					seq++
					_, _ = h.UpdateCheckpoint(ctx, func(l *lease.Lease) {
						l.Checkpoint = kcl.ExtendedSequenceNumber{SequenceNumber: fmt.Sprintf("4959%046d", seq)}
					})
				}
			}
		}
	}()
	time.Sleep(5 * time.Second)
	close(stop)
	<-done
	for _, m := range ms {
		if err := m.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	c, r := counted.Usage(), reported.Usage()
	t.Logf("counted: %.1f RCU %.1f WCU %v", c.Reads, c.Writes, c.ByOp)
	t.Logf("reported: %.1f RCU %.1f WCU %v", r.Reads, r.Writes, r.ByOp)
	if c.Reads == 0 || c.Writes == 0 {
		t.Fatalf("nothing counted: %+v", c)
	}
	if d := math.Abs(c.Reads-r.Reads) / r.Reads; d > 0.10 {
		t.Errorf("reads: counted %.1f, DynamoDB Local reports %.1f (%.0f%% apart)", c.Reads, r.Reads, 100*d)
	}
	if d := math.Abs(c.Writes-r.Writes) / r.Writes; d > 0.10 {
		t.Errorf("writes: counted %.1f, DynamoDB Local reports %.1f (%.0f%% apart)", c.Writes, r.Writes, 100*d)
	}
}
