// Package worker runs a Shardline consumer: it discovers the shards of a
// stream (or of several, see Config.Streams), shares their leases with the other workers of the same application
// through a DynamoDB table, reads each held shard in order and hands the
// records to the application's processors.
//
// # Lifecycle
//
// [New] validates the configuration. [Worker.Run] blocks while the worker
// consumes. It stops gracefully when its context is cancelled (bounded by
// Config.ShutdownTimeout) or when [Worker.Shutdown] is called (bounded by
// Shutdown's context): it stops taking leases, lets every shard finish the
// batch in flight, calls ShutdownRequested with a working checkpointer,
// checkpoints the last batch that was processed successfully, hands each
// lease to the live worker the fleet-wide plan names (which holds it from its
// next heartbeat on, without a taking round; with no other live worker the
// lease is released), and joins every goroutine before returning. Near the
// bound the processors' contexts are cancelled; at the bound, a processor or
// factory call that ignores its context is abandoned (see [Worker.Shutdown]):
// its goroutine is the only one that may outlive Run.
//
// # Concurrency
//
// One goroutine per held shard calls its processor, so ProcessRecords of one
// processor is never called concurrently, unless DeliveryPolicy.Parallelism
// is above 1 (then that many lanes call it, one key never in two at once).
// The lease manager owns two loops (heartbeat and taking) and a waiter per
// requested hand-over. Writes to one lease (load renewal, take,
// checkpoint, hand-over, release) are serialized by its handle. Lock order:
// Worker.mu before any lease lock; no worker or lease lock is held while
// calling a processor (DESIGN.md has the full table).
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
)

// Worker consumes a stream together with the other workers of the same
// application. Create it with [New], start it with [Worker.Run] and stop it
// with [Worker.Shutdown] or by cancelling Run's context.
type Worker struct {
	cfg   Config
	log   *slog.Logger
	store lease.Store

	mu         sync.Mutex
	started    bool
	shutdownCh chan struct{} // closed by Shutdown
	shutOnce   sync.Once
	graceful   chan struct{} // closed when shards must wind down
	gracefulMu sync.Once
	hardCancel context.CancelFunc
	// dutyCtx is the parent of every stop duty's context (final
	// checkpoint, release, hand-over); cancelDuties ends them when a
	// bounded stop passes its bound.
	dutyCtx      context.Context
	cancelDuties context.CancelFunc
	stopc        stopClock
	stuckErr     error         // the stop bound's error (abandoned shards), set before done closes
	done         chan struct{} // closed when Run returns
	fatalCh      chan error
	syncNow      chan struct{}
	manager      *lease.Manager
	hooks        *hooks
	running      map[string]*shardState   // lease key -> consumer, for introspection
	live         map[*shardState]struct{} // every consumer whose goroutine runs
	releases     sync.WaitGroup           // releases of leases of streams no longer consumed
	reshard      reshardState             // shard syncs, lineage waits, cleanup
	unowned      unownedReport            // shards reported by EventShardUnowned
	// smu guards streams, the streams consumed now by stream identifier
	// ("" in a single-stream worker). A leaf lock: nothing is taken
	// while it is held.
	smu     sync.RWMutex
	streams map[string]*streamState
	// health times the renewal and sync loops for Health.
	health healthState
}

// New validates cfg and returns a worker. It does not contact AWS.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:        cfg,
		log:        cfg.Logger.With("worker", cfg.WorkerID),
		shutdownCh: make(chan struct{}),
		graceful:   make(chan struct{}),
		done:       make(chan struct{}),
		fatalCh:    make(chan error, 1),
		syncNow:    make(chan struct{}, 1),
		running:    map[string]*shardState{},
		live:       map[*shardState]struct{}{},
		hooks:      newHooks(cfg.Hooks),
		streams:    map[string]*streamState{},
	}
	w.stopc.ended = make(chan struct{})
	w.hooks.guard.log = w.log
	w.store = cfg.store
	if w.store == nil {
		ds, err := lease.NewDynamoStore(cfg.DynamoDB, cfg.TableName, lease.WithDynamoLogger(cfg.Logger),
			lease.WithDynamoCallTimeout(cfg.LeaseDuration))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", kcl.ErrInvalidConfig, err)
		}
		w.store = ds
	}
	if !cfg.multiStream() {
		st, err := w.newStream(awsx.Stream{Name: cfg.StreamName, ARN: cfg.StreamARN}, "",
			cfg.StreamName, cfg.InitialPosition, cfg.ProcessorFactory)
		if err != nil {
			return nil, err
		}
		w.streams[""] = st
	}
	return w, nil
}

// ID returns the worker's ID as written in the lease table.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// HeldShards returns the IDs of the shards this worker is processing now
// (in a multi-stream worker, their lease keys ACCOUNT:STREAM:EPOCH:SHARD).
func (w *Worker) HeldShards() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.running))
	for id := range w.running {
		out = append(out, id)
	}
	return out
}

// Run consumes the stream until ctx ends or Shutdown is called, then stops
// gracefully (see the package doc) and returns nil. It returns an error
// without consuming anything when the stream or its endpoint cannot be
// reached, and an error matching kcl.ErrStreamNotFound if the stream is
// deleted while the worker runs. A multi-stream worker fails at start when
// StreamsFunc fails or a configured stream cannot be described (a missing one is skipped
// with a warning), and goes on without a stream deleted while it runs. Run
// returns an error matching kcl.ErrTableNotFound if the lease table is
// deleted (or deleted and created again) while it runs (within a heartbeat
// period and the hard stop), and an error matching context.DeadlineExceeded
// naming the shards whose callbacks were still running when a stop passed
// its bound (see Shutdown). Run may be called once.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return fmt.Errorf("%w: Run called twice", kcl.ErrShutdown)
	}
	w.started = true
	select {
	case <-w.shutdownCh:
		w.mu.Unlock()
		close(w.done)
		return kcl.ErrShutdown
	default:
	}
	base, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	w.hardCancel = hardCancel
	w.dutyCtx, w.cancelDuties = context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Unlock()
	defer close(w.done)
	defer hardCancel()
	defer w.cancelDuties()
	defer w.stopc.stopTimers()

	if err := w.start(ctx, base); err != nil {
		return err
	}
	err := w.loop(ctx)
	if err == nil && ctx.Err() != nil {
		// Stopping because ctx ended: bound the graceful stop.
		w.boundStopBy(time.Now().Add(w.cfg.ShutdownTimeout))
	}
	if stuck := w.stop(err != nil); len(stuck) > 0 {
		w.stuckErr = stuckError(stuck)
		err = errors.Join(err, w.stuckErr)
	}
	return err
}

// start checks the stream and the table, syncs shards and starts the lease
// manager.
func (w *Worker) start(ctx, base context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, w.cfg.StartupTimeout)
	defer cancel()
	if w.cfg.multiStream() {
		if err := w.retryStartup(sctx, "resolve streams", func() error { return w.refreshStreams(sctx, true) }); err != nil {
			return err
		}
	} else if err := w.retryStartup(sctx, "describe stream", func() error { return w.describeStream(sctx, w.streams[""]) }); err != nil {
		return err
	}
	if err := w.retryStartup(sctx, "ensure lease table", func() error { return w.store.EnsureTable(sctx) }); err != nil {
		return fmt.Errorf("shardline: lease table %s: %w", w.cfg.TableName, err)
	}
	if err := w.retryStartup(sctx, "shard sync", func() error { return w.syncAll(sctx) }); err != nil {
		return err
	}
	if w.cfg.FanOut != nil && !w.cfg.multiStream() { // multi-stream: see refreshStreams
		// Register (or find) the fan-out consumer now, so that a stream at
		// its consumer limit stops Run with a clear error.
		if err := w.streams[""].source.Prepare(sctx); err != nil {
			return fmt.Errorf("shardline: enhanced fan-out consumer %s: %w", w.cfg.FanOut.ConsumerName, err)
		}
	}
	w.hooks.emit(Event{Kind: EventWorkerStart, WorkerID: w.cfg.WorkerID, Stream: w.streamID()})
	w.manager = lease.NewManager(lease.ManagerConfig{
		Store:         healthStore{Store: streamsStore{Store: w.store, w: w}, h: &w.health},
		WorkerID:      w.cfg.WorkerID,
		LeaseDuration: w.cfg.LeaseDuration,
		RenewInterval: w.cfg.RenewInterval,
		TakeInterval:  w.cfg.TakeInterval,
		Logger:        w.log,
		OnAcquired:    func(h *lease.Handle) { w.startShard(base, h) },
		OnEvent:       w.hooks.leaseObserver(),
		BalanceByLoad: w.cfg.BalanceByLoad,
		OnTableLost:   w.tableLost,
		Stalls:        w.stalls,
		OnBeat:        func() { w.unowned.report(w.hooks, w.manager) },
	})
	if err := w.retryStartup(sctx, "start lease manager", func() error { return w.manager.Start(base) }); err != nil {
		return fmt.Errorf("shardline: start lease manager: %w", err)
	}
	w.health.set(func(h *healthState) { h.started = true })
	w.log.Info("worker started", "stream", w.streamID(), "table", w.cfg.TableName)
	return nil
}

// loop runs shard syncs until a stop is requested. It returns a fatal error,
// or nil for a requested stop.
func (w *Worker) loop(ctx context.Context) error {
	t := time.NewTicker(w.cfg.ShardSyncInterval)
	defer t.Stop()
	// A shard sync in flight (several streams' in a multi-stream worker)
	// is cut short by Shutdown, which must not wait for it: its writes are
	// conditional, and the next worker's sync completes it.
	syncCtx, cancelSync := context.WithCancel(ctx)
	defer cancelSync()
	go func() {
		select {
		case <-w.shutdownCh:
			cancelSync()
		case <-syncCtx.Done():
		}
	}()
	stallTick := time.NewTicker(w.stallCheckInterval())
	defer stallTick.Stop()
	defer w.unowned.close(w.hooks) // closes the shards reported
	for {
		select {
		case <-stallTick.C:
			w.checkStalls()
			continue
		case <-ctx.Done():
			w.log.Info("context ended; shutting down gracefully", "timeout", w.cfg.ShutdownTimeout)
			return nil
		case <-w.shutdownCh:
			w.log.Info("shutdown requested")
			return nil
		case err := <-w.fatalCh:
			w.log.Error("worker stopping on error", "err", err)
			return err
		case <-t.C:
		case <-w.syncNow:
		}
		w.health.set(func(h *healthState) { h.syncSince = time.Now() })
		var err error
		if w.cfg.multiStream() {
			err = w.refreshStreams(syncCtx, false)
			if err != nil && syncCtx.Err() == nil {
				w.log.Warn("refreshing the configured streams failed; keeping them as they are", "err", err)
			}
		}
		err = w.syncAll(syncCtx)
		w.health.set(func(h *healthState) { h.syncSince = time.Time{} })
		if err != nil {
			if errors.Is(err, kcl.ErrStreamNotFound) {
				return err
			}
			if errors.Is(err, kcl.ErrTableNotFound) {
				w.tableLost(err)
				return err
			}
			if syncCtx.Err() == nil {
				w.log.Warn("shard sync failed; will retry", "err", err)
			}
		}
	}
}

// stop winds the worker down: gracefully (shards finish, checkpoint and
// release) unless hard, in which case shards stop at once and release. A
// bounded stop (see stopClock) abandons the shards still running at its
// bound; stop returns their IDs.
func (w *Worker) stop(hard bool) []string {
	w.health.set(func(h *healthState) { h.stopping = true })
	w.manager.StopTaking()
	w.gracefulMu.Do(func() { close(w.graceful) })
	if hard {
		w.boundStopNow()
	}
	stuck := w.waitShards()
	cctx, cancel := w.stopc.closeContext()
	defer cancel()
	if err := w.manager.Close(cctx); err != nil {
		w.log.Warn("leaving the fleet row failed", "err", err)
	}
	w.log.Info("worker stopped")
	return stuck
}

// Shutdown stops the worker gracefully: it stops taking leases, asks every
// processor to finish (ShutdownRequested, with a working checkpointer),
// writes final checkpoints, hands the leases to the other workers (see the
// package doc; with no other live worker it releases them), and waits for every goroutine. ctx bounds it: with a
// deadline, the processors' contexts are cancelled a fifth of the time left
// (at most 2 s) before it (a hard stop: shards release without a final
// checkpoint); when ctx is cancelled without a deadline, at once. Shutdown
// and Run return by the deadline (within 2 s of a cancellation). A
// processor or factory call still running then, because it ignores its
// context, cannot be killed: its goroutine is abandoned, its lease is not
// released (it expires), and Shutdown and Run return an error matching
// context.DeadlineExceeded that names the shards. Otherwise Shutdown
// returns ctx's error if it ended, an error matching
// context.DeadlineExceeded if its deadline brought the hard stop, else nil. Calling it before Run makes
// Run return kcl.ErrShutdown at once.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.shutOnce.Do(func() { close(w.shutdownCh) })
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return nil
	}
	if d, ok := ctx.Deadline(); ok {
		w.boundStopBy(d)
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		w.boundStopNow()
		<-w.done
	}
	if w.stuckErr != nil {
		return w.stuckErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, bounded := ctx.Deadline(); bounded && w.stopc.hardDone.Load() {
		return fmt.Errorf("shardline: %w: the graceful stop did not finish before the hard stop", context.DeadlineExceeded)
	}
	return nil
}

// tableLost stops the worker because the lease table is gone (deleted, or
// deleted and created again): the worker does not go on in a table that
// has lost its checkpoints, nor create leases at InitialPosition that
// would skip the records written since. It logs, at ERROR, the last
// checkpoint stored for every shard it holds, for the operator to restore
// (kclctl) before workers start on a new table.
func (w *Worker) tableLost(err error) {
	w.mu.Lock()
	held := make(map[string]string, len(w.running))
	for id, s := range w.running {
		held[id] = s.h.Lease().Checkpoint.String()
	}
	w.mu.Unlock()
	w.log.Error("the lease table is gone; stopping. The last checkpoints this worker held are listed: "+
		"restore them in a new table before starting workers, or they start at InitialPosition",
		"table", w.cfg.TableName, "checkpoints", held, "err", err)
	w.fatal(fmt.Errorf("shardline: lease table %s: %w", w.cfg.TableName, err))
}

// fatal stops the worker with err (first error wins).
func (w *Worker) fatal(err error) {
	select {
	case w.fatalCh <- err:
	default:
	}
}

// streamID names the consumed stream (its ARN if configured so); in a
// multi-stream worker, "" (hooks and metrics learn the stream from the lease
// key).
func (w *Worker) streamID() string {
	if w.cfg.multiStream() {
		return ""
	}
	if w.cfg.StreamARN != "" {
		return w.cfg.StreamARN
	}
	return w.cfg.StreamName
}
