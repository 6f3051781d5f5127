package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// describeStream checks that the stream exists and can be read.
func (w *Worker) describeStream(ctx context.Context) error {
	in := &kinesis.DescribeStreamSummaryInput{}
	if w.cfg.StreamARN != "" {
		in.StreamARN = aws.String(w.cfg.StreamARN)
	} else {
		in.StreamName = aws.String(w.cfg.StreamName)
	}
	if _, err := w.cfg.Kinesis.DescribeStreamSummary(ctx, in); err != nil {
		return w.streamError("describe stream", err)
	}
	return nil
}

func (w *Worker) streamError(op string, err error) error {
	var nf *ktypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return fmt.Errorf("%w: %s: %s", kcl.ErrStreamNotFound, w.streamID(), aws.ToString(nf.Message))
	}
	return fmt.Errorf("shardline: %s %s: %w", op, w.streamID(), err)
}

// listShards returns every shard of the stream (open and closed), following
// pagination.
func (w *Worker) listShards(ctx context.Context) ([]ktypes.Shard, error) {
	var shards []ktypes.Shard
	in := &kinesis.ListShardsInput{}
	if w.cfg.StreamARN != "" {
		in.StreamARN = aws.String(w.cfg.StreamARN)
	} else {
		in.StreamName = aws.String(w.cfg.StreamName)
	}
	for {
		out, err := w.cfg.Kinesis.ListShards(ctx, in)
		if err != nil {
			return nil, w.streamError("list shards", err)
		}
		shards = append(shards, out.Shards...)
		if out.NextToken == nil || *out.NextToken == "" {
			return shards, nil
		}
		// With a NextToken, the stream must not be named again.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// syncShards creates a lease for every shard that has none. A shard whose
// parent is known (in the listing or the table) starts at TRIM_HORIZON so
// that nothing between the parent's end and the child's start is missed;
// others start at the configured initial position.
func (w *Worker) syncShards(ctx context.Context) error {
	shards, err := w.listShards(ctx)
	if err != nil {
		return err
	}
	leases, err := w.store.List(ctx)
	if err != nil {
		return fmt.Errorf("shardline: list leases: %w", err)
	}
	known := make(map[string]bool, len(shards)+len(leases))
	for _, l := range leases {
		known[l.Key] = true
	}
	listed := make(map[string]bool, len(shards))
	for _, s := range shards {
		listed[aws.ToString(s.ShardId)] = true
	}
	created := 0
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		if known[id] {
			continue
		}
		l := lease.Lease{Key: id, Checkpoint: w.cfg.InitialPosition.Sequence()}
		for _, p := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
			if pid := aws.ToString(p); pid != "" {
				l.ParentShardIDs = append(l.ParentShardIDs, pid)
				if known[pid] || listed[pid] {
					l.Checkpoint = kcl.TrimHorizon
				}
			}
		}
		if s.HashKeyRange != nil {
			l.StartingHashKey = aws.ToString(s.HashKeyRange.StartingHashKey)
			l.EndingHashKey = aws.ToString(s.HashKeyRange.EndingHashKey)
		}
		if err := w.store.Create(ctx, l); err != nil {
			if errors.Is(err, lease.ErrConflict) {
				continue // another worker created it first
			}
			return fmt.Errorf("shardline: create lease %s: %w", id, err)
		}
		created++
	}
	if created > 0 {
		w.log.Info("created leases for new shards", "count", created, "shards", len(shards))
		if w.manager != nil {
			w.manager.WakeTaker()
		}
	}
	return nil
}

// requestSync asks the run loop for a shard sync soon.
func (w *Worker) requestSync() {
	select {
	case w.syncNow <- struct{}{}:
	default:
	}
}
