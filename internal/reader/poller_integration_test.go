package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// put writes n records "<prefix>-<i>" and returns, per shard, the
// positions and payloads in the order Kinesis assigned them.
func put(t *testing.T, kc *kinesis.Client, stream, prefix string, n int) map[string][]kcl.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	byShard := map[string][]kcl.Record{}
	for lo := 0; lo < n; lo += 100 {
		var entries []types.PutRecordsRequestEntry
		for i := lo; i < min(lo+100, n); i++ {
			entries = append(entries, types.PutRecordsRequestEntry{
				Data:         fmt.Appendf(nil, "%s-%d", prefix, i),
				PartitionKey: aws.String(fmt.Sprintf("key-%d", i)),
			})
		}
		out, err := kc.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
		if err != nil {
			t.Fatalf("PutRecords: %v", err)
		}
		if c := aws.ToInt32(out.FailedRecordCount); c != 0 {
			t.Fatalf("PutRecords: %d records failed", c)
		}
		for i, res := range out.Records {
			id := aws.ToString(res.ShardId)
			byShard[id] = append(byShard[id], kcl.Record{
				Data: entries[i].Data, PartitionKey: *entries[i].PartitionKey, SequenceNumber: aws.ToString(res.SequenceNumber),
			})
		}
	}
	for id := range byShard {
		slices.SortFunc(byShard[id], func(a, b kcl.Record) int { return a.Position().Compare(b.Position()) })
	}
	return byShard
}

func integrationPoller(t *testing.T, kc *kinesis.Client, opts Options) *Shards {
	t.Helper()
	opts.IdleTimeBetweenReads = 50 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := NewPolling(kc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readN reads batches from shardID until n records arrived.
func readN(t *testing.T, p *Shards, shardID string, start StartPosition, n int) ([]kcl.Record, Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := p.Open(ctx, shardID, start)
	if err != nil {
		t.Fatalf("Open %s: %v", shardID, err)
	}
	t.Cleanup(func() { _ = r.Close() })
	var recs []kcl.Record
	for len(recs) < n {
		b, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next on %s after %d records: %v", shardID, len(recs), err)
		}
		if b.Gap {
			t.Errorf("unexpected Gap on %s", shardID)
		}
		recs = append(recs, b.Records...)
	}
	return recs, r
}

func sameRecords(t *testing.T, got, want []kcl.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.SequenceNumber != w.SequenceNumber || string(g.Data) != string(w.Data) || g.PartitionKey != w.PartitionKey {
			t.Fatalf("record %d: got %s %q %s, want %s %q %s", i, g.SequenceNumber, g.Data, g.PartitionKey, w.SequenceNumber, w.Data, w.PartitionKey)
		}
		if g.ApproximateArrivalTimestamp.IsZero() {
			t.Fatalf("record %d: no arrival timestamp", i)
		}
	}
}

// twoShards creates a stream of two shards and puts 200 records with keys
// from prefix, returning the stream and the records of each shard.
func twoShards(t *testing.T, kc *kinesis.Client, prefix string) (string, map[string][]kcl.Record) {
	t.Helper()
	stream := testenv.CreateStream(t, kc, 2)
	want := put(t, kc, stream, prefix, 200)
	if len(want) != 2 {
		t.Fatalf("records landed on %d shards, want 2", len(want))
	}
	return stream, want
}

func TestIntegrationPollerReadsAllShards(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream, want := twoShards(t, kc, "all")
	p := integrationPoller(t, kc, Options{StreamName: stream, MaxRecords: 30})
	total := 0
	for shardID, recs := range want {
		got, _ := readN(t, p, shardID, StartPosition{Initial: kcl.StartAtTrimHorizon()}, len(recs))
		sameRecords(t, got, recs)
		total += len(got)
	}
	if total != 200 {
		t.Fatalf("read %d records, want 200", total)
	}
}

func TestIntegrationPollerResumesAfterCheckpoint(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	recs := put(t, kc, stream, "resume", 50)["shardId-000000000000"]
	if len(recs) != 50 {
		t.Fatalf("%d records on shard 0, want 50", len(recs))
	}
	p := integrationPoller(t, kc, Options{StreamName: stream})
	start := StartPosition{After: recs[19].Position(), Initial: kcl.StartAtTrimHorizon()}
	got, r := readN(t, p, "shardId-000000000000", start, 30)
	sameRecords(t, got, recs[20:])

	// Nothing else comes: only empty batches until the deadline.
	wantNoMoreRecords(t, r, 500*time.Millisecond)
}

// wantNoMoreRecords reads r for d and fails on any record or error: only
// empty batches may come.
func wantNoMoreRecords(t *testing.T, r Reader, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	for {
		b, err := r.Next(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Records) != 0 {
			t.Fatalf("extra records after the last one: %v", b.Records)
		}
	}
}

func TestIntegrationPollerParentShardEndsAfterSplit(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const parent = "shardId-000000000000"
	before := put(t, kc, stream, "before", 20)[parent]

	mid := new(big.Int).Lsh(big.NewInt(1), 127) // half of the 128-bit hash key space
	if _, err := kc.SplitShard(ctx, &kinesis.SplitShardInput{
		StreamName: aws.String(stream), ShardToSplit: aws.String(parent), NewStartingHashKey: aws.String(mid.String()),
	}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	if err := testenv.WaitStreamActive(ctx, kc, stream); err != nil {
		t.Fatal(err)
	}
	after := put(t, kc, stream, "after", 10)
	if len(after[parent]) != 0 {
		t.Fatalf("%d records went to the closed parent", len(after[parent]))
	}
	shards, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}
	var children []string
	for _, s := range shards.Shards {
		if aws.ToString(s.ParentShardId) == parent {
			children = append(children, aws.ToString(s.ShardId))
		}
	}
	if len(children) != 2 {
		t.Fatalf("children of %s: %v, want 2", parent, children)
	}
	summary, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	if err != nil {
		t.Fatal(err)
	}

	// By ARN this time.
	p := integrationPoller(t, kc, Options{StreamARN: aws.ToString(summary.StreamDescriptionSummary.StreamARN), MaxRecords: 7})
	r, err := p.Open(ctx, parent, StartPosition{Initial: kcl.StartAtTrimHorizon()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []kcl.Record
	var last Batch
	for !last.ShardEnded {
		if last, err = r.Next(ctx); err != nil {
			t.Fatalf("Next after %d records: %v", len(got), err)
		}
		got = append(got, last.Records...)
	}
	sameRecords(t, got, before)
	slices.Sort(children)
	gotChildren := slices.Sorted(slices.Values(last.ChildShardIDs))
	if !slices.Equal(gotChildren, children) {
		t.Fatalf("ChildShardIDs = %v, want %v", gotChildren, children)
	}
	for range 2 {
		if _, err := r.Next(ctx); !errors.Is(err, io.EOF) {
			t.Fatalf("Next after shard end = %v, want io.EOF", err)
		}
	}
}

func TestIntegrationPollerStreamNotFound(t *testing.T) {
	kc := testenv.Kinesis(t)
	p := integrationPoller(t, kc, Options{StreamName: testenv.UniqueName("missing")})
	_, err := p.Open(t.Context(), "shardId-000000000000", StartPosition{Initial: kcl.StartAtTrimHorizon()})
	if !errors.Is(err, kcl.ErrStreamNotFound) {
		t.Fatalf("Open = %v, want kcl.ErrStreamNotFound", err)
	}
	stream := testenv.CreateStream(t, kc, 1)
	p = integrationPoller(t, kc, Options{StreamName: stream})
	if _, err := p.Open(t.Context(), "shardId-000000000007", StartPosition{Initial: kcl.StartAtTrimHorizon()}); !errors.Is(err, kcl.ErrStreamNotFound) {
		t.Fatalf("Open of a missing shard = %v, want kcl.ErrStreamNotFound", err)
	}
}
