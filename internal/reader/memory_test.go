package reader

import (
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	ikpl "github.com/shardline/shardline/internal/kpl"
	"github.com/shardline/shardline/kcl"
)

// emptyAggregate returns a KPL aggregate of up to 1 MiB holding as many
// empty user records as fit, and their number.
func emptyAggregate(t testing.TB) ([]byte, int) {
	t.Helper()
	var a ikpl.Aggregator
	r := ikpl.Record{PartitionKey: "k"}
	for a.SizeWith(r) <= 1<<20 {
		a.Add(r)
	}
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b, a.Len()
}

// Empty records count in the prefetch bound: the memory of a record is
// more than its data.
func TestRecordsMemoryCountsEmptyRecords(t *testing.T) {
	recs := make([]kcl.Record, 1000)
	if got := RecordsMemory(recs); got < 1000*recordOverhead || recordOverhead < 100 {
		t.Fatalf("1000 empty records count %d bytes (overhead %d each)", got, recordOverhead)
	}
	if got := batchBytes(Batch{Records: recs}); got != RecordsMemory(recs) {
		t.Fatalf("the prefetch bound counts %d bytes, want %d", got, RecordsMemory(recs))
	}
}

// Issue 19, item 10: a 1 MiB aggregate of empty user records unpacks into
// some 175,000 records and 36 MiB. A read of several of them used to become
// one batch of all their records, held whole in the prefetch queue (which
// counted their data only: zero bytes). Now no batch has more than
// MaxRecords records, and the live heap grows by about one aggregate's
// records whatever the read returned: 6 aggregates in one read, measured
// with runtime.MemStats after a GC every 25 batches, against a wide bound
// (measured: 25 MiB; the old code held 157 MiB, in one batch).
func TestAggregatesOfEmptyRecordsStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates hundreds of MiB on failure")
	}
	agg, per := emptyAggregate(t)
	const aggregates, maxRecords = 6, 1000
	f := newFakeShard(0)
	for i := range aggregates {
		f.records = append(f.records, types.Record{Data: agg, PartitionKey: aws.String("k"), SequenceNumber: aws.String(seq(i))})
	}
	f.closed = true
	p := newTestPoller(t, f, Options{MaxRecords: maxRecords})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	peak := base
	r := open(t, p, trimHorizon())
	total, batches := 0, 0
	for {
		b, err := r.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Records) > maxRecords {
			t.Errorf("batch of %d records, want at most MaxRecords %d", len(b.Records), maxRecords)
		}
		for _, rec := range b.Records {
			if want := seq(total / per); rec.SequenceNumber != want || rec.SubSequenceNumber != int64(total%per) {
				t.Fatalf("record %d is %s, want %s/%d", total, rec.Position(), want, total%per)
			}
			total++
		}
		batches++
		if batches%25 == 1 {
			// The live heap: the batch in hand and what the reader holds,
			// not garbage not yet collected.
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			runtime.KeepAlive(b.Records) // the batch in hand counts
		}
	}
	if total != aggregates*per {
		t.Fatalf("%d records delivered, want %d", total, aggregates*per)
	}
	grew := int64(peak) - int64(base)
	t.Logf("%d aggregates of %d empty records: %d batches, heap grew by at most %d MiB", aggregates, per, batches, grew>>20)
	if grew > 100<<20 {
		t.Errorf("heap grew by %d MiB while reading %d aggregates, want well under 100 MiB (one aggregate unpacks into some 36 MiB)", grew>>20, aggregates)
	}
}
