package reader

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// fakeShard is an in-memory KinesisAPI serving one shard of one stream, with
// fault injection. Safe for concurrent use.
type fakeShard struct {
	mu sync.Mutex

	stream   string
	shardID  string
	records  []types.Record
	trimmed  int      // index of the oldest retained record
	closed   bool     // the shard is closed: reading its end returns no next iterator
	children []string // child shards reported at the end of a closed shard
	perCall  int      // most records per GetRecords (0: no limit beyond Limit)
	// trimError makes GetShardIterator AT_SEQUENCE_NUMBER of a trimmed record
	// fail with InvalidArgumentException; otherwise it starts at the oldest
	// retained record, as if nothing was wrong.
	trimError bool
	notFound  bool // every call fails with ResourceNotFoundException

	// recordsHook, when set, runs before each GetRecords (call counts from
	// 1); a non-nil error is returned instead of records.
	recordsHook func(call int) error
	// iteratorHook, likewise for GetShardIterator.
	iteratorHook func(call int, in *kinesis.GetShardIteratorInput) error

	iterators     map[string]int // iterator -> index of the next record
	nextIter      int
	recordCalls   int
	recordTimes   []time.Time // start of each GetRecords
	iteratorCalls []kinesis.GetShardIteratorInput
	recordLimits  []int32
}

var _ KinesisAPI = (*fakeShard)(nil)

const fakeShardID = "shardId-000000000000"

// seq returns the sequence number of the i-th record of a fake shard:
// numerically ordered, 56 digits like real ones.
func seq(i int) string { return fmt.Sprintf("4968%052d", 10*i+5) }

func newFakeShard(n int) *fakeShard {
	f := &fakeShard{stream: "s", shardID: fakeShardID, iterators: map[string]int{}}
	f.add(n)
	return f
}

// add appends n records with data "r<i>".
func (f *fakeShard) add(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range n {
		i := len(f.records)
		f.records = append(f.records, types.Record{
			Data:                        []byte("r" + strconv.Itoa(i)),
			PartitionKey:                aws.String("pk" + strconv.Itoa(i%7)),
			SequenceNumber:              aws.String(seq(i)),
			ApproximateArrivalTimestamp: aws.Time(base.Add(time.Duration(i) * time.Second)),
		})
	}
}

func (f *fakeShard) calls() (records, iterators int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recordCalls, len(f.iteratorCalls)
}

func (f *fakeShard) iteratorRequests() []kinesis.GetShardIteratorInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]kinesis.GetShardIteratorInput(nil), f.iteratorCalls...)
}

func (f *fakeShard) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.recordTimes...)
}

func (f *fakeShard) newIterator(pos int) *string {
	f.nextIter++
	it := "it-" + strconv.Itoa(f.nextIter)
	f.iterators[it] = pos
	return &it
}

func (f *fakeShard) checkStream(name, arn *string, shard string) error {
	if f.notFound {
		return &types.ResourceNotFoundException{Message: aws.String("Stream s not found")}
	}
	if name != nil && *name != f.stream || arn != nil && !strings.HasSuffix(*arn, "/"+f.stream) {
		return &types.ResourceNotFoundException{Message: aws.String("Stream not found")}
	}
	if shard != "" && shard != f.shardID {
		return &types.ResourceNotFoundException{Message: aws.String("Shard " + shard + " not found")}
	}
	return nil
}

func (f *fakeShard) DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	return nil, fmt.Errorf("fakeShard: DescribeStreamSummary not implemented")
}

func (f *fakeShard) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return nil, fmt.Errorf("fakeShard: ListShards not implemented")
}

func (f *fakeShard) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, _ ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.iteratorCalls = append(f.iteratorCalls, *in)
	if f.iteratorHook != nil {
		if err := f.iteratorHook(len(f.iteratorCalls), in); err != nil {
			return nil, err
		}
	}
	if err := f.checkStream(in.StreamName, in.StreamARN, aws.ToString(in.ShardId)); err != nil {
		return nil, err
	}
	pos := 0
	switch in.ShardIteratorType {
	case types.ShardIteratorTypeTrimHorizon:
		pos = f.trimmed
	case types.ShardIteratorTypeLatest:
		pos = len(f.records)
	case types.ShardIteratorTypeAtTimestamp:
		pos = len(f.records)
		for i := f.trimmed; i < len(f.records); i++ {
			if !f.records[i].ApproximateArrivalTimestamp.Before(*in.Timestamp) {
				pos = i
				break
			}
		}
	case types.ShardIteratorTypeAtSequenceNumber, types.ShardIteratorTypeAfterSequenceNumber:
		want := aws.ToString(in.StartingSequenceNumber)
		pos = -1
		for i, r := range f.records {
			if *r.SequenceNumber == want {
				pos = i
			}
		}
		if pos < 0 {
			return nil, &types.InvalidArgumentException{Message: aws.String("Invalid StartingSequenceNumber " + want)}
		}
		if in.ShardIteratorType == types.ShardIteratorTypeAfterSequenceNumber {
			pos++
		}
		if pos < f.trimmed {
			if f.trimError {
				return nil, &types.InvalidArgumentException{Message: aws.String("StartingSequenceNumber " + want + " has been trimmed: it is older than the stream's retention period")}
			}
			pos = f.trimmed
		}
	default:
		return nil, &types.InvalidArgumentException{Message: aws.String("bad iterator type")}
	}
	return &kinesis.GetShardIteratorOutput{ShardIterator: f.newIterator(pos)}, nil
}

func (f *fakeShard) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recordCalls++
	f.recordTimes = append(f.recordTimes, time.Now())
	f.recordLimits = append(f.recordLimits, aws.ToInt32(in.Limit))
	if f.recordsHook != nil {
		if err := f.recordsHook(f.recordCalls); err != nil {
			return nil, err
		}
	}
	if err := f.checkStream(nil, in.StreamARN, ""); err != nil {
		return nil, err
	}
	pos, ok := f.iterators[aws.ToString(in.ShardIterator)]
	if !ok {
		return nil, &types.InvalidArgumentException{Message: aws.String("unknown iterator")}
	}
	n := len(f.records) - pos
	if in.Limit != nil && int(*in.Limit) < n {
		n = int(*in.Limit)
	}
	if f.perCall > 0 && f.perCall < n {
		n = f.perCall
	}
	out := &kinesis.GetRecordsOutput{
		Records:            append([]types.Record(nil), f.records[pos:pos+n]...),
		MillisBehindLatest: aws.Int64(int64(len(f.records)-pos-n) * 1000),
	}
	pos += n
	if f.closed && pos == len(f.records) {
		for _, c := range f.children {
			out.ChildShards = append(out.ChildShards, types.ChildShard{ShardId: aws.String(c), ParentShards: []string{f.shardID}})
		}
	} else {
		out.NextShardIterator = f.newIterator(pos)
	}
	return out, nil
}
