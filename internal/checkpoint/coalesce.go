package checkpoint

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"sync"
	"time"

	"github.com/shardline/shardline/internal/lease"
)

// Coalescer is a [Writer] that writes a shard's checkpoints at most once
// per interval: a checkpoint that comes sooner after the last write is
// recorded (the [Checkpointer] accepts it at once) and held, to be written
// by the next checkpoint due, by FlushDue once the interval has passed, or
// by Flush. Prepared (two-phase) checkpoints and SHARD_END are written at
// once, with whatever was held.
//
// After a crash the next owner starts after the last checkpoint written,
// so the records processed since the last held one was recorded, up to an
// interval's worth, are delivered again: coalescing widens the duplicates
// of a crash by at most the interval (plus the batch in flight, as
// always). Planned stops lose nothing to it: the worker flushes before a
// hand-over, a release and at shard end.
type Coalescer struct {
	w     Writer
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	held    *State    // recorded but not written; nil if none
	written time.Time // when the last write was sent
}

// NewCoalescer returns a Coalescer writing through w at most once per
// every, timed by now (time.Now if nil).
func NewCoalescer(w Writer, every time.Duration, now func() time.Time) *Coalescer {
	if now == nil {
		now = time.Now
	}
	return &Coalescer{w: w, every: every, now: now}
}

// WriteCheckpoint writes s if the interval has passed since the last write
// (or s is a prepared checkpoint or SHARD_END), and otherwise holds it and
// returns nil.
func (c *Coalescer) WriteCheckpoint(ctx context.Context, s State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.Pending.IsZero() && !s.Checkpoint.IsShardEnd() && c.now().Sub(c.written) < c.every {
		c.held = &s
		return nil
	}
	return c.writeLocked(ctx, s)
}

// FlushDue writes the held checkpoint if the interval has passed since the
// last write. The worker calls it as it reads the shard, so that an idle
// shard's last checkpoint is not held for long.
func (c *Coalescer) FlushDue(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil || c.now().Sub(c.written) < c.every {
		return nil
	}
	return c.writeLocked(ctx, *c.held)
}

// Flush writes the held checkpoint, if any, now.
func (c *Coalescer) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		return nil
	}
	return c.writeLocked(ctx, *c.held)
}

// Held reports whether a checkpoint waits to be written.
func (c *Coalescer) Held() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held != nil
}

func (c *Coalescer) writeLocked(ctx context.Context, s State) error {
	sent := c.now()
	if err := c.w.WriteCheckpoint(ctx, s); err != nil {
		return err
	}
	c.held, c.written = nil, sent
	return nil
}

// WriteCheckpointTx commits items with s in one transaction through the
// underlying writer when it is a [TxWriter] (it fails with an error matching
// lease.ErrTransactUnsupported otherwise). A transaction is never held: it is the
// application's writes' only commit. A held checkpoint at or before s is
// dropped once the transaction committed, so that it can never move the
// checkpoint back.
func (c *Coalescer) WriteCheckpointTx(ctx context.Context, s State, items []types.TransactWriteItem) error {
	tw, ok := c.w.(TxWriter)
	if !ok {
		return fmt.Errorf("%w (checkpoint writer %T)", lease.ErrTransactUnsupported, c.w)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sent := c.now()
	if err := tw.WriteCheckpointTx(ctx, s, items); err != nil {
		return err
	}
	if c.held != nil && c.held.Checkpoint.Compare(s.Checkpoint) <= 0 {
		c.held = nil
	}
	c.written = sent
	return nil
}
