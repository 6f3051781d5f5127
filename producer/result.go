package producer

import "context"

// Receipt says where Kinesis stored a user record.
type Receipt struct {
	// ShardID is the shard that holds the record.
	ShardID string
	// SequenceNumber is the Kinesis record's sequence number; with
	// aggregation, the aggregate's, shared by its user records.
	SequenceNumber string
	// SubSequenceNumber is the user record's index inside its aggregate (0
	// for a record sent on its own). A consumer sees the record at this
	// (SequenceNumber, SubSequenceNumber) position.
	SubSequenceNumber int64
	// Aggregated reports whether the record went inside a KPL aggregate.
	Aggregated bool
	// Attempts counts the PutRecords calls that carried the record.
	Attempts int
}

// Result is the outcome of one accepted record, known once Done is closed.
// Every accepted record gets an outcome: written, or failed with an error
// (after Config.RetryTimeout, on a permanent refusal, or when Close gives
// up); none is dropped silently.
type Result struct {
	done    chan struct{}
	receipt Receipt
	err     error
}

func newResult() *Result { return &Result{done: make(chan struct{})} }

// Done is closed when the record has been written or has failed.
func (r *Result) Done() <-chan struct{} { return r.done }

// Wait blocks until the outcome is known or ctx ends, and returns where the
// record was stored, or its final error (a *PutError, or one matching
// ErrClosed). If ctx ends first it returns ctx's error; the record is still
// in the producer's hands.
func (r *Result) Wait(ctx context.Context) (Receipt, error) {
	select {
	case <-r.done:
		return r.receipt, r.err
	case <-ctx.Done():
		return Receipt{}, ctx.Err()
	}
}
