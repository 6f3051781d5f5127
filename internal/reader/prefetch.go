package reader

import (
	"context"
	"sync"
)

// prefetchQueue is the FIFO between a reader's fetch goroutine (the only
// producer) and Next (the consumer). It is bounded both by a number of
// batches and by the memory of their records (RecordsMemory); a single
// batch larger than the byte bound is still accepted when the queue is
// empty, so an oversized response cannot wedge the reader.
//
// Waiting uses one-slot signal channels instead of sync.Cond so that both
// sides can also wait on a context. A signal is sent after every change and
// re-sent while the condition still holds, so a waiter can never miss one.
type prefetchQueue struct {
	maxBatches int
	maxBytes   int64

	mu      sync.Mutex
	batches []queued
	bytes   int64
	err     error // why the producer stopped; reported once the queue is drained

	ready chan struct{} // a batch or err became available
	space chan struct{} // a batch was taken
}

// queued is a batch in the queue with the bytes of its record data.
type queued struct {
	b    Batch
	size int64
}

func newPrefetchQueue(maxBatches int, maxBytes int64) *prefetchQueue {
	return &prefetchQueue{
		maxBatches: maxBatches,
		maxBytes:   maxBytes,
		ready:      make(chan struct{}, 1),
		space:      make(chan struct{}, 1),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push appends b, waiting while the queue is full, until ctx ends.
//
// An empty batch that is not a shard end is merged into an empty batch still
// waiting at the tail (its MillisBehindLatest replaced, Gap kept): idle reads
// never pile up in the queue, and the consumer sees the freshest lag.
func (q *prefetchQueue) push(ctx context.Context, b Batch) error {
	size := batchBytes(b)
	for {
		q.mu.Lock()
		if n := len(q.batches); n > 0 && isIdle(b) && isIdle(q.batches[n-1].b) {
			tail := &q.batches[n-1].b
			tail.MillisBehindLatest = b.MillisBehindLatest
			tail.Gap = tail.Gap || b.Gap
			q.mu.Unlock()
			return nil
		}
		if len(q.batches) == 0 || (len(q.batches) < q.maxBatches && q.bytes+size <= q.maxBytes) {
			q.batches = append(q.batches, queued{b, size})
			q.bytes += size
			q.mu.Unlock()
			signal(q.ready)
			return nil
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.space:
		}
	}
}

// isIdle reports whether b carries nothing but a lag figure (and maybe Gap).
func isIdle(b Batch) bool { return len(b.Records) == 0 && !b.ShardEnded }

// finish records why the producer stopped. Batches already queued are still
// delivered; then pop returns err forever.
func (q *prefetchQueue) finish(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
	signal(q.ready)
}

// pop takes the oldest batch, waiting until there is one, the producer has
// finished (its error is returned), ctx ends, or stop is closed (ErrClosed).
func (q *prefetchQueue) pop(ctx context.Context, stop <-chan struct{}) (Batch, error) {
	for {
		q.mu.Lock()
		if len(q.batches) > 0 {
			e := q.batches[0]
			q.batches[0] = queued{} // let the records be collected
			q.batches = q.batches[1:]
			q.bytes -= e.size
			more := len(q.batches) > 0
			q.mu.Unlock()
			signal(q.space)
			if more {
				signal(q.ready)
			}
			return e.b, nil
		}
		if err := q.err; err != nil {
			q.mu.Unlock()
			signal(q.ready) // let any other waiter see it too
			return Batch{}, err
		}
		q.mu.Unlock()
		select {
		case <-stop:
			return Batch{}, ErrClosed
		case <-ctx.Done():
			return Batch{}, ctx.Err()
		case <-q.ready:
		}
	}
}

// len returns the number of queued batches.
func (q *prefetchQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.batches)
}
