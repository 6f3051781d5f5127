package worker_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/reader"
)

// fakeStream is an in-memory Kinesis stream that can be split, merged and
// trimmed: the part of the Kinesis API a worker uses, for tests in a
// synctest bubble. Safe for concurrent use.
type fakeStream struct {
	mu        sync.Mutex
	name      string
	retention int32 // hours
	shards    []*fakeStreamShard
	iters     map[string]fakeIter
	nextIter  int
	nextSeq   int
	nextShard int
	perKey    map[string]int
}

type fakeStreamShard struct {
	id         string
	parents    []string
	start, end *big.Int
	closed     bool
	trimmed    bool
	records    []ktypes.Record
}

type fakeIter struct {
	shard string
	pos   int
}

var _ reader.KinesisAPI = (*fakeStream)(nil)

var fakeMaxHash = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))

// newFakeStream returns a stream of n shards of equal hash ranges.
func newFakeStream(name string, n int) *fakeStream {
	f := &fakeStream{name: name, retention: 24, iters: map[string]fakeIter{}}
	step := new(big.Int).Div(new(big.Int).Add(fakeMaxHash, big.NewInt(1)), big.NewInt(int64(n)))
	for i := range n {
		start := new(big.Int).Mul(step, big.NewInt(int64(i)))
		end := new(big.Int).Sub(new(big.Int).Add(start, step), big.NewInt(1))
		if i == n-1 {
			end = new(big.Int).Set(fakeMaxHash)
		}
		f.addShard(start, end)
	}
	return f
}

func (f *fakeStream) addShard(start, end *big.Int, parents ...string) string {
	id := fmt.Sprintf("shardId-%012d", f.nextShard)
	f.nextShard++
	f.shards = append(f.shards, &fakeStreamShard{id: id, parents: parents, start: start, end: end})
	return id
}

func (f *fakeStream) shard(id string) *fakeStreamShard {
	for _, s := range f.shards {
		if s.id == id {
			return s
		}
	}
	return nil
}

// put writes one record with partition key pk to the open shard owning its
// hash key and returns the shard ID. The data is "pk:n", n counting the
// key's records from 1.
func (f *fakeStream) put(pk string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perKey == nil {
		f.perKey = map[string]int{}
	}
	f.perKey[pk]++
	data := pk + ":" + strconv.Itoa(f.perKey[pk])
	sum := md5.Sum([]byte(pk))
	h := new(big.Int).SetBytes(sum[:])
	for _, s := range f.shards {
		if !s.closed && h.Cmp(s.start) >= 0 && h.Cmp(s.end) <= 0 {
			f.nextSeq++
			s.records = append(s.records, ktypes.Record{
				Data: []byte(data), PartitionKey: aws.String(pk),
				SequenceNumber:              aws.String(fmt.Sprintf("4960%052d", f.nextSeq)),
				ApproximateArrivalTimestamp: aws.Time(time.Now()),
			})
			return s.id
		}
	}
	panic("fakeStream: no open shard for " + pk)
}

// putKeys writes n records for each of the partition keys pk-0..pk-(keys-1)
// and returns how many records each shard received.
func (f *fakeStream) putKeys(keys, n int) map[string]int {
	got := map[string]int{}
	for range n {
		for k := range keys {
			got[f.put("pk-"+strconv.Itoa(k))]++
		}
	}
	return got
}

// produced returns how many records were written per partition key.
func (f *fakeStream) produced() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.perKey)
}

// split closes shard id and returns its two children.
func (f *fakeStream) split(id string) (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.shard(id)
	s.closed = true
	mid := new(big.Int).Add(s.start, new(big.Int).Rsh(new(big.Int).Sub(s.end, s.start), 1))
	a := f.addShard(s.start, mid, id)
	b := f.addShard(new(big.Int).Add(mid, big.NewInt(1)), s.end, id)
	return a, b
}

// merge closes two adjacent shards and returns their child.
func (f *fakeStream) merge(a, b string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sa, sb := f.shard(a), f.shard(b)
	sa.closed, sb.closed = true, true
	return f.addShard(sa.start, sb.end, a, b)
}

// trim removes a shard from the stream, as retention does to an old closed
// shard: it is no longer listed and cannot be read.
func (f *fakeStream) trim(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shard(id).trimmed = true
}

func (f *fakeStream) notFound(what string) error {
	return &ktypes.ResourceNotFoundException{Message: aws.String(what + " not found")}
}

func (f *fakeStream) DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, _ ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if aws.ToString(in.StreamName) != f.name {
		return nil, f.notFound("stream " + aws.ToString(in.StreamName))
	}
	open := 0
	for _, s := range f.shards {
		if !s.closed {
			open++
		}
	}
	return &kinesis.DescribeStreamSummaryOutput{StreamDescriptionSummary: &ktypes.StreamDescriptionSummary{
		StreamName: aws.String(f.name), StreamStatus: ktypes.StreamStatusActive,
		RetentionPeriodHours: aws.Int32(f.retention), OpenShardCount: aws.Int32(int32(open)),
	}}, nil
}

func (f *fakeStream) ListShards(ctx context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if aws.ToString(in.StreamName) != f.name {
		return nil, f.notFound("stream " + aws.ToString(in.StreamName))
	}
	out := &kinesis.ListShardsOutput{}
	for _, s := range f.shards {
		if s.trimmed {
			continue
		}
		sh := ktypes.Shard{
			ShardId:             aws.String(s.id),
			HashKeyRange:        &ktypes.HashKeyRange{StartingHashKey: aws.String(s.start.String()), EndingHashKey: aws.String(s.end.String())},
			SequenceNumberRange: &ktypes.SequenceNumberRange{StartingSequenceNumber: aws.String("0")},
		}
		if len(s.parents) > 0 {
			sh.ParentShardId = aws.String(s.parents[0])
		}
		if len(s.parents) > 1 {
			sh.AdjacentParentShardId = aws.String(s.parents[1])
		}
		if s.closed {
			sh.SequenceNumberRange.EndingSequenceNumber = aws.String("9223372036854775807")
		}
		out.Shards = append(out.Shards, sh)
	}
	return out, nil
}

func (f *fakeStream) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.shard(aws.ToString(in.ShardId))
	if aws.ToString(in.StreamName) != f.name || s == nil || s.trimmed {
		return nil, f.notFound("shard " + aws.ToString(in.ShardId))
	}
	pos := 0
	switch in.ShardIteratorType {
	case ktypes.ShardIteratorTypeTrimHorizon:
	case ktypes.ShardIteratorTypeLatest:
		pos = len(s.records)
	case ktypes.ShardIteratorTypeAtTimestamp:
		pos = len(s.records)
		for i, r := range s.records {
			if !r.ApproximateArrivalTimestamp.Before(*in.Timestamp) {
				pos = i
				break
			}
		}
	case ktypes.ShardIteratorTypeAtSequenceNumber, ktypes.ShardIteratorTypeAfterSequenceNumber:
		pos = slices.IndexFunc(s.records, func(r ktypes.Record) bool { return *r.SequenceNumber == aws.ToString(in.StartingSequenceNumber) })
		if pos < 0 {
			return nil, &ktypes.InvalidArgumentException{Message: aws.String("bad sequence number")}
		}
		if in.ShardIteratorType == ktypes.ShardIteratorTypeAfterSequenceNumber {
			pos++
		}
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: f.iterator(s.id, pos)}, nil
}

func (f *fakeStream) iterator(shard string, pos int) *string {
	f.nextIter++
	it := "it-" + strconv.Itoa(f.nextIter)
	f.iters[it] = fakeIter{shard, pos}
	return &it
}

func (f *fakeStream) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it, ok := f.iters[aws.ToString(in.ShardIterator)]
	if !ok {
		return nil, &ktypes.InvalidArgumentException{Message: aws.String("unknown iterator")}
	}
	s := f.shard(it.shard)
	if s.trimmed {
		return nil, f.notFound("shard " + s.id)
	}
	n := min(len(s.records)-it.pos, int(aws.ToInt32(in.Limit)))
	out := &kinesis.GetRecordsOutput{
		Records:            slices.Clone(s.records[it.pos : it.pos+n]),
		MillisBehindLatest: aws.Int64(0),
	}
	pos := it.pos + n
	if s.closed && pos == len(s.records) {
		for _, c := range f.shards {
			if slices.Contains(c.parents, s.id) {
				out.ChildShards = append(out.ChildShards, ktypes.ChildShard{ShardId: aws.String(c.id), ParentShards: c.parents})
			}
		}
		return out, nil
	}
	out.NextShardIterator = f.iterator(s.id, pos)
	return out, nil
}
