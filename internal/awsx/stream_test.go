package awsx_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

func TestStreamOf(t *testing.T) {
	arn := "arn:aws:kinesis:us-east-1:000000000000:stream/s"
	if s := awsx.StreamOf(arn); s.ARN != arn || s.Name != "" || s.String() != arn {
		t.Errorf("StreamOf(ARN) = %+v", s)
	}
	if s := awsx.StreamOf("s"); s.Name != "s" || s.ARN != "" || s.String() != "s" {
		t.Errorf("StreamOf(name) = %+v", s)
	}
	name, a := awsx.Stream{Name: "s", ARN: arn}.Fields()
	if name != nil || aws.ToString(a) != arn {
		t.Errorf("Fields with both = %v, %v; want the ARN only", name, a)
	}
	name, a = awsx.Stream{Name: "s"}.Fields()
	if aws.ToString(name) != "s" || a != nil {
		t.Errorf("Fields by name = %v, %v", name, a)
	}
}

// pagedLister serves shards two per page, checks the requests as Kinesis
// does, and lets the first token expire once when expireOnce is set.
type pagedLister struct {
	shards     int
	expireOnce bool
	calls      int
}

func (p *pagedLister) ListShards(_ context.Context, in *kinesis.ListShardsInput, _ ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	p.calls++
	from := 0
	if in.NextToken != nil {
		if in.StreamName != nil || in.StreamARN != nil || in.ShardFilter != nil {
			return nil, &types.InvalidArgumentException{Message: aws.String("NextToken with a stream or filter")}
		}
		if p.expireOnce {
			p.expireOnce = false
			return nil, &types.ExpiredNextTokenException{Message: aws.String("expired")}
		}
		from, _ = strconv.Atoi(*in.NextToken)
	} else if aws.ToString(in.StreamName) != "s" || in.ShardFilter == nil || in.ShardFilter.Type != types.ShardFilterTypeAtLatest {
		return nil, &types.InvalidArgumentException{Message: aws.String("first page without the stream or the filter")}
	}
	out := &kinesis.ListShardsOutput{}
	for i := from; i < min(from+2, p.shards); i++ {
		out.Shards = append(out.Shards, types.Shard{ShardId: aws.String(fmt.Sprintf("shardId-%012d", i))})
	}
	if from+2 < p.shards {
		out.NextToken = aws.String(strconv.Itoa(from + 2))
	}
	return out, nil
}

func TestListShardsPaginates(t *testing.T) {
	filter := &types.ShardFilter{Type: types.ShardFilterTypeAtLatest}
	for _, expire := range []bool{false, true} {
		l := &pagedLister{shards: 5, expireOnce: expire}
		shards, err := awsx.ListShards(t.Context(), l, awsx.Stream{Name: "s"}, filter)
		if err != nil {
			t.Fatal(err)
		}
		if len(shards) != 5 || aws.ToString(shards[4].ShardId) != "shardId-000000000004" {
			t.Errorf("expire %v: listed %d shards, want 5 once each", expire, len(shards))
		}
		if want := map[bool]int{false: 3, true: 5}[expire]; l.calls != want {
			t.Errorf("expire %v: %d calls, want %d", expire, l.calls, want)
		}
	}
}

// Against the emulator: listing, the ARN lookup, and a missing stream.
func TestStreamOnEmulator(t *testing.T) {
	kc := testenv.Kinesis(t)
	name := testenv.CreateStream(t, kc, 3)
	s := awsx.Stream{Name: name}
	shards, err := awsx.ListShards(t.Context(), kc, s, nil)
	if err != nil || len(shards) != 3 {
		t.Fatalf("ListShards = %d shards, %v; want 3", len(shards), err)
	}
	arn, err := s.ResolveARN(t.Context(), kc)
	if err != nil || !strings.HasPrefix(arn, "arn:") || !strings.HasSuffix(arn, "/"+name) {
		t.Fatalf("ResolveARN = %q, %v", arn, err)
	}
	byARN, err := awsx.ListShards(t.Context(), kc, awsx.StreamOf(arn), nil)
	if err != nil || len(byARN) != 3 {
		t.Fatalf("ListShards by ARN = %d shards, %v; want 3", len(byARN), err)
	}
	missing := awsx.Stream{Name: testenv.UniqueName("missing")}
	_, err = missing.ResolveARN(t.Context(), kc)
	if !errors.Is(err, kcl.ErrStreamNotFound) || awsx.Classify(err) != awsx.NotFound || !strings.Contains(err.Error(), missing.Name) {
		t.Errorf("ResolveARN of a missing stream: %v", err)
	}
	if _, err := awsx.ListShards(t.Context(), kc, missing, nil); !errors.Is(err, kcl.ErrStreamNotFound) {
		t.Errorf("ListShards of a missing stream: %v", err)
	}
}
