package storetest

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/shardline/shardline/internal/lease"
)

// ErrPartitioned is what a [Partitioned] store returns while cut off.
var ErrPartitioned = errors.New("test: network partition")

// Partitioned is a Store that fails every call once cut off, as seen
// by a worker that lost its network (or froze).
type Partitioned struct {
	lease.Store
	// Down cuts the store off while true.
	Down atomic.Bool
}

func (p *Partitioned) err() error {
	if p.Down.Load() {
		return ErrPartitioned
	}
	return nil
}

// EnsureTable calls the wrapped store unless cut off.
func (p *Partitioned) EnsureTable(ctx context.Context) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.EnsureTable(ctx)
}

// List calls the wrapped store unless cut off.
func (p *Partitioned) List(ctx context.Context) ([]lease.Lease, error) {
	if err := p.err(); err != nil {
		return nil, err
	}
	return p.Store.List(ctx)
}

// Get calls the wrapped store unless cut off.
func (p *Partitioned) Get(ctx context.Context, key string) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.Get(ctx, key)
}

// Create calls the wrapped store unless cut off.
func (p *Partitioned) Create(ctx context.Context, l lease.Lease) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.Create(ctx, l)
}

// Renew calls the wrapped store unless cut off.
func (p *Partitioned) Renew(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.Renew(ctx, l)
}

// Take calls the wrapped store unless cut off.
func (p *Partitioned) Take(ctx context.Context, l lease.Lease, newOwner string) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.Take(ctx, l, newOwner)
}

// Release calls the wrapped store unless cut off.
func (p *Partitioned) Release(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.Release(ctx, l)
}

// UpdateCheckpoint calls the wrapped store unless cut off.
func (p *Partitioned) UpdateCheckpoint(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.UpdateCheckpoint(ctx, l)
}

// UpdateShardInfo calls the wrapped store unless cut off.
func (p *Partitioned) UpdateShardInfo(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.UpdateShardInfo(ctx, l)
}

// Delete calls the wrapped store unless cut off.
func (p *Partitioned) Delete(ctx context.Context, l lease.Lease) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.Delete(ctx, l)
}

// Heartbeat calls the wrapped store unless cut off.
func (p *Partitioned) Heartbeat(ctx context.Context, w lease.Worker) (lease.Worker, error) {
	if err := p.err(); err != nil {
		return lease.Worker{}, err
	}
	return p.Store.Heartbeat(ctx, w)
}

// ListWorkers calls the wrapped store unless cut off.
func (p *Partitioned) ListWorkers(ctx context.Context) ([]lease.Worker, error) {
	if err := p.err(); err != nil {
		return nil, err
	}
	return p.Store.ListWorkers(ctx)
}

// DeleteWorker calls the wrapped store unless cut off.
func (p *Partitioned) DeleteWorker(ctx context.Context, w lease.Worker) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.DeleteWorker(ctx, w)
}

