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

// ListStale calls the wrapped store unless cut off.
func (p *Partitioned) ListStale(ctx context.Context) ([]lease.Lease, error) {
	if err := p.err(); err != nil {
		return nil, err
	}
	return p.Store.ListStale(ctx)
}

// Beat calls the wrapped store unless cut off.
func (p *Partitioned) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (lease.Fleet, error) {
	if err := p.err(); err != nil {
		return lease.Fleet{}, err
	}
	return p.Store.Beat(ctx, id, from, withdrawn, bump, stalls)
}

// ReadFleet calls the wrapped store unless cut off.
func (p *Partitioned) ReadFleet(ctx context.Context) (lease.Fleet, error) {
	if err := p.err(); err != nil {
		return lease.Fleet{}, err
	}
	return p.Store.ReadFleet(ctx)
}

// Fence calls the wrapped store unless cut off.
func (p *Partitioned) Fence(ctx context.Context, id string, hb int64) (lease.Fleet, error) {
	if err := p.err(); err != nil {
		return lease.Fleet{}, err
	}
	return p.Store.Fence(ctx, id, hb)
}

// Leave calls the wrapped store unless cut off.
func (p *Partitioned) Leave(ctx context.Context, id string, hb int64, bump bool) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.Leave(ctx, id, hb, bump)
}

// AskHandoff calls the wrapped store unless cut off.
func (p *Partitioned) AskHandoff(ctx context.Context, key, to string) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.AskHandoff(ctx, key, to)
}

// Nudge calls the wrapped store unless cut off.
func (p *Partitioned) Nudge(ctx context.Context, key, owner, token string) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.Nudge(ctx, key, owner, token)
}

// ClearHandoff calls the wrapped store unless cut off.
func (p *Partitioned) ClearHandoff(ctx context.Context, key, to string) error {
	if err := p.err(); err != nil {
		return err
	}
	return p.Store.ClearHandoff(ctx, key, to)
}

// RequestHandoff calls the wrapped store unless cut off.
func (p *Partitioned) RequestHandoff(ctx context.Context, l lease.Lease, to string) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.RequestHandoff(ctx, l, to)
}

// HandOver calls the wrapped store unless cut off.
func (p *Partitioned) HandOver(ctx context.Context, l lease.Lease) (lease.Lease, error) {
	if err := p.err(); err != nil {
		return lease.Lease{}, err
	}
	return p.Store.HandOver(ctx, l)
}
