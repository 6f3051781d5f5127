// Package awsx is Shardline's one AWS layer: it classifies the errors of the
// AWS SDK (Kinesis and DynamoDB alike), names streams by name or ARN, lists a
// stream's shards and looks up its ARN, for every caller.
package awsx

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Kind is what a caller does about an error from an AWS call.
type Kind int

const (
	// Transient: retry the same call after a backoff (5xx, timeouts,
	// refused or reset connections, anything not recognised).
	Transient Kind = iota
	// Throttled: the shard's, table's or account's limits were hit; retry
	// after a backoff.
	Throttled
	// InUse: the resource is busy (another SubscribeToShard of the consumer
	// to the shard, a stream or table being created or updated); retry
	// after a backoff. Not throttling: a routine enhanced fan-out hand-over
	// produces it.
	InUse
	// Expired: the shard iterator (or a pagination token) expired; get a
	// new one.
	Expired
	// Trimmed: a sequence number is no longer retained by the stream.
	Trimmed
	// NotFound: the stream, shard, consumer or table does not exist (any
	// more).
	NotFound
	// Conflict: a conditional write was refused because the item is not as
	// the condition expects (DynamoDB ConditionalCheckFailed, a transaction
	// cancelled by one).
	Conflict
	// Fatal: retrying cannot help (access denied, invalid request, KMS key
	// unusable).
	Fatal
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case Transient:
		return "transient"
	case Throttled:
		return "throttled"
	case InUse:
		return "in use"
	case Expired:
		return "expired iterator"
	case Trimmed:
		return "trimmed"
	case NotFound:
		return "not found"
	case Conflict:
		return "conflict"
	case Fatal:
		return "fatal"
	}
	return "unknown"
}

// Retryable reports whether errors of kind k are retried with backoff.
func (k Kind) Retryable() bool { return k == Transient || k == Throttled || k == InUse }

// codeKind classifies a service error code (typed SDK errors report the
// same codes as the services send), including the cancellation reasons of a
// DynamoDB transaction; ok is false for a code it does not know.
func codeKind(code, message string) (k Kind, ok bool) {
	switch code {
	case "ProvisionedThroughputExceededException", // Kinesis and DynamoDB
		"KMSThrottlingException",
		"LimitExceededException",                      // Kinesis; DynamoDB's control plane
		"ThrottlingException", "RequestLimitExceeded", // DynamoDB
		"Throttling", "ThrottledException", "RequestThrottledException", "TooManyRequestsException", "SlowDown",
		"ThrottlingError", "ProvisionedThroughputExceeded": // transaction cancellation reasons
		return Throttled, true
	case "InternalFailure", // PutRecords entries
		"InternalFailureException", "InternalServerError",
		"ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
		"TransactionConflictException", "TransactionInProgressException",
		"TransactionConflict": // a cancellation reason
		return Transient, true
	case "ResourceInUseException":
		return InUse, true
	case "ExpiredIteratorException", "ExpiredNextTokenException":
		return Expired, true
	case "ResourceNotFoundException", "TableNotFoundException":
		return NotFound, true
	case "ConditionalCheckFailedException", "TransactionCanceledException",
		"ConditionalCheckFailed": // a cancellation reason
		return Conflict, true
	case "InvalidArgumentException":
		if isTrimmedMessage(message) {
			return Trimmed, true
		}
		return Fatal, true
	case "AccessDeniedException", "ValidationException", "UnrecognizedClientException", "InvalidSignatureException",
		"KMSDisabledException", "KMSInvalidStateException", "KMSAccessDeniedException", "KMSNotFoundException",
		"KMSOptInRequired":
		return Fatal, true
	}
	return Transient, false
}

// ClassifyCode classifies an error code that comes without an error, such as
// the per-record ErrorCode of PutRecords. Codes it does not know are
// Transient: a code added by the service later is retried.
func ClassifyCode(code, message string) Kind {
	if k, ok := codeKind(code, message); ok {
		return k
	}
	return Transient
}

// Classify is the one place that interprets errors from the Kinesis and
// DynamoDB APIs. The caller handles its own context's cancellation before
// asking. The order: a service error code it knows; the HTTP status (429
// throttled, 408 and 5xx transient, other 4xx fatal, 0 — the request got no
// answer, as for a refused or reset connection — transient); a client-fault
// error code fatal; anything else (timeouts, connection errors, the SDK's
// retry quota, errors it does not recognise) transient.
func Classify(err error) Kind {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if k, ok := codeKind(apiErr.ErrorCode(), apiErr.ErrorMessage()); ok {
			if k == Conflict {
				return transactionKind(err)
			}
			return k
		}
	}
	var resp interface{ HTTPStatusCode() int }
	if errors.As(err, &resp) {
		switch status := resp.HTTPStatusCode(); {
		case status == 429:
			return Throttled
		case status == 408, status >= 500:
			return Transient
		case status >= 400:
			return Fatal
		}
		// 0: no answer (the SDK wraps a failed send in a response error
		// with an empty response); 2xx/3xx: an answer it could not read.
		return Transient
	}
	if apiErr != nil && apiErr.ErrorFault() == smithy.FaultClient {
		return Fatal
	}
	return Transient
}

// transactionKind refines Conflict for a DynamoDB transaction cancelled for
// reasons other than a condition: throttling or a conflicting transaction.
func transactionKind(err error) Kind {
	var tx *dtypes.TransactionCanceledException
	if !errors.As(err, &tx) || len(tx.CancellationReasons) == 0 {
		return Conflict
	}
	kind := Conflict
	for _, r := range tx.CancellationReasons {
		k, ok := codeKind(aws.ToString(r.Code), "")
		switch {
		case !ok: // "None": the item was not the reason
		case k == Conflict:
			return Conflict // the condition decides
		case k == Throttled, k == Transient:
			kind = k
		}
	}
	return kind
}

// Recognized reports whether err comes from the AWS SDK or the network (an
// API error, an HTTP response, a failed send, a network error, a timeout)
// rather than from the caller's own code. Classify calls every error it does
// not recognise Transient; callers that must not retry their own mistakes
// (start-up) ask this first.
func Recognized(err error) bool {
	var (
		apiErr smithy.APIError
		resp   interface{ HTTPStatusCode() int }
		send   *smithyhttp.RequestSendError
		netErr net.Error // also context.DeadlineExceeded
	)
	return errors.As(err, &apiErr) || errors.As(err, &resp) || errors.As(err, &send) || errors.As(err, &netErr)
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

// InvalidArgument reports whether err is Kinesis' InvalidArgumentException
// (a Fatal error): a request with a value the service refuses, such as a
// starting sequence number that is not one of the shard's.
func InvalidArgument(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidArgumentException" && Classify(err) == Fatal
}

// Label names the class of an error for metrics and logs: "throttled",
// "in_use", "expired_iterator", "transient", "trimmed", "not_found",
// "conflict" or "fatal"; empty for nil.
func Label(err error) string {
	if err == nil {
		return ""
	}
	switch Classify(err) {
	case Throttled:
		return "throttled"
	case InUse:
		return "in_use"
	case Expired:
		return "expired_iterator"
	case Trimmed:
		return "trimmed"
	case NotFound:
		return "not_found"
	case Conflict:
		return "conflict"
	case Fatal:
		return "fatal"
	}
	return "transient"
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
