package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// faultyClients returns real SDK clients whose HTTP calls go through the
// fault injectors of cfg to srv, which answers every call with an empty
// success. The SDK does not retry: every fault reaches the caller.
func faultyClients(t *testing.T, srv *httptest.Server, cfg faults.Config) (*faults.Client, *kinesis.Client, *faults.Client, *dynamodb.Client) {
	t.Helper()
	fk, err := faults.NewKinesis(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	fd, err := faults.NewDynamoDB(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	k := kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint, o.HTTPClient, o.RetryMaxAttempts = aws.String(srv.URL), fk, 1
	})
	d := dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint, o.HTTPClient, o.RetryMaxAttempts = aws.String(srv.URL), fd, 1
	})
	return fk, k, fd, d
}

// Every fault the injector produces (as the SDK would surface it) is
// retried at start-up; errors that retrying cannot fix are not.
func TestStartupRetriesTransientErrors(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_, _ = io.WriteString(w, "{}")
	}))
	defer srv.Close()
	for _, kind := range []string{"throttle", "5xx", "timeout", "reset"} {
		cfg, err := faults.Parse("seed=1,kinesis." + kind + "=1,dynamodb." + kind + "=1")
		if err != nil {
			t.Fatal(err)
		}
		_, k, _, d := faultyClients(t, srv, cfg)
		for range 10 { // both variants of throttling and 5xx
			_, kerr := k.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String("s")})
			_, derr := d.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String("t")})
			for _, err := range []error{kerr, derr, fmt.Errorf("shardline: wrapped: %w", kerr)} {
				if !retryableAtStartup(err) {
					t.Errorf("%s: %v not retried", kind, err)
				}
			}
		}
	}
	_, _, fd, d := faultyClients(t, srv, faults.Config{})
	fd.Outage(faults.Refuse)
	if _, err := d.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("t")}); !retryableAtStartup(err) {
		t.Errorf("refused connection %v not retried", err)
	}
}

// refusedWorker returns a worker reading stream "s" through kc, with its
// lease table at the DynamoDB endpoint addr.
func refusedWorker(t *testing.T, kc reader.KinesisAPI, addr, stream string, timeout time.Duration) *Worker {
	t.Helper()
	w, err := New(Config{
		StreamName:       stream,
		ApplicationName:  "app-refused",
		Kinesis:          kc,
		DynamoDB:         testenv.NewDynamoDBClient("http://" + addr),
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) { return nil, errors.New("unused") },
		StartupTimeout:   timeout,
		Logger:           slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A worker whose Kinesis endpoint refuses connections keeps retrying its
// start-up until StartupTimeout, then fails with an error that names the
// endpoint: through the real SDK client, which wraps the refused connection
// in a response error with status code 0.
func TestStartupRetriesRefusedEndpointUntilTimeout(t *testing.T) {
	addr := testenv.RefusedAddr(t)
	const timeout = 2 * time.Second
	w := refusedWorker(t, testenv.NewKinesisClient("http://"+addr), addr, "s", timeout)
	begin := time.Now()
	err := w.Run(t.Context())
	took := time.Since(begin)
	if err == nil {
		t.Fatal("Run against a refused endpoint returned nil")
	}
	t.Logf("after %v: %v", took, err)
	// Wide bounds: the lower one is what the fix is about (it failed after
	// 0.1 s before), the upper one only catches a hang.
	if took < timeout-200*time.Millisecond || took > timeout+20*time.Second {
		t.Errorf("Run gave up after %v, want about StartupTimeout %v", took, timeout)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint %s", err, addr)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not match context.DeadlineExceeded", err)
	}
}

// The same for a lease table endpoint that refuses connections, the
// stream being reachable: the table step is retried until StartupTimeout.
func TestStartupRetriesRefusedDynamoDBUntilTimeout(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	addr := testenv.RefusedAddr(t)
	const timeout = 2 * time.Second
	w := refusedWorker(t, kc, addr, stream, timeout)
	begin := time.Now()
	err := w.Run(t.Context())
	took := time.Since(begin)
	t.Logf("after %v: %v", took, err)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Run: %v; want the refused connection to %s and context.DeadlineExceeded", err, addr)
	}
	if took < timeout-200*time.Millisecond {
		t.Errorf("Run gave up after %v, before StartupTimeout %v", took, timeout)
	}
}

// refusedKinesis answers DescribeStreamSummary, the first start-up call,
// with err; it must not be asked anything else.
type refusedKinesis struct {
	reader.KinesisAPI
	err   error
	calls atomic.Int32
}

func (k *refusedKinesis) DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	k.calls.Add(1)
	return nil, k.err
}

// The same in virtual time, with the default-sized StartupTimeout of the
// issue (4 s): the error is the one the real SDK returned for a refused
// connection, replayed by a fake client so that the clock can be virtual.
func TestStartupRetriesRefusedEndpointVirtualTime(t *testing.T) {
	addr := testenv.RefusedAddr(t)
	_, refused := testenv.NewKinesisClient("http://"+addr).DescribeStreamSummary(t.Context(),
		&kinesis.DescribeStreamSummaryInput{StreamName: new("s")}, func(o *kinesis.Options) { o.RetryMaxAttempts = 1 })
	if refused == nil {
		t.Fatal("DescribeStreamSummary against a closed port succeeded")
	}
	synctest.Test(t, func(t *testing.T) {
		const timeout = 4 * time.Second
		kc := &refusedKinesis{err: refused}
		w := refusedWorker(t, kc, addr, "s", timeout)
		begin := time.Now()
		err := w.Run(t.Context())
		took := time.Since(begin)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run: %v, want the refused connection and context.DeadlineExceeded", err)
		}
		if took != timeout {
			t.Errorf("Run gave up after %v, want StartupTimeout %v", took, timeout)
		}
		// Backoff from 100 ms doubling to 2 s, with jitter: at least 4
		// attempts in 4 s.
		if n := kc.calls.Load(); n < 4 {
			t.Errorf("%d attempts in %v", n, timeout)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error %q does not name the endpoint %s", err, addr)
		}
	})
}

// What start-up retries, decided on errors the real SDK returns (a refused
// connection) and on the worker's own errors.
func TestRetryableAtStartup(t *testing.T) {
	kc := testenv.NewKinesisClient("http://" + testenv.RefusedAddr(t))
	_, refused := kc.ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: new("s")},
		func(o *kinesis.Options) { o.RetryMaxAttempts = 1 })
	if refused == nil {
		t.Fatal("ListShards against a closed port succeeded")
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{refused, true},
		{fmt.Errorf("shardline: list shards: %w", refused), true},
		{fmt.Errorf("lease: scan: %w: %w", kcl.ErrThrottled, errors.New("busy")), true},
		{fmt.Errorf("%w: stream s", kcl.ErrStreamNotFound), false},
		{fmt.Errorf("%w: bad table", kcl.ErrInvalidConfig), false},
		{errors.New("something else"), false},
	} {
		if got := retryableAtStartup(tc.err); got != tc.want {
			t.Errorf("retryableAtStartup(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
