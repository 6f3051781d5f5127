package awsx_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/testenv"
)

// answer is what a fake service endpoint answers every request with.
type answer struct {
	status int
	code   string // error code, sent as the service does (header and body)
	body   string // the whole body instead, when set
	hang   bool   // never answer (until the request is cancelled)
}

// serve starts an endpoint that answers every request with a.
func serve(t *testing.T, a answer) string {
	t.Helper()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leave
		if a.hang {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		body := a.body
		if a.code != "" {
			w.Header().Set("X-Amzn-ErrorType", a.code)
			body = fmt.Sprintf(`{"__type":%q,"message":"injected %s"}`, a.code, a.code)
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(a.status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) }) // runs first
	return srv.URL
}

// kinesisAt and dynamoAt return real clients without the SDK's own retries
// (the error is what one attempt gets) and with a short HTTP timeout.
func kinesisAt(endpoint string) *kinesis.Client {
	return kinesis.NewFromConfig(testenv.AWSConfig(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.RetryMaxAttempts = 1
		o.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond}
	})
}

func dynamoAt(endpoint string) *dynamodb.Client {
	return dynamodb.NewFromConfig(testenv.AWSConfig(), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.RetryMaxAttempts = 1
		o.DisableValidateResponseChecksum = true
		o.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond}
	})
}

func kinesisErr(t *testing.T, endpoint string) error {
	t.Helper()
	_, err := kinesisAt(endpoint).ListShards(t.Context(), &kinesis.ListShardsInput{StreamName: aws.String("s")})
	return mustFail(t, endpoint, err)
}

func dynamoErr(t *testing.T, endpoint string) error {
	t.Helper()
	_, err := dynamoAt(endpoint).DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String("t")})
	return mustFail(t, endpoint, err)
}

func mustFail(t *testing.T, endpoint string, err error) error {
	t.Helper()
	if err == nil {
		t.Fatalf("a call to %s succeeded", endpoint)
	}
	return err
}

// Every class of error, as the real SDK clients return it from a real
// (loopback) connection.
func TestClassifyThroughTheSDK(t *testing.T) {
	closed := "http://" + testenv.RefusedAddr(t)
	cases := []struct {
		name  string
		a     answer
		kind  awsx.Kind
		label string
	}{
		{"kinesis throughput", answer{status: 400, code: "ProvisionedThroughputExceededException"}, awsx.Throttled, "throttled"},
		{"kinesis KMS throttling", answer{status: 400, code: "KMSThrottlingException"}, awsx.Throttled, "throttled"},
		{"kinesis limit", answer{status: 400, code: "LimitExceededException"}, awsx.Throttled, "throttled"},
		{"generic throttling", answer{status: 400, code: "ThrottlingException"}, awsx.Throttled, "throttled"},
		{"429 without a code", answer{status: 429, body: "{}"}, awsx.Throttled, "throttled"},
		{"in use", answer{status: 400, code: "ResourceInUseException"}, awsx.InUse, "in_use"},
		{"expired iterator", answer{status: 400, code: "ExpiredIteratorException"}, awsx.Expired, "expired_iterator"},
		{"not found", answer{status: 400, code: "ResourceNotFoundException"}, awsx.NotFound, "not_found"},
		{"access denied", answer{status: 400, code: "AccessDeniedException"}, awsx.Fatal, "fatal"},
		{"invalid argument", answer{status: 400, code: "InvalidArgumentException"}, awsx.Fatal, "fatal"},
		{"KMS disabled", answer{status: 400, code: "KMSDisabledException"}, awsx.Fatal, "fatal"},
		{"unknown 400", answer{status: 400, code: "SomethingNewException"}, awsx.Fatal, "fatal"},
		{"internal failure", answer{status: 500, code: "InternalFailureException"}, awsx.Transient, "transient"},
		{"500 without a code", answer{status: 500, body: "oops"}, awsx.Transient, "transient"},
		{"503", answer{status: 503, body: "{}"}, awsx.Transient, "transient"},
		{"client timeout", answer{hang: true}, awsx.Transient, "transient"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := kinesisErr(t, serve(t, tc.a))
			if got := awsx.Classify(err); got != tc.kind {
				t.Errorf("Classify(%v) = %v, want %v", err, got, tc.kind)
			}
			if got := awsx.Label(err); got != tc.label {
				t.Errorf("Label = %q, want %q", got, tc.label)
			}
			if !awsx.Recognized(err) {
				t.Errorf("Recognized(%v) = false", err)
			}
		})
	}
	t.Run("refused connection", func(t *testing.T) {
		for _, err := range []error{kinesisErr(t, closed), dynamoErr(t, closed)} {
			// The SDK wraps it in a response error with status code 0:
			// neither permanent nor unrecognised.
			var resp interface{ HTTPStatusCode() int }
			if !errors.As(err, &resp) || resp.HTTPStatusCode() != 0 {
				t.Errorf("%v: not a response error with status 0 (the SDK changed?)", err)
			}
			var opErr *net.OpError
			if !errors.As(err, &opErr) {
				t.Errorf("%v does not wrap a *net.OpError", err)
			}
			if got := awsx.Classify(err); got != awsx.Transient || !got.Retryable() {
				t.Errorf("Classify(%v) = %v, want transient", err, got)
			}
			if !awsx.Recognized(err) {
				t.Errorf("Recognized(%v) = false", err)
			}
		}
	})
}

func TestClassifyDynamoDBThroughTheSDK(t *testing.T) {
	for _, tc := range []struct {
		a    answer
		kind awsx.Kind
	}{
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#ThrottlingException"}, awsx.Throttled},
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}, awsx.Throttled},
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded"}, awsx.Throttled},
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"}, awsx.NotFound},
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}, awsx.Conflict},
		{answer{status: 400, code: "com.amazonaws.dynamodb.v20120810#ResourceInUseException"}, awsx.InUse},
		{answer{status: 400, code: "com.amazon.coral.validate#ValidationException"}, awsx.Fatal},
		{answer{status: 500, code: "com.amazonaws.dynamodb.v20120810#InternalServerError"}, awsx.Transient},
		{answer{status: 503, body: "{}"}, awsx.Transient},
	} {
		err := dynamoErr(t, serve(t, tc.a))
		if got := awsx.Classify(err); got != tc.kind {
			t.Errorf("%s: Classify(%v) = %v, want %v", tc.a.code, err, got, tc.kind)
		}
	}
}

// A transaction cancelled by a condition is a conflict; one cancelled by
// throttling is throttled; one cancelled by a conflicting transaction is
// transient.
func TestClassifyTransactionCanceled(t *testing.T) {
	for _, tc := range []struct {
		reasons []string
		want    awsx.Kind
	}{
		{[]string{"None", "ConditionalCheckFailed"}, awsx.Conflict},
		{[]string{"ThrottlingError", "None"}, awsx.Throttled},
		{[]string{"TransactionConflict"}, awsx.Transient},
		{[]string{"ThrottlingError", "ConditionalCheckFailed"}, awsx.Conflict},
		{nil, awsx.Conflict},
	} {
		tx := &dtypes.TransactionCanceledException{Message: aws.String("cancelled")}
		for _, r := range tc.reasons {
			tx.CancellationReasons = append(tx.CancellationReasons, dtypes.CancellationReason{Code: aws.String(r)})
		}
		if got := awsx.Classify(fmt.Errorf("write: %w", tx)); got != tc.want {
			t.Errorf("reasons %v: %v, want %v", tc.reasons, got, tc.want)
		}
	}
}

func TestClassifyCode(t *testing.T) {
	for code, want := range map[string]awsx.Kind{
		"ProvisionedThroughputExceededException": awsx.Throttled,
		"InternalFailure":                        awsx.Transient,
		"KMSThrottlingException":                 awsx.Throttled,
		"KMSAccessDeniedException":               awsx.Fatal,
		"KMSNotFoundException":                   awsx.Fatal,
		"AccessDeniedException":                  awsx.Fatal,
		"ResourceNotFoundException":              awsx.NotFound,
		"SomeCodeAddedLater":                     awsx.Transient,
	} {
		if got := awsx.ClassifyCode(code, ""); got != want {
			t.Errorf("ClassifyCode(%s) = %v, want %v", code, got, want)
		}
	}
	if got := awsx.ClassifyCode("InvalidArgumentException", "StartingSequenceNumber 1 is beyond the retention period, trimmed"); got != awsx.Trimmed {
		t.Errorf("trimmed message: %v", got)
	}
}

func TestRecognized(t *testing.T) {
	for _, err := range []error{errors.New("boom"), context.Canceled, fmt.Errorf("x: %w", errors.New("y"))} {
		if awsx.Recognized(err) {
			t.Errorf("Recognized(%v) = true", err)
		}
	}
	if !awsx.Recognized(context.DeadlineExceeded) {
		t.Error("a timeout is not recognised")
	}
}

// Every kind has its own name; ResourceInUse is not throttling.
func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for k := awsx.Transient; k <= awsx.Fatal; k++ {
		if k.String() == "unknown" {
			t.Errorf("kind %d has no name", k)
		}
		seen[k.String()] = true
	}
	if len(seen) != int(awsx.Fatal)+1 {
		t.Errorf("kind names are not distinct: %v", seen)
	}
	if awsx.Label(nil) != "" {
		t.Error("Label(nil) is not empty")
	}
	if l := awsx.Label(&types.ResourceInUseException{}); l != "in_use" {
		t.Errorf("ResourceInUse labelled %q, want in_use", l)
	}
}
