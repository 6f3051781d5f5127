package awsx

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/shardline/shardline/kcl"
)

// Stream names a Kinesis stream by name or by ARN. When ARN is set, it is
// used and Name is ignored.
type Stream struct {
	Name, ARN string
}

// StreamOf reads a stream given as a name or, when it starts with "arn:",
// an ARN.
func StreamOf(nameOrARN string) Stream {
	if strings.HasPrefix(nameOrARN, "arn:") {
		return Stream{ARN: nameOrARN}
	}
	return Stream{Name: nameOrARN}
}

// String returns the ARN when there is one, else the name.
func (s Stream) String() string {
	if s.ARN != "" {
		return s.ARN
	}
	return s.Name
}

// Fields returns what to set as a request's StreamName and StreamARN: one of
// them is nil.
func (s Stream) Fields() (name, arn *string) {
	if s.ARN != "" {
		return nil, aws.String(s.ARN)
	}
	return aws.String(s.Name), nil
}

// Err wraps the error of a call about the stream with the operation and the
// stream; one that says the stream does not exist also matches
// kcl.ErrStreamNotFound.
func (s Stream) Err(op string, err error) error {
	if Classify(err) == NotFound && !errors.Is(err, kcl.ErrStreamNotFound) {
		return fmt.Errorf("%w: %s %s: %w", kcl.ErrStreamNotFound, op, s, err)
	}
	return fmt.Errorf("%s %s: %w", op, s, err)
}

// StreamDescriber is the part of the Kinesis client that describes a
// stream.
type StreamDescriber interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
}

// Describe returns the stream's summary (empty, never nil, if the response
// has none). Errors are wrapped by Err.
func (s Stream) Describe(ctx context.Context, client StreamDescriber) (*types.StreamDescriptionSummary, error) {
	in := &kinesis.DescribeStreamSummaryInput{}
	in.StreamName, in.StreamARN = s.Fields()
	out, err := client.DescribeStreamSummary(ctx, in)
	if err != nil {
		return nil, s.Err("describe stream", err)
	}
	if out.StreamDescriptionSummary == nil {
		return &types.StreamDescriptionSummary{}, nil
	}
	return out.StreamDescriptionSummary, nil
}

// ResolveARN returns the stream's ARN: s.ARN when set, else the one
// DescribeStreamSummary reports. Errors are wrapped by Err.
func (s Stream) ResolveARN(ctx context.Context, client StreamDescriber) (string, error) {
	if s.ARN != "" {
		return s.ARN, nil
	}
	d, err := s.Describe(ctx, client)
	if err != nil {
		return "", err
	}
	if arn := aws.ToString(d.StreamARN); arn != "" {
		return arn, nil
	}
	return "", fmt.Errorf("describe stream %s: no ARN in the response", s)
}

// Identity is what tells a stream apart from every other, also from an
// earlier stream of the same name: its account, name and creation time in
// seconds since the Unix epoch (the parts of the Java KCL's multi-stream
// stream identifier).
type Identity struct {
	Account, Name string
	CreationEpoch int64
}

// IdentityOf reads a stream's identity from its summary; s.ARN, when set,
// gives the account (a stream of another account).
func (s Stream) IdentityOf(d *types.StreamDescriptionSummary) (Identity, error) {
	arn := aws.ToString(d.StreamARN)
	if s.ARN != "" {
		arn = s.ARN
	}
	parts := strings.SplitN(arn, ":", 6)
	name, ok := strings.CutPrefix(parts[len(parts)-1], "stream/")
	if len(parts) != 6 || parts[4] == "" || !ok || name == "" || d.StreamCreationTimestamp == nil {
		return Identity{}, fmt.Errorf("describe stream %s: no usable ARN (%q) or creation time in the response", s, arn)
	}
	return Identity{Account: parts[4], Name: name, CreationEpoch: d.StreamCreationTimestamp.Unix()}, nil
}

// ShardLister is the part of the Kinesis client that lists shards.
type ShardLister interface {
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

// maxListRestarts bounds how often ListShards starts the listing over after
// its pagination token expired.
const maxListRestarts = 3

// ListShards returns every shard of the stream that filter selects (nil:
// every shard the stream still retains, open and closed), following the
// pagination. A listing whose pagination token expired is started over.
// Errors are wrapped by Err.
func ListShards(ctx context.Context, client ShardLister, s Stream, filter *types.ShardFilter) ([]types.Shard, error) {
	first := func() *kinesis.ListShardsInput {
		in := &kinesis.ListShardsInput{ShardFilter: filter}
		in.StreamName, in.StreamARN = s.Fields()
		return in
	}
	restarts := 0
	var shards []types.Shard
	in := first()
	for {
		out, err := client.ListShards(ctx, in)
		switch {
		case err != nil && in.NextToken != nil && Classify(err) == Expired && restarts < maxListRestarts:
			restarts++
			shards, in = shards[:0], first()
			continue
		case err != nil:
			return nil, s.Err("list shards of", err)
		}
		shards = append(shards, out.Shards...)
		if aws.ToString(out.NextToken) == "" {
			return shards, nil
		}
		// With a NextToken, neither the stream nor the filter may be given.
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

// ValidConsumerName reports whether Kinesis accepts name as an enhanced
// fan-out consumer's name: 1 to 128 of a-z A-Z 0-9 _ . -.
func ValidConsumerName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
		default:
			return false
		}
	}
	return true
}
