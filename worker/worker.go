// Package worker runs a Shardline consumer: it discovers the shards of a
// stream, shares their leases with the other workers of the same application
// through a DynamoDB table, reads each held shard in order and hands the
// records to the application's processors.
package worker

import (
	"context"
	"errors"
)

// Worker consumes a stream together with the other workers of the same
// application. Create it with [New], start it with [Worker.Run] and stop it
// with [Worker.Shutdown] or by cancelling Run's context.
type Worker struct {
	cfg Config
}

// New validates cfg and returns a worker. It does not contact AWS.
func New(cfg Config) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg}, nil
}

// ID returns the worker's ID as written in the lease table.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// Run consumes the stream until ctx ends or Shutdown is called. It returns
// nil after a graceful stop, or the error that prevented the worker from
// running (a missing stream, an unreachable endpoint, ...).
func (w *Worker) Run(ctx context.Context) error { return errors.New("not implemented") }

// Shutdown stops the worker gracefully: it stops taking leases, asks every
// processor to finish (ShutdownRequested, with a working checkpointer),
// writes final checkpoints, releases the leases so that other workers take
// them at once, and waits for every goroutine. If ctx ends first, Shutdown
// returns ctx's error and Run stops without waiting for processors.
func (w *Worker) Shutdown(ctx context.Context) error { return errors.New("not implemented") }
