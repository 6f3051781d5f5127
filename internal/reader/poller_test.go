package reader

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/shardline/shardline/kcl"
)

// syncBuffer is a log sink safe for the fetch goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestPoller returns a Poller on f with test-friendly defaults: stream
// "s", 50ms idle time, logs discarded.
func newTestPoller(t *testing.T, f *fakeShard, opts Options) *Shards {
	t.Helper()
	if opts.StreamName == "" && opts.StreamARN == "" {
		opts.StreamName = f.stream
	}
	if opts.IdleTimeBetweenReads == 0 {
		opts.IdleTimeBetweenReads = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := NewPolling(f, opts)
	if err != nil {
		t.Fatalf("NewPolling: %v", err)
	}
	return p
}

func open(t *testing.T, p *Shards, start StartPosition) Reader {
	t.Helper()
	r, err := p.Open(t.Context(), fakeShardID, start)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func trimHorizon() StartPosition { return StartPosition{Initial: kcl.StartAtTrimHorizon()} }

func after(i int) StartPosition {
	return StartPosition{After: kcl.NewSequence(seq(i)), Initial: kcl.StartAtLatest()}
}

// next calls r.Next with the test's context and fails on error.
func next(t *testing.T, r Reader) Batch {
	t.Helper()
	b, err := r.Next(t.Context())
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return b
}

// collect reads batches until n records have arrived.
func collect(t *testing.T, r Reader, n int) ([]kcl.Record, []Batch) {
	t.Helper()
	var recs []kcl.Record
	var batches []Batch
	for len(recs) < n {
		b := next(t, r)
		batches = append(batches, b)
		recs = append(recs, b.Records...)
	}
	if len(recs) != n {
		t.Fatalf("got %d records, want %d", len(recs), n)
	}
	return recs, batches
}

// wantRange checks that recs are the fake records from..from+len(recs)-1.
func wantRange(t *testing.T, recs []kcl.Record, from int) {
	t.Helper()
	for i, r := range recs {
		if want := seq(from + i); r.SequenceNumber != want {
			t.Fatalf("record %d: sequence %s, want %s (record %d)", i, r.SequenceNumber, want, from+i)
		}
		if want := "r" + itoa(from+i); string(r.Data) != want {
			t.Fatalf("record %d: data %q, want %q", i, r.Data, want)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestPollerReadsShardInOrderToTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(25)
		f.closed = true
		f.children = []string{"shardId-000000000001", "shardId-000000000002"}
		r := open(t, newTestPoller(t, f, Options{MaxRecords: 10}), trimHorizon())

		recs, batches := collect(t, r, 25)
		wantRange(t, recs, 0)
		if len(batches) != 3 {
			t.Fatalf("got %d batches, want 3 (10+10+5)", len(batches))
		}
		for _, b := range batches[:2] {
			if b.ShardEnded || b.Gap {
				t.Fatalf("early batch: %+v", b)
			}
		}
		if b := batches[0]; b.MillisBehindLatest != 15000 {
			t.Errorf("MillisBehindLatest = %d, want 15000", b.MillisBehindLatest)
		}
		last := batches[2]
		if !last.ShardEnded || strings.Join(last.ChildShardIDs, ",") != "shardId-000000000001,shardId-000000000002" {
			t.Fatalf("last batch: ShardEnded=%v children=%v", last.ShardEnded, last.ChildShardIDs)
		}
		r0 := recs[3]
		if r0.PartitionKey != "pk3" || r0.SubSequenceNumber != 0 || r0.Aggregated || r0.ExplicitHashKey != "" ||
			!r0.ApproximateArrivalTimestamp.Equal(time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC)) {
			t.Errorf("converted record: %+v", r0)
		}
		for range 2 {
			if _, err := r.Next(t.Context()); !errors.Is(err, io.EOF) {
				t.Fatalf("Next after shard end = %v, want io.EOF", err)
			}
		}
		if got, _ := f.calls(); got != 3 {
			t.Errorf("GetRecords calls = %d, want 3", got)
		}
		if lim := f.recordLimits[0]; lim != 10 {
			t.Errorf("GetRecords Limit = %d, want 10", lim)
		}
	})
}

func TestPollerEmptyClosedShard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		f.closed = true
		f.children = []string{"shardId-000000000003"}
		r := open(t, newTestPoller(t, f, Options{}), trimHorizon())
		b := next(t, r)
		if !b.ShardEnded || len(b.Records) != 0 || len(b.ChildShardIDs) != 1 {
			t.Fatalf("batch = %+v, want an empty ShardEnded batch with one child", b)
		}
		if _, err := r.Next(t.Context()); !errors.Is(err, io.EOF) {
			t.Fatalf("Next = %v, want io.EOF", err)
		}
	})
}

func TestPollerResumesAfterCheckpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(20)
		r := open(t, newTestPoller(t, f, Options{}), after(7))
		recs, batches := collect(t, r, 12)
		wantRange(t, recs, 8)
		if batches[0].Gap {
			t.Error("Gap set although the checkpoint is retained")
		}
		req := f.iteratorRequests()[0]
		if req.ShardIteratorType != types.ShardIteratorTypeAtSequenceNumber || aws.ToString(req.StartingSequenceNumber) != seq(7) {
			t.Fatalf("GetShardIterator %s %s, want AT_SEQUENCE_NUMBER %s", req.ShardIteratorType, aws.ToString(req.StartingSequenceNumber), seq(7))
		}
	})
}

func TestPollerInitialPositions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start StartPosition
		typ   types.ShardIteratorType
		first int
	}{
		{"trim horizon", trimHorizon(), types.ShardIteratorTypeTrimHorizon, 0},
		{"sentinel checkpoint uses initial", StartPosition{After: kcl.TrimHorizon, Initial: kcl.StartAtTrimHorizon()}, types.ShardIteratorTypeTrimHorizon, 0},
		{"at timestamp", StartPosition{Initial: kcl.StartAtTimestamp(time.Date(2026, 1, 1, 0, 0, 4, 0, time.UTC))}, types.ShardIteratorTypeAtTimestamp, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeShard(6)
				r := open(t, newTestPoller(t, f, Options{}), tc.start)
				recs, _ := collect(t, r, 6-tc.first)
				wantRange(t, recs, tc.first)
				if got := f.iteratorRequests()[0].ShardIteratorType; got != tc.typ {
					t.Fatalf("iterator type %s, want %s", got, tc.typ)
				}
			})
		})
	}
}

func TestPollerLatestSkipsOldRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(5)
		r := open(t, newTestPoller(t, f, Options{}), StartPosition{Initial: kcl.StartAtLatest()})
		f.add(2)
		recs, _ := collect(t, r, 2)
		wantRange(t, recs, 5)
	})
}

// aggregate is a test transform standing in for KPL de-aggregation: every
// Kinesis record carries three user records, sub-sequence numbers 0..2.
func aggregate(_ context.Context, in []types.Record) []kcl.Record {
	var out []kcl.Record
	for _, r := range toRecords(in) {
		for sub := range int64(3) {
			u := r
			u.SubSequenceNumber = sub
			u.Aggregated = true
			out = append(out, u)
		}
	}
	return out
}

func TestPollerResumesInsideAggregate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(5)
		p := newTestPoller(t, f, Options{})
		p.newTransform = func(string, StartPosition, *slog.Logger) recordTransform { return aggregate }
		start := StartPosition{After: kcl.ExtendedSequenceNumber{SequenceNumber: seq(2), SubSequenceNumber: 1}}
		r := open(t, p, start)
		recs, batches := collect(t, r, 1+3+3)
		if batches[0].Gap {
			t.Error("Gap set although the aggregate holding the checkpoint is retained")
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Position().String())
		}
		want := []string{seq(2) + "/2", seq(3), seq(3) + "/1", seq(3) + "/2", seq(4), seq(4) + "/1", seq(4) + "/2"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("positions\n got %v\nwant %v", got, want)
		}
	})
}

func TestFilterAfter(t *testing.T) {
	rec := func(s string, sub int64) kcl.Record { return kcl.Record{SequenceNumber: s, SubSequenceNumber: sub} }
	recs := func() []kcl.Record {
		return []kcl.Record{rec("9", 0), rec("10", 0), rec("10", 1), rec("10", 2), rec("11", 0), rec("100", 0)}
	}
	for _, tc := range []struct {
		after kcl.ExtendedSequenceNumber
		want  int // records kept, from the end
	}{
		{kcl.ExtendedSequenceNumber{}, 6},
		{kcl.TrimHorizon, 6},
		{kcl.Latest, 6},
		{kcl.NewSequence("8"), 6},
		{kcl.NewSequence("9"), 5},
		{kcl.NewSequence("10"), 4},
		{kcl.ExtendedSequenceNumber{SequenceNumber: "10", SubSequenceNumber: 1}, 3},
		{kcl.ExtendedSequenceNumber{SequenceNumber: "10", SubSequenceNumber: 2}, 2},
		{kcl.NewSequence("11"), 1},
		{kcl.NewSequence("99"), 1},
		{kcl.NewSequence("100"), 0},
	} {
		in := recs()
		got := filterAfter(in, tc.after)
		if want := recs()[6-tc.want:]; len(got) != len(want) || (len(got) > 0 && got[0].Position() != want[0].Position()) {
			t.Errorf("filterAfter(%v) kept %v, want %v", tc.after, got, want)
		}
	}
}

func TestPollerRenewsExpiredIterator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(30)
		f.perCall = 5
		f.recordsHook = func(call int) error {
			if call == 3 || call == 6 {
				return &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
			}
			return nil
		}
		r := open(t, newTestPoller(t, f, Options{}), after(3))
		recs, _ := collect(t, r, 26)
		wantRange(t, recs, 4) // no loss, no duplicate
		reqs := f.iteratorRequests()
		if len(reqs) != 3 {
			t.Fatalf("%d GetShardIterator calls, want 3", len(reqs))
		}
		// Call 1 fetched records 3..7 (3 filtered), call 2 records 8..12.
		if got := aws.ToString(reqs[1].StartingSequenceNumber); reqs[1].ShardIteratorType != types.ShardIteratorTypeAtSequenceNumber || got != seq(12) {
			t.Errorf("renewal %s %s, want AT_SEQUENCE_NUMBER %s", reqs[1].ShardIteratorType, got, seq(12))
		}
	})
}

func TestPollerRenewsExpiredIteratorBeforeFirstRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(10)
		f.recordsHook = func(call int) error {
			if call == 1 {
				return &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
			}
			return nil
		}
		r := open(t, newTestPoller(t, f, Options{}), after(4))
		recs, _ := collect(t, r, 5)
		wantRange(t, recs, 5)
		reqs := f.iteratorRequests()
		if len(reqs) != 2 || aws.ToString(reqs[1].StartingSequenceNumber) != seq(4) {
			t.Fatalf("GetShardIterator calls %+v, want a second one AT %s", reqs, seq(4))
		}
	})
}

func TestPollerRenewsExpiredLatestIteratorAtTimestamp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		f.recordsHook = func(call int) error {
			if call == 1 {
				return &types.ExpiredIteratorException{Message: aws.String("Iterator expired")}
			}
			return nil
		}
		open(t, newTestPoller(t, f, Options{}), StartPosition{Initial: kcl.StartAtLatest()})
		synctest.Wait()
		reqs := f.iteratorRequests()
		if len(reqs) != 2 || reqs[1].ShardIteratorType != types.ShardIteratorTypeAtTimestamp || reqs[1].Timestamp == nil {
			t.Fatalf("GetShardIterator calls %+v, want LATEST then AT_TIMESTAMP", reqs)
		}
	})
}

func throttled() error {
	return &types.ProvisionedThroughputExceededException{Message: aws.String("Rate exceeded for shard")}
}

func TestPollerBacksOffWhenThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(10)
		f.perCall = 5
		f.closed = true
		f.recordsHook = func(call int) error {
			if call <= 4 || call == 6 {
				return throttled()
			}
			return nil
		}
		r := open(t, newTestPoller(t, f, Options{BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second}), trimHorizon())
		recs, _ := collect(t, r, 10)
		wantRange(t, recs, 0)
		times := f.callTimes()
		if len(times) != 7 {
			t.Fatalf("%d GetRecords calls, want 7 (4 throttled, 1 ok, 1 throttled, 1 ok)", len(times))
		}
		// Default randomisation is ±50% around 100ms, 150ms, 225ms, 337.5ms.
		for i, lo := range []time.Duration{50, 75, 112, 168} {
			if d := times[i+1].Sub(times[i]); d < lo*time.Millisecond || d > 3*lo*time.Millisecond {
				t.Errorf("backoff %d = %v, want about %v", i+1, d, 2*lo*time.Millisecond)
			}
		}
		// A success resets the backoff: the throttle after it waits about
		// the initial interval again.
		if d := times[6].Sub(times[5]); d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Errorf("backoff after a success = %v, want 50ms..150ms", d)
		}
		if d := times[5].Sub(times[4]); d != 0 {
			t.Errorf("call after records came %v later, want at once", d)
		}
	})
}

func TestPollerRetriesTransientErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(3)
		f.closed = true
		f.recordsHook = func(call int) error {
			if call == 1 { // what kinesis-mock answers for a garbage iterator
				return &smithyhttp.ResponseError{
					Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 500}},
					Err:      &smithy.GenericAPIError{Code: "UnknownError", Message: "UnknownError"},
				}
			}
			return nil
		}
		f.iteratorHook = func(call int, _ *kinesis.GetShardIteratorInput) error {
			if call == 1 {
				return throttled()
			}
			return nil
		}
		p := newTestPoller(t, f, Options{})
		r := open(t, p, trimHorizon()) // a throttled first GetShardIterator is retried, not an error
		recs, _ := collect(t, r, 3)
		wantRange(t, recs, 0)
		if gr, gi := f.calls(); gr != 2 || gi != 2 {
			t.Errorf("calls: GetRecords %d, GetShardIterator %d; want 2 and 2", gr, gi)
		}
	})
}

func TestPollerStopsOnFatalError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(10)
		f.perCall = 4
		f.recordsHook = func(call int) error {
			if call == 3 {
				return &types.AccessDeniedException{Message: aws.String("not allowed")}
			}
			return nil
		}
		r := open(t, newTestPoller(t, f, Options{}), trimHorizon())
		collect(t, r, 8) // batches fetched before the error are delivered
		for range 2 {
			_, err := r.Next(t.Context())
			var ad *types.AccessDeniedException
			if err == nil || !strings.HasPrefix(err.Error(), "shardline: shard "+fakeShardID+": get records: ") || !errors.As(err, &ad) {
				t.Fatalf("Next = %v, want an error naming the shard and wrapping AccessDeniedException", err)
			}
		}
		if gr, _ := f.calls(); gr != 3 {
			t.Errorf("GetRecords calls = %d, want 3 (no retry)", gr)
		}
	})
}

func TestPollerStreamNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		f.notFound = true
		p := newTestPoller(t, f, Options{})
		_, err := p.Open(t.Context(), fakeShardID, trimHorizon())
		if !errors.Is(err, kcl.ErrStreamNotFound) || !strings.Contains(err.Error(), "shard "+fakeShardID+":") {
			t.Fatalf("Open = %v, want an error naming the shard, matching kcl.ErrStreamNotFound", err)
		}
		if _, err := p.Open(t.Context(), "shardId-000000000099", trimHorizon()); !errors.Is(err, kcl.ErrStreamNotFound) {
			t.Fatalf("Open of a missing shard = %v, want kcl.ErrStreamNotFound", err)
		}
	})
}

func TestPollerStreamDeletedWhileReading(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(4)
		r := open(t, newTestPoller(t, f, Options{}), trimHorizon())
		collect(t, r, 4)
		f.mu.Lock()
		f.notFound = true
		f.mu.Unlock()
		var err error
		for err == nil {
			_, err = r.Next(t.Context())
		}
		if !errors.Is(err, kcl.ErrStreamNotFound) {
			t.Fatalf("Next = %v, want kcl.ErrStreamNotFound", err)
		}
	})
}

func TestPollerGapWhenCheckpointTrimmed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		trimError bool
		iterators []types.ShardIteratorType
	}{
		{"GetShardIterator refuses the sequence number", true,
			[]types.ShardIteratorType{types.ShardIteratorTypeAtSequenceNumber, types.ShardIteratorTypeTrimHorizon}},
		{"iterator starts after the sequence number", false,
			[]types.ShardIteratorType{types.ShardIteratorTypeAtSequenceNumber}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeShard(12)
				f.trimmed = 5
				f.trimError = tc.trimError
				f.perCall = 4
				logs := &syncBuffer{}
				p := newTestPoller(t, f, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
				r := open(t, p, after(2))
				recs, batches := collect(t, r, 7)
				wantRange(t, recs, 5)
				if !batches[0].Gap {
					t.Error("first batch: Gap not set")
				}
				for i, b := range batches[1:] {
					if b.Gap {
						t.Errorf("batch %d: Gap set again", i+1)
					}
				}
				var kinds []types.ShardIteratorType
				for _, req := range f.iteratorRequests() {
					kinds = append(kinds, req.ShardIteratorType)
				}
				if !slices.Equal(kinds, tc.iterators) {
					t.Errorf("iterator types %v, want %v", kinds, tc.iterators)
				}
				if !strings.Contains(logs.String(), "level=WARN") {
					t.Errorf("no warning logged: %s", logs)
				}
			})
		})
	}
}

func TestPollerPrefetchBound(t *testing.T) {
	for _, tc := range []struct {
		name       string
		batches    int
		bytes      int64
		wantQueued int
	}{
		{"batches", 3, 1 << 20, 3},
		// Batches of one record of 2 bytes of data, a 3-byte key and a
		// 56-digit sequence number: a third would pass 2.5 of them.
		{"bytes", 100, (recordOverhead + 2 + 3 + 56) * 5 / 2, 2},
		{"oversized batch", 100, 1, 1}, // one batch above the bound still fits an empty queue
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeShard(10) // data "r0".."r9": 2 bytes each
				f.perCall = 1
				p := newTestPoller(t, f, Options{PrefetchBatches: tc.batches, PrefetchBytes: tc.bytes})
				r := open(t, p, trimHorizon())
				synctest.Wait()
				// The fetcher queued wantQueued batches and holds one more.
				if got, _ := f.calls(); got != tc.wantQueued+1 {
					t.Fatalf("GetRecords calls = %d while nobody reads, want %d", got, tc.wantQueued+1)
				}
				if q := r.(*shardReader).queue.len(); q != tc.wantQueued {
					t.Fatalf("queued batches = %d, want %d", q, tc.wantQueued)
				}
				recs, _ := collect(t, r, 1)
				wantRange(t, recs, 0)
				synctest.Wait()
				if got, _ := f.calls(); got != tc.wantQueued+2 {
					t.Fatalf("GetRecords calls = %d after one Next, want %d", got, tc.wantQueued+2)
				}
			})
		})
	}
}

func TestPollerIdleReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		r := open(t, newTestPoller(t, f, Options{IdleTimeBetweenReads: time.Second}), trimHorizon())
		b := next(t, r) // the first empty read is delivered, for its lag
		if len(b.Records) != 0 || b.ShardEnded {
			t.Fatalf("batch = %+v, want empty", b)
		}
		time.Sleep(5500 * time.Millisecond) // virtual time: the fetcher polls meanwhile
		times := f.callTimes()
		if len(times) != 6 {
			t.Fatalf("%d GetRecords calls in 5.5s, want 6 (one per second)", len(times))
		}
		for i := 1; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d != time.Second {
				t.Errorf("empty reads %v apart, want 1s", d)
			}
		}
		// Unread empty batches are merged: one is waiting, not five.
		if q := r.(*shardReader).queue.len(); q != 1 {
			t.Errorf("queued empty batches = %d, want 1", q)
		}
		f.add(1)
		var recs []kcl.Record
		for len(recs) == 0 {
			recs = next(t, r).Records
		}
		wantRange(t, recs, 0)
	})
}

func TestPollerEmptyReadsRespectShardLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		open(t, newTestPoller(t, f, Options{IdleTimeBetweenReads: -1}), trimHorizon())
		time.Sleep(time.Second + time.Millisecond)
		times := f.callTimes()
		if len(times) != 6 {
			t.Fatalf("%d GetRecords calls in 1s without idle time, want 6 (5/s)", len(times))
		}
		for i := 1; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d < minEmptyReadInterval {
				t.Errorf("empty reads %v apart, want at least %v", d, minEmptyReadInterval)
			}
		}
	})
}

// synctest.Test fails when a goroutine started in the bubble is still
// running when the function returns: these tests prove Close joins the
// fetcher.

func TestPollerCloseStopsFetcherOnFullQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(50)
		f.perCall = 1
		p := newTestPoller(t, f, Options{PrefetchBatches: 2})
		r, err := p.Open(t.Context(), fakeShardID, trimHorizon())
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the fetcher is blocked on the full queue
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := r.Next(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close = %v, want ErrClosed", err)
		}
	})
}

func TestPollerCloseWakesBlockedNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		p := newTestPoller(t, f, Options{IdleTimeBetweenReads: time.Hour})
		r, err := p.Open(t.Context(), fakeShardID, trimHorizon())
		if err != nil {
			t.Fatal(err)
		}
		next(t, r) // the first empty read; the fetcher now idles for an hour
		res := make(chan error, 1)
		go func() {
			_, err := r.Next(context.Background())
			res <- err
		}()
		synctest.Wait() // Next is blocked
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-res; !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Next returned %v, want ErrClosed", err)
		}
	})
}

func TestPollerNextHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(0)
		r := open(t, newTestPoller(t, f, Options{IdleTimeBetweenReads: time.Hour}), trimHorizon())
		next(t, r) // the first (empty) read
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next = %v, want context.DeadlineExceeded", err)
		}
	})
}

func TestPollerUsesStreamARN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeShard(2)
		arn := "arn:aws:kinesis:us-east-1:000000000000:stream/s"
		r := open(t, newTestPoller(t, f, Options{StreamARN: arn}), trimHorizon())
		collect(t, r, 2)
		req := f.iteratorRequests()[0]
		if aws.ToString(req.StreamARN) != arn || req.StreamName != nil {
			t.Fatalf("GetShardIterator stream name %v ARN %v, want the ARN only", req.StreamName, req.StreamARN)
		}
	})
}

func TestPollerOpenRefusesBadStart(t *testing.T) {
	f := newFakeShard(0)
	p := newTestPoller(t, f, Options{})
	for _, start := range []StartPosition{
		{After: kcl.ShardEnd},
		{After: kcl.NewSequence("12ab")},
		{After: kcl.ExtendedSequenceNumber{SequenceNumber: "12", SubSequenceNumber: -2}},
	} {
		if _, err := p.Open(t.Context(), fakeShardID, start); !errors.Is(err, kcl.ErrInvalidCheckpoint) {
			t.Errorf("Open(%+v) = %v, want kcl.ErrInvalidCheckpoint", start, err)
		}
	}
	if _, err := p.Open(t.Context(), fakeShardID, StartPosition{Initial: kcl.StartAtTimestamp(time.Time{})}); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Errorf("Open at a zero timestamp = %v, want kcl.ErrInvalidConfig", err)
	}
	if n, _ := f.calls(); n != 0 || len(f.iteratorRequests()) != 0 {
		t.Error("a refused Open called Kinesis")
	}
}

func TestNewPollerValidatesOptions(t *testing.T) {
	f := newFakeShard(0)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no stream", Options{}},
		{"bad ARN", Options{StreamARN: "stream/s"}},
		{"MaxRecords too big", Options{StreamName: "s", MaxRecords: 10001}},
		{"MaxRecords negative", Options{StreamName: "s", MaxRecords: -1}},
		{"PrefetchBatches negative", Options{StreamName: "s", PrefetchBatches: -1}},
		{"PrefetchBytes negative", Options{StreamName: "s", PrefetchBytes: -1}},
		{"BackoffInitial negative", Options{StreamName: "s", BackoffInitial: -time.Second}},
		{"BackoffMax below initial", Options{StreamName: "s", BackoffInitial: time.Second, BackoffMax: time.Millisecond}},
	} {
		if _, err := NewPolling(f, tc.opts); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("%s: NewPolling = %v, want kcl.ErrInvalidConfig", tc.name, err)
		}
	}
	if _, err := NewPolling(nil, Options{StreamName: "s"}); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Errorf("nil client: NewPolling = %v, want kcl.ErrInvalidConfig", err)
	}
	// The fan-out fields are not checked when polling.
	p, err := NewPolling(f, Options{StreamName: "s", ConsumerName: "not a consumer name", EventTimeout: -time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := p.opts
	if o.MaxRecords != 10000 || o.IdleTimeBetweenReads != time.Second || o.PrefetchBatches != 3 ||
		o.PrefetchBytes != 16<<20 || o.BackoffInitial != 100*time.Millisecond || o.BackoffMax != 10*time.Second || o.Logger == nil {
		t.Errorf("defaults: %+v", o)
	}
}

func TestClassify(t *testing.T) {
	status := func(code int, api error) error {
		return &smithy.OperationError{ServiceID: "Kinesis", OperationName: "GetRecords", Err: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}}, Err: api}}
	}
	for _, tc := range []struct {
		err  error
		want errKind
	}{
		{&types.ExpiredIteratorException{}, kindExpired},
		{&types.ResourceNotFoundException{}, kindNotFound},
		{throttled(), kindThrottled},
		{&types.KMSThrottlingException{}, kindThrottled},
		{&types.LimitExceededException{}, kindThrottled},
		{&types.InvalidArgumentException{Message: aws.String("StartingSequenceNumber 123 is beyond the retention period, trimmed")}, kindTrimmed},
		{&types.InvalidArgumentException{Message: aws.String("Invalid StartingSequenceNumber. It encodes shardId-000000000007")}, kindFatal},
		{&types.AccessDeniedException{}, kindFatal},
		{&types.KMSAccessDeniedException{}, kindFatal},
		{status(400, &types.ExpiredIteratorException{}), kindExpired},
		{status(500, &smithy.GenericAPIError{Code: "UnknownError"}), kindTransient},
		{status(503, &smithy.GenericAPIError{Code: "ServiceUnavailable"}), kindTransient},
		{status(429, &smithy.GenericAPIError{Code: "Whatever"}), kindThrottled},
		{status(400, &smithy.GenericAPIError{Code: "ThrottlingException"}), kindThrottled},
		{status(400, &smithy.GenericAPIError{Code: "SomethingNew", Fault: smithy.FaultClient}), kindFatal},
		{&smithy.GenericAPIError{Code: "SomethingNew", Fault: smithy.FaultClient}, kindFatal},
		{context.DeadlineExceeded, kindTransient},
		{errors.New("connection reset by peer"), kindTransient},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// blackholeShard is a fakeShard whose chosen calls never answer: they block
// until their context ends, like a request sent into a dead connection.
type blackholeShard struct {
	*fakeShard
	mu                 sync.Mutex
	recordCalls, iters int
	holdRecords        func(call int) bool // GetRecords calls (from 1) to black-hole
	holdIterators      func(call int) bool // GetShardIterator calls (from 1) to black-hole
	held               []time.Duration     // how long each black-holed call was held
}

func (b *blackholeShard) hold(ctx context.Context) error {
	start := time.Now()
	<-ctx.Done()
	b.mu.Lock()
	b.held = append(b.held, time.Since(start))
	b.mu.Unlock()
	return ctx.Err()
}

func (b *blackholeShard) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	b.mu.Lock()
	b.iters++
	call := b.iters
	b.mu.Unlock()
	if b.holdIterators != nil && b.holdIterators(call) {
		return nil, b.hold(ctx)
	}
	return b.fakeShard.GetShardIterator(ctx, in, opts...)
}

func (b *blackholeShard) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	b.mu.Lock()
	b.recordCalls++
	call := b.recordCalls
	b.mu.Unlock()
	if b.holdRecords != nil && b.holdRecords(call) {
		return nil, b.hold(ctx)
	}
	return b.fakeShard.GetRecords(ctx, in, opts...)
}

// TestPollerCallTimeout black-holes the first GetShardIterator and the first
// two GetRecords calls. Each must be abandoned after CallTimeout and
// retried, so that the reader delivers the whole shard instead of stalling
// for ever; the default bound is DefaultCallTimeout.
func TestPollerCallTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // Options.CallTimeout
		want    time.Duration // expected bound of each call
	}{
		{"default", 0, DefaultCallTimeout},
		{"configured", 2 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeShard(5)
				f.closed = true
				b := &blackholeShard{
					fakeShard:     f,
					holdIterators: func(call int) bool { return call == 1 },
					holdRecords:   func(call int) bool { return call <= 2 },
				}
				p, err := NewPolling(b, Options{StreamName: f.stream, CallTimeout: tc.timeout,
					Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				r, err := p.Open(t.Context(), fakeShardID, trimHorizon())
				if err != nil {
					t.Fatalf("Open with a black-holed GetShardIterator: %v, want a reader that retries", err)
				}
				defer r.Close()
				recs, batches := collect(t, r, 5)
				wantRange(t, recs, 0)
				if !batches[len(batches)-1].ShardEnded {
					t.Fatalf("last batch does not end the shard")
				}
				if _, err := r.Next(t.Context()); !errors.Is(err, io.EOF) {
					t.Fatalf("Next after the shard's end: %v, want io.EOF", err)
				}
				b.mu.Lock()
				held := slices.Clone(b.held)
				b.mu.Unlock()
				if len(held) != 3 {
					t.Fatalf("%d calls black-holed, want 3", len(held))
				}
				for i, d := range held {
					if d != tc.want {
						t.Errorf("black-holed call %d abandoned after %v, want %v", i, d, tc.want)
					}
				}
				// Three timeouts plus backoffs of at most BackoffMax each.
				if el, limit := time.Since(start), 3*tc.want+3*DefaultBackoffMax; el > limit {
					t.Errorf("shard read in %v, want at most %v", el, limit)
				}
			})
		})
	}
}
