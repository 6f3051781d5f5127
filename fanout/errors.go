package fanout

import (
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrClosed is returned by [Reader.Next] after [Reader.Close].
var ErrClosed = errors.New("fanout: reader closed")

// errKind is what a reader does about an error from Kinesis.
type errKind int

const (
	// kindTransient: retry the same call after a backoff (5xx, timeouts,
	// connection errors, anything not recognised).
	kindTransient errKind = iota
	// kindThrottled: the shard's or account's limits were hit; retry after a
	// backoff.
	kindThrottled
	// kindExpired: the shard iterator expired; get a new one.
	kindExpired
	// kindTrimmed: a sequence number is no longer retained by the stream.
	kindTrimmed
	// kindNotFound: the stream or shard does not exist (any more).
	kindNotFound
	// kindFatal: retrying cannot help (access denied, invalid request, KMS
	// key unusable); the reader stops and reports the error.
	kindFatal
)

// String names the kind for logs.
func (k errKind) String() string {
	switch k {
	case kindTransient:
		return "transient"
	case kindThrottled:
		return "throttled"
	case kindExpired:
		return "expired iterator"
	case kindTrimmed:
		return "trimmed"
	case kindNotFound:
		return "not found"
	case kindFatal:
		return "fatal"
	}
	return "unknown"
}

// retryable reports whether a reader retries errors of kind k with backoff.
func (k errKind) retryable() bool { return k == kindTransient || k == kindThrottled }

// classify is the one place that interprets errors from the Kinesis API. The
// caller handles its own context's cancellation before asking.
func classify(err error) errKind {
	var (
		expired     *types.ExpiredIteratorException
		notFound    *types.ResourceNotFoundException
		throughput  *types.ProvisionedThroughputExceededException
		kmsThrottle *types.KMSThrottlingException
		limit       *types.LimitExceededException
		inUse       *types.ResourceInUseException
		invalid     *types.InvalidArgumentException
	)
	switch {
	case errors.As(err, &expired):
		return kindExpired
	case errors.As(err, &notFound):
		return kindNotFound
	case errors.As(err, &throughput), errors.As(err, &kmsThrottle), errors.As(err, &limit):
		return kindThrottled
	case errors.As(err, &inUse):
		// SubscribeToShard: another subscription of the consumer to the
		// shard is active (or was just closed). It ends or is taken over
		// within seconds: retry after a backoff.
		return kindThrottled
	case errors.As(err, &invalid):
		if isTrimmedMessage(invalid.ErrorMessage()) {
			return kindTrimmed
		}
		return kindFatal
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
			"TooManyRequestsException", "RequestLimitExceeded", "SlowDown":
			return kindThrottled
		case "InternalFailure", "InternalFailureException", "ServiceUnavailable", "ServiceUnavailableException",
			"RequestTimeout", "RequestTimeoutException":
			return kindTransient
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch status := respErr.HTTPStatusCode(); {
		case status == 429:
			return kindThrottled
		case status >= 500:
			return kindTransient
		case status >= 400:
			return kindFatal
		}
	}
	if apiErr != nil && apiErr.ErrorFault() == smithy.FaultClient {
		return kindFatal
	}
	// Timeouts (net.Error, context.DeadlineExceeded from the HTTP client),
	// refused or reset connections, DNS hiccups, the SDK's retry quota, and
	// anything unrecognised: transient.
	return kindTransient
}

// isTrimmedMessage reports whether an InvalidArgumentException's message says
// that a sequence number fell out of the stream's retention period (as
// opposed to being malformed or from another shard).
func isTrimmedMessage(msg string) bool {
	msg = strings.ToLower(msg)
	for _, s := range []string{"trim", "retention", "too old", "older than", "no longer available", "has expired"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// ErrorKind names the class of a Kinesis error as FetchEvent.ErrorKind does.
func ErrorKind(err error) string {
	if err == nil {
		return ""
	}
	switch classify(err) {
	case kindThrottled:
		return "throttled"
	case kindExpired:
		return "expired_iterator"
	case kindTransient:
		return "transient"
	case kindTrimmed:
		return "trimmed"
	case kindNotFound:
		return "not_found"
	}
	return "fatal"
}
