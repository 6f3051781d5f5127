package kcl

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by Shardline wrap them, so test with
// errors.Is.
var (
	// ErrInvalidConfig reports a configuration refused at construction.
	ErrInvalidConfig = errors.New("shardline: invalid configuration")
	// ErrLeaseLost reports a checkpoint or lease write refused because
	// another worker now holds the lease (or it expired).
	ErrLeaseLost = errors.New("shardline: lease lost")
	// ErrInvalidCheckpoint reports a checkpoint position before the last
	// checkpoint or after the last delivered record, a sequence number of
	// another shard, or a malformed one; also a stored checkpoint that
	// cannot be read from.
	ErrInvalidCheckpoint = errors.New("shardline: invalid checkpoint position")
	// ErrStreamNotFound reports a stream that does not exist.
	ErrStreamNotFound = errors.New("shardline: stream not found")
	// ErrTableNotFound reports a lease table that does not exist.
	ErrTableNotFound = errors.New("shardline: lease table not found")
	// ErrShutdown reports an operation refused because the worker is shutting
	// down or has stopped.
	ErrShutdown = errors.New("shardline: worker shut down")
	// ErrThrottled reports a request the service throttled.
	ErrThrottled = errors.New("shardline: throttled")
)

// ProcessorPanicError is the error recorded when a processor panics. The
// batch is retried like after any other processor error.
type ProcessorPanicError struct {
	// Value is what the processor panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack []byte
}

// Error implements error.
func (e *ProcessorPanicError) Error() string {
	return fmt.Sprintf("shardline: processor panicked: %v", e.Value)
}
