package reader

import (
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/internal/kpl"
	"github.com/shardline/shardline/kcl"
)

// aggregated returns a Kinesis record holding users as a KPL aggregate.
func aggregated(t *testing.T, seqNo string, users ...kpl.Record) types.Record {
	t.Helper()
	data, err := kpl.Marshal(users)
	if err != nil {
		t.Fatal(err)
	}
	return types.Record{Data: data, PartitionKey: aws.String(users[0].PartitionKey), SequenceNumber: aws.String(seqNo)}
}

func plain(seqNo, pk, data string) types.Record {
	return types.Record{Data: []byte(data), PartitionKey: aws.String(pk), SequenceNumber: aws.String(seqNo)}
}

func user(pk, data string) kpl.Record { return kpl.Record{PartitionKey: pk, Data: []byte(data)} }

// describe renders records as "position pk data" lines for comparison.
func describe(recs []kcl.Record) string {
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "%s %s %s agg=%v", r.Position(), r.PartitionKey, r.Data, r.Aggregated)
		if r.ExplicitHashKey != "" {
			fmt.Fprintf(&b, " ehk=%s", r.ExplicitHashKey)
		}
		if r.DecodeErr != nil {
			b.WriteString(" ERR")
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestTransformDeaggregates(t *testing.T) {
	var stats recordTally
	tr := RecordOptions{Counted: stats.add}.transformer("s-1", HashKeyRange{}, discard())
	in := []types.Record{
		plain("10", "p", "plain-1"),
		aggregated(t, "11", user("a", "u0"), kpl.Record{PartitionKey: "b", ExplicitHashKey: "5", Data: []byte("u1")}, user("a", "u2")),
		plain("12", "p", "plain-2"),
	}
	got := describe(tr(t.Context(), in))
	want := "10 p plain-1 agg=false\n" +
		"11 a u0 agg=true\n" +
		"11/1 b u1 agg=true ehk=5\n" +
		"11/2 a u2 agg=true\n" +
		"12 p plain-2 agg=false\n"
	if got != want {
		t.Fatalf("got\n%swant\n%s", got, want)
	}
	if c := stats.Counts(); c.Aggregates != 1 || c.AggregatedUserRecords != 3 || c.MalformedAggregates != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestTransformDisabledDeliversAggregatesRaw(t *testing.T) {
	agg := aggregated(t, "11", user("a", "u0"), user("b", "u1"))
	got := RecordOptions{DisableDeaggregation: true}.transformer("s-1", HashKeyRange{}, discard())(t.Context(), []types.Record{agg})
	if len(got) != 1 || !bytes.Equal(got[0].Data, agg.Data) || got[0].Aggregated || got[0].DecodeErr != nil {
		t.Fatalf("got %s", describe(got))
	}
}

func TestTransformMalformedAggregateDeliveredRaw(t *testing.T) {
	good := aggregated(t, "11", user("a", "u0"), user("b", "u1"))
	badDigest := bytes.Clone(good.Data)
	badDigest[len(badDigest)-1] ^= 1
	badProto := []byte("\xF3\x89\x9A\xC2\xFF\xFF")
	sum := md5sum(badProto[4:])
	badProto = append(badProto, sum...)
	var stats recordTally
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tr := RecordOptions{Counted: stats.add}.transformer("s-1", HashKeyRange{}, log)
	in := []types.Record{
		{Data: badDigest, PartitionKey: aws.String("a"), SequenceNumber: aws.String("10")},
		{Data: badProto, PartitionKey: aws.String("a"), SequenceNumber: aws.String("11")},
		plain("12", "p", "fine"),
	}
	got := tr(t.Context(), in)
	if len(got) != 3 {
		t.Fatalf("got %d records, want 3:\n%s", len(got), describe(got))
	}
	for i, wantErr := range []error{kpl.ErrChecksum, kpl.ErrMalformed} {
		r := got[i]
		if !errors.Is(r.DecodeErr, kcl.ErrMalformedAggregate) || !errors.Is(r.DecodeErr, wantErr) {
			t.Errorf("record %d: DecodeErr %v, want %v and %v", i, r.DecodeErr, kcl.ErrMalformedAggregate, wantErr)
		}
		if !bytes.Equal(r.Data, in[i].Data) || r.Aggregated || r.SubSequenceNumber != 0 {
			t.Errorf("record %d not delivered raw: %s", i, describe(got[i:i+1]))
		}
	}
	if got[2].DecodeErr != nil || string(got[2].Data) != "fine" {
		t.Errorf("plain record after malformed ones: %s", describe(got[2:]))
	}
	if c := stats.Counts(); c.MalformedAggregates != 2 {
		t.Errorf("MalformedAggregates = %d, want 2", c.MalformedAggregates)
	}
	if !strings.Contains(logs.String(), "malformed KPL aggregated record") {
		t.Errorf("no warning logged: %s", logs.String())
	}
}

func md5sum(b []byte) []byte {
	sum := md5.Sum(b)
	return sum[:]
}

// keyIn returns a partition key whose hash lies in r.
func keyIn(t *testing.T, r hashkey.Range) string {
	t.Helper()
	for i := range 10000 {
		pk := fmt.Sprintf("k%d", i)
		if r.Contains(hashkey.FromPartitionKey(pk)) {
			return pk
		}
	}
	t.Fatal("no key found in range")
	return ""
}

func TestTransformDropsAggregatesOutsideShardRange(t *testing.T) {
	// The shard owns the lower half of the key space.
	lower := HashKeyRange{StartingHashKey: "0", EndingHashKey: "170141183460469231731687303715884105727"}
	lr, _ := hashkey.ParseRange(lower.StartingHashKey, lower.EndingHashKey)
	ur, _ := hashkey.ParseRange("170141183460469231731687303715884105728", "340282366920938463463374607431768211455")
	in1, out1 := keyIn(t, lr), keyIn(t, ur)
	var stats recordTally
	tr := RecordOptions{Counted: stats.add}.transformer("s-1", lower, discard())
	in := []types.Record{
		aggregated(t, "10", user(in1, "a"), user(in1, "b")),
		aggregated(t, "11", user(in1, "c"), user(out1, "d"), user(in1, "e")), // stale map: dropped whole
		aggregated(t, "12", user(out1, "f"), kpl.Record{PartitionKey: out1, ExplicitHashKey: "7", Data: []byte("g")}),
		aggregated(t, "13", kpl.Record{PartitionKey: out1, ExplicitHashKey: "7", Data: []byte("h")}), // explicit key in range
		plain("14", out1, "plain records are never range-checked"),
	}
	got := describe(tr(t.Context(), in))
	want := "10 " + in1 + " a agg=true\n" +
		"10/1 " + in1 + " b agg=true\n" +
		"13 " + out1 + " h agg=true ehk=7\n" +
		"14 " + out1 + " plain records are never range-checked agg=false\n"
	if got != want {
		t.Fatalf("got\n%swant\n%s", got, want)
	}
	if c := stats.Counts(); c.DroppedAggregates != 2 || c.DroppedUserRecords != 5 || c.Aggregates != 2 {
		t.Fatalf("counts %+v", c)
	}

	// Without a range (or with an unreadable one) nothing is dropped.
	for _, r := range []HashKeyRange{{}, {StartingHashKey: "x", EndingHashKey: "1"}} {
		if n := len(RecordOptions{}.transformer("s-1", r, discard())(t.Context(), in)); n != 2+3+2+1+1 {
			t.Errorf("range %+v: %d records, want 9", r, n)
		}
	}
}

func TestTransformDecoder(t *testing.T) {
	dec := kcl.RecordDecoder(func(ctx context.Context, pk string, data []byte) ([]byte, error) {
		switch {
		case bytes.HasPrefix(data, []byte("bad")):
			return nil, errors.New("cannot decode")
		case bytes.HasPrefix(data, []byte("panic")):
			panic("decoder bug")
		}
		return append([]byte(pk+":"), bytes.ToUpper(data)...), nil
	})
	var stats recordTally
	tr := RecordOptions{Decoder: dec, Counted: stats.add}.transformer("s-1", HashKeyRange{}, discard())
	in := []types.Record{
		plain("10", "p", "one"),
		aggregated(t, "11", user("a", "two"), user("b", "bad-three"), user("c", "four")),
		plain("12", "p", "panic"),
	}
	got := tr(t.Context(), in)
	want := "10 p p:ONE agg=false\n" +
		"11 a a:TWO agg=true\n" +
		"11/1 b bad-three agg=true ERR\n" +
		"11/2 c c:FOUR agg=true\n" +
		"12 p panic agg=false ERR\n"
	if d := describe(got); d != want {
		t.Fatalf("got\n%swant\n%s", d, want)
	}
	for _, i := range []int{2, 4} {
		if !errors.Is(got[i].DecodeErr, kcl.ErrRecordDecode) {
			t.Errorf("record %d: DecodeErr %v, want ErrRecordDecode", i, got[i].DecodeErr)
		}
	}
	if c := stats.Counts(); c.DecodeFailures != 2 {
		t.Errorf("DecodeFailures = %d, want 2", c.DecodeFailures)
	}
}

// TestPollerResumesInsideRealAggregate reads a shard of KPL aggregates from
// a checkpoint inside one: reading starts at that Kinesis record
// (AT_SEQUENCE_NUMBER) and resumes with the next user record.
func TestPollerResumesInsideRealAggregate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		f.mu.Lock()
		for i := range 4 {
			var users []kpl.Record
			for j := range 3 {
				users = append(users, user(fmt.Sprintf("pk%d", j), fmt.Sprintf("u%d.%d", i, j)))
			}
			f.records = append(f.records, aggregated(t, seq(i), users...))
		}
		f.mu.Unlock()
		p := newTestPoller(t, f, Options{})
		r := open(t, p, StartPosition{After: kcl.ExtendedSequenceNumber{SequenceNumber: seq(1), SubSequenceNumber: 1}})
		recs, _ := collect(t, r, 1+3+3)
		var got []string
		for _, rec := range recs {
			got = append(got, string(rec.Data))
		}
		if want := "u1.2 u2.0 u2.1 u2.2 u3.0 u3.1 u3.2"; strings.Join(got, " ") != want {
			t.Fatalf("data %v, want %s", got, want)
		}
		if it := f.iteratorRequests()[0]; it.ShardIteratorType != types.ShardIteratorTypeAtSequenceNumber || aws.ToString(it.StartingSequenceNumber) != seq(1) {
			t.Fatalf("first iterator %s %s, want AT_SEQUENCE_NUMBER %s", it.ShardIteratorType, aws.ToString(it.StartingSequenceNumber), seq(1))
		}
	})
}

// TestPollerAppliesRecordOptions checks that the poller passes its record
// options and the shard's hash key range to the transform.
func TestPollerAppliesRecordOptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		f.mu.Lock()
		f.records = append(f.records,
			aggregated(t, seq(0), kpl.Record{PartitionKey: "a", ExplicitHashKey: "5", Data: []byte("kept")}),
			aggregated(t, seq(1), kpl.Record{PartitionKey: "a", ExplicitHashKey: "500", Data: []byte("dropped")}),
			plain(seq(2), "a", "x"))
		f.mu.Unlock()
		var stats recordTally
		dec := kcl.RecordDecoder(func(_ context.Context, _ string, d []byte) ([]byte, error) { return bytes.ToUpper(d), nil })
		p := newTestPoller(t, f, Options{Records: RecordOptions{Decoder: dec, Counted: stats.add}})
		start := trimHorizon()
		start.HashKeyRange = HashKeyRange{StartingHashKey: "0", EndingHashKey: "100"}
		recs, _ := collect(t, open(t, p, start), 2)
		if got := describe(recs); got != seq(0)+" a KEPT agg=true ehk=5\n"+seq(2)+" a X agg=false\n" {
			t.Fatalf("got\n%s", got)
		}
		if c := stats.Counts(); c.DroppedAggregates != 1 {
			t.Fatalf("counts %+v", c)
		}
	})
}

// recordTally sums the counts a transform reports.
type recordTally struct {
	mu sync.Mutex
	c  RecordCounts
}

func (t *recordTally) add(_ string, c RecordCounts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.c.Aggregates += c.Aggregates
	t.c.AggregatedUserRecords += c.AggregatedUserRecords
	t.c.MalformedAggregates += c.MalformedAggregates
	t.c.DroppedAggregates += c.DroppedAggregates
	t.c.DroppedUserRecords += c.DroppedUserRecords
	t.c.DecodeFailures += c.DecodeFailures
}

// Counts returns the sums.
func (t *recordTally) Counts() RecordCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.c
}
