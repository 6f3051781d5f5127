package multilang

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shardline/shardline/kcl"
)

// DefaultShutdownGrace is how long a child gets to exit after its stdin was
// closed, unless Options.ShutdownGrace says otherwise.
const DefaultShutdownGrace = 10 * time.Second

// Options configures the processors of a [Factory].
type Options struct {
	// Command is the child's program and arguments. Required.
	Command []string
	// Dir is the child's working directory; empty: the daemon's.
	Dir string
	// Env is the child's environment; nil: the daemon's.
	Env []string
	// Timeout is the longest a child may stay silent while an action is in
	// progress (and the longest a write to its stdin may block). A child
	// past it is killed and the action fails. Zero: no limit, as in the
	// Java daemon without timeoutInSeconds.
	Timeout time.Duration
	// ShutdownGrace is how long a child may take to exit once its stdin is
	// closed after leaseLost, shardEnded or shutdownRequested. Default
	// DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// Logger receives the daemon's logs and the children's stderr lines.
	// Default: slog.Default().
	Logger *slog.Logger
}

// Factory makes one [Processor] per shard; its New method is a
// kcl.ProcessorFactory.
type Factory struct {
	opts Options

	mu     sync.Mutex
	procs  map[string]*Processor
	closed bool
}

// NewFactory checks opts and returns a factory.
func NewFactory(opts Options) (*Factory, error) {
	if len(opts.Command) == 0 || opts.Command[0] == "" {
		return nil, fmt.Errorf("%w: multilang: no executable to run", kcl.ErrInvalidConfig)
	}
	if opts.Timeout < 0 || opts.ShutdownGrace < 0 {
		return nil, fmt.Errorf("%w: multilang: negative timeout", kcl.ErrInvalidConfig)
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Factory{opts: opts, procs: make(map[string]*Processor)}, nil
}

// New returns the processor of shardID. The worker runs at most one
// processor per shard at a time; a processor it stopped without a final
// callback (a hard stop) still has its child, which New kills first.
func (f *Factory) New(shardID string) (kcl.RecordProcessor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("%w: multilang factory closed", kcl.ErrShutdown)
	}
	if old := f.procs[shardID]; old != nil {
		old.kill("replaced by a new processor of the shard")
	}
	p := &Processor{opts: &f.opts, shard: shardID, log: f.opts.Logger.With("shard", shardID)}
	f.procs[shardID] = p
	return p, nil
}

// Close kills the children still running. Call it after the worker's Run
// returned; New fails afterwards.
func (f *Factory) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for id, p := range f.procs {
		p.kill("daemon stopping")
		delete(f.procs, id)
	}
}

// Processor drives the child process of one shard. It implements
// kcl.RecordProcessor and the lifecycle interfaces; the worker calls it from
// one goroutine at a time.
type Processor struct {
	opts  *Options
	shard string
	log   *slog.Logger

	mu    sync.Mutex // held by every call; Factory.Close takes it too
	child *child
	start kcl.ExtendedSequenceNumber // position given to Initialize
	buf   []byte                     // the processRecords message, reused
	// pending is the action a cancelled call left the child working on.
	pending string
}

var (
	_ kcl.RecordProcessor          = (*Processor)(nil)
	_ kcl.Initializer              = (*Processor)(nil)
	_ kcl.LeaseLostHandler         = (*Processor)(nil)
	_ kcl.ShardEndedHandler        = (*Processor)(nil)
	_ kcl.ShutdownRequestedHandler = (*Processor)(nil)
)

// Initialize starts the child and sends it initialize.
func (p *Processor) Initialize(ctx context.Context, in kcl.InitializeInput) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start = in.Checkpoint
	return p.ensure(ctx, nil)
}

// ProcessRecords sends the batch and answers the child's checkpoint
// requests until it reports the batch done. Any failure of the child kills
// it and returns an error, so that the worker delivers the batch again
// (after a backoff) to a new child started at the shard's checkpoint.
func (p *Processor) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.ensure(ctx, in.Checkpointer); err != nil {
		return err
	}
	p.buf = appendProcessRecords(p.buf[:0], in)
	err := p.call(ctx, p.buf, actProcessRecords, in.Checkpointer)
	if cap(p.buf) > 4<<20 {
		p.buf = nil // do not keep a huge batch's buffer
	}
	return err
}

// LeaseLost tells the child the shard is gone (it can no longer
// checkpoint) and lets it exit.
func (p *Processor) LeaseLost(ctx context.Context, _ kcl.LeaseLostInput) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.dropPending()
	if err := p.settle(ctx); err != nil || p.child == nil {
		return err
	}
	if err := p.call(ctx, bareMsg{Action: actLeaseLost}, actLeaseLost, nil); err != nil {
		return err
	}
	p.closeChild()
	return nil
}

// ShardEnded tells the child its shard was read to the end; the child must
// checkpoint (SHARD_END) before its status reply. The child then exits. If
// it failed, the worker calls ShardEnded again and a new child is started.
func (p *Processor) ShardEnded(ctx context.Context, in kcl.ShardEndedInput) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.ensure(ctx, in.Checkpointer); err != nil {
		return err
	}
	if err := p.call(ctx, bareMsg{Action: actShardEnded}, actShardEnded, in.Checkpointer); err != nil {
		return err
	}
	p.closeChild()
	return nil
}

// OwnCheckpoints tells the worker not to checkpoint on the child's behalf
// after shutdownRequested: only the checkpoints the child asks for are
// stored, as with the Java daemon.
func (p *Processor) OwnCheckpoints() bool { return true }

// ShutdownRequested gives the child a last chance to checkpoint before the
// lease is released or handed over, tells it the lease is gone (leaseLost),
// then lets it exit.
func (p *Processor) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.dropPending()
	if err := p.settle(ctx); err != nil || p.child == nil {
		return err
	}
	if err := p.call(ctx, bareMsg{Action: actShutdownRequested}, actShutdownRequested, in.Checkpointer); err != nil {
		return err
	}
	// As the Java daemon does, the shard's end for this child is then a
	// leaseLost (any stop other than a shard end is).
	if err := p.call(ctx, bareMsg{Action: actLeaseLost}, actLeaseLost, nil); err != nil {
		return err
	}
	p.closeChild()
	return nil
}

// ensure starts a child and initializes it if none runs. A restarted child
// starts at the shard's stored checkpoint.
func (p *Processor) ensure(ctx context.Context, cp kcl.Checkpointer) error {
	if err := p.settle(ctx); err != nil {
		return err
	}
	if p.child != nil {
		return nil
	}
	pos := p.start
	if cp != nil && !cp.Last().IsZero() {
		pos = cp.Last()
	}
	c, err := startChild(p.shard, p.opts.Command, p.opts.Dir, p.opts.Env, p.log)
	if err != nil {
		p.log.Error("cannot start the record processor", "err", err)
		return err
	}
	p.child = c
	msg := initializeMsg{Action: actInitialize, ShardID: p.shard, SequenceNumber: pos.SequenceNumber,
		SubSequenceNumber: pos.SubSequenceNumber}
	return p.call(ctx, msg, actInitialize, nil)
}

// call sends msg and waits for the child's status for action, serving its
// checkpoint requests through cp (nil: none possible). On failure the child
// is killed. When ctx ends first, the child is left to finish the action
// (see settle).
func (p *Processor) call(ctx context.Context, msg any, action string, cp kcl.Checkpointer) error {
	if err := p.child.send(msg, p.opts.Timeout); err != nil {
		return p.fail(action, err)
	}
	return p.await(ctx, action, cp, excInvalidState)
}

// await waits for the child's status for action. Checkpoint requests go to
// cp; without one they are refused with the exception named refuse.
func (p *Processor) await(ctx context.Context, action string, cp kcl.Checkpointer, refuse string) error {
	c := p.child
	for {
		var m childMsg
		err := ctx.Err() // once the caller stopped waiting, stop reading
		if err == nil {
			m, err = c.next(ctx, p.opts.Timeout)
		}
		switch {
		case err != nil && ctx.Err() != nil && !c.ended():
			// The worker stopped waiting (lease lost, hard stop): the
			// child is not killed in the middle of its work; the next
			// call waits for it first.
			p.pending = action
			p.log.Info("call cancelled while the record processor works; it may finish", "action", action)
			return err
		case err != nil:
			return p.fail(action, err)
		case m.Action == actCheckpoint:
			if err := c.send(p.checkpoint(ctx, m, cp, refuse), p.opts.Timeout); err != nil {
				return p.fail(action, err)
			}
		case m.ResponseFor != action:
			return p.fail(action, fmt.Errorf("%w: status for %q while waiting for %q", ErrProtocol, m.ResponseFor, action))
		default:
			return nil
		}
	}
}

// settle waits for the end of an action whose call was cancelled. Its
// checkpoint requests are refused: the shard is being given up.
func (p *Processor) settle(ctx context.Context) error {
	if p.pending == "" || p.child == nil {
		p.pending = ""
		return nil
	}
	action := p.pending
	p.pending = ""
	return p.await(ctx, action, nil, excShutdown)
}

// fail kills the child after a failed action and returns the error, with
// the child's last stderr lines.
func (p *Processor) fail(action string, err error) error {
	c := p.child
	c.kill()
	p.child = nil
	tail := c.stderrTail()
	p.log.Error("record processor failed; it was stopped and the shard will be retried with a new one",
		"action", action, "err", err, "stderr_tail", tail)
	if tail != "" {
		return fmt.Errorf("shard %s: %s: %w (stderr tail:\n%s)", p.shard, action, err, tail)
	}
	return fmt.Errorf("shard %s: %s: %w", p.shard, action, err)
}

// checkpoint serves one checkpoint request and returns the reply.
func (p *Processor) checkpoint(ctx context.Context, m childMsg, cp kcl.Checkpointer, refuse string) checkpointReply {
	reply := checkpointReply{Action: actCheckpoint, SequenceNumber: m.SequenceNumber, SubSequenceNumber: m.SubSequenceNumber}
	var err error
	var name string
	switch {
	case cp == nil:
		err, name = errors.New("no checkpoint possible now"), refuse
	case m.SequenceNumber == nil:
		err = cp.Checkpoint(ctx)
	default:
		pos := kcl.ExtendedSequenceNumber{SequenceNumber: *m.SequenceNumber}
		if m.SubSequenceNumber != nil {
			pos.SubSequenceNumber = *m.SubSequenceNumber
		}
		err = cp.CheckpointAt(ctx, pos)
	}
	if err != nil {
		if name == "" {
			name = exceptionName(err)
		}
		reply.Error = &name
		p.log.Warn("checkpoint requested by the record processor failed", "err", err, "reported_as", name)
	}
	return reply
}

// closeChild closes the child's stdin and waits for it to exit.
func (p *Processor) closeChild() {
	c := p.child
	p.child = nil
	if err := c.close(p.opts.ShutdownGrace); err != nil {
		p.log.Warn("record processor exited with an error", "err", err, "stderr_tail", c.stderrTail())
		return
	}
	p.log.Info("record processor exited")
}

// kill kills the child, if any.
func (p *Processor) kill(why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop(why)
}

// dropPending kills a child still working on a cancelled action at the
// end of a call after which no other comes (leaseLost, shutdownRequested);
// p.mu is held.
func (p *Processor) dropPending() {
	if p.pending != "" {
		p.drop("it did not finish its last action before the shard was given up")
	}
}

// drop kills the child, if any; p.mu is held.
func (p *Processor) drop(why string) {
	if p.child != nil {
		p.log.Info("killing record processor", "reason", why)
		p.child.kill()
		p.child = nil
	}
	p.pending = ""
}
