package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/hashkey"
	"github.com/shardline/shardline/producer"
)

// KinesisProducerAPI is the part of the Kinesis client a [Producer] uses.
type KinesisProducerAPI interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// Produced is one record a [Producer] wrote.
type Produced struct {
	// PK is the partition key, N the record's number among the key's
	// records (from 1), Data the payload: PK + ":" + N.
	PK   string
	N    int
	Data string
	// Shard and Seq are where Kinesis stored the record.
	Shard, Seq string
	// Time is when the producer reported the record written.
	Time time.Time
}

// Producer writes records through Shardline's producer (batched,
// parallel PutRecords calls, failed entries retried), cycling over partition
// keys chosen so that every open shard of the stream receives the same
// number of keys, and remembers where each record went.
type Producer struct {
	kc     KinesisProducerAPI
	stream string
	keys   []string

	mu      sync.Mutex // guards the fields below and serialises Put
	rr      int
	next    map[string]int
	records []Produced

	bgMu   sync.Mutex
	stop   chan struct{}
	bgDone chan struct{}
	bgErr  error
}

// NewProducer lists the stream's open shards and picks keysPerShard
// partition keys ("pk-<n>") for each, by the same MD5 hashing Kinesis uses.
func NewProducer(ctx context.Context, kc KinesisProducerAPI, stream string, keysPerShard int) (*Producer, error) {
	if keysPerShard < 1 {
		return nil, errors.New("fleet: keysPerShard must be at least 1")
	}
	shards, err := openShards(ctx, kc, stream)
	if err != nil {
		return nil, err
	}
	perShard := make(map[string]int)
	var keys []string
	for n := 0; len(keys) < keysPerShard*len(shards); n++ {
		if n > 1_000_000 {
			return nil, errors.New("fleet: cannot spread partition keys over the shards")
		}
		pk := "pk-" + strconv.Itoa(n)
		s := shardFor(shards, pk)
		if s == "" || perShard[s] >= keysPerShard {
			continue
		}
		perShard[s]++
		keys = append(keys, pk)
	}
	return &Producer{kc: kc, stream: stream, keys: keys, next: make(map[string]int)}, nil
}

type shardRange struct {
	id string
	r  hashkey.Range
}

// openShards lists the stream's open shards.
func openShards(ctx context.Context, kc KinesisProducerAPI, stream string) ([]shardRange, error) {
	shards, err := awsx.ListShards(ctx, kc, awsx.Stream{Name: stream}, nil)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var out []shardRange
	for _, s := range shards {
		if s.SequenceNumberRange != nil && s.SequenceNumberRange.EndingSequenceNumber != nil || s.HashKeyRange == nil {
			continue // closed
		}
		r, err := hashkey.ParseRange(aws.ToString(s.HashKeyRange.StartingHashKey), aws.ToString(s.HashKeyRange.EndingHashKey))
		if err != nil {
			return nil, fmt.Errorf("fleet: shard %s: %w", aws.ToString(s.ShardId), err)
		}
		out = append(out, shardRange{id: aws.ToString(s.ShardId), r: r})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("fleet: stream %s has no open shard", stream)
	}
	return out, nil
}

// shardFor returns the shard whose hash key range holds MD5(pk).
func shardFor(shards []shardRange, pk string) string {
	h := hashkey.FromPartitionKey(pk)
	for _, s := range shards {
		if s.r.Contains(h) {
			return s.id
		}
	}
	return ""
}

// Keys returns the partition keys the producer cycles over.
func (p *Producer) Keys() []string { return append([]string(nil), p.keys...) }

// Put writes n records and returns once each has been written or has
// failed; it returns the first failure. Records are numbered per partition
// key in the order Put hands them to the producer, which sends them in
// parallel PutRecords calls (so a key's records may be stored out of that
// order).
func (p *Producer) Put(ctx context.Context, n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	prod, err := producer.New(producer.Config{StreamName: p.stream, Client: p.kc})
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	batch := make([]Produced, 0, n)
	results := make([]*producer.Result, 0, n)
	var putErr error
	for range n {
		pk := p.keys[p.rr%len(p.keys)]
		p.rr++
		p.next[pk]++
		r := Produced{PK: pk, N: p.next[pk], Data: pk + ":" + strconv.Itoa(p.next[pk])}
		res, err := prod.Put(ctx, r.PK, []byte(r.Data))
		if err != nil {
			putErr = err
			break
		}
		batch = append(batch, r)
		results = append(results, res)
	}
	// Close waits for every outcome (or gives up with ctx, failing the rest).
	closeErr := prod.Close(ctx)
	now := time.Now()
	for i, res := range results {
		rc, err := res.Wait(context.WithoutCancel(ctx))
		if err != nil {
			if putErr == nil {
				putErr = err
			}
			continue
		}
		r := batch[i]
		r.Shard, r.Seq, r.Time = rc.ShardID, rc.SequenceNumber, now
		p.records = append(p.records, r)
	}
	if putErr == nil {
		putErr = closeErr
	}
	if putErr != nil {
		return fmt.Errorf("fleet: put records: %w", putErr)
	}
	return nil
}

// Start writes perTick records every interval in the background until Stop.
// A background producer never abandons a PutRecords call half-way, so every
// record it wrote is in Records.
func (p *Producer) Start(interval time.Duration, perTick int) {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.stop != nil {
		return
	}
	p.stop, p.bgDone, p.bgErr = make(chan struct{}), make(chan struct{}), nil
	stop, done := p.stop, p.bgDone
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := p.Put(ctx, perTick)
			cancel()
			if err != nil {
				p.bgMu.Lock()
				p.bgErr = err
				p.bgMu.Unlock()
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the background production started by Start, waits for the
// call in flight, and returns the error that stopped it early, if any.
func (p *Producer) Stop() error {
	p.bgMu.Lock()
	stop, done := p.stop, p.bgDone
	p.stop = nil
	p.bgMu.Unlock()
	if stop == nil {
		return nil
	}
	close(stop)
	<-done
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	return p.bgErr
}

// Records returns a copy of every record written so far, in write order.
func (p *Producer) Records() []Produced {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Produced(nil), p.records...)
}

// Count returns how many records were written so far.
func (p *Producer) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.records)
}
