// Package awsx is Shardline's one AWS layer: it classifies errors from the
// AWS SDK for every caller.
package awsx

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Kind is what a caller does about an error from Kinesis.
type Kind int

const (
	// Transient: retry the same call after a backoff (5xx, timeouts,
	// connection errors, anything not recognised).
	Transient Kind = iota
	// Throttled: the shard's or account's limits were hit; retry after a
	// backoff.
	Throttled
	// Expired: the shard iterator expired; get a new one.
	Expired
	// Trimmed: a sequence number is no longer retained by the stream.
	Trimmed
	// NotFound: the stream or shard does not exist (any more).
	NotFound
	// Fatal: retrying cannot help (access denied, invalid request, KMS
	// key unusable); the reader stops and reports the error.
	Fatal
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Throttled:
		return "throttled"
	case Expired:
		return "expired iterator"
	case Trimmed:
		return "trimmed"
	case NotFound:
		return "not found"
	case Fatal:
		return "fatal"
	}
	return "unknown"
}

// Retryable reports whether a reader retries errors of kind k with backoff.
func (k Kind) Retryable() bool { return k == Transient || k == Throttled }

// Classify is the one place that interprets errors from the Kinesis API. The
// caller handles its own context's cancellation before asking.
func Classify(err error) Kind {
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
		return Expired
	case errors.As(err, &notFound):
		return NotFound
	case errors.As(err, &throughput), errors.As(err, &kmsThrottle), errors.As(err, &limit):
		return Throttled
	case errors.As(err, &inUse):
		// SubscribeToShard: another subscription of the consumer to the
		// shard is active (or was just closed). It ends or is taken over
		// within seconds: retry after a backoff.
		return Throttled
	case errors.As(err, &invalid):
		if isTrimmedMessage(invalid.ErrorMessage()) {
			return Trimmed
		}
		return Fatal
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
			"TooManyRequestsException", "RequestLimitExceeded", "SlowDown":
			return Throttled
		case "InternalFailure", "InternalFailureException", "ServiceUnavailable", "ServiceUnavailableException",
			"RequestTimeout", "RequestTimeoutException":
			return Transient
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch status := respErr.HTTPStatusCode(); {
		case status == 429:
			return Throttled
		case status >= 500:
			return Transient
		case status >= 400:
			return Fatal
		}
	}
	if apiErr != nil && apiErr.ErrorFault() == smithy.FaultClient {
		return Fatal
	}
	// Timeouts (net.Error, context.DeadlineExceeded from the HTTP client),
	// refused or reset connections, DNS hiccups, the SDK's retry quota, and
	// anything unrecognised: transient.
	return Transient
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

// Label names the class of an error for metrics and logs: "throttled",
// "expired_iterator", "transient", "trimmed", "not_found" or "fatal"; empty
// for nil.
func Label(err error) string {
	if err == nil {
		return ""
	}
	switch Classify(err) {
	case Throttled:
		return "throttled"
	case Expired:
		return "expired_iterator"
	case Transient:
		return "transient"
	case Trimmed:
		return "trimmed"
	case NotFound:
		return "not_found"
	}
	return "fatal"
}

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx.Err() in the second case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
