package reader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/efotest"
	"github.com/shardline/shardline/internal/kpl"
	"github.com/shardline/shardline/kcl"
)

// The tests below run the Subscriber with the real SDK client against
// efotest.Server, an in-process fake speaking the SubscribeToShard event
// stream, inside synctest bubbles: timeouts and backoffs run in virtual time,
// and a goroutine left behind at the end of a bubble fails the test.

const efoShard = "shardId-000000000000"

// efoEnv is a fake server with one shard and a Subscriber reading it.
type efoEnv struct {
	srv *efotest.Server
	sub *Shards
	log *syncBuffer
}

// newEFO starts a fake server with one shard and returns it with a
// Subscriber (consumer "app", registered on first use). Close the server at
// the end of the bubble (env.close).
func newEFO(t *testing.T, sopts efotest.ServerOptions, opts Options) *efoEnv {
	t.Helper()
	srv := efotest.NewServer(sopts)
	srv.AddShard(efoShard)
	if opts.StreamName == "" && opts.StreamARN == "" {
		opts.StreamName = srv.StreamName()
	}
	if opts.ConsumerName == "" && opts.ConsumerARN == "" {
		opts.ConsumerName = "app"
	}
	buf := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sub, err := NewFanOut(srv.Client(), opts)
	if err != nil {
		srv.Close()
		t.Fatalf("NewFanOut: %v", err)
	}
	return &efoEnv{srv: srv, sub: sub, log: buf}
}

func (e *efoEnv) close() { e.srv.Close() }

func (e *efoEnv) open(t *testing.T, start StartPosition) Reader {
	t.Helper()
	r, err := e.sub.Open(t.Context(), efoShard, start)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

// wantSeqs checks that recs have exactly the sequence numbers want.
func wantSeqs(t *testing.T, recs []kcl.Record, want []string) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i := range want {
		if recs[i].SequenceNumber != want[i] {
			t.Fatalf("record %d: sequence %s, want %s", i, recs[i].SequenceNumber, want[i])
		}
	}
}

func atSeq(s string) StartPosition {
	return StartPosition{After: kcl.NewSequence(s), Initial: kcl.StartAtLatest()}
}

func TestSubscriberReadsFromCheckpointInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		seqs := env.srv.Put(efoShard, 10)
		r := env.open(t, atSeq(seqs[3]))
		defer r.Close()

		recs, _ := collect(t, r, 6)
		wantSeqs(t, recs, seqs[4:])
		if got := string(recs[0].Data); got != efoShard+"/4" {
			t.Fatalf("first record data %q", got)
		}
		more := env.srv.Put(efoShard, 3) // pushed on the open subscription
		recs, _ = collect(t, r, 3)
		wantSeqs(t, recs, more)

		calls := env.srv.Calls()
		if len(calls) != 1 || calls[0].Type != "AT_SEQUENCE_NUMBER" || calls[0].SequenceNumber != seqs[3] {
			t.Fatalf("subscribe calls %+v, want one AT_SEQUENCE_NUMBER %s", calls, seqs[3])
		}
	})
}

func TestSubscriberInitialPositions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(mid time.Time) StartPosition
		wantType string
		from     int // index of the first record delivered, of 4 old and 2 new ones
	}{
		{"trim horizon", func(time.Time) StartPosition { return StartPosition{Initial: kcl.StartAtTrimHorizon()} }, "TRIM_HORIZON", 0},
		{"latest", func(time.Time) StartPosition { return StartPosition{Initial: kcl.StartAtLatest()} }, "LATEST", 4},
		{"at timestamp", func(mid time.Time) StartPosition { return StartPosition{Initial: kcl.StartAtTimestamp(mid)} }, "AT_TIMESTAMP", 2},
		{"sentinel checkpoint", func(time.Time) StartPosition {
			return StartPosition{After: kcl.TrimHorizon, Initial: kcl.StartAtTrimHorizon()}
		}, "TRIM_HORIZON", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				env := newEFO(t, efotest.ServerOptions{}, Options{})
				defer env.close()
				seqs := env.srv.Put(efoShard, 2)
				time.Sleep(time.Minute)
				mid := time.Now()
				seqs = append(seqs, env.srv.Put(efoShard, 2)...)
				r := env.open(t, tc.start(mid))
				defer r.Close()
				synctest.Wait() // subscribed
				seqs = append(seqs, env.srv.Put(efoShard, 2)...)
				recs, _ := collect(t, r, len(seqs)-tc.from)
				wantSeqs(t, recs, seqs[tc.from:])
				if c := env.srv.Calls(); c[0].Type != tc.wantType {
					t.Fatalf("starting position %s, want %s", c[0].Type, tc.wantType)
				}
			})
		})
	}
}

func TestSubscriberResumesInsideAggregate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		agg, err := kpl.Marshal([]kpl.Record{
			{PartitionKey: "a", Data: []byte("u0")}, {PartitionKey: "a", Data: []byte("u1")}, {PartitionKey: "a", Data: []byte("u2")},
		})
		if err != nil {
			t.Fatal(err)
		}
		seqs := env.srv.PutData(efoShard, agg, []byte("plain"))
		// Checkpointed at the second user record of the aggregate.
		r := env.open(t, StartPosition{After: kcl.ExtendedSequenceNumber{SequenceNumber: seqs[0], SubSequenceNumber: 1}})
		defer r.Close()
		recs, _ := collect(t, r, 2)
		if got := describe(recs); got != seqs[0]+"/2 a u2 agg=true\n"+seqs[1]+" pk1 plain agg=false\n" {
			t.Fatalf("records after the checkpoint inside the aggregate:\n%s", got)
		}
	})
}

func TestSubscriberShardEnd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		closeLate bool // close the shard after its records were read (an empty last event)
	}{{"records in the last event", false}, {"empty last event", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				env := newEFO(t, efotest.ServerOptions{}, Options{})
				defer env.close()
				seqs := env.srv.Put(efoShard, 5)
				children := []string{"shardId-000000000001", "shardId-000000000002"}
				if !tc.closeLate {
					env.srv.CloseShard(efoShard, children...)
				}
				r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
				defer r.Close()
				var recs []kcl.Record
				var last Batch
				for !last.ShardEnded {
					if len(recs) == len(seqs) && tc.closeLate {
						env.srv.CloseShard(efoShard, children...)
					}
					last = next(t, r)
					recs = append(recs, last.Records...)
				}
				wantSeqs(t, recs, seqs)
				if strings.Join(last.ChildShardIDs, ",") != strings.Join(children, ",") {
					t.Fatalf("ChildShardIDs %v, want %v", last.ChildShardIDs, children)
				}
				for range 2 {
					if _, err := r.Next(t.Context()); !errors.Is(err, io.EOF) {
						t.Fatalf("Next after the shard end: %v, want io.EOF", err)
					}
				}
				synctest.Wait()
				if n := env.srv.Active(); n != 0 {
					t.Fatalf("%d subscriptions still open after the shard end", n)
				}
			})
		})
	}
}

func TestSubscriberResubscribesWhenHalfOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			if c.N == 1 {
				return efotest.Fault{After: 1, Stall: true} // one event, then silence on an open connection
			}
			return efotest.Fault{}
		})
		seqs := env.srv.Put(efoShard, 3)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		recs, _ := collect(t, r, 3)
		wantSeqs(t, recs, seqs)
		stalled := time.Now()
		more := env.srv.Put(efoShard, 2)
		recs, _ = collect(t, r, 2)
		wantSeqs(t, recs, more)
		if waited := time.Since(stalled); waited < DefaultEventTimeout {
			t.Fatalf("records after %v, before the event timeout %v", waited, DefaultEventTimeout)
		}
		calls := env.srv.Calls()
		if len(calls) != 2 || calls[1].Type != "AFTER_SEQUENCE_NUMBER" || calls[1].SequenceNumber != seqs[2] {
			t.Fatalf("calls %+v, want a second one AFTER_SEQUENCE_NUMBER %s\nlog:\n%s", calls, seqs[2], env.log)
		}
		synctest.Wait()
		if n := env.srv.Active(); n != 1 {
			t.Fatalf("%d subscriptions open, want 1 (the half-open one closed); calls %+v; log:\n%s", n, env.srv.Calls(), env.log)
		}
		if !strings.Contains(env.log.String(), "no event within the event timeout") {
			t.Fatalf("half-open subscription not logged:\n%s", env.log)
		}
	})
}

func TestSubscriberBacksOffOnResourceInUseAndThrottling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{BackoffInitial: 2 * time.Second, BackoffMax: 30 * time.Second})
		defer env.close()
		faults := []string{"ResourceInUseException", "LimitExceededException", "ResourceInUseException", "LimitExceededException"}
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			if c.N <= len(faults) {
				return efotest.Fault{Reject: faults[c.N-1]}
			}
			return efotest.Fault{}
		})
		seqs := env.srv.Put(efoShard, 4)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		recs, _ := collect(t, r, 4)
		wantSeqs(t, recs, seqs)

		calls := env.srv.Calls()
		if len(calls) != len(faults)+1 {
			t.Fatalf("%d subscribe calls, want %d", len(calls), len(faults)+1)
		}
		var total time.Duration
		for i := 1; i < len(calls); i++ {
			gap := calls[i].At.Sub(calls[i-1].At)
			if gap < minSubscribeInterval {
				t.Errorf("calls %d and %d %v apart: more than one per second", i, i+1, gap)
			}
			total += gap
		}
		// Exponential backoff from 2s (x1.5, jitter ±50%): at least
		// 1 + 1.5 + 2.25 + 3.375 seconds in all.
		if min := 8125 * time.Millisecond; total < min {
			t.Errorf("retries took %v, want at least %v of backoff", total, min)
		}
		for i := 1; i < len(calls); i++ {
			if calls[i].Type != "TRIM_HORIZON" {
				t.Errorf("retry %d starts at %s, want TRIM_HORIZON", i, calls[i].Type)
			}
		}
	})
}

func TestSubscriberResubscribesAfterStreamError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{EventRecords: 2}, Options{})
		defer env.close()
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			switch c.N {
			case 1: // another subscription took over, mid-stream
				return efotest.Fault{After: 1, Exception: "ResourceInUseException"}
			case 2:
				return efotest.Fault{After: 1, Exception: "InternalFailureException"}
			}
			return efotest.Fault{}
		})
		seqs := env.srv.Put(efoShard, 6)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		recs, _ := collect(t, r, 6)
		wantSeqs(t, recs, seqs) // nothing lost, nothing repeated
		// The SDK may drop an event that arrives just before an exception
		// (it closes the stream on the error): the third subscription then
		// starts after the last event the reader saw, and the filter drops
		// nothing because nothing was delivered twice.
		calls := env.srv.Calls()
		if len(calls) != 3 || calls[1].SequenceNumber != seqs[1] || (calls[2].SequenceNumber != seqs[3] && calls[2].SequenceNumber != seqs[1]) {
			t.Fatalf("calls %+v, want resubscriptions after %s and %s (or %[2]s again)", calls, seqs[1], seqs[3])
		}
	})
}

func TestSubscriberResubscribesWhenSubscriptionEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		seqs := env.srv.Put(efoShard, 3)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		recs, _ := collect(t, r, 3)
		wantSeqs(t, recs, seqs)
		// Idle for longer than a subscription lasts (five minutes): the
		// subscription ends and is renewed from the continuation.
		time.Sleep(efotest.DefaultLifetime + time.Minute)
		more := env.srv.Put(efoShard, 2)
		var got []kcl.Record
		for len(got) < 2 {
			got = append(got, next(t, r).Records...) // empty idle batches on the way
		}
		wantSeqs(t, got, more)
		calls := env.srv.Calls()
		if len(calls) != 2 || calls[1].Type != "AFTER_SEQUENCE_NUMBER" || calls[1].SequenceNumber != seqs[2] {
			t.Fatalf("calls %+v, want a second one AFTER_SEQUENCE_NUMBER %s\nlog:\n%s", calls, seqs[2], env.log)
		}
		if d := calls[1].At.Sub(calls[0].At); d < efotest.DefaultLifetime || d > efotest.DefaultLifetime+2*time.Second {
			t.Fatalf("resubscribed %v after subscribing, want just after %v", d, efotest.DefaultLifetime)
		}
	})
}

func TestSubscriberSubscribesAtMostOncePerSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			if c.N <= 5 {
				return efotest.Fault{After: 1, End: true} // subscriptions that end at once
			}
			return efotest.Fault{}
		})
		seqs := env.srv.Put(efoShard, 1)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		recs, _ := collect(t, r, 1)
		wantSeqs(t, recs, seqs)
		for len(env.srv.Calls()) < 6 {
			next(t, r)
		}
		r.Close()
		// A second reader of the same shard (a lease taken back at once)
		// waits its turn too.
		r2 := env.open(t, StartPosition{Initial: kcl.StartAtLatest()})
		synctest.Wait()
		r2.Close()
		calls := env.srv.Calls()
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].At.Sub(calls[i-1].At); gap < minSubscribeInterval {
				t.Fatalf("calls %d and %d %v apart: more than one per second", i, i+1, gap)
			}
		}
	})
}

func TestSubscriberCloseEndsSubscription(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		env.srv.Put(efoShard, 2)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		collect(t, r, 2)
		nextErr := make(chan error, 1)
		go func() { // a Next blocked on an idle shard
			for {
				if _, err := r.Next(context.Background()); err != nil {
					nextErr <- err
					return
				}
			}
		}()
		synctest.Wait()
		if n := env.srv.Active(); n != 1 {
			t.Fatalf("%d subscriptions open, want 1", n)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-nextErr; !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Next returned %v, want ErrClosed", err)
		}
		synctest.Wait()
		if n := env.srv.Active(); n != 0 {
			t.Fatalf("%d subscriptions still open after Close", n)
		}
		if _, err := r.Next(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
		_ = r.Close() // twice is fine
		// Returning from the bubble with a goroutine of the reader or of
		// the SDK still blocked would fail the test.
	})
}

func TestSubscriberBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total, size = 100, 1024
		env := newEFO(t, efotest.ServerOptions{EventRecords: 1}, Options{PrefetchBatches: 2, PrefetchBytes: 4 * size})
		defer env.close()
		data := make([][]byte, total)
		for i := range data {
			data[i] = fmt.Appendf(nil, "%0*d", size, i)
		}
		seqs := env.srv.PutData(efoShard, data...)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		synctest.Wait() // the reader is blocked on its full queue
		sr := r.(*shardReader)
		if n := sr.queue.len(); n != 2 {
			t.Fatalf("%d batches queued, want the bound 2", n)
		}
		// Queued, being delivered, in the SDK's hands and in connection
		// buffers: a handful, not the 100 available.
		if sent := env.srv.EventsSent(); sent > 12 {
			t.Fatalf("server sent %d events to a reader that took none; reading did not slow down", sent)
		}
		recs, _ := collect(t, r, total)
		wantSeqs(t, recs, seqs)
	})
}

func TestSubscriberCapsBatchSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{MaxRecords: 3})
		defer env.close()
		seqs := env.srv.Put(efoShard, 10)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		var sizes []int
		var recs []kcl.Record
		var batches []Batch
		for len(recs) < 10 {
			b := next(t, r)
			if len(b.Records) == 0 {
				continue
			}
			sizes = append(sizes, len(b.Records))
			recs = append(recs, b.Records...)
			batches = append(batches, b)
		}
		if fmt.Sprint(sizes) != "[3 3 3 1]" {
			t.Fatalf("batch sizes %v, want [3 3 3 1]", sizes)
		}
		wantSeqs(t, recs, seqs)
		// A processor appending to its batch must not change the next one.
		_ = append(batches[0].Records, kcl.Record{SequenceNumber: "1"})
		if batches[1].Records[0].SequenceNumber != seqs[3] {
			t.Fatal("appending to a batch overwrote the next batch")
		}
	})
}

func TestSubscriberGapWhenCheckpointTrimmed(t *testing.T) {
	for _, trimError := range []bool{true, false} {
		t.Run(fmt.Sprintf("trimError=%v", trimError), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				env := newEFO(t, efotest.ServerOptions{TrimError: trimError}, Options{})
				defer env.close()
				seqs := env.srv.Put(efoShard, 10)
				env.srv.Trim(efoShard, 4)
				r := env.open(t, atSeq(seqs[1]))
				defer r.Close()
				b := next(t, r)
				if !b.Gap {
					t.Fatal("first batch after a trimmed checkpoint has no Gap")
				}
				recs := b.Records
				if len(recs) < 6 {
					more, _ := collect(t, r, 6-len(recs))
					recs = append(recs, more...)
				}
				wantSeqs(t, recs, seqs[4:])
				if !strings.Contains(env.log.String(), "no longer retained") {
					t.Fatalf("gap not logged:\n%s", env.log)
				}
				if calls := env.srv.Calls(); trimError && (len(calls) != 2 || calls[1].Type != "TRIM_HORIZON") {
					t.Fatalf("calls %+v, want a fallback to TRIM_HORIZON", calls)
				}
			})
		})
	}
}

func TestSubscriberShardNotFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		r, err := env.sub.Open(t.Context(), "shardId-000000000099", StartPosition{Initial: kcl.StartAtLatest()})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer r.Close()
		_, err = r.Next(t.Context())
		if !errors.Is(err, kcl.ErrStreamNotFound) || !strings.Contains(err.Error(), "shard shardId-000000000099:") {
			t.Fatalf("Next: %v, want an error naming the shard, matching ErrStreamNotFound", err)
		}
		if _, again := r.Next(t.Context()); !errors.Is(again, kcl.ErrStreamNotFound) {
			t.Fatalf("second Next: %v", again)
		}
	})
}

func TestSubscriberRegistersDeregisteredConsumerAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			if c.N == 1 {
				return efotest.Fault{After: 1, End: true}
			}
			return efotest.Fault{}
		})
		seqs := env.srv.Put(efoShard, 2)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		collect(t, r, 2)
		// An operator deregisters the consumer while the application runs.
		if err := fanout.DeregisterConsumer(t.Context(), env.srv.Client(), env.srv.StreamARN(), "app"); err != nil {
			t.Fatal(err)
		}
		more := env.srv.Put(efoShard, 2)
		recs, _ := collect(t, r, 2)
		wantSeqs(t, recs, more)
		calls := env.srv.Calls()
		if len(calls) != 3 || calls[2].ConsumerARN == calls[0].ConsumerARN || calls[2].SequenceNumber != seqs[1] {
			t.Fatalf("calls %+v: want a refused one, then one through a new consumer after %s", calls, seqs[1])
		}
	})
}

func TestSubscriberObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var events []FetchEvent
		env := newEFO(t, efotest.ServerOptions{}, Options{Observer: func(ev FetchEvent) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, ev)
		}})
		defer env.close()
		env.srv.OnSubscribe(func(c efotest.SubscribeCall) efotest.Fault {
			if c.N == 1 {
				return efotest.Fault{Reject: "LimitExceededException"}
			}
			return efotest.Fault{}
		})
		env.srv.Put(efoShard, 3)
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		collect(t, r, 3)
		mu.Lock()
		defer mu.Unlock()
		if len(events) < 3 {
			t.Fatalf("events %+v", events)
		}
		if e := events[0]; e.Op != "SubscribeToShard" || e.ErrorKind != "throttled" || e.ShardID != efoShard {
			t.Fatalf("first event %+v, want a throttled SubscribeToShard", e)
		}
		if e := events[1]; e.Op != "SubscribeToShard" || e.Err != nil {
			t.Fatalf("second event %+v, want a successful SubscribeToShard", e)
		}
		if e := events[2]; e.Op != "SubscribeToShardEvent" || e.Records != 3 || e.Bytes != 3*len(efoShard+"/0") {
			t.Fatalf("third event %+v, want an event with 3 records", e)
		}
	})
}

// TestSubscriberObservesEventWait proves that every event is observed with
// the time the reader waited for it (metrics issue 20), not zero: on an idle
// shard the server sends an event every EventInterval.
func TestSubscriberObservesEventWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 3 * time.Second
		var mu sync.Mutex
		var waits []time.Duration
		env := newEFO(t, efotest.ServerOptions{EventInterval: interval}, Options{Observer: func(ev FetchEvent) {
			if ev.Op == "SubscribeToShardEvent" {
				mu.Lock()
				defer mu.Unlock()
				waits = append(waits, ev.Duration)
			}
		}})
		defer env.close()
		r := env.open(t, StartPosition{Initial: kcl.StartAtTrimHorizon()})
		defer r.Close()
		time.Sleep(4*interval + interval/2) // virtual time: idle events arrive meanwhile
		mu.Lock()
		defer mu.Unlock()
		if len(waits) < 4 {
			t.Fatalf("%d events observed in %v, want at least 4: %v", len(waits), 4*interval+interval/2, waits)
		}
		if waits[0] < 0 || waits[0] > interval {
			t.Errorf("first event waited %v, want between 0 and %v (since the subscribe call returned)", waits[0], interval)
		}
		for i, d := range waits[1:] {
			if d < interval/2 || d > 2*interval {
				t.Errorf("event %d observed with duration %v, want about the event interval %v", i+1, d, interval)
			}
		}
	})
}

func TestNewSubscriberValidatesOptions(t *testing.T) {
	srv := efotest.NewServer(efotest.ServerOptions{})
	defer srv.Close()
	kc := srv.Client()
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no stream", Options{ConsumerName: "c"}},
		{"bad stream ARN", Options{StreamARN: "s", ConsumerName: "c"}},
		{"no consumer", Options{StreamName: "s"}},
		{"bad consumer name", Options{StreamName: "s", ConsumerName: "a b"}},
		{"bad consumer ARN", Options{StreamName: "s", ConsumerARN: "c"}},
		{"negative timeout", Options{StreamName: "s", ConsumerName: "c", EventTimeout: -time.Second}},
		{"negative batch cap", Options{StreamName: "s", ConsumerName: "c", MaxRecords: -1}},
		{"batch cap too big", Options{StreamName: "s", ConsumerName: "c", MaxRecords: 10001}},
		{"backoff range", Options{StreamName: "s", ConsumerName: "c", BackoffInitial: time.Second, BackoffMax: time.Millisecond}},
	} {
		if _, err := NewFanOut(kc, tc.opts); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", tc.name, err)
		}
	}
	if _, err := NewFanOut(nil, Options{StreamName: "s", ConsumerName: "c"}); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Errorf("nil client: %v", err)
	}
	if _, err := NewFanOut(kc, Options{StreamName: "s", ConsumerName: "c"}); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func TestSubscriberOpenRefusesBadStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		if _, err := env.sub.Open(t.Context(), efoShard, StartPosition{After: kcl.ShardEnd}); !errors.Is(err, kcl.ErrInvalidCheckpoint) {
			t.Fatalf("SHARD_END start: %v, want ErrInvalidCheckpoint", err)
		}
		if _, err := env.sub.Open(t.Context(), "", StartPosition{}); !errors.Is(err, kcl.ErrInvalidConfig) {
			t.Fatalf("empty shard: %v, want ErrInvalidConfig", err)
		}
	})
}

func TestSubscriberReadsShardsConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newEFO(t, efotest.ServerOptions{}, Options{})
		defer env.close()
		const other = "shardId-000000000001"
		env.srv.AddShard(other)
		want := map[string][]string{efoShard: env.srv.Put(efoShard, 5), other: env.srv.Put(other, 7)}
		var wg sync.WaitGroup
		for shard, seqs := range want {
			r, err := env.sub.Open(t.Context(), shard, StartPosition{Initial: kcl.StartAtTrimHorizon()})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			wg.Go(func() {
				recs, _ := collect(t, r, len(seqs))
				wantSeqs(t, recs, seqs)
			})
		}
		wg.Wait()
		if calls := env.srv.Calls(); len(calls) != 2 {
			t.Fatalf("%d subscribe calls, want one per shard", len(calls))
		}
	})
}
