package worker_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
)

// TestCheckpointInterval: with CheckpointInterval, a processor that
// checkpoints every batch costs one lease write per interval, and a
// graceful stop still stores the last record processed.
func TestCheckpointInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 1)
		k := newKeyLog()
		store := lease.NewMemoryStore()
		var writes atomic.Int32
		store.SetFaultAfterWrite(func(op, _ string) error {
			if op == "checkpoint" {
				writes.Add(1)
			}
			return nil
		})
		cfg := fakeWorkerConfig(t, fs, store, "w1", k)
		cfg.CheckpointInterval = 2 * time.Second
		_, stop := runFake(t, cfg)
		time.Sleep(2 * time.Second) // the lease is taken
		synctest.Wait()
		start := writes.Load()
		// A record every 100 ms for 10 s: about 100 batches, each
		// checkpointed by the processor.
		for i := range 100 {
			fs.put(fmt.Sprint("k", i%7))
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		n := writes.Load() - start
		batches := len(k.deliveries()) // one record per batch
		t.Logf("%d batches, %d checkpoint writes", batches, n)
		if batches < 50 {
			t.Fatalf("%d batches delivered, want most of the 100 records in their own batch", batches)
		}
		if n > 10/2+2 {
			t.Errorf("%d checkpoint writes in 10 s, want at most one per 2 s interval", n)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		// Records are numbered in order: the last delivered is the n-th.
		delivered := len(k.deliveries())
		l, ok := leaseOf(t, store, shard0)
		if want := fmt.Sprintf("4960%052d", delivered); !ok || l.Checkpoint.SequenceNumber != want {
			t.Errorf("stored checkpoint after the graceful stop %v, want the last record delivered, %s (flushed)", l.Checkpoint, want)
		}
	})
}
