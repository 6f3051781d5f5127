package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// chanReader is a fake shard reader fed through a channel.
type chanReader struct {
	ch  chan reader.Batch
	err error // returned once ch is closed
}

func (r *chanReader) Next(ctx context.Context) (reader.Batch, error) {
	select {
	case b, ok := <-r.ch:
		if !ok {
			return reader.Batch{}, r.err
		}
		return b, nil
	case <-ctx.Done():
		return reader.Batch{}, ctx.Err()
	}
}

func (r *chanReader) Close() error { return nil }

func recs(from, n int) []kcl.Record {
	out := make([]kcl.Record, n)
	for i := range out {
		out[i] = kcl.Record{SequenceNumber: fmt.Sprint(from + i), Data: []byte("x")}
	}
	return out
}

func TestBatchingWindowGathersReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rd := &chanReader{ch: make(chan reader.Batch), err: errors.New("read failed")}
		go func() {
			rd.ch <- reader.Batch{Records: recs(1, 2)}
			time.Sleep(50 * time.Millisecond)
			rd.ch <- reader.Batch{Records: recs(3, 3), MillisBehindLatest: 7}
			time.Sleep(250 * time.Millisecond)
			rd.ch <- reader.Batch{Records: recs(6, 1)}
			time.Sleep(20 * time.Millisecond)
			close(rd.ch)
		}()
		g := &gatherer{rd: rd, window: 100 * time.Millisecond, maxBytes: 1 << 20}
		began := time.Now()
		b, err := g.next(t.Context())
		if err != nil || len(b.Records) != 5 || b.MillisBehindLatest != 7 || time.Since(began) != 100*time.Millisecond {
			t.Fatalf("first batch: %d records, lag %d, after %v, err %v; want the 5 records of two reads after the 100ms window",
				len(b.Records), b.MillisBehindLatest, time.Since(began), err)
		}
		b, err = g.next(t.Context())
		if err != nil || len(b.Records) != 1 || time.Since(began) != 320*time.Millisecond {
			t.Fatalf("second batch: %d records after %v, err %v; want the last record, cut short by the read error at 320ms", len(b.Records), time.Since(began), err)
		}
		if _, err := g.next(t.Context()); err == nil || err.Error() != "read failed" {
			t.Fatalf("third call: %v, want the read error held back", err)
		}
	})
}

func TestMaxBatchSizeEndsGatheringAndCapsBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rd := &chanReader{ch: make(chan reader.Batch, 3)}
		rd.ch <- reader.Batch{Records: recs(1, 3)}
		rd.ch <- reader.Batch{Records: recs(4, 3)}
		rd.ch <- reader.Batch{Records: recs(7, 3)}
		g := &gatherer{rd: rd, window: time.Hour, size: 4, maxBytes: 1 << 20}
		began := time.Now()
		b, err := g.next(t.Context())
		if err != nil || len(b.Records) != 6 || time.Since(began) != 0 {
			t.Fatalf("%d records after %v (%v); want two reads, at once, once 4 records were reached", len(b.Records), time.Since(began), err)
		}
		parts := chunks(b.Records, 4)
		if len(parts) != 2 || len(parts[0]) != 4 || len(parts[1]) != 2 || parts[1][0].SequenceNumber != "5" {
			t.Errorf("chunks %v, want 4 then 2 records, in order", parts)
		}
	})
}

func TestBatchingStopsAtShardEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rd := &chanReader{ch: make(chan reader.Batch, 2)}
		rd.ch <- reader.Batch{Records: recs(1, 1)}
		rd.ch <- reader.Batch{Records: recs(2, 1), ShardEnded: true, ChildShardIDs: []string{"c"}}
		g := &gatherer{rd: rd, window: time.Hour, maxBytes: 1 << 20}
		b, err := g.next(t.Context())
		if err != nil || len(b.Records) != 2 || !b.ShardEnded || len(b.ChildShardIDs) != 1 {
			t.Fatalf("batch %+v, %v; want both records and the shard end, without waiting for the window", b, err)
		}
	})
}

func TestDeliveryLimitsNeedADeadLetterHandler(t *testing.T) {
	if err := (DeliveryPolicy{MaxAttempts: 3}).validate(); err == nil {
		t.Error("MaxAttempts without DeadLetters accepted")
	}
	if err := (DeliveryPolicy{MaxBatchingWindow: -time.Second}).validate(); err == nil {
		t.Error("negative window accepted")
	}
}
