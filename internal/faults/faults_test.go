package faults

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// service answers every Kinesis and DynamoDB call with an empty success
// and counts calls: an HTTP server for real SDK clients.
type service struct{ calls atomic.Int64 }

func (s *service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	_, op, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	body := "{}"
	switch op {
	case "GetRecords":
		body = `{"NextShardIterator":"it","Records":[]}`
	case "GetShardIterator":
		body = `{"ShardIterator":"it"}`
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_, _ = io.WriteString(w, body)
}

// inMemory is an aws.HTTPClient serving requests with a handler, without a
// network: for synctest bubbles, where connections would stop the clock.
type inMemory struct{ h http.Handler }

func (m inMemory) Do(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// testKey is an item key for DynamoDB calls to the fake service.
var testKey = map[string]dtypes.AttributeValue{"k": &dtypes.AttributeValueMemberS{Value: "v"}}

// rig is a fake service and real SDK clients whose HTTP calls go through
// fault injectors.
type rig struct {
	svc      *service
	endpoint string
	next     aws.HTTPClient
}

// newRig serves the fake service over loopback HTTP.
func newRig(t *testing.T) *rig {
	svc := &service{}
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)
	return &rig{svc: svc, endpoint: srv.URL, next: srv.Client()}
}

// newMemoryRig serves the fake service in memory.
func newMemoryRig() *rig {
	svc := &service{}
	return &rig{svc: svc, endpoint: "http://service.invalid", next: inMemory{svc}}
}

// kinesis returns a Kinesis client through a new injector of cfg. The SDK
// does not retry: each SDK call is one HTTP call.
func (r *rig) kinesis(t *testing.T, cfg Config) (*Client, *kinesis.Client) {
	t.Helper()
	fc, err := NewKinesis(cfg, r.next)
	if err != nil {
		t.Fatal(err)
	}
	return fc, kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(r.endpoint)
		o.HTTPClient = fc
		o.RetryMaxAttempts = 1
	})
}

// dynamo returns a DynamoDB client through a new injector of cfg, without
// SDK retries.
func (r *rig) dynamo(t *testing.T, cfg Config) (*Client, *dynamodb.Client) {
	t.Helper()
	fc, err := NewDynamoDB(cfg, r.next)
	if err != nil {
		t.Fatal(err)
	}
	return fc, dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(r.endpoint)
		o.HTTPClient = fc
		o.RetryMaxAttempts = 1
	})
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
	case errors.Is(err, syscall.ECONNRESET):
		return Reset
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
	_, k := newMemoryRig().kinesis(t, cfg)
	out := make([]Kind, n)
	for i := range out {
		_, err := k.GetRecords(context.Background(), &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
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
	_, k := newMemoryRig().kinesis(t, cfg)
	for i := range alone {
		if i%3 == 0 {
			_, _ = k.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String("s")})
		}
		_, err := k.GetRecords(context.Background(), &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
		if got := faultOf(err); got != alone[i] {
			t.Fatalf("GetRecords call %d: %v interleaved, %v alone", i, got, alone[i])
		}
	}
}

func TestRatesAreHonoured(t *testing.T) {
	const n = 4000
	cfg := Config{Seed: 1, Kinesis: Rates{Throttle: 0.1, ServerError: 0.05, Timeout: 0.02, ExpiredIterator: 0.03, Reset: 0.02}}
	count := map[Kind]int{}
	for _, k := range getRecordsFaults(t, cfg, n) {
		count[k]++
	}
	for kind, want := range map[Kind]float64{Throttle: 0.1, ServerError: 0.05, Timeout: 0.02, ExpiredIterator: 0.03, Reset: 0.02, None: 0.78} {
		got := float64(count[kind]) / n
		// Five standard deviations of a binomial proportion.
		if tol := 5 * math.Sqrt(want*(1-want)/n); math.Abs(got-want) > tol {
			t.Errorf("%v: rate %.4f, want %.4f ± %.4f", kind, got, want, tol)
		}
	}
}

func TestAnyIsSpreadOverTheKindsOfTheOperation(t *testing.T) {
	const n = 4000
	// Five standard deviations of a binomial proportion of 0.1.
	tol := 5 * math.Sqrt(0.1*0.9/n)
	count := map[Kind]int{}
	for _, k := range getRecordsFaults(t, Config{Seed: 2, Kinesis: Rates{Any: 0.4}}, n) {
		count[k]++
	}
	for _, kind := range []Kind{Throttle, ServerError, Timeout, ExpiredIterator} {
		if got := float64(count[kind]) / n; math.Abs(got-0.1) > tol {
			t.Errorf("GetRecords %v: rate %.3f, want 0.1", kind, got)
		}
	}
	// ListShards cannot meet an expired iterator: the rate is spread over
	// three kinds.
	_, k := newMemoryRig().kinesis(t, Config{Seed: 2, Kinesis: Rates{Any: 0.3}})
	count = map[Kind]int{}
	for range n {
		_, err := k.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String("s")})
		count[faultOf(err)]++
	}
	if count[ExpiredIterator] != 0 || count[Reset] != 0 {
		t.Errorf("ListShards met %d expired iterators and %d resets", count[ExpiredIterator], count[Reset])
	}
	for _, kind := range []Kind{Throttle, ServerError, Timeout} {
		if got := float64(count[kind]) / n; math.Abs(got-0.1) > tol {
			t.Errorf("ListShards %v: rate %.3f, want 0.1", kind, got)
		}
	}
}

func TestOpsOverrideTheService(t *testing.T) {
	fc, err := NewKinesis(Config{Kinesis: Rates{Throttle: 1}, Ops: map[string]Rates{"ListShards": {ServerError: 1, Throttle: 0}}}, nil)
	if err == nil {
		t.Fatalf("throttle 1 + 5xx 1 for ListShards accepted: %v", fc)
	}
	fc, k := newRig(t).kinesis(t, Config{Ops: map[string]Rates{"ListShards": {ServerError: 1}}})
	ctx := context.Background()
	if _, err := k.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("s")}); faultOf(err) != ServerError {
		t.Errorf("ListShards: %v, want a 5xx", err)
	}
	if _, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")}); err != nil {
		t.Errorf("GetRecords: %v, want success", err)
	}
	st := fc.Stats()
	if st["ListShards"].Calls != 1 || st["ListShards"].Faults[ServerError] != 1 || st["GetRecords"].Faults[ServerError] != 0 {
		t.Errorf("stats %+v", st)
	}
	if fc.Calls() != 2 {
		t.Errorf("Calls() = %d, want 2", fc.Calls())
	}
}

// The faults reach the caller as the SDK surfaces the real ones, and the
// code that classifies them sees what it sees in production.
func TestErrorsAreTheSDKs(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	only := func(op string, rt Rates) Config { return Config{Ops: map[string]Rates{op: rt}} }

	_, k := r.kinesis(t, only("GetRecords", Rates{Throttle: 1}))
	_, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
	var pte *ktypes.ProvisionedThroughputExceededException
	var opErr *smithy.OperationError
	var resp *smithyhttp.ResponseError
	if !errors.As(err, &pte) || !errors.As(err, &opErr) || opErr.Operation() != "GetRecords" || opErr.Service() != "Kinesis" ||
		!errors.As(err, &resp) || resp.HTTPStatusCode() != 400 {
		t.Errorf("GetRecords throttled: %v", err)
	}
	var re *awshttp.ResponseError
	if !errors.As(err, &re) || re.ServiceRequestID() != "faults-injected" {
		t.Errorf("GetRecords throttled: %v, want the request ID of the response", err)
	}
	_, k = r.kinesis(t, only("ListShards", Rates{Throttle: 1}))
	_, err = k.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("s")})
	var limit *ktypes.LimitExceededException
	if !errors.As(err, &limit) {
		t.Errorf("ListShards throttled: %v, want LimitExceededException", err)
	}
	_, k = r.kinesis(t, only("GetRecords", Rates{ExpiredIterator: 1}))
	_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
	var expired *ktypes.ExpiredIteratorException
	if !errors.As(err, &expired) {
		t.Errorf("GetRecords expired: %v", err)
	}
	// The SDK leaves the fault of an unmodelled 5xx unknown: callers
	// classify on the status code.
	_, k = r.kinesis(t, only("GetRecords", Rates{ServerError: 1}))
	statuses := map[int]bool{}
	for range 20 {
		_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
		var resp *smithyhttp.ResponseError
		var api smithy.APIError
		if !errors.As(err, &resp) || resp.HTTPStatusCode() < 500 || !errors.As(err, &api) {
			t.Fatalf("GetRecords 5xx: %v", err)
		}
		statuses[resp.HTTPStatusCode()] = true
	}
	if !statuses[500] || !statuses[503] {
		t.Errorf("5xx statuses seen: %v, want 500 and 503", statuses)
	}
	_, k = r.kinesis(t, only("GetRecords", Rates{Timeout: 1}))
	_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
	var netErr net.Error
	var sendErr *smithyhttp.RequestSendError
	if !errors.As(err, &netErr) || !netErr.Timeout() || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &sendErr) {
		t.Errorf("GetRecords timeout: %v, want a net.Error timing out, matching context.DeadlineExceeded", err)
	}
	_, k = r.kinesis(t, only("GetRecords", Rates{Reset: 1}))
	_, err = k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
	var op *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &op) || op.Op != "read" || !errors.As(err, &sendErr) {
		t.Errorf("GetRecords reset: %v, want a read *net.OpError with ECONNRESET", err)
	}

	// DynamoDB throttling, as the lease store classifies it.
	_, d := r.dynamo(t, Config{DynamoDB: Rates{Throttle: 1}})
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
	_, d = r.dynamo(t, Config{DynamoDB: Rates{ServerError: 1}})
	for range 20 {
		_, err := d.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String("t")})
		var resp *smithyhttp.ResponseError
		if !errors.As(err, &resp) || resp.HTTPStatusCode() < 500 {
			t.Fatalf("Scan 5xx: %v", err)
		}
		var ise *dtypes.InternalServerError
		if resp.HTTPStatusCode() == 500 && !errors.As(err, &ise) {
			t.Fatalf("Scan 500: %v, want InternalServerError", err)
		}
	}
	if n := r.svc.calls.Load(); n != 0 {
		t.Errorf("%d faulty calls reached the service", n)
	}
}

// A timeout with the request applied reached the service; one without did
// not.
func TestAppliedTimeoutsReachTheService(t *testing.T) {
	r := newRig(t)
	var mu sync.Mutex
	var calls []Call
	_, d := r.dynamo(t, Config{Seed: 5, DynamoDB: Rates{Timeout: 1}, TimeoutApplied: 0.5,
		Observer: func(c Call) { mu.Lock(); calls = append(calls, c); mu.Unlock() }})
	applied := 0
	for range 200 {
		before := r.svc.calls.Load()
		_, err := d.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{TableName: aws.String("t"),
			Key: map[string]dtypes.AttributeValue{"leaseKey": &dtypes.AttributeValueMemberS{Value: "s"}}})
		if faultOf(err) != Timeout {
			t.Fatalf("UpdateItem: %v, want a timeout", err)
		}
		if r.svc.calls.Load() > before {
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
		if c.Fault != Timeout || c.Op != "UpdateItem" || c.Service != "DynamoDB" || c.Err == nil || c.Status != 0 ||
			!bytes.Contains(c.Body, []byte(`"leaseKey"`)) {
			t.Fatalf("observed %+v", c)
		}
	}
	if n != applied {
		t.Errorf("observer saw %d applied calls, the service %d", n, applied)
	}
}

// A lost response on the real DynamoDB: the write is applied, the caller
// sees a timeout.
func TestLostResponseIsAppliedByDynamoDB(t *testing.T) {
	dc := testenv.DynamoDB(t)
	ctx := context.Background()
	table := testenv.UniqueName("faults")
	_, err := dc.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []dtypes.AttributeDefinition{{AttributeName: aws.String("k"), AttributeType: dtypes.ScalarAttributeTypeS}},
		KeySchema:            []dtypes.KeySchemaElement{{AttributeName: aws.String("k"), KeyType: dtypes.KeyTypeHash}},
		BillingMode:          dtypes.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = dc.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(table)})
	})
	fc, err := NewDynamoDB(Config{Ops: map[string]Rates{"PutItem": {Timeout: 1}}, TimeoutApplied: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	faulty := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(testenv.DynamoDBEndpoint())
		o.DisableValidateResponseChecksum = true
		o.HTTPClient = fc
		o.RetryMaxAttempts = 1
	})
	item := map[string]dtypes.AttributeValue{"k": &dtypes.AttributeValueMemberS{Value: "lost"}}
	if _, err := faulty.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); faultOf(err) != Timeout {
		t.Fatalf("PutItem: %v, want a timeout", err)
	}
	out, err := faulty.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: item, ConsistentRead: aws.Bool(true)})
	if err != nil || out.Item == nil {
		t.Fatalf("GetItem after the lost response: %v, %v; want the item written", out, err)
	}
}

func TestRefusingOutage(t *testing.T) {
	r := newRig(t)
	fc, d := r.dynamo(t, Config{})
	ctx := context.Background()
	fc.Outage(Refuse)
	for range 5 {
		_, err := d.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"), Key: testKey})
		var opErr *net.OpError
		var sendErr *smithyhttp.RequestSendError
		if !errors.As(err, &opErr) || opErr.Op != "dial" || !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &sendErr) {
			t.Fatalf("GetItem during an outage: %v, want a refused connection", err)
		}
		// The SDK reports no response as status 0.
		var resp *awshttp.ResponseError
		if errors.As(err, &resp) && resp.HTTPStatusCode() != 0 {
			t.Fatalf("GetItem during an outage: status %d", resp.HTTPStatusCode())
		}
		if host := strings.TrimPrefix(r.endpoint, "http://"); !strings.Contains(err.Error(), host) {
			t.Fatalf("GetItem during an outage: %v does not name the endpoint %s", err, host)
		}
	}
	if n := r.svc.calls.Load(); n != 0 {
		t.Fatalf("%d calls reached the service during the outage", n)
	}
	fc.Restore()
	if _, err := d.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("t"), Key: testKey}); err != nil {
		t.Fatalf("GetItem after the outage: %v", err)
	}
	if st := fc.Stats()["GetItem"]; st.Calls != 6 || st.Faults[Unavailable] != 5 {
		t.Errorf("stats %+v", st)
	}
}

func TestHangingOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newMemoryRig()
		fc, d := r.dynamo(t, Config{HangLimit: time.Minute})
		fc.Outage(Hang)
		start := time.Now()
		scan := &dynamodb.ScanInput{TableName: aws.String("t")}

		// A call hangs until its context ends...
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := d.Scan(ctx, scan)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 5*time.Second {
			t.Fatalf("Scan: %v after %v, want the context's deadline after 5s", err, time.Since(start))
		}
		// ... or until HangLimit ...
		start = time.Now()
		_, err = d.Scan(context.Background(), scan)
		if faultOf(err) != Timeout || time.Since(start) != time.Minute {
			t.Fatalf("Scan: %v after %v, want a timeout after 1m", err, time.Since(start))
		}
		// Ending the outage does not rescue a call already hanging; new
		// calls go through.
		errc := make(chan error)
		start = time.Now()
		go func() {
			_, err := d.Scan(context.Background(), scan)
			errc <- err
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		fc.Restore()
		if _, err := d.Scan(context.Background(), scan); err != nil || r.svc.calls.Load() != 1 {
			t.Fatalf("Scan after the outage: %v (%d calls reached the service)", err, r.svc.calls.Load())
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
		r := newMemoryRig()
		_, k := r.kinesis(t, Config{Seed: 9, Kinesis: Rates{Latency: 100 * time.Millisecond}})
		get := &kinesis.GetRecordsInput{ShardIterator: aws.String("it")}
		var total time.Duration
		for range 100 {
			start := time.Now()
			if _, err := k.GetRecords(context.Background(), get); err != nil {
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
		_, k = r.kinesis(t, Config{Kinesis: Rates{Latency: time.Hour}})
		for {
			_, err := k.GetRecords(ctx, get)
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("delayed call with an ending context: %v", err)
				}
				break
			}
		}

		_, d := r.dynamo(t, Config{DynamoDB: Rates{Timeout: 1}, TimeoutDelay: 2 * time.Second})
		start := time.Now()
		_, err := d.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String("t"), Item: testKey})
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
	fc, k := newMemoryRig().kinesis(t, Config{Ops: map[string]Rates{"GetRecords": {Throttle: 1}}})
	_, _ = k.GetRecords(context.Background(), &kinesis.GetRecordsInput{ShardIterator: aws.String("it")})
	_, _ = k.ListShards(context.Background(), &kinesis.ListShardsInput{StreamName: aws.String("s")})
	if got, want := Summary(fc.Stats()), "GetRecords: 1 calls, 1 throttle\nListShards: 1 calls\n"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}
