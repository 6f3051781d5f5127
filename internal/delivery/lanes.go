package delivery

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/shardline/shardline/internal/shardproc"
	"github.com/shardline/shardline/kcl"
)

// Lanes runs up to N batches of one shard at once. Every record goes to the
// slot of its partition key (a hash of it, modulo 16N slots); a slot's
// records keep their order and one slot is never delivered by two lanes at
// once, so the records of one key keep their order and are never processed
// concurrently. N lanes take the slots with records waiting, each delivering
// the slot's waiting records as one batch under the driver's policy, through
// [shardproc.Machine.DeliverShared]. Many slots per lane keep the lanes
// evenly busy whatever the spread of the keys.
//
// The checkpoint advances only to the low-water mark: the highest position
// below which every record dispatched has been processed (or filtered out,
// or dead-lettered), whatever the processor asks. A processor's checkpoint
// request beyond it is remembered and stored once the mark reaches it.
type Lanes struct {
	d      *Driver
	m      *shardproc.Machine
	nslots int
	limit  int // Dispatch waits while this many records are not processed
	cancel context.CancelFunc
	wg     sync.WaitGroup
	onBusy func(busy int)

	mu      sync.Mutex
	base    int64 // dispatch index of track[0]
	track   []tracked
	next    int64 // dispatch index of the next record
	low     kcl.ExtendedSequenceNumber
	request kcl.ExtendedSequenceNumber // the furthest checkpoint asked for
	busy    int
	slots   map[int]*slot
	ready   []int         // slots with records waiting and no lane on them, oldest first
	err     error         // the first lane that had to stop
	changed chan struct{} // closed and replaced when track or err changes
	cpMu    sync.Mutex    // serializes the checkpoint writes of the lanes
}

type tracked struct {
	pos  kcl.ExtendedSequenceNumber
	done bool
}

type slot struct {
	waiting []laneBatch
	running bool
}

type laneBatch struct {
	recs   []kcl.Record
	idx    []int64
	behind int64
}

// NewLanes starts n lanes delivering through d's machine. Dispatch waits
// while limit records dispatched are not processed yet. onBusy, if set, is
// told the number of lanes running a batch whenever it changes. Close must
// be called to stop them.
func NewLanes(ctx context.Context, d *Driver, n, limit int, onBusy func(busy int)) *Lanes {
	ctx, cancel := context.WithCancel(ctx)
	l := &Lanes{d: d, m: d.env.Machine, nslots: 16 * n, limit: max(limit, 1), cancel: cancel, onBusy: onBusy, changed: make(chan struct{}),
		slots: map[int]*slot{}}
	if n == 1 {
		l.nslots = 1
	}
	for range n {
		l.wg.Add(1)
		go l.run(ctx)
	}
	return l
}

// laneOf returns the lane of a partition key.
func laneOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Dispatch filters b and queues its records on their slots; it waits while
// the limit of records not processed yet is reached. It returns an error when a
// lane had to stop (the shard must stop too) or ctx ended.
func (l *Lanes) Dispatch(ctx context.Context, b shardproc.Batch) error {
	if len(b.Records) == 0 {
		return l.Err()
	}
	for {
		l.mu.Lock()
		err, full, ch := l.err, len(l.track) >= l.limit, l.changed
		l.mu.Unlock()
		if err != nil {
			return err
		}
		if !full {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	all := b.Records
	kept := l.d.Filter(all)
	k := 0
	split := map[int]*laneBatch{}
	l.mu.Lock()
	for _, r := range all {
		i := l.next
		l.next++
		isKept := k < len(kept) && kept[k].SequenceNumber == r.SequenceNumber && kept[k].SubSequenceNumber == r.SubSequenceNumber
		l.track = append(l.track, tracked{pos: r.Position(), done: !isKept})
		if !isKept {
			continue
		}
		k++
		sl := laneOf(r.PartitionKey, l.nslots)
		lb := split[sl]
		if lb == nil {
			lb = &laneBatch{behind: b.MillisBehindLatest}
			split[sl] = lb
		}
		lb.recs = append(lb.recs, r)
		lb.idx = append(lb.idx, i)
	}
	l.m.Checkpointer().SetDeliveredBatch(all[0].Position(), all[len(all)-1].Position())
	for id, lb := range split {
		st := l.slots[id]
		if st == nil {
			st = &slot{}
			l.slots[id] = st
		}
		if len(st.waiting) == 0 && !st.running {
			l.ready = append(l.ready, id)
		}
		st.waiting = append(st.waiting, *lb)
	}
	l.broadcastLocked()
	l.mu.Unlock()
	if err := l.advance(ctx); err != nil { // records filtered out at the front
		l.d.env.Log.Warn("checkpoint at the low-water mark failed; a later one covers it", "err", err)
	}
	return l.Err()
}

// Drain waits until every record dispatched is processed (the low-water
// mark is the last one), a lane had to stop, or ctx ends.
func (l *Lanes) Drain(ctx context.Context) error {
	for {
		l.mu.Lock()
		err, empty, ch := l.err, len(l.track) == 0, l.changed
		l.mu.Unlock()
		switch {
		case err != nil:
			return err
		case empty:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Err returns why a lane had to stop, or nil.
func (l *Lanes) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close stops the lanes (a batch in flight is cancelled) and waits for
// them.
func (l *Lanes) Close() {
	l.cancel()
	l.wg.Wait()
}

func (l *Lanes) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// run is one lane: it takes the oldest ready slot and delivers what waits
// there as one batch.
func (l *Lanes) run(ctx context.Context) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		for len(l.ready) == 0 && l.err == nil {
			ch := l.changed
			l.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
			l.mu.Lock()
		}
		if l.err != nil {
			l.mu.Unlock()
			return
		}
		id := l.ready[0]
		l.ready = l.ready[1:]
		st := l.slots[id]
		lb := st.waiting[0]
		for _, more := range st.waiting[1:] {
			lb.recs = append(lb.recs[:len(lb.recs):len(lb.recs)], more.recs...)
			lb.idx = append(lb.idx[:len(lb.idx):len(lb.idx)], more.idx...)
			lb.behind = more.behind
		}
		st.waiting, st.running = nil, true
		l.busy++
		busy := l.busy
		l.mu.Unlock()
		if l.onBusy != nil {
			l.onBusy(busy)
		}

		t := &laneTarget{l: l, recs: lb.recs, idx: lb.idx, behind: lb.behind}
		err := l.d.run(ctx, t, shardproc.Batch{Records: lb.recs, MillisBehindLatest: lb.behind})

		l.mu.Lock()
		l.busy--
		busy = l.busy
		st.running = false
		if len(st.waiting) > 0 {
			l.ready = append(l.ready, id)
		} else {
			delete(l.slots, id)
		}
		if err != nil && l.err == nil {
			l.err = err
		}
		l.broadcastLocked()
		l.mu.Unlock()
		if l.onBusy != nil {
			l.onBusy(busy)
		}
		if err != nil {
			return
		}
	}
}

// done marks records processed and advances the mark; ask also makes their
// end a checkpoint request (a partial failure or a dead letter moves the
// checkpoint past them, as without lanes).
func (l *Lanes) done(ctx context.Context, idx []int64, ask kcl.ExtendedSequenceNumber) error {
	l.mu.Lock()
	for _, i := range idx {
		l.track[i-l.base].done = true
	}
	if !ask.IsZero() && (l.request.IsZero() || ask.Compare(l.request) > 0) {
		l.request = ask
	}
	l.mu.Unlock()
	return l.advance(ctx)
}

// advance moves the low-water mark over the records done at the front,
// tells the machine, and stores the checkpoint asked for up to the mark.
func (l *Lanes) advance(ctx context.Context) error {
	l.mu.Lock()
	n := 0
	for n < len(l.track) && l.track[n].done {
		n++
	}
	if n > 0 {
		l.low = l.track[n-1].pos
		l.track = l.track[n:]
		l.base += int64(n)
		l.broadcastLocked()
	}
	low := l.low
	l.mu.Unlock()
	if n > 0 {
		l.m.Processed(low)
	}
	return l.flush(ctx)
}

// ask records a checkpoint request and stores what the mark allows of it.
func (l *Lanes) ask(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	l.mu.Lock()
	if l.request.IsZero() || pos.Compare(l.request) > 0 {
		l.request = pos
	}
	l.mu.Unlock()
	return l.flush(ctx)
}

// flush stores min(request, low-water mark) if it is past the stored
// checkpoint.
func (l *Lanes) flush(ctx context.Context) error {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	l.mu.Lock()
	target := l.request
	if l.low.IsZero() || (!target.IsZero() && l.low.Compare(target) < 0) {
		target = l.low
	}
	l.mu.Unlock()
	cp := l.m.Checkpointer()
	if target.IsZero() || target.Compare(cp.Last()) <= 0 {
		return nil
	}
	return cp.CheckpointAt(ctx, target)
}

// lowWater returns the mark.
func (l *Lanes) lowWater() kcl.ExtendedSequenceNumber {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.low
}

// laneTarget is one lane's batch, delivered with DeliverShared.
type laneTarget struct {
	l        *Lanes
	recs     []kcl.Record
	idx      []int64
	behind   int64
	attempts int
}

func (t *laneTarget) first(ctx context.Context, b shardproc.Batch) error {
	return t.part(ctx, len(t.recs))
}
func (t *laneTarget) pending() []kcl.Record       { return t.recs }
func (t *laneTarget) whole(context.Context) error { return nil }

func (t *laneTarget) part(ctx context.Context, n int) error {
	t.attempts++
	recs := t.recs[:n:n]
	cp := &laneCheckpointer{l: t.l, end: recs[n-1].Position()}
	if err := t.l.m.DeliverShared(ctx, shardproc.Batch{Records: recs, MillisBehindLatest: t.behind}, t.attempts, cp); err != nil {
		return err
	}
	t.attempts = 0
	return t.settleAs(ctx, n, kcl.ExtendedSequenceNumber{})
}

func (t *laneTarget) settle(ctx context.Context, n int) error {
	if n == 0 {
		return nil
	}
	return t.settleAs(ctx, n, t.recs[n-1].Position())
}

func (t *laneTarget) settleAs(ctx context.Context, n int, ask kcl.ExtendedSequenceNumber) error {
	idx := t.idx[:n]
	t.recs, t.idx = t.recs[n:], t.idx[n:]
	err := t.l.done(ctx, idx, ask)
	if errors.Is(err, kcl.ErrLeaseLost) {
		return &stop{err}
	}
	if err != nil {
		t.l.d.env.Log.Warn("checkpoint at the low-water mark failed; a later one covers it", "err", err)
	}
	return nil
}

// laneCheckpointer is the checkpointer a lane's processor call receives: a
// checkpoint is a request, stored as far as the low-water mark allows.
type laneCheckpointer struct {
	l   *Lanes
	end kcl.ExtendedSequenceNumber // the call's last record
}

var _ kcl.Checkpointer = (*laneCheckpointer)(nil)

// Checkpoint asks for the end of the call's batch.
func (c *laneCheckpointer) Checkpoint(ctx context.Context) error { return c.l.ask(ctx, c.end) }

// CheckpointAt asks for pos.
func (c *laneCheckpointer) CheckpointAt(ctx context.Context, pos kcl.ExtendedSequenceNumber) error {
	cp := c.l.m.Checkpointer()
	if err := pos.Validate(); err != nil || pos.IsSentinel() || pos.SubSequenceNumber < 0 ||
		pos.Compare(cp.Delivered()) > 0 || pos.Compare(cp.Last()) < 0 {
		return fmt.Errorf("%w: %s is not between the stored checkpoint %s and the last delivered record %s",
			kcl.ErrInvalidCheckpoint, pos, cp.Last(), cp.Delivered())
	}
	return c.l.ask(ctx, pos)
}

// CheckpointRecord asks for r's position.
func (c *laneCheckpointer) CheckpointRecord(ctx context.Context, r kcl.Record) error {
	return c.CheckpointAt(ctx, r.Position())
}

// Prepare is refused beyond the low-water mark: the state it would store
// could describe records another lane has not processed.
func (c *laneCheckpointer) Prepare(ctx context.Context, pos kcl.ExtendedSequenceNumber, state []byte) (kcl.PreparedCheckpoint, error) {
	if low := c.l.lowWater(); low.IsZero() || pos.Compare(low) > 0 {
		return nil, fmt.Errorf("%w: %s is beyond the low-water mark %s of the shard's lanes", kcl.ErrInvalidCheckpoint, pos, low)
	}
	return c.l.m.Checkpointer().Prepare(ctx, pos, state)
}

// Last returns the stored checkpoint.
func (c *laneCheckpointer) Last() kcl.ExtendedSequenceNumber { return c.l.m.Checkpointer().Last() }
