package producer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/hashkey"
)

// fakeKinesis is an in-memory stream that enforces the PutRecords limits
// real Kinesis enforces (the emulator does not) and injects faults. Safe
// for concurrent use.
type fakeKinesis struct {
	mu     sync.Mutex
	stream string
	shards []fakeShard // open shards, whose ranges cover the key space
	// listed, when set, is what ListShards reports instead of shards (a
	// stale map).
	listed []fakeShard
	seq    int

	// entryHook, when set, decides per entry: a non-empty code fails it.
	// call counts PutRecords calls from 1.
	entryHook func(call int, e types.PutRecordsRequestEntry) (code string)
	// callHook, when set, runs before each call; an error fails the call.
	callHook func(ctx context.Context, call int, in *kinesis.PutRecordsInput) error

	calls      int
	requests   [][]types.PutRecordsRequestEntry // successful calls' entries
	listCalls  int
	inFlight   int
	maxFlight  int
	violations []string // limits broken by the producer
}

type fakeShard struct {
	id      string
	r       hashkey.Range
	records []types.Record
}

var _ KinesisAPI = (*fakeKinesis)(nil)

// newFakeKinesis returns a stream of n shards splitting the key space evenly.
func newFakeKinesis(n int) *fakeKinesis {
	return &fakeKinesis{stream: "s", shards: evenShards(n, 0)}
}

// evenShards splits the key space into n ranges, shard IDs from first.
func evenShards(n, first int) []fakeShard {
	var out []fakeShard
	step := hashkey.Key{Hi: ^uint64(0) / uint64(n)}
	start := hashkey.Key{}
	for i := range n {
		end := hashkey.Key{Hi: start.Hi + step.Hi - 1, Lo: ^uint64(0)}
		if i == n-1 {
			end = hashkey.Key{Hi: ^uint64(0), Lo: ^uint64(0)}
		}
		out = append(out, fakeShard{id: fmt.Sprintf("shardId-%012d", first+i), r: hashkey.Range{Start: start, End: end}})
		start = hashkey.Key{Hi: end.Hi + 1}
	}
	return out
}

func (f *fakeKinesis) ListShards(ctx context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	shards := f.shards
	if f.listed != nil {
		shards = f.listed
		f.listed = nil // the next listing is up to date
	}
	out := &kinesis.ListShardsOutput{}
	for _, s := range shards {
		out.Shards = append(out.Shards, types.Shard{
			ShardId: aws.String(s.id),
			HashKeyRange: &types.HashKeyRange{
				StartingHashKey: aws.String(s.r.Start.String()), EndingHashKey: aws.String(s.r.End.String()),
			},
			SequenceNumberRange: &types.SequenceNumberRange{StartingSequenceNumber: aws.String("1")},
		})
	}
	return out, nil
}

func (f *fakeKinesis) PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.inFlight++
	f.maxFlight = max(f.maxFlight, f.inFlight)
	hook := f.callHook
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if hook != nil {
		if err := hook(ctx, call, in); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if aws.ToString(in.StreamName) != f.stream {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no stream " + aws.ToString(in.StreamName))}
	}
	total := 0
	for _, e := range in.Records {
		size := len(e.Data) + len(aws.ToString(e.PartitionKey))
		total += size
		if size > maxRecordSize || utf8.RuneCountInString(aws.ToString(e.PartitionKey)) > maxPartitionKeyLength {
			f.violations = append(f.violations, fmt.Sprintf("entry of %d bytes", size))
		}
	}
	if len(in.Records) > maxBatchRecordsLimit || total > maxBatchBytesLimit || len(in.Records) == 0 {
		f.violations = append(f.violations, fmt.Sprintf("call with %d records, %d bytes", len(in.Records), total))
		return nil, &types.InvalidArgumentException{Message: aws.String("limits exceeded")}
	}
	f.requests = append(f.requests, append([]types.PutRecordsRequestEntry(nil), in.Records...))
	out := &kinesis.PutRecordsOutput{}
	for _, e := range in.Records {
		if f.entryHook != nil {
			if code := f.entryHook(call, e); code != "" {
				out.FailedRecordCount = aws.Int32(aws.ToInt32(out.FailedRecordCount) + 1)
				out.Records = append(out.Records, types.PutRecordsResultEntry{ErrorCode: aws.String(code), ErrorMessage: aws.String("injected")})
				continue
			}
		}
		k, err := hashkey.For(aws.ToString(e.PartitionKey), aws.ToString(e.ExplicitHashKey))
		if err != nil {
			return nil, &types.InvalidArgumentException{Message: aws.String("bad hash key")}
		}
		i := f.shardFor(k)
		f.seq++
		seq := fmt.Sprintf("%056d", f.seq)
		f.shards[i].records = append(f.shards[i].records, types.Record{
			Data: e.Data, PartitionKey: e.PartitionKey, SequenceNumber: aws.String(seq),
		})
		out.Records = append(out.Records, types.PutRecordsResultEntry{ShardId: aws.String(f.shards[i].id), SequenceNumber: aws.String(seq)})
	}
	return out, nil
}

func (f *fakeKinesis) shardFor(k hashkey.Key) int {
	for i, s := range f.shards {
		if s.r.Contains(k) {
			return i
		}
	}
	panic("fake: key space not covered")
}

// stored returns every stored record with its shard, in shard order.
func (f *fakeKinesis) stored() []storedRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []storedRecord
	for _, s := range f.shards {
		for _, r := range s.records {
			out = append(out, storedRecord{shard: s.id, r: r, rng: s.r})
		}
	}
	return out
}

type storedRecord struct {
	shard string
	r     types.Record
	rng   hashkey.Range
}

func (f *fakeKinesis) snapshot() (calls int, requests [][]types.PutRecordsRequestEntry, maxFlight int, violations []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, append([][]types.PutRecordsRequestEntry(nil), f.requests...), f.maxFlight, append([]string(nil), f.violations...)
}

func itoa(i int) string { return strconv.Itoa(i) }
