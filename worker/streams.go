package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// A worker consumes one stream (StreamName/StreamARN: lease keys are shard
// IDs) or several (Streams/StreamsFunc: lease keys are the Java KCL's
// multi-stream keys ACCOUNT:NAME:EPOCH:SHARD, see internal/lease's
// SplitKey). Each stream has its own reader, shard syncs and lineage; the
// lease manager plans over the leases of every stream the worker consumes,
// so the fleet is balanced by the shards of all streams.

// streamState is one stream a worker consumes.
type streamState struct {
	ref     awsx.Stream // how Kinesis calls address the stream
	name    string      // the stream's name
	id      string      // stream identifier ACCOUNT:NAME:EPOCH; "" in a single-stream worker
	initial kcl.InitialPosition
	factory kcl.ProcessorFactory
	source  *reader.Shards
	reshard reshardState

	stopOnce sync.Once
	// stopped is closed when the stream is removed from the configuration:
	// its shards then stop (at once, or once caught up when draining).
	stopped chan struct{}
	drain   bool // set before stopped is closed
}

// leaseKey returns the lease key of one of the stream's shards.
func (st *streamState) leaseKey(shardID string) string { return lease.MultiStreamKey(st.id, shardID) }

// String names the stream in logs.
func (st *streamState) String() string {
	if st.id != "" {
		return st.id
	}
	return st.ref.String()
}

// remove marks the stream removed from the configuration.
func (st *streamState) remove(drain bool) {
	st.stopOnce.Do(func() {
		st.drain = drain
		close(st.stopped)
	})
}

// removed reports whether the stream was removed, and whether its shards
// drain before they stop.
func (st *streamState) removed() (removed, drain bool) {
	select {
	case <-st.stopped:
		return true, st.drain
	default:
		return false, false
	}
}

// ownLeases returns the leases of this stream among all the table's, keyed
// by shard ID (the lineage works on shard IDs; parent and child shard IDs
// are plain shard IDs in both key formats).
func (st *streamState) ownLeases(all []lease.Lease) []lease.Lease {
	var out []lease.Lease
	for _, l := range all {
		sid, shard, ok := lease.SplitKey(l.Key)
		if !ok {
			sid, shard = "", l.Key // not a multi-stream key: a single-stream worker's
		}
		if sid == st.id {
			l.Key = shard
			out = append(out, l)
		}
	}
	return out
}

// tableLease turns a lease keyed by shard ID (see ownLeases) back into the
// table's.
func (st *streamState) tableLease(l lease.Lease) lease.Lease {
	l.Key = st.leaseKey(l.Key)
	return l
}

// newStream makes the state of a stream, with its reader.
func (w *Worker) newStream(ref awsx.Stream, id, name string, initial kcl.InitialPosition, factory kcl.ProcessorFactory) (*streamState, error) {
	st := &streamState{ref: ref, id: id, name: name, initial: initial, factory: factory, stopped: make(chan struct{})}
	cfg := w.cfg
	opts := reader.Options{
		StreamName:           ref.Name,
		StreamARN:            ref.ARN,
		MaxRecords:           cfg.MaxRecords,
		IdleTimeBetweenReads: cfg.IdleTimeBetweenReads,
		PrefetchBatches:      cfg.PrefetchBatches,
		PrefetchBytes:        int64(cfg.PrefetchBytes),
		BackoffInitial:       cfg.RetryInitialInterval,
		BackoffMax:           max(cfg.RetryInitialInterval, min(cfg.RetryMaxInterval, reader.DefaultBackoffMax)),
		Logger:               cfg.Logger,
		Observer:             w.fetchObserver(st),
		Records: reader.RecordOptions{
			DisableDeaggregation: cfg.DisableDeaggregation,
			Decoder:              cfg.RecordDecoder,
			Counted:              w.hooks.recordCounter(),
		},
	}
	if id != "" { // hooks name the shards of a multi-stream worker by lease key
		if counted := opts.Records.Counted; counted != nil {
			opts.Records.Counted = func(shard string, c reader.RecordCounts) { counted(st.leaseKey(shard), c) }
		}
	}
	var err error
	if cfg.FanOut != nil {
		opts.ConsumerName, opts.EventTimeout = cfg.FanOut.ConsumerName, cfg.FanOut.EventTimeout
		st.source, err = reader.NewFanOut(cfg.Kinesis.(fanout.FanOutAPI), opts)
	} else {
		st.source, err = reader.NewPolling(cfg.Kinesis, opts)
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

// streamFor returns the stream of a lease key, nil if the worker does not
// consume it (any more).
func (w *Worker) streamFor(key string) *streamState {
	sid, _, ok := lease.SplitKey(key)
	if !ok {
		sid = ""
	}
	w.smu.RLock()
	defer w.smu.RUnlock()
	return w.streams[sid]
}

// currentStreams returns the streams consumed now.
func (w *Worker) currentStreams() []*streamState {
	w.smu.RLock()
	defer w.smu.RUnlock()
	return slices.Collect(maps.Values(w.streams))
}

// wantsLease reports whether the lease manager may plan with and take a
// lease: one of a stream the worker consumes. (A single-stream worker thus
// leaves multi-stream leases alone, and a multi-stream worker the leases of
// streams it does not consume.)
func (w *Worker) wantsLease(key string) bool { return w.streamFor(key) != nil }

// streamsStore is the lease store as the lease manager sees it: the
// listings hold only the leases the worker wants and those it holds.
type streamsStore struct {
	lease.Store
	w *Worker
}

// Unwrap returns the store underneath (see internal/lease's dynamoStoreOf).
func (s streamsStore) Unwrap() lease.Store { return s.Store }

func (s streamsStore) List(ctx context.Context) ([]lease.Lease, error) {
	return s.filter(s.Store.List(ctx))
}

func (s streamsStore) ListStale(ctx context.Context) ([]lease.Lease, error) {
	return s.filter(s.Store.ListStale(ctx))
}

// filter keeps the wanted leases of a listing; err passes through (an
// *lease.UnreadableError comes with the rows that could be read).
func (s streamsStore) filter(all []lease.Lease, err error) ([]lease.Lease, error) {
	out := all[:0]
	for _, l := range all {
		if l.Owner == s.w.cfg.WorkerID || s.w.wantsLease(l.Key) {
			out = append(out, l)
		}
	}
	return out, err
}

// resolved is one configured stream as Kinesis describes it.
type resolved struct {
	sc        StreamConfig
	ref       awsx.Stream
	id, name  string
	retention time.Duration
}

// resolveStream describes a configured stream: its identifier
// ACCOUNT:NAME:EPOCH (the account from the ARN, the epoch from the
// stream's creation time, in seconds) and its retention period.
func (w *Worker) resolveStream(ctx context.Context, sc StreamConfig) (resolved, error) {
	ref := awsx.StreamOf(sc.Stream)
	d, err := ref.Describe(ctx, w.cfg.Kinesis)
	if err != nil {
		return resolved{}, fmt.Errorf("shardline: %w", err)
	}
	ident, err := ref.IdentityOf(d)
	if err != nil {
		return resolved{}, fmt.Errorf("shardline: %w", err)
	}
	r := resolved{sc: sc, ref: ref, name: ident.Name,
		id: lease.StreamIdentifier(ident.Account, ident.Name, ident.CreationEpoch)}
	if d.RetentionPeriodHours != nil {
		r.retention = time.Duration(*d.RetentionPeriodHours) * time.Hour
	}
	return r, nil
}

// refreshStreams brings the set of consumed streams in line with the
// configuration (Streams, or StreamsFunc's current answer): new streams are
// added (their leases created by the next shard sync), streams no longer
// configured, deleted, or re-created (a new creation time makes a new
// stream) are removed. A stream that cannot be described for another reason
// stays as it was. It fails only when StreamsFunc does, or at start when a
// stream cannot be described.
func (w *Worker) refreshStreams(ctx context.Context, starting bool) error {
	cfgs := w.cfg.Streams
	if w.cfg.StreamsFunc != nil {
		var err error
		if cfgs, err = w.cfg.StreamsFunc(ctx); err != nil {
			return fmt.Errorf("shardline: StreamsFunc: %w", err)
		}
		if errs := w.cfg.validateStreams(cfgs); len(errs) > 0 {
			return fmt.Errorf("%w: StreamsFunc: %s", kcl.ErrInvalidConfig, strings.Join(errs, "; "))
		}
	}
	want := map[string]resolved{}
	keep := map[string]bool{} // configured streams that could not be described now
	for _, sc := range cfgs {
		r, err := w.resolveStream(ctx, sc)
		switch {
		case errors.Is(err, kcl.ErrStreamNotFound):
			w.log.Warn("configured stream does not exist; not consuming it", "stream", sc.Stream)
			continue
		case err != nil && starting:
			return err
		case err != nil:
			w.log.Warn("describing a configured stream failed; leaving it as it is", "stream", sc.Stream, "err", err)
			keep[sc.Stream] = true
			continue
		}
		want[r.id] = r
	}
	// New streams are made (and their fan-out consumers registered)
	// before the lock is taken: the lease manager's listings wait on it.
	w.smu.RLock()
	var add []resolved
	for id, r := range want {
		if w.streams[id] == nil {
			add = append(add, r)
		}
	}
	w.smu.RUnlock()
	var made []*streamState
	for _, r := range add {
		initial, factory := w.cfg.InitialPosition, w.cfg.ProcessorFactory
		if r.sc.InitialPosition != nil {
			initial = *r.sc.InitialPosition
		}
		if r.sc.ProcessorFactory != nil {
			factory = r.sc.ProcessorFactory
		}
		st, err := w.newStream(r.ref, r.id, r.name, initial, factory)
		if err != nil {
			return err
		}
		st.reshard.retention = r.retention
		if w.cfg.FanOut != nil {
			// Register (or find) the stream's fan-out consumer now.
			if err := st.source.Prepare(ctx); err != nil {
				if starting {
					return fmt.Errorf("shardline: enhanced fan-out consumer %s on %s: %w", w.cfg.FanOut.ConsumerName, st, err)
				}
				w.log.Warn("registering the enhanced fan-out consumer failed; will try again", "stream", st, "err", err)
				continue
			}
		}
		made = append(made, st)
	}
	w.smu.Lock()
	defer w.smu.Unlock()
	for id, st := range w.streams {
		if _, ok := want[id]; ok || keep[st.ref.String()] {
			continue
		}
		delete(w.streams, id)
		st.remove(w.cfg.DrainRemovedStreams)
		w.log.Info("stream removed; stopping its shards", "stream", st, "drain", w.cfg.DrainRemovedStreams)
	}
	for _, st := range made {
		w.streams[st.id] = st
		w.log.Info("stream added", "stream", st, "initial_position", st.initial.String())
	}
	return nil
}

// dropFormerIncarnations deletes the leases of earlier streams of the same
// account and name as st (a stream deleted and re-created under its name:
// the stream identifier's creation time tells them apart). Their shards are
// gone with their stream; their leases would only accumulate. Deletes are
// conditional on the counter read. Nothing is deleted with
// a negative FinishedLeaseRetention.
func (w *Worker) dropFormerIncarnations(ctx context.Context, st *streamState, all []lease.Lease) error {
	account, name, epoch, ok := lease.ParseStreamIdentifier(st.id)
	if !ok || w.cfg.FinishedLeaseRetention < 0 {
		return nil
	}
	for _, l := range all {
		a, n, e, ok := lease.ParseStreamIdentifier(lease.StreamOfKey(l.Key))
		if !ok || a != account || n != name || e >= epoch {
			continue
		}
		if err := w.store.Delete(ctx, l); err != nil {
			if errors.Is(err, lease.ErrConflict) {
				continue
			}
			return fmt.Errorf("shardline: delete lease %s of a former stream: %w", l.Key, err)
		}
		w.log.Info("deleted the lease of a deleted stream re-created under the same name", "lease", l.Key, "stream", st)
	}
	return nil
}

// syncAll runs a shard sync for every consumed stream. In a multi-stream
// worker a stream found deleted is removed; the other errors are joined.
func (w *Worker) syncAll(ctx context.Context) error {
	streams := w.currentStreams()
	var all []lease.Lease
	if len(streams) > 1 {
		var err error
		var unreadable *lease.UnreadableError // named by the lease manager
		if all, err = w.store.List(ctx); err != nil && !errors.As(err, &unreadable) {
			return fmt.Errorf("shardline: list leases: %w", err)
		}
	}
	var errs []error
	for _, st := range streams {
		err := w.syncShards(ctx, st, all)
		if err != nil && st.id != "" && errors.Is(err, kcl.ErrStreamNotFound) {
			w.smu.Lock()
			if w.streams[st.id] == st {
				delete(w.streams, st.id)
			}
			w.smu.Unlock()
			st.remove(false)
			w.log.Warn("stream deleted; stopping its shards", "stream", st)
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
