package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/shardline/shardline/internal/faults"
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
				if !transientStartupError(err) {
					t.Errorf("%s: %v not retried", kind, err)
				}
			}
		}
	}
	_, _, fd, d := faultyClients(t, srv, faults.Config{})
	fd.Outage(faults.Refuse)
	if _, err := d.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("t")}); !transientStartupError(err) {
		t.Errorf("refused connection %v not retried", err)
	}

	for _, err := range []error{
		fmt.Errorf("%w: stream s", kcl.ErrStreamNotFound),
		fmt.Errorf("%w: bad table", kcl.ErrInvalidConfig),
		&smithy.OperationError{ServiceID: "Kinesis", OperationName: "ListShards", Err: &ktypes.InvalidArgumentException{Message: aws.String("bad")}},
		&smithy.OperationError{ServiceID: "Kinesis", OperationName: "ListShards", Err: &smithy.GenericAPIError{Code: "AccessDeniedException", Fault: smithy.FaultClient}},
		context.Canceled,
		errors.New("something else"),
	} {
		if transientStartupError(err) {
			t.Errorf("%v retried at start-up", err)
		}
	}
}
