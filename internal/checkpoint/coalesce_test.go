package checkpoint

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/kcl"
)

func TestCoalescerWritesAtMostOncePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		var writes []State
		fail := false
		w := WriterFunc(func(_ context.Context, s State) error {
			if fail {
				return kcl.ErrLeaseLost
			}
			writes = append(writes, s)
			return nil
		})
		co := NewCoalescer(w, 10*time.Second, nil)
		cp := New("shard-0", co, kcl.TrimHorizon)
		at := func(seq string) kcl.ExtendedSequenceNumber { return kcl.NewSequence(seq) }
		cp.SetDelivered(at("100"))
		// One checkpoint per second for 25 s: written at 0 s, 10 s, 20 s.
		for i := 1; i <= 25; i++ {
			if err := cp.CheckpointAt(ctx, at(string(rune('0'+i/10))+string(rune('0'+i%10)))); err != nil {
				t.Fatal(err)
			}
			if cp.Last() != at(string(rune('0'+i/10))+string(rune('0'+i%10))) {
				t.Fatalf("Last = %v after checkpoint %d: want it recorded at once", cp.Last(), i)
			}
			time.Sleep(time.Second)
		}
		if len(writes) != 3 {
			t.Fatalf("%d writes for 25 checkpoints in 25 s, want 3: %v", len(writes), writes)
		}
		if !co.Held() {
			t.Fatal("nothing held after the last checkpoints")
		}
		// Due: FlushDue writes the held one.
		time.Sleep(10 * time.Second)
		if err := co.FlushDue(ctx); err != nil || co.Held() || writes[3].Checkpoint != at("25") {
			t.Fatalf("FlushDue: err %v, held %v, writes %v", err, co.Held(), writes)
		}
		// Flush writes at once; SHARD_END and prepared ones are not held.
		cp.SetDelivered(at("200"))
		_ = cp.CheckpointAt(ctx, at("150"))
		if err := co.Flush(ctx); err != nil || writes[len(writes)-1].Checkpoint != at("150") {
			t.Fatalf("Flush: err %v, writes %v", err, writes)
		}
		n := len(writes)
		if _, err := cp.Prepare(ctx, at("160"), []byte("s")); err != nil || len(writes) != n+1 {
			t.Fatalf("Prepare: err %v, %d writes, want it written at once", err, len(writes)-n)
		}
		cp.SetDelivered(kcl.ShardEnd)
		if err := cp.CheckpointAt(ctx, kcl.ShardEnd); err != nil || !writes[len(writes)-1].Checkpoint.IsShardEnd() {
			t.Fatalf("SHARD_END: err %v, writes %v", err, writes)
		}
		// A refused flush keeps the position held.
		cp2 := New("shard-1", NewCoalescer(w, time.Hour, nil), kcl.TrimHorizon)
		cp2.SetDelivered(at("5"))
		_ = cp2.CheckpointAt(ctx, at("4")) // first write: written
		_ = cp2.CheckpointAt(ctx, at("5")) // held
		fail = true
		co2 := cp2.w.(*Coalescer)
		if err := co2.Flush(ctx); !errors.Is(err, kcl.ErrLeaseLost) || !co2.Held() {
			t.Fatalf("failed Flush: err %v, held %v", err, co2.Held())
		}
	})
}
