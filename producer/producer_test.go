package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/kpl"
)

func newTestProducer(t *testing.T, f *fakeKinesis, cfg Config) *Producer {
	t.Helper()
	cfg.StreamName = f.stream
	cfg.Client = f
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func mustPut(t *testing.T, p *Producer, pk string, data string) *Result {
	t.Helper()
	r, err := p.Put(t.Context(), pk, []byte(data))
	if err != nil {
		t.Fatalf("Put(%q): %v", pk, err)
	}
	return r
}

func wait(t *testing.T, r *Result) Receipt {
	t.Helper()
	rc, err := r.Wait(t.Context())
	if err != nil {
		t.Fatalf("result: %v", err)
	}
	return rc
}

func checkNoViolations(t *testing.T, f *fakeKinesis) {
	t.Helper()
	if _, _, _, v := f.snapshot(); len(v) > 0 {
		t.Fatalf("service limits broken: %v", v)
	}
}

func TestNewValidates(t *testing.T) {
	f := newFakeKinesis(1)
	for _, cfg := range []Config{
		{Client: f},
		{StreamName: "s"},
		{StreamName: "s", Client: f, StreamARN: "nope"},
		{StreamName: "s", Client: f, MaxBatchRecords: 501},
		{StreamName: "s", Client: f, MaxInFlight: -1},
		{StreamName: "s", Client: f, AggregationMaxBytes: 2 << 20},
	} {
		if p, err := New(cfg); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want kcl.ErrInvalidConfig", cfg, err)
			if p != nil {
				_ = p.Close(t.Context())
			}
		}
	}
}

func TestPutFlushWritesEverythingInBatches(t *testing.T) {
	f := newFakeKinesis(4)
	p := newTestProducer(t, f, Config{Linger: time.Hour})
	var results []*Result
	for i := range 1203 {
		results = append(results, mustPut(t, p, "pk-"+itoa(i%50), "d"+itoa(i)))
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		select {
		case <-r.Done():
		default:
			t.Fatalf("record %d has no outcome after Flush", i)
		}
		rc := wait(t, r)
		if rc.ShardID == "" || rc.SequenceNumber == "" || rc.Aggregated || rc.Attempts != 1 {
			t.Fatalf("record %d: receipt %+v", i, rc)
		}
	}
	calls, reqs, _, _ := f.snapshot()
	if calls != 3 {
		t.Errorf("%d PutRecords calls for 1203 records, want 3 (500+500+203)", calls)
	}
	for _, r := range reqs {
		if len(r) > maxBatchRecordsLimit {
			t.Errorf("call with %d records", len(r))
		}
	}
	if n := len(f.stored()); n != 1203 {
		t.Errorf("%d records stored, want 1203", n)
	}
	st := p.totals()
	if st.accepted != 1203 || st.written != 1203 || st.failed != 0 || st.buffered != 0 {
		t.Errorf("stats %+v", st)
	}
	checkNoViolations(t, f)
}

func TestBatchBytesLimit(t *testing.T) {
	f := newFakeKinesis(2)
	p := newTestProducer(t, f, Config{Linger: time.Hour})
	big := strings.Repeat("x", 900<<10)
	for i := range 12 {
		mustPut(t, p, "k"+itoa(i), big)
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, reqs, _, _ := f.snapshot()
	for _, r := range reqs {
		if len(r) > 5 {
			t.Errorf("call with %d records of 900 KiB", len(r))
		}
	}
	if len(reqs) != 3 {
		t.Errorf("%d calls, want 3 (5+5+2)", len(reqs))
	}
	checkNoViolations(t, f)
}

func TestLingerAndCountTriggers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		p := newTestProducer(t, f, Config{Linger: 200 * time.Millisecond, MaxBatchRecords: 10})
		start := time.Now()
		r := mustPut(t, p, "a", "1")
		mustPut(t, p, "b", "2")
		synctest.Wait()
		if calls, _, _, _ := f.snapshot(); calls != 0 {
			t.Fatalf("%d calls before the linger time", calls)
		}
		wait(t, r)
		if d := time.Since(start); d != 200*time.Millisecond {
			t.Errorf("partial batch sent after %v, want the 200ms linger", d)
		}
		// A full batch goes at once.
		start = time.Now()
		var last *Result
		for i := range 10 {
			last = mustPut(t, p, "k", itoa(i))
		}
		wait(t, last)
		if d := time.Since(start); d != 0 {
			t.Errorf("full batch sent after %v, want at once", d)
		}
		if calls, _, _, _ := f.snapshot(); calls != 2 {
			t.Errorf("%d calls, want 2", calls)
		}
	})
}

func TestRetriesOnlyFailedEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(2)
		f.entryHook = func(call int, e types.PutRecordsRequestEntry) string {
			if call == 1 && bytes.HasPrefix(e.Data, []byte("odd")) {
				return "ProvisionedThroughputExceededException"
			}
			if call == 2 && string(e.Data) == "odd-1" {
				return "InternalFailure"
			}
			return ""
		}
		p := newTestProducer(t, f, Config{Linger: time.Hour})
		var results []*Result
		for i := range 10 {
			kind := "even"
			if i%2 == 1 {
				kind = "odd"
			}
			results = append(results, mustPut(t, p, "k"+itoa(i), kind+"-"+itoa(i)))
		}
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, reqs, _, _ := f.snapshot()
		if len(reqs) != 3 {
			t.Fatalf("%d calls, want 3", len(reqs))
		}
		var second, third []string
		for _, e := range reqs[1] {
			second = append(second, string(e.Data))
		}
		for _, e := range reqs[2] {
			third = append(third, string(e.Data))
		}
		if want := "odd-1 odd-3 odd-5 odd-7 odd-9"; strings.Join(second, " ") != want {
			t.Errorf("second call carried %v, want %s", second, want)
		}
		if strings.Join(third, " ") != "odd-1" {
			t.Errorf("third call carried %v, want odd-1", third)
		}
		for i, r := range results {
			rc := wait(t, r)
			want := 1
			switch {
			case i == 1:
				want = 3
			case i%2 == 1:
				want = 2
			}
			if rc.Attempts != want {
				t.Errorf("record %d: %d attempts, want %d", i, rc.Attempts, want)
			}
		}
		if st := p.totals(); st.retried != 6 || st.requests != 3 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestRetryTimeoutAndRejection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		f.entryHook = func(call int, e types.PutRecordsRequestEntry) string {
			switch string(e.Data) {
			case "throttled":
				return "ProvisionedThroughputExceededException"
			case "kms":
				return "KMSAccessDeniedException"
			}
			return ""
		}
		p := newTestProducer(t, f, Config{Linger: -1, RetryTimeout: 3 * time.Second, backoffMax: 500 * time.Millisecond})
		start := time.Now()
		th := mustPut(t, p, "a", "throttled")
		kms := mustPut(t, p, "a", "kms")
		ok := mustPut(t, p, "a", "fine")
		wait(t, ok)

		_, err := kms.Wait(t.Context())
		var pe *PutError
		if !errors.Is(err, ErrRejected) || !errors.As(err, &pe) || pe.Code != "KMSAccessDeniedException" || pe.Attempts != 1 {
			t.Errorf("KMS-refused record: %v (%+v)", err, pe)
		}
		_, err = th.Wait(t.Context())
		if !errors.Is(err, ErrRetryTimeout) || !errors.As(err, &pe) || pe.Code != "ProvisionedThroughputExceededException" || pe.Attempts < 3 {
			t.Errorf("throttled record: %v (%+v)", err, pe)
		}
		if d := time.Since(start); d < 3*time.Second || d > 4*time.Second {
			t.Errorf("gave up after %v, want about the 3s RetryTimeout", d)
		}
		if st := p.totals(); st.failed != 2 || st.written != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestCallErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		f.callHook = func(_ context.Context, call int, _ *kinesis.PutRecordsInput) error {
			if call == 1 {
				return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: httpResponse(503)}, Err: errors.New("unavailable")}
			}
			return nil
		}
		p := newTestProducer(t, f, Config{Linger: -1})
		rc := wait(t, mustPut(t, p, "a", "x"))
		if rc.Attempts != 2 {
			t.Errorf("after a 503: %d attempts, want 2", rc.Attempts)
		}
	})
	// A stream that does not exist fails the records at once.
	f := newFakeKinesis(1)
	cfg := Config{StreamName: "missing", Client: f, Logger: slog.New(slog.DiscardHandler), Linger: -1}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(t.Context())
	r, _ := p.Put(t.Context(), "a", []byte("x"))
	_, err = r.Wait(t.Context())
	var nf *types.ResourceNotFoundException
	var pe *PutError
	if !errors.As(err, &nf) || !errors.As(err, &pe) || pe.Attempts != 1 {
		t.Fatalf("record for a missing stream: %v", err)
	}
}

func TestMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		release := make(chan struct{})
		f.callHook = func(ctx context.Context, _ int, _ *kinesis.PutRecordsInput) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
		p := newTestProducer(t, f, Config{Linger: -1, MaxInFlight: 3, MaxBatchRecords: 1})
		for i := range 10 {
			mustPut(t, p, "k"+itoa(i), "x")
		}
		synctest.Wait()
		if calls, _, _, _ := f.snapshot(); calls != 3 {
			t.Fatalf("%d calls running, want MaxInFlight 3", calls)
		}
		close(release)
		if err := p.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if calls, _, maxFlight, _ := f.snapshot(); calls != 10 || maxFlight != 3 {
			t.Fatalf("%d calls, %d at once; want 10 and 3", calls, maxFlight)
		}
	})
}

func TestKeepOrderUnderFailures(t *testing.T) {
	for _, agg := range []bool{false, true} {
		t.Run(fmt.Sprintf("aggregate=%v", agg), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeKinesis(3)
				rng := rand.New(rand.NewPCG(7, 7))
				var rngMu sync.Mutex
				f.entryHook = func(int, types.PutRecordsRequestEntry) string {
					rngMu.Lock()
					defer rngMu.Unlock()
					if rng.IntN(3) == 0 {
						return "ProvisionedThroughputExceededException"
					}
					return ""
				}
				p := newTestProducer(t, f, Config{Linger: 10 * time.Millisecond, KeepOrder: true, Aggregate: agg,
					AggregationMaxBytes: 1024, MaxInFlight: 8})
				keys := []string{"a", "b", "c", "d", "e"}
				var results []*Result
				for i := range 300 {
					results = append(results, mustPut(t, p, keys[i%len(keys)], fmt.Sprintf("%s-%03d", keys[i%len(keys)], i)))
				}
				if err := p.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
				// Per key, stored positions follow Put order.
				last := map[string]Receipt{}
				for i, r := range results {
					rc := wait(t, r)
					k := keys[i%len(keys)]
					if prev, ok := last[k]; ok {
						if rc.ShardID == prev.ShardID && (rc.SequenceNumber < prev.SequenceNumber ||
							rc.SequenceNumber == prev.SequenceNumber && rc.SubSequenceNumber <= prev.SubSequenceNumber) {
							t.Fatalf("key %s: record %d stored at %s/%d, before the previous one at %s/%d",
								k, i, rc.SequenceNumber, rc.SubSequenceNumber, prev.SequenceNumber, prev.SubSequenceNumber)
						}
					}
					last[k] = rc
				}
				if !agg {
					// At most one record per key per call.
					_, reqs, _, _ := f.snapshot()
					for _, req := range reqs {
						seen := map[string]bool{}
						for _, e := range req {
							if seen[*e.PartitionKey] {
								t.Fatalf("a call carried two records of key %s", *e.PartitionKey)
							}
							seen[*e.PartitionKey] = true
						}
					}
				}
				if st := p.totals(); st.retried == 0 || st.written != 300 {
					t.Fatalf("stats %+v (the test needs retries)", st)
				}
			})
		})
	}
}

func TestLocalLimits(t *testing.T) {
	f := newFakeKinesis(1)
	p := newTestProducer(t, f, Config{})
	ctx := t.Context()
	for _, tc := range []struct {
		name     string
		pk, ehk  string
		data     []byte
		want     string // in the message
		explicit bool
	}{
		{name: "empty key", pk: "", want: "empty partition key"},
		{name: "long key", pk: strings.Repeat("k", 257), want: "partition key of 257 characters"},
		{name: "not utf-8", pk: "\xff", want: "partition key not UTF-8"},
		{name: "too large", pk: "kk", data: make([]byte, maxRecordSize-1), want: "larger than 1 MiB"},
		{name: "bad hash key", pk: "k", ehk: "12x", explicit: true, want: "explicit hash key \"12x\""},
		{name: "hash key too big", pk: "k", ehk: "340282366920938463463374607431768211456", explicit: true, want: "not a decimal number from 0 to 2^128-1"},
		{name: "empty hash key", pk: "k", explicit: true, want: "empty explicit hash key"},
	} {
		var err error
		if tc.explicit {
			_, err = p.PutWithHashKey(ctx, tc.pk, tc.ehk, tc.data)
		} else {
			_, err = p.Put(ctx, tc.pk, tc.data)
		}
		if !errors.Is(err, ErrInvalidRecord) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidRecord saying %q", tc.name, err, tc.want)
		}
	}
	// The limits themselves are accepted: 256 characters (of 4 bytes), 1 MiB.
	key := strings.Repeat("\U0001F600", 256)
	if _, err := p.Put(ctx, key, make([]byte, maxRecordSize-len(key))); err != nil {
		t.Errorf("record at the limits refused: %v", err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.totals(); st.accepted != 1 || st.written != 1 {
		t.Errorf("stats %+v", st)
	}
	checkNoViolations(t, f)
}

func TestEncoder(t *testing.T) {
	f := newFakeKinesis(1)
	enc := Encoder(func(_ context.Context, pk string, data []byte) ([]byte, error) {
		switch string(data) {
		case "fail":
			return nil, errors.New("no key")
		case "grow":
			return make([]byte, maxRecordSize), nil
		}
		return append([]byte(pk+"|"), data...), nil
	})
	p := newTestProducer(t, f, Config{Encoder: enc, Linger: -1})
	if _, err := p.Put(t.Context(), "k", []byte("fail")); !errors.Is(err, ErrEncode) {
		t.Errorf("encoder failure: %v", err)
	}
	if _, err := p.Put(t.Context(), "k", []byte("grow")); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("encoded record over 1 MiB: %v", err)
	}
	wait(t, mustPut(t, p, "k", "v"))
	if got := f.stored(); len(got) != 1 || string(got[0].r.Data) != "k|v" {
		t.Fatalf("stored %+v", got)
	}
}

func TestPutCopiesData(t *testing.T) {
	f := newFakeKinesis(1)
	p := newTestProducer(t, f, Config{Linger: time.Hour})
	buf := []byte("before")
	mustPut(t, p, "k", string(buf))
	r, _ := p.Put(t.Context(), "k", buf)
	copy(buf, "after!")
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	wait(t, r)
	for _, s := range f.stored() {
		if string(s.r.Data) != "before" {
			t.Fatalf("stored %q: Put did not copy", s.r.Data)
		}
	}
}

func TestCloseLosesNothingAndRefusesLaterPuts(t *testing.T) {
	f := newFakeKinesis(2)
	p := newTestProducer(t, f, Config{Linger: time.Hour, Aggregate: true})
	var results []*Result
	for i := range 777 {
		results = append(results, mustPut(t, p, "k"+itoa(i%13), "v"+itoa(i)))
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if _, err, ok := outcomeNow(r); !ok || err != nil {
			t.Fatalf("record %d after Close: known %v, err %v", i, ok, err)
		}
	}
	if _, err := p.Put(t.Context(), "k", []byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
	if err := p.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if st := p.totals(); st.written != 777 {
		t.Fatalf("stats %+v", st)
	}
}

func outcomeNow(r *Result) (Receipt, error, bool) { //nolint:revive // test helper
	select {
	case <-r.Done():
		rc, err := r.Wait(context.Background())
		return rc, err, true
	default:
		return Receipt{}, nil, false
	}
}

func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		f.callHook = func(ctx context.Context, _ int, _ *kinesis.PutRecordsInput) error {
			<-ctx.Done() // Kinesis never answers
			return ctx.Err()
		}
		p := newTestProducer(t, f, Config{Linger: -1, MaxBatchRecords: 2, MaxInFlight: 1})
		var results []*Result
		for i := range 5 {
			results = append(results, mustPut(t, p, "k", itoa(i)))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close = %v, want DeadlineExceeded", err)
		}
		for i, r := range results {
			_, err, ok := outcomeNow(r)
			if !ok || !errors.Is(err, ErrClosed) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("record %d: known %v, err %v; want ErrClosed", i, ok, err)
			}
		}
	})
}

func TestPutBlocksWhenBufferFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		release := make(chan struct{})
		f.callHook = func(ctx context.Context, _ int, _ *kinesis.PutRecordsInput) error {
			<-release
			return nil
		}
		p := newTestProducer(t, f, Config{Linger: -1, MaxBufferedRecords: 3})
		for i := range 3 {
			mustPut(t, p, "k", itoa(i))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := p.Put(ctx, "k", []byte("4")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Put on a full buffer = %v, want to block until the deadline", err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := p.Put(t.Context(), "k", []byte("5"))
			done <- err
		}()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Put returned %v while the buffer is full", err)
		default:
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Put after room was made: %v", err)
		}
	})
}

func TestAggregationRoundTrip(t *testing.T) {
	f := newFakeKinesis(4)
	p := newTestProducer(t, f, Config{Linger: time.Hour, Aggregate: true, AggregationMaxBytes: 4096})
	type put struct {
		pk, ehk, data string
		res           *Result
	}
	var puts []put
	for i := range 2000 {
		u := put{pk: "user-" + itoa(i%97), data: fmt.Sprintf("payload-%d-%s", i, strings.Repeat("z", i%50))}
		var err error
		if i%10 == 0 {
			u.ehk = hashkey.Key{Hi: uint64(i) << 50}.String()
			u.res, err = p.PutWithHashKey(t.Context(), u.pk, u.ehk, []byte(u.data))
		} else {
			u.res, err = p.Put(t.Context(), u.pk, []byte(u.data))
		}
		if err != nil {
			t.Fatal(err)
		}
		puts = append(puts, u)
	}
	big := mustPut(t, p, "big", strings.Repeat("B", 10000)) // too large to share an aggregate
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Unpack what Kinesis stored, as a consumer does.
	type pos struct {
		shard, seq string
		sub        int64
	}
	found := map[pos]kpl.Record{}
	aggregates := 0
	for _, s := range f.stored() {
		if !kpl.IsAggregated(s.r.Data) {
			found[pos{s.shard, *s.r.SequenceNumber, 0}] = kpl.Record{PartitionKey: *s.r.PartitionKey, Data: s.r.Data}
			continue
		}
		aggregates++
		users, err := kpl.Unmarshal(s.r.Data)
		if err != nil {
			t.Fatalf("stored aggregate unreadable: %v", err)
		}
		if len(s.r.Data)+len(*s.r.PartitionKey) > 4096+256 {
			t.Errorf("aggregate of %d bytes, over AggregationMaxBytes", len(s.r.Data))
		}
		for i, u := range users {
			k, _ := hashkey.For(u.PartitionKey, u.ExplicitHashKey)
			if !s.rng.Contains(k) {
				t.Fatalf("aggregate on %s holds a record of another shard: a consumer would drop it", s.shard)
			}
			found[pos{s.shard, *s.r.SequenceNumber, int64(i)}] = u
		}
	}
	for i, u := range puts {
		rc := wait(t, u.res)
		got, ok := found[pos{rc.ShardID, rc.SequenceNumber, rc.SubSequenceNumber}]
		if !ok || got.PartitionKey != u.pk || got.ExplicitHashKey != u.ehk || string(got.Data) != u.data || !rc.Aggregated {
			t.Fatalf("record %d (receipt %+v): stored %+v", i, rc, got)
		}
		delete(found, pos{rc.ShardID, rc.SequenceNumber, rc.SubSequenceNumber})
	}
	if rc := wait(t, big); rc.Aggregated || rc.SubSequenceNumber != 0 {
		t.Errorf("large record: %+v, want sent on its own", rc)
	}
	if len(found) != 1 {
		t.Errorf("%d stored records beyond those put", len(found)-1)
	}
	calls, _, _, _ := f.snapshot()
	st := p.totals()
	if st.aggregates != int64(aggregates) || st.aggregated != 2000 || calls > 4 || st.shardMapLoads != 1 {
		t.Errorf("stats %+v, %d calls for %d aggregates", st, calls, aggregates)
	}
	checkNoViolations(t, f)
}

func TestAggregationStaleShardMap(t *testing.T) {
	// The producer's first map says one shard; the stream has four (it was
	// resharded). Aggregates land where their first record's key goes and
	// hold records of other shards: the producer notices, reloads the map
	// and writes those records again; consumers drop the mixed aggregates.
	f := newFakeKinesis(4)
	f.listed = evenShards(1, 100)
	p := newTestProducer(t, f, Config{Linger: time.Hour, Aggregate: true})
	var results []*Result
	for i := range 400 {
		results = append(results, mustPut(t, p, "k"+itoa(i), "v"+itoa(i)))
	}
	if err := p.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	delivered := map[string]int{}
	for _, s := range f.stored() {
		users, err := kpl.Unmarshal(s.r.Data)
		if err != nil {
			t.Fatal(err)
		}
		keep := true
		for _, u := range users {
			if k, _ := hashkey.For(u.PartitionKey, ""); !s.rng.Contains(k) {
				keep = false // what a consumer does (the KCL's rule)
			}
		}
		for _, u := range users {
			if keep {
				delivered[string(u.Data)]++
			}
		}
	}
	for i, r := range results {
		if _, err := r.Wait(t.Context()); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if n := delivered["v"+itoa(i)]; n != 1 {
			t.Fatalf("record %d delivered %d times to a range-checking consumer", i, n)
		}
	}
	if st := p.totals(); st.wrongShard == 0 || st.shardMapLoads != 2 {
		t.Fatalf("stats %+v: want wrong-shard aggregates and one reload", st)
	}
}

func TestFlushWaitsOnlyForEarlierRecords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeKinesis(1)
		gate := make(chan struct{})
		f.callHook = func(ctx context.Context, call int, in *kinesis.PutRecordsInput) error {
			if string(in.Records[0].Data) == "late" {
				<-gate
			}
			return nil
		}
		p := newTestProducer(t, f, Config{Linger: time.Hour})
		early := mustPut(t, p, "k", "early")
		flushed := make(chan error, 1)
		go func() { flushed <- p.Flush(t.Context()) }()
		synctest.Wait()
		late := mustPut(t, p, "k", "late")
		synctest.Wait()
		if err := <-flushed; err != nil {
			t.Fatal(err)
		}
		if _, _, ok := outcomeNow(early); !ok {
			t.Fatal("Flush returned before the earlier record's outcome")
		}
		close(gate)
		wait(t, late)
	})
}

// httpResponse returns a bare response with a status code.
func httpResponse(status int) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}
}
