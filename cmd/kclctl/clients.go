package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/shardline/shardline/internal/awsx"
	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// kinesisAPI is the part of the Kinesis client kclctl uses.
type kinesisAPI interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
	ListStreamConsumers(ctx context.Context, in *kinesis.ListStreamConsumersInput, opts ...func(*kinesis.Options)) (*kinesis.ListStreamConsumersOutput, error)
	DeregisterStreamConsumer(ctx context.Context, in *kinesis.DeregisterStreamConsumerInput, opts ...func(*kinesis.Options)) (*kinesis.DeregisterStreamConsumerOutput, error)
}

var _ kinesisAPI = (*kinesis.Client)(nil)

// awsConfig returns the configuration of a client: always the standard
// AWS configuration (credential chain: environment, shared files, SSO,
// instance or task role), in --region or the configured region. An endpoint
// only changes where requests go (the caller sets BaseEndpoint): a VPC
// endpoint needs real credentials, and DynamoDB Local keeps one database per
// access key and region, so kclctl must use those of the program it
// inspects. With an endpoint and no region anywhere, us-east-1.
func (c *common) awsConfig(ctx context.Context, endpoint string) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if c.region != "" {
		opts = append(opts, config.WithRegion(c.region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" && endpoint != "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("no AWS region: set --region or AWS_REGION")
	}
	return cfg, nil
}

// kinesisClient returns the Kinesis client.
func (c *common) kinesisClient(ctx context.Context) (*kinesis.Client, error) {
	cfg, err := c.awsConfig(ctx, c.kinesisEndpoint)
	if err != nil {
		return nil, err
	}
	return kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if c.kinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(c.kinesisEndpoint)
		}
	}), nil
}

// leaseStore opens the lease table.
func (c *common) leaseStore(ctx context.Context) (*lease.Table, error) {
	dc, err := c.dynamoClient(ctx)
	if err != nil {
		return nil, err
	}
	return lease.NewTable(dc, c.table)
}

// dynamoClient returns the DynamoDB client.
func (c *common) dynamoClient(ctx context.Context) (*dynamodb.Client, error) {
	cfg, err := c.awsConfig(ctx, c.dynamoEndpoint)
	if err != nil {
		return nil, err
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if c.dynamoEndpoint != "" {
			o.BaseEndpoint = aws.String(c.dynamoEndpoint)
			// DynamoDB Local's error responses fail the SDK's checksum check.
			o.DisableValidateResponseChecksum = true
		}
	}), nil
}

// tableError explains a lease table error.
func (c *common) tableError(err error) error {
	if errors.Is(err, kcl.ErrTableNotFound) && c.dynamoEndpoint != "" {
		return fmt.Errorf("lease table %q not found at %s (check --app or --table; DynamoDB Local keeps one database per access key and region: use the AWS_ACCESS_KEY_ID and region of the program that created the table)",
			c.table, c.dynamoEndpoint)
	}
	if errors.Is(err, kcl.ErrTableNotFound) {
		return fmt.Errorf("lease table %q not found (check --app or --table, and the region)", c.table)
	}
	return err
}

// kinesisStream is the stream --stream names (by ARN when it is one).
func (c *common) kinesisStream() awsx.Stream { return awsx.StreamOf(c.stream) }

// streamRef returns what to set as a request's StreamName and StreamARN.
func (c *common) streamRef() (name, arn *string) { return c.kinesisStream().Fields() }

// streamError explains a Kinesis error about the stream.
func (c *common) streamError(op string, err error) error {
	var apiErr smithy.APIError
	if awsx.Classify(err) == awsx.NotFound && errors.As(err, &apiErr) {
		return fmt.Errorf("stream %q not found: %s", c.stream, apiErr.ErrorMessage())
	}
	return fmt.Errorf("%s: %w", op, err)
}

// streamIdentifier returns the stream's identifier in the lease table of a
// multi-stream application: ACCOUNT:NAME:CREATIONEPOCH.
func (c *common) streamIdentifier(ctx context.Context, kc kinesisAPI) (string, error) {
	s := c.kinesisStream()
	d, err := s.Describe(ctx, kc)
	if err != nil {
		return "", c.streamError("describe stream", err)
	}
	id, err := s.IdentityOf(d)
	if err != nil {
		return "", err
	}
	return ilease.StreamIdentifier(id.Account, id.Name, id.CreationEpoch), nil
}

// listShards returns every shard of the stream, open and closed.
func (c *common) listShards(ctx context.Context, kc kinesisAPI) ([]ktypes.Shard, error) {
	shards, err := awsx.ListShards(ctx, kc, c.kinesisStream(), nil)
	if err != nil {
		return nil, c.streamError("list shards", err)
	}
	return shards, nil
}

// streamARN returns the stream's ARN (needed by the fan-out consumer APIs).
func (c *common) streamARN(ctx context.Context, kc kinesisAPI) (string, error) {
	arn, err := c.kinesisStream().ResolveARN(ctx, kc)
	if err != nil {
		return "", c.streamError("describe stream", err)
	}
	return arn, nil
}
