package producer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/hashkey"
)

// shardMap maps hash keys to the stream's open shards, as listed at one
// moment. It is immutable.
type shardMap struct {
	open []shardRange             // open shards, by starting hash key
	all  map[string]hashkey.Range // every listed shard, closed ones too
	at   time.Time                // when it was listed
}

type shardRange struct {
	id string
	r  hashkey.Range
}

// lookup returns the open shard whose range holds k.
func (m *shardMap) lookup(k hashkey.Key) (string, bool) {
	i, _ := slices.BinarySearchFunc(m.open, k, func(s shardRange, k hashkey.Key) int {
		return s.r.Start.Compare(k)
	})
	// m.open[i-1] is the last shard starting at or before k, unless k is
	// exactly some shard's start (then m.open[i]).
	if i < len(m.open) && m.open[i].r.Start == k {
		return m.open[i].id, true
	}
	if i > 0 && m.open[i-1].r.Contains(k) {
		return m.open[i-1].id, true
	}
	return "", false
}

// shardMapper loads and refreshes the shard map, one ListShards walk at a
// time.
type shardMapper struct {
	client KinesisAPI
	cfg    *Config

	mu      sync.Mutex
	cur     *shardMap
	loading chan struct{} // non-nil while a walk runs; closed when it ends
	lastErr error
	loads   int64
}

// current returns the map, or nil before the first load.
func (s *shardMapper) current() *shardMap {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// get returns the map, loading it if there is none yet.
func (s *shardMapper) get(ctx context.Context) (*shardMap, error) {
	if m := s.current(); m != nil {
		return m, nil
	}
	return s.refresh(ctx, nil)
}

// refresh lists the shards again unless the map already differs from stale
// (someone refreshed meanwhile), and returns the new map. Concurrent calls
// share one walk.
func (s *shardMapper) refresh(ctx context.Context, stale *shardMap) (*shardMap, error) {
	for {
		s.mu.Lock()
		if s.cur != nil && s.cur != stale {
			m := s.cur
			s.mu.Unlock()
			return m, nil
		}
		if wait := s.loading; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			s.mu.Lock()
			m, err := s.cur, s.lastErr
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
			if m != stale {
				return m, nil
			}
			continue
		}
		done := make(chan struct{})
		s.loading = done
		s.mu.Unlock()

		m, err := s.list(ctx)
		s.mu.Lock()
		s.loading = nil
		s.lastErr = err
		s.loads++
		if err == nil {
			s.cur = m
		}
		s.mu.Unlock()
		close(done)
		return m, err
	}
}

// list lists the stream's shards.
func (s *shardMapper) list(ctx context.Context) (*shardMap, error) {
	m := &shardMap{all: make(map[string]hashkey.Range), at: time.Now()}
	shards, err := awsx.ListShards(ctx, s.client, awsx.Stream{Name: s.cfg.StreamName, ARN: s.cfg.StreamARN}, nil)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	for _, sh := range shards {
		if sh.HashKeyRange == nil {
			continue
		}
		r, err := hashkey.ParseRange(aws.ToString(sh.HashKeyRange.StartingHashKey), aws.ToString(sh.HashKeyRange.EndingHashKey))
		if err != nil {
			return nil, fmt.Errorf("producer: shard %s: bad hash key range: %w", aws.ToString(sh.ShardId), err)
		}
		id := aws.ToString(sh.ShardId)
		m.all[id] = r
		if sh.SequenceNumberRange == nil || sh.SequenceNumberRange.EndingSequenceNumber == nil {
			m.open = append(m.open, shardRange{id: id, r: r})
		}
	}
	if len(m.open) == 0 {
		return nil, fmt.Errorf("producer: stream %s has no open shard", s.cfg.stream())
	}
	slices.SortFunc(m.open, func(a, b shardRange) int { return a.r.Start.Compare(b.r.Start) })
	return m, nil
}
