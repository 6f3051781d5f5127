package kcl

import (
	"context"
	"fmt"
)

// PartialFailureError is what a processor returns when it handled the
// first records of a batch but failed at the record at Position. The worker
// then checkpoints just before that record and delivers the batch again
// from it, without the records before it (those are never redelivered).
// Return it (or an error wrapping it) from ProcessRecords. A Position that
// is not a record of the batch makes the whole batch fail as with any other
// error.
type PartialFailureError struct {
	// Position is the first record that failed; every record before it
	// in the batch was processed.
	Position ExtendedSequenceNumber
	// Err is why it failed.
	Err error
}

// Error implements error.
func (e *PartialFailureError) Error() string {
	return fmt.Sprintf("shardline: batch failed at record %s: %v", e.Position, e.Err)
}

// Unwrap returns Err.
func (e *PartialFailureError) Unwrap() error { return e.Err }

// DeadLetter is a record the worker gave up on: its deliveries exhausted
// the configured attempts or it grew older than the configured age. It is
// handed to a [DeadLetterHandler]; the shard's checkpoint moves past the
// record only once the handler accepted it.
type DeadLetter struct {
	// ShardID is the shard the record comes from.
	ShardID string
	// Record is the record as the processor last saw it (decoded).
	Record Record
	// Attempts counts the failed deliveries of the record.
	Attempts int
	// Err is the processor's last error for it.
	Err error
	// Reason says which limit was reached: "max_attempts" or
	// "max_record_age".
	Reason string
}

// DeadLetterHandler takes the records a worker gives up on (to another
// stream, a queue, a table...). HandleDeadLetter must return nil only once
// the dead letter is stored: an error makes the worker try again after a
// backoff, and the shard does not move past the record until it succeeds.
// Shards run in parallel, so a handler must be safe for concurrent use.
type DeadLetterHandler interface {
	HandleDeadLetter(ctx context.Context, d DeadLetter) error
}
