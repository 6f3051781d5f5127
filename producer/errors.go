package producer

import (
	"errors"
	"fmt"

	"github.com/shardline/shardline/internal/awsx"
)

// Errors of Put (the record is not accepted) and of results. Test with
// errors.Is.
var (
	// ErrClosed: Put after Close, or a record still unwritten when Close's
	// context ended.
	ErrClosed = errors.New("producer: closed")
	// ErrInvalidRecord: a record Kinesis would refuse: data (after the
	// encoder) and partition key exceeding 1 MiB together, a partition key
	// empty, longer than 256 characters or not UTF-8, or an explicit hash
	// key that is not a decimal number from 0 to 2^128-1. The message says
	// which.
	ErrInvalidRecord = errors.New("producer: invalid record")
	// ErrEncode: the Encoder failed.
	ErrEncode = errors.New("producer: encoder failed")
	// ErrRetryTimeout: Kinesis kept refusing the record (throttling,
	// internal failures) for longer than Config.RetryTimeout.
	ErrRetryTimeout = errors.New("producer: gave up retrying")
	// ErrRejected: Kinesis refused the record for a reason retrying cannot
	// fix (for example a KMS key it cannot use).
	ErrRejected = errors.New("producer: record rejected")
)

// PutError is the final error of a record that was accepted by Put but not
// written. It wraps ErrRetryTimeout, ErrRejected, ErrClosed or the error of
// the PutRecords call (a typed AWS SDK error, for errors.As).
type PutError struct {
	// Attempts counts the PutRecords calls that carried the record.
	Attempts int
	// Code and Message are Kinesis's error code and message for the
	// record's last attempt, when the call itself succeeded.
	Code, Message string
	// Err is the cause.
	Err error
}

// Error implements error.
func (e *PutError) Error() string {
	msg := fmt.Sprintf("producer: record not written after %d attempt(s): %v", e.Attempts, e.Err)
	if e.Code != "" {
		msg += " (last: " + e.Code + ": " + e.Message + ")"
	}
	return msg
}

// Unwrap returns the cause.
func (e *PutError) Unwrap() error { return e.Err }

// entryError is the failure of one entry of a successful PutRecords call.
type entryError struct{ code, message string }

func (e *entryError) Error() string { return e.code + ": " + e.message }

// retryableEntryCode reports whether a per-record error code of PutRecords
// is worth retrying. Only codes known to be permanent are not: anything
// else (throttling, InternalFailure, codes added later) is retried until
// RetryTimeout.
func retryableEntryCode(code string) bool { return awsx.ClassifyCode(code, "").Retryable() }

// retryableCall reports whether a failed PutRecords or ListShards call is
// worth retrying: throttling, server errors, timeouts and connection errors
// (a refused connection included) are; client errors (bad request, access
// denied, no such stream) are not.
func retryableCall(err error) bool { return awsx.Classify(err).Retryable() }
