// Package worker runs a Shardline consumer: it discovers the shards of a
// stream, shares their leases with the other workers of the same application
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
// checkpoints the last batch that was processed successfully, releases the
// leases so that other workers take them at once, and joins every goroutine
// before returning.
//
// # Concurrency
//
// One goroutine per held shard calls its processor, so ProcessRecords of one
// processor is never called concurrently. The lease manager owns two
// goroutines (renewal and taking). Writes to one lease (renewal, checkpoint,
// release) are serialized by its handle. Lock order: Worker.mu before any
// lease lock; no lock is held while calling a processor.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// Worker consumes a stream together with the other workers of the same
// application. Create it with [New], start it with [Worker.Run] and stop it
// with [Worker.Shutdown] or by cancelling Run's context.
type Worker struct {
	cfg    Config
	log    *slog.Logger
	store  lease.Store
	source *reader.Shards

	mu         sync.Mutex
	started    bool
	shutdownCh chan struct{} // closed by Shutdown
	shutOnce   sync.Once
	graceful   chan struct{} // closed when shards must wind down
	gracefulMu sync.Once
	hardCancel context.CancelFunc
	done       chan struct{} // closed when Run returns
	fatalCh    chan error
	syncNow    chan struct{}
	shards     sync.WaitGroup
	manager    *lease.Manager
	leases     atomic.Pointer[lease.Manager] // manager, for reads from other goroutines
	hooks      *hooks
	running    map[string]*shardState // shard ID -> consumer, for introspection
	reshard    reshardState           // shard syncs, lineage waits, cleanup
	// recordStats counts de-aggregation and decoding anomalies.
	recordStats reader.RecordStats
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
		hooks:      newHooks(cfg.Hooks),
	}
	w.store = cfg.store
	if w.store == nil {
		ds, err := lease.NewDynamoStore(cfg.DynamoDB, cfg.TableName, lease.WithDynamoLogger(cfg.Logger),
			lease.WithDynamoCallTimeout(cfg.LeaseDuration))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", kcl.ErrInvalidConfig, err)
		}
		w.store = ds
	}
	records := reader.RecordOptions{
		DisableDeaggregation: cfg.DisableDeaggregation,
		Decoder:              cfg.RecordDecoder,
		Stats:                &w.recordStats,
	}
	opts := reader.Options{
		StreamName:           cfg.StreamName,
		StreamARN:            cfg.StreamARN,
		MaxRecords:           cfg.MaxRecords,
		IdleTimeBetweenReads: cfg.IdleTimeBetweenReads,
		PrefetchBatches:      cfg.PrefetchBatches,
		PrefetchBytes:        int64(cfg.PrefetchBytes),
		Logger:               cfg.Logger,
		Observer:             w.observeFetchHooks,
		Records:              records,
	}
	if cfg.FanOut != nil {
		opts.ConsumerName, opts.EventTimeout = cfg.FanOut.ConsumerName, cfg.FanOut.EventTimeout
	}
	var err error
	if cfg.FanOut != nil {
		w.source, err = reader.NewFanOut(cfg.Kinesis.(fanout.FanOutAPI), opts)
	} else {
		w.source, err = reader.NewPolling(cfg.Kinesis, opts)
	}
	if err != nil {
		return nil, err
	}
	return w, nil
}

// RecordCounts returns running totals of what KPL de-aggregation and the
// RecordDecoder met on every shard this worker read: aggregates unpacked,
// malformed aggregates delivered raw, aggregates dropped as outside a shard's
// hash key range, decoder failures.
func (w *Worker) RecordCounts() RecordCounts {
	c := w.recordStats.Counts()
	return RecordCounts{Aggregates: c.Aggregates, AggregatedUserRecords: c.AggregatedUserRecords,
		MalformedAggregates: c.MalformedAggregates, DroppedAggregates: c.DroppedAggregates,
		DroppedUserRecords: c.DroppedUserRecords, DecodeFailures: c.DecodeFailures}
}

// ID returns the worker's ID as written in the lease table.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// HeldShards returns the IDs of the shards this worker is processing now.
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
// deleted while the worker runs. Run may be called once.
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
	w.mu.Unlock()
	defer close(w.done)
	defer hardCancel()

	if err := w.start(ctx, base); err != nil {
		return err
	}
	err := w.loop(ctx)
	if err == nil && ctx.Err() != nil {
		// Stopping because ctx ended: bound the graceful stop.
		timer := time.AfterFunc(w.cfg.ShutdownTimeout, hardCancel)
		defer timer.Stop()
	}
	w.stop(err != nil)
	return err
}

// start checks the stream and the table, syncs shards and starts the lease
// manager.
func (w *Worker) start(ctx, base context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, w.cfg.StartupTimeout)
	defer cancel()
	if err := w.retryStartup(sctx, "describe stream", func() error { return w.describeStream(sctx) }); err != nil {
		return err
	}
	if err := w.retryStartup(sctx, "ensure lease table", func() error { return w.store.EnsureTable(sctx) }); err != nil {
		return fmt.Errorf("shardline: lease table %s: %w", w.cfg.TableName, err)
	}
	if err := w.retryStartup(sctx, "shard sync", func() error { return w.syncShards(sctx) }); err != nil {
		return err
	}
	if w.cfg.FanOut != nil {
		// Register (or find) the fan-out consumer now, so that a stream at
		// its consumer limit stops Run with a clear error.
		if err := w.source.Prepare(sctx); err != nil {
			return fmt.Errorf("shardline: enhanced fan-out consumer %s: %w", w.cfg.FanOut.ConsumerName, err)
		}
	}
	w.hooks.onWorkerStart(WorkerStartEvent{WorkerID: w.cfg.WorkerID, Stream: w.streamID(),
		ApplicationName: w.cfg.ApplicationName, RecordCounts: w.RecordCounts, Unowned: w.unowned})
	w.manager = lease.NewManager(lease.ManagerConfig{
		Store:         healthStore{Store: w.store, h: &w.health},
		WorkerID:      w.cfg.WorkerID,
		LeaseDuration: w.cfg.LeaseDuration,
		RenewInterval: w.cfg.RenewInterval,
		TakeInterval:  w.cfg.TakeInterval,
		Logger:        w.log,
		OnAcquired:    func(h *lease.Handle) { w.startShard(base, h) },
		OnEvent:       w.hooks.leaseObserver(),
		BalanceByLoad: w.cfg.BalanceByLoad,
		Stalls:        w.stalls,
	})
	if err := w.retryStartup(sctx, "start lease manager", func() error { return w.manager.Start(base) }); err != nil {
		return fmt.Errorf("shardline: start lease manager: %w", err)
	}
	w.leases.Store(w.manager)
	w.health.set(func(h *healthState) { h.started = true })
	w.log.Info("worker started", "stream", w.streamID(), "table", w.cfg.TableName)
	return nil
}

// loop runs shard syncs until a stop is requested. It returns a fatal error,
// or nil for a requested stop.
func (w *Worker) loop(ctx context.Context) error {
	t := time.NewTicker(w.cfg.ShardSyncInterval)
	defer t.Stop()
	stallTick := time.NewTicker(w.stallCheckInterval())
	defer stallTick.Stop()
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
		err := w.syncShards(ctx)
		w.health.set(func(h *healthState) { h.syncSince = time.Time{} })
		if err != nil {
			if errors.Is(err, kcl.ErrStreamNotFound) {
				return err
			}
			if ctx.Err() == nil {
				w.log.Warn("shard sync failed; will retry", "err", err)
			}
		}
	}
}

// stop winds the worker down: gracefully (shards finish, checkpoint and
// release) unless hard, in which case shards stop at once and release.
func (w *Worker) stop(hard bool) {
	w.health.set(func(h *healthState) { h.stopping = true })
	w.manager.StopTaking()
	w.gracefulMu.Do(func() { close(w.graceful) })
	if hard {
		w.hardCancel()
	}
	w.shards.Wait()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.manager.Close(cctx); err != nil {
		w.log.Warn("removing presence row failed", "err", err)
	}
	w.log.Info("worker stopped")
}

// Shutdown stops the worker gracefully: it stops taking leases, asks every
// processor to finish (ShutdownRequested, with a working checkpointer),
// writes final checkpoints, releases the leases so that other workers take
// them at once, and waits for every goroutine. If ctx ends first, Shutdown
// stops the processors at once (cancelling their contexts), still waits for
// them to return, and returns ctx's error. Calling it before Run makes Run
// return kcl.ErrShutdown at once.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.shutOnce.Do(func() { close(w.shutdownCh) })
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.mu.Lock()
		hc := w.hardCancel
		w.mu.Unlock()
		if hc != nil {
			hc()
		}
		<-w.done
		return ctx.Err()
	}
}

// fatal stops the worker with err (first error wins).
func (w *Worker) fatal(err error) {
	select {
	case w.fatalCh <- err:
	default:
	}
}

func (w *Worker) streamID() string {
	if w.cfg.StreamARN != "" {
		return w.cfg.StreamARN
	}
	return w.cfg.StreamName
}
