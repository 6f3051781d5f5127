package worker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// lostProc blocks in its first batch until its context is cancelled, then
// tries to checkpoint; it reports LeaseLost.
type lostProc struct {
	inBatch   chan struct{}
	cpErr     chan error
	leaseLost chan struct{}
}

func (p *lostProc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	select {
	case p.inBatch <- struct{}{}:
	default:
	}
	<-ctx.Done() // cancelled when the lease is lost
	err := in.Checkpointer.Checkpoint(context.Background())
	select {
	case p.cpErr <- err:
	default:
	}
	return nil
}

func (p *lostProc) LeaseLost(ctx context.Context, in kcl.LeaseLostInput) error {
	close(p.leaseLost)
	return nil
}

// A lease taken by another worker stops the shard: the processor is told
// (LeaseLost) and its checkpoint is refused with ErrLeaseLost, so it cannot
// overwrite the new owner's progress.
func TestLostLeaseFencesCheckpoints(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	put(t, kc, stream, 10, "l")
	app := testenv.UniqueName("app")
	p := &lostProc{inBatch: make(chan struct{}, 1), cpErr: make(chan error, 1), leaseLost: make(chan struct{})}
	cfg := baseConfig(t, stream, app, func(string) (kcl.RecordProcessor, error) { return p, nil })
	// A long lease keeps the thief's lease valid (this worker must not take it
	// back) for the whole test; renewals stay frequent so the loss is seen fast.
	cfg.LeaseDuration = 20 * time.Second
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)
	select {
	case <-p.inBatch:
	case <-time.After(30 * time.Second):
		t.Fatal("no batch delivered")
	}

	store, err := lease.NewDynamoStore(testenv.DynamoDB(t), app)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leases, err := store.List(ctx)
	if err != nil || len(leases) != 1 {
		t.Fatalf("leases: %v %v", leases, err)
	}
	stolen, err := store.Take(ctx, leases[0], "thief")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.cpErr:
		if !errors.Is(err, kcl.ErrLeaseLost) {
			t.Fatalf("checkpoint after losing the lease: got %v, want ErrLeaseLost", err)
		}
	case <-time.After(2 * cfg.LeaseDuration):
		t.Fatal("processor's context not cancelled after the lease was taken")
	}
	select {
	case <-p.leaseLost:
	case <-time.After(2 * cfg.LeaseDuration):
		t.Fatal("LeaseLost not called after the lease was taken")
	}
	after, err := store.Get(ctx, leases[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	if after.Owner != "thief" || after.Counter != stolen.Counter || after.Checkpoint != stolen.Checkpoint {
		t.Fatalf("lease changed by the fenced worker: %+v, want %+v", after, stolen)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
