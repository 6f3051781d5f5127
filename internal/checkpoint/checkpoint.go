// Package checkpoint implements the [kcl.Checkpointer] handed to record
// processors: it validates every checkpoint against the rule
// last checkpoint <= target <= largest delivered record (and refuses the
// sequence numbers of other shards where their format tells, see
// [OtherShard]), supports two-phase
// (prepared) checkpoints carrying application state, and stores them through
// a small [Writer] that the lease layer satisfies with conditional writes.
package checkpoint

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/shardline/shardline/kcl"
)

// State is what one checkpoint write stores.
type State struct {
	// Checkpoint is the position processed so far.
	Checkpoint kcl.ExtendedSequenceNumber
	// Pending is a prepared checkpoint; zero when there is none.
	Pending kcl.ExtendedSequenceNumber
	// PendingState is application state stored with Pending.
	PendingState []byte
}

// Writer stores checkpoint states for one shard. Implementations must make
// the write conditional on still holding the shard's lease and fail with an
// error matching kcl.ErrLeaseLost otherwise.
type Writer interface {
	WriteCheckpoint(ctx context.Context, s State) error
}

// WriterFunc adapts a function to [Writer].
type WriterFunc func(ctx context.Context, s State) error

// WriteCheckpoint calls f(ctx, s).
func (f WriterFunc) WriteCheckpoint(ctx context.Context, s State) error { return f(ctx, s) }

// Checkpointer is the [kcl.Checkpointer] of one shard.
type Checkpointer struct {
	shardID string
	w       Writer

	mu        sync.Mutex
	last      kcl.ExtendedSequenceNumber
	pending   kcl.ExtendedSequenceNumber
	delivered kcl.ExtendedSequenceNumber
	// shardNo is the number of the shard (from its ID; noShardNumber if
	// the ID has another form). carries is set while the first and last
	// record of every batch delivered carried it in their sequence numbers
	// (see seqShard): only then are the sequence numbers of other shards
	// told apart. Emulators and test fakes that make sequence numbers up
	// turn it off at their first batch.
	shardNo int64
	carries bool
}

var _ kcl.Checkpointer = (*Checkpointer)(nil)

// New returns the checkpointer of shardID whose stored checkpoint is last
// (a sentinel when the shard was never checkpointed).
func New(shardID string, w Writer, last kcl.ExtendedSequenceNumber) *Checkpointer {
	n := shardNumber(shardID)
	return &Checkpointer{shardID: shardID, w: w, last: last, shardNo: n, carries: n != noShardNumber}
}

// SetDelivered records that every record up to pos has been handed to the
// processor. The worker calls it before each delivery; pos only grows.
// kcl.ShardEnd allows checkpointing SHARD_END.
func (c *Checkpointer) SetDelivered(pos kcl.ExtendedSequenceNumber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setDeliveredLocked(pos)
}

// SetDeliveredBatch is SetDelivered(last) for a batch of records from
// first to last; knowing where the batch begins lets the checkpointer
// refuse sequence numbers of other shards (see CheckpointAt).
func (c *Checkpointer) SetDeliveredBatch(first, last kcl.ExtendedSequenceNumber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.carries = c.carries && seqShard(first.SequenceNumber) == c.shardNo
	c.setDeliveredLocked(last)
}

func (c *Checkpointer) setDeliveredLocked(pos kcl.ExtendedSequenceNumber) {
	if !pos.IsSentinel() {
		c.carries = c.carries && seqShard(pos.SequenceNumber) == c.shardNo
	}
	if c.delivered.IsZero() || pos.Compare(c.delivered) > 0 {
		c.delivered = pos
	}
}

// Delivered returns the largest position delivered so far (zero if none).
func (c *Checkpointer) Delivered() kcl.ExtendedSequenceNumber {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.delivered
}

// Last returns the last stored checkpoint.
func (c *Checkpointer) Last() kcl.ExtendedSequenceNumber {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Checkpoint stores the position of the last record delivered so far. With
// nothing delivered yet it does nothing.
func (c *Checkpointer) Checkpoint(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.delivered.IsZero() {
		return nil
	}
	return c.storeLocked(ctx, c.delivered)
}

// CheckpointAt stores pos after checking last <= pos <= delivered, and, when
// the sequence numbers of the records delivered carry the shard's number
// (as Kinesis' do, see OtherShard), that pos carries it too.
func (c *Checkpointer) CheckpointAt(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkLocked(pos); err != nil {
		return err
	}
	return c.storeLocked(ctx, pos)
}

// CheckpointRecord stores the position of r.
func (c *Checkpointer) CheckpointRecord(ctx context.Context, r kcl.Record) error {
	return c.CheckpointAt(ctx, r.Position())
}

// Prepare stores pos as a pending checkpoint with state; Commit on the
// result makes it the checkpoint.
func (c *Checkpointer) Prepare(ctx context.Context, pos kcl.ExtendedSequenceNumber, state []byte) (kcl.PreparedCheckpoint, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkLocked(pos); err != nil {
		return nil, err
	}
	s := State{Checkpoint: c.last, Pending: pos, PendingState: slices.Clone(state)}
	if err := c.w.WriteCheckpoint(ctx, s); err != nil {
		return nil, c.wrap("prepare checkpoint", err)
	}
	c.pending = pos
	return &prepared{c: c, pos: pos}, nil
}

func (c *Checkpointer) checkLocked(pos kcl.ExtendedSequenceNumber) error {
	if err := pos.Validate(); err != nil || pos.IsZero() {
		return c.wrap("checkpoint", fmt.Errorf("%w: %q", kcl.ErrInvalidCheckpoint, pos.String()))
	}
	if pos.SubSequenceNumber < 0 {
		// (S, -1) is what a replay stores before S; no record has it.
		return c.wrap("checkpoint", fmt.Errorf("%w: %s has a negative sub-sequence number", kcl.ErrInvalidCheckpoint, pos))
	}
	if pos.IsSentinel() && !pos.IsShardEnd() {
		return c.wrap("checkpoint", fmt.Errorf("%w: %s is not a record position", kcl.ErrInvalidCheckpoint, pos))
	}
	if c.delivered.IsZero() || pos.Compare(c.delivered) > 0 {
		return c.wrap("checkpoint", fmt.Errorf("%w: %s is after the last delivered record %s",
			kcl.ErrInvalidCheckpoint, pos, orNone(c.delivered)))
	}
	if pos.Compare(c.last) < 0 {
		return c.wrap("checkpoint", fmt.Errorf("%w: %s is before the stored checkpoint %s",
			kcl.ErrInvalidCheckpoint, pos, c.last))
	}
	// Within that range, the sequence numbers of other shards (and made-up
	// ones) are refused where the format tells: records of one shard carry
	// its number.
	if c.carries && !pos.IsShardEnd() && pos.Compare(c.last) != 0 &&
		seqShard(pos.SequenceNumber) != c.shardNo {
		return c.wrap("checkpoint", fmt.Errorf("%w: %s is not a sequence number of this shard", kcl.ErrInvalidCheckpoint, pos))
	}
	return nil
}

func (c *Checkpointer) storeLocked(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	if pos.Compare(c.last) == 0 && pos.SequenceNumber == c.last.SequenceNumber && c.pending.IsZero() {
		return nil // already stored
	}
	if pos.Compare(c.last) < 0 {
		return c.wrap("checkpoint", fmt.Errorf("%w: %s is before the stored checkpoint %s",
			kcl.ErrInvalidCheckpoint, pos, c.last))
	}
	if err := c.w.WriteCheckpoint(ctx, State{Checkpoint: pos}); err != nil {
		return c.wrap("checkpoint", err)
	}
	c.last = pos
	c.pending = kcl.ExtendedSequenceNumber{}
	return nil
}

func (c *Checkpointer) wrap(op string, err error) error {
	return fmt.Errorf("shardline: shard %s: %s: %w", c.shardID, op, err)
}

func orNone(p kcl.ExtendedSequenceNumber) string {
	if p.IsZero() {
		return "(none)"
	}
	return p.String()
}

type prepared struct {
	c   *Checkpointer
	pos kcl.ExtendedSequenceNumber
}

func (p *prepared) Position() kcl.ExtendedSequenceNumber { return p.pos }

func (p *prepared) Commit(ctx context.Context) error {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	if p.pos.Compare(p.c.last) < 0 {
		return p.c.wrap("commit checkpoint", fmt.Errorf("%w: %s is before the stored checkpoint %s",
			kcl.ErrInvalidCheckpoint, p.pos, p.c.last))
	}
	if err := p.c.w.WriteCheckpoint(ctx, State{Checkpoint: p.pos}); err != nil {
		return p.c.wrap("commit checkpoint", err)
	}
	p.c.last = p.pos
	p.c.pending = kcl.ExtendedSequenceNumber{}
	return nil
}
