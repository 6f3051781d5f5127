package faults

import (
	"context"
	"errors"
	"math"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// fakeKinesis answers every call with an empty success and counts calls.
type fakeKinesis struct{ calls atomic.Int64 }

func (f *fakeKinesis) DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	f.calls.Add(1)
	return &kinesis.DescribeStreamSummaryOutput{}, nil
}
func (f *fakeKinesis) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.calls.Add(1)
	return &kinesis.ListShardsOutput{}, nil
}
func (f *fakeKinesis) GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.calls.Add(1)
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String("it")}, nil
}
func (f *fakeKinesis) GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.calls.Add(1)
	return &kinesis.GetRecordsOutput{NextShardIterator: aws.String("it")}, nil
}

// fakeDynamo answers every call with an empty success and counts calls.
type fakeDynamo struct{ calls atomic.Int64 }

func (f *fakeDynamo) CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	f.calls.Add(1)
	return &dynamodb.CreateTableOutput{}, nil
}
func (f *fakeDynamo) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	f.calls.Add(1)
	return &dynamodb.DescribeTableOutput{}, nil
}
func (f *fakeDynamo) GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	f.calls.Add(1)
	return &dynamodb.GetItemOutput{}, nil
}
func (f *fakeDynamo) PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	f.calls.Add(1)
	return &dynamodb.PutItemOutput{}, nil
}
func (f *fakeDynamo) UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	f.calls.Add(1)
	return &dynamodb.UpdateItemOutput{}, nil
}
func (f *fakeDynamo) DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	f.calls.Add(1)
	return &dynamodb.DeleteItemOutput{}, nil
}
func (f *fakeDynamo) Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	f.calls.Add(1)
	return &dynamodb.ScanOutput{}, nil
}

// faultOf maps an error returned by a wrapper back to its kind, by the
// properties callers classify on.
func faultOf(err error) Kind {
	var (
		pte     *ktypes.ProvisionedThroughputExceededException
		limit   *ktypes.LimitExceededException
		expired *ktypes.ExpiredIteratorException
		dpte    *dtypes.ProvisionedThroughputExceededException
		dthr    *dtypes.ThrottlingException
		resp    *smithyhttp.ResponseError
		netErr  net.Error
	)
	switch {
	case err == nil:
		return None
	case errors.As(err, &expired):
		return ExpiredIterator
	case errors.As(err, &pte), errors.As(err, &limit), errors.As(err, &dpte), errors.As(err, &dthr):
		return Throttle
	case errors.As(err, &resp) && resp.HTTPStatusCode() >= 500:
		return ServerError
	case errors.As(err, &netErr) && netErr.Timeout():
		return Timeout
	}
	return Unavailable
}

func getRecordsFaults(t *testing.T, cfg Config, n int) []Kind {
	t.Helper()
	k, err := WrapKinesis(&fakeKinesis{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]Kind, n)
	for i := range out {
		_, err := k.GetRecords(context.Background(), &kinesis.GetRecordsInput{})
		out[i] = faultOf(err)
	}
	return out
}

func TestSameSeedSameFaults(t *testing.T) {
	cfg := Config{Seed: 7, Kinesis: Rates{Any: 0.5}}
	a, b := getRecordsFaults(t, cfg, 500), getRecordsFaults(t, cfg, 500)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("call %d: %v then %v with the same seed", i, a[i], b[i])
		}
	}
	cfg.Seed = 8
	c := getRecordsFaults(t, cfg, 500)
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same == len(a) {
		t.Fatal("a different seed gave the same faults")
	}
}

// The decisions of one operation do not depend on how calls of other
// operations interleave with it.
func TestOperationsHaveTheirOwnSequence(t *testing.T) {
	cfg := Config{Seed: 3, Kinesis: Rates{Any: 0.4}}
	alone := getRecordsFaults(t, cfg, 200)
	k, err := WrapKinesis(&fakeKinesis{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range alone {
		if i%3 == 0 {
			_, _ = k.ListShards(context.Background(), &kinesis.ListShardsInput{})
		}
		_, err := k.GetRecords(context.Background(), &kinesis.GetRecordsInput{})
		if got := faultOf(err); got != alone[i] {
			t.Fatalf("GetRecords call %d: %v interleaved, %v alone", i, got, alone[i])
		}
	}
}

func TestRatesAreHonoured(t *testing.T) {
	const n = 20000
	cfg := Config{Seed: 1, Kinesis: Rates{Throttle: 0.1, ServerError: 0.05, Timeout: 0.02, ExpiredIterator: 0.03}}
	count := map[Kind]int{}
	for _, k := range getRecordsFaults(t, cfg, n) {
		count[k]++
	}
	for kind, want := range map[Kind]float64{Throttle: 0.1, ServerError: 0.05, Timeout: 0.02, ExpiredIterator: 0.03, None: 0.8} {
		got := float64(count[kind]) / n
		// Five standard deviations of a binomial proportion.
		if tol := 5 * math.Sqrt(want*(1-want)/n); math.Abs(got-want) > tol {
			t.Errorf("%v: rate %.4f, want %.4f ± %.4f", kind, got, want, tol)
		}
	}
}

func TestAnyIsSpreadOverTheKindsOfTheOperation(t *testing.T) {
	const n = 20000
	count := map[Kind]int{}
	for _, k := range getRecordsFaults(t, Config{Seed: 2, Kinesis: Rates{Any: 0.4}}, n) {
		count[k]++
	}
	for _, kind := range []Kind{Throttle, ServerError, Timeout, ExpiredIterator} {
		if got := float64(count[kind]) / n; math.Abs(got-0.1) > 0.015 {
			t.Errorf("GetRecords %v: rate %.3f, want 0.1", kind, got)
		}
	}
	// ListShards cannot meet an expired iterator: the rate is spread over
	// three kinds.
	k, err := WrapKinesis(&fakeKinesis{}, Config{Seed: 2, Kinesis: Rates{Any: 0.3}})
	if err != nil {
		t.Fatal(err)
	}
	count = map[Kind]int{}
	for range n {
		_, err := k.ListShards(context.Background(), &kinesis.ListShardsInput{})
		count[faultOf(err)]++
	}
	if count[ExpiredIterator] != 0 {
		t.Errorf("ListShards met %d expired iterators", count[ExpiredIterator])
	}
	for _, kind := range []Kind{Throttle, ServerError, Timeout} {
		if got := float64(count[kind]) / n; math.Abs(got-0.1) > 0.015 {
			t.Errorf("ListShards %v: rate %.3f, want 0.1", kind, got)
		}
	}
}

func TestOpsOverrideTheService(t *testing.T) {
	k, err := WrapKinesis(&fakeKinesis{}, Config{Kinesis: Rates{Throttle: 1}, Ops: map[string]Rates{"ListShards": {ServerError: 1, Throttle: 0}}})
	if err == nil {
		t.Fatalf("throttle 1 + 5xx 1 for ListShards accepted: %v", k)
	}
	k, err = WrapKinesis(&fakeKinesis{}, Config{Ops: map[string]Rates{"ListShards": {ServerError: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := k.ListShards(ctx, &kinesis.ListShardsInput{}); faultOf(err) != ServerError {
		t.Errorf("ListShards: %v, want a 5xx", err)
	}
	if _, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{}); err != nil {
		t.Errorf("GetRecords: %v, want success", err)
	}
	st := k.Stats()
	if st["ListShards"].Calls != 1 || st["ListShards"].Faults[ServerError] != 1 || st["GetRecords"].Faults[ServerError] != 0 {
		t.Errorf("stats %+v", st)
	}
	if k.Calls() != 2 {
		t.Errorf("Calls() = %d, want 2", k.Calls())
	}
}

// The errors look like the SDK's to the code that classifies them.
func TestErrorsLookLikeTheSDKs(t *testing.T) {
	ctx := context.Background()
	only := func(op string, r Rates) Config { return Config{Ops: map[string]Rates{op: r}} }

	k, _ := WrapKinesis(&fakeKinesis{}, only("GetRecords", Rates{Throttle: 1}))
	_, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{})
	var pte *ktypes.ProvisionedThroughputExceededException
	var opErr *smithy.OperationError
	if !errors.As(err, &pte) || !errors.As(err, &opErr) || opErr.Operation() != "GetRecords" || opErr.Service() != "Kinesis" {
		t.Errorf("GetRecords throttled: %v", err)
	}
	k, _ = WrapKinesis(&fakeKinesis{}, only("ListShards", Rates{Throttle: 1}))
	_, err = k.ListShards(ctx, &kinesis.ListShardsInput{})
	var limit *ktypes.LimitExceededException
	if !errors.As(err, &limit) {
		t.Errorf("ListShards throttled: %v, want LimitExceededException", err)
	}
	k, _ = WrapKinesis(&fakeKinesis{}, only("GetRecords", Rates{ExpiredIterator: 1}))
	_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{})
	var expired *ktypes.ExpiredIteratorException
	if !errors.As(err, &expired) {
		t.Errorf("GetRecords expired: %v", err)
	}
	k, _ = WrapKinesis(&fakeKinesis{}, only("GetRecords", Rates{ServerError: 1}))
	for range 20 {
		_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{})
		var resp *smithyhttp.ResponseError
		var api smithy.APIError
		if !errors.As(err, &resp) || resp.HTTPStatusCode() < 500 || !errors.As(err, &api) || api.ErrorFault() != smithy.FaultServer {
			t.Fatalf("GetRecords 5xx: %v", err)
		}
	}
	k, _ = WrapKinesis(&fakeKinesis{}, only("GetRecords", Rates{Timeout: 1}))
	_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{})
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetRecords timeout: %v, want a net.Error timing out, matching context.DeadlineExceeded", err)
	}

	// DynamoDB throttling, as the lease store classifies it.
	d, _ := WrapDynamoDB(&fakeDynamo{}, Config{DynamoDB: Rates{Throttle: 1}})
	store, err := lease.NewDynamoStore(d, "t")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for range 40 {
		_, err := store.Renew(ctx, lease.Lease{Key: "s", Owner: "w", Counter: 1})
		if !errors.Is(err, kcl.ErrThrottled) {
			t.Fatalf("throttled renewal: %v, want kcl.ErrThrottled", err)
		}
		var dpte *dtypes.ProvisionedThroughputExceededException
		var dthr *dtypes.ThrottlingException
		switch {
		case errors.As(err, &dpte):
			kinds["pte"] = true
		case errors.As(err, &dthr):
			kinds["throttling"] = true
		}
	}
	if !kinds["pte"] || !kinds["throttling"] {
		t.Errorf("DynamoDB throttling errors seen: %v, want both types", kinds)
	}
	d, _ = WrapDynamoDB(&fakeDynamo{}, Config{DynamoDB: Rates{ServerError: 1}})
	for range 20 {
		_, err := d.Scan(ctx, &dynamodb.ScanInput{})
		var resp *smithyhttp.ResponseError
		if !errors.As(err, &resp) || resp.HTTPStatusCode() < 500 {
			t.Fatalf("Scan 5xx: %v", err)
		}
		var ise *dtypes.InternalServerError
		if resp.HTTPStatusCode() == 500 && !errors.As(err, &ise) {
			t.Fatalf("Scan 500: %v, want InternalServerError", err)
		}
	}
}

// A timeout with the request applied made the real call; one without did
// not.
func TestAppliedTimeoutsReachTheService(t *testing.T) {
	fake := &fakeDynamo{}
	var calls []Call
	d, err := WrapDynamoDB(fake, Config{Seed: 5, DynamoDB: Rates{Timeout: 1}, TimeoutApplied: 0.5,
		Observer: func(c Call) { calls = append(calls, c) }})
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for range 200 {
		before := fake.calls.Load()
		_, err := d.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{})
		if faultOf(err) != Timeout {
			t.Fatalf("UpdateItem: %v, want a timeout", err)
		}
		if fake.calls.Load() > before {
			applied++
		}
	}
	if applied < 60 || applied > 140 {
		t.Errorf("%d of 200 timeouts applied, want about half", applied)
	}
	n := 0
	for _, c := range calls {
		if c.Applied {
			n++
		}
		if c.Fault != Timeout || c.Op != "UpdateItem" || c.Service != "DynamoDB" || c.Err == nil {
			t.Fatalf("observed %+v", c)
		}
	}
	if n != applied {
		t.Errorf("observer saw %d applied calls, the service %d", n, applied)
	}
}

func TestRefusingOutage(t *testing.T) {
	fake := &fakeDynamo{}
	d, err := WrapDynamoDB(fake, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d.Outage(Refuse)
	for range 5 {
		_, err := d.GetItem(ctx, &dynamodb.GetItemInput{})
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "dial" {
			t.Fatalf("GetItem during an outage: %v, want a refused connection", err)
		}
	}
	if fake.calls.Load() != 0 {
		t.Fatalf("%d calls reached the service during the outage", fake.calls.Load())
	}
	d.Restore()
	if _, err := d.GetItem(ctx, &dynamodb.GetItemInput{}); err != nil {
		t.Fatalf("GetItem after the outage: %v", err)
	}
	if st := d.Stats()["GetItem"]; st.Calls != 6 || st.Faults[Unavailable] != 5 {
		t.Errorf("stats %+v", st)
	}
}

func TestHangingOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fake := &fakeDynamo{}
		d, err := WrapDynamoDB(fake, Config{HangLimit: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		d.Outage(Hang)
		start := time.Now()

		// A call hangs until its context ends...
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = d.Scan(ctx, &dynamodb.ScanInput{})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 5*time.Second {
			t.Fatalf("Scan: %v after %v, want the context's deadline after 5s", err, time.Since(start))
		}
		// ... or until HangLimit ...
		start = time.Now()
		_, err = d.Scan(context.Background(), &dynamodb.ScanInput{})
		if faultOf(err) != Timeout || time.Since(start) != time.Minute {
			t.Fatalf("Scan: %v after %v, want a timeout after 1m", err, time.Since(start))
		}
		// Ending the outage does not rescue a call already hanging; new
		// calls go through.
		errc := make(chan error)
		start = time.Now()
		go func() {
			_, err := d.Scan(context.Background(), &dynamodb.ScanInput{})
			errc <- err
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		d.Restore()
		if _, err := d.Scan(context.Background(), &dynamodb.ScanInput{}); err != nil || fake.calls.Load() != 1 {
			t.Fatalf("Scan after the outage: %v (%d calls reached the service)", err, fake.calls.Load())
		}
		select {
		case err := <-errc:
			t.Fatalf("hanging Scan returned when the outage ended: %v", err)
		default:
		}
		if err := <-errc; faultOf(err) != Timeout || time.Since(start) != time.Minute {
			t.Fatalf("hanging Scan: %v after %v, want a timeout after 1m", err, time.Since(start))
		}
	})
}

func TestLatencyAndTimeoutDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, err := WrapKinesis(&fakeKinesis{}, Config{Seed: 9, Kinesis: Rates{Latency: 100 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		var total time.Duration
		for range 100 {
			start := time.Now()
			if _, err := k.GetRecords(context.Background(), &kinesis.GetRecordsInput{}); err != nil {
				t.Fatal(err)
			}
			d := time.Since(start)
			if d >= 100*time.Millisecond {
				t.Fatalf("delay %v, want below 100ms", d)
			}
			total += d
		}
		if avg := total / 100; avg < 30*time.Millisecond || avg > 70*time.Millisecond {
			t.Errorf("average delay %v, want about 50ms", avg)
		}

		// A delayed call whose context ends fails with the context's error.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		k, _ = WrapKinesis(&fakeKinesis{}, Config{Kinesis: Rates{Latency: time.Hour}})
		for {
			_, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{})
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("delayed call with an ending context: %v", err)
				}
				break
			}
		}

		d, _ := WrapDynamoDB(&fakeDynamo{}, Config{DynamoDB: Rates{Timeout: 1}, TimeoutDelay: 2 * time.Second})
		start := time.Now()
		_, err = d.PutItem(context.Background(), &dynamodb.PutItemInput{})
		if faultOf(err) != Timeout || time.Since(start) != 2*time.Second {
			t.Errorf("PutItem: %v after %v, want a timeout after 2s", err, time.Since(start))
		}
	})
}

func TestParse(t *testing.T) {
	c, err := Parse("seed=1, kinesis=0.05,dynamodb=0.02,latency=20ms,GetRecords.expired=0.1,UpdateItem.timeout=0.03,applied=0.5,timeout-delay=1s,dynamodb.latency=5ms,hang=3s,latency-rate=0.5")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Seed:           1,
		Kinesis:        Rates{Any: 0.05, Latency: 20 * time.Millisecond, LatencyRate: 0.5},
		DynamoDB:       Rates{Any: 0.02, Latency: 5 * time.Millisecond, LatencyRate: 0.5},
		Ops:            map[string]Rates{"GetRecords": {ExpiredIterator: 0.1}, "UpdateItem": {Timeout: 0.03}},
		TimeoutApplied: 0.5, TimeoutDelay: time.Second, HangLimit: 3 * time.Second,
	}
	if c.Seed != want.Seed || c.Kinesis != want.Kinesis || c.DynamoDB != want.DynamoDB || len(c.Ops) != 2 ||
		c.Ops["GetRecords"] != want.Ops["GetRecords"] || c.Ops["UpdateItem"] != want.Ops["UpdateItem"] ||
		c.TimeoutApplied != want.TimeoutApplied || c.TimeoutDelay != want.TimeoutDelay || c.HangLimit != want.HangLimit {
		t.Errorf("Parse = %+v, want %+v", c, want)
	}
	if c, err := Parse(""); err != nil || c.Kinesis != (Rates{}) || c.Ops != nil {
		t.Errorf("Parse(\"\") = %+v, %v", c, err)
	}
	for _, bad := range []string{"kinesis", "kinesis=2", "kinesis=-0.1", "dynamodb.slow=0.1", "seed=x", "latency=fast",
		"getRecords=0.1", "kinesis.throttle=0.6,kinesis.5xx=0.6", "applied=1.5"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestSummary(t *testing.T) {
	k, _ := WrapKinesis(&fakeKinesis{}, Config{Ops: map[string]Rates{"GetRecords": {Throttle: 1}}})
	_, _ = k.GetRecords(context.Background(), &kinesis.GetRecordsInput{})
	_, _ = k.ListShards(context.Background(), &kinesis.ListShardsInput{})
	if got, want := Summary(k.Stats()), "GetRecords: 1 calls, 1 throttle\nListShards: 1 calls\n"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}
