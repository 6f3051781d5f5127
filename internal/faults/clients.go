package faults

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
)

// Kinesis is a [reader.KinesisAPI] that injects faults into the calls it
// passes to the client it wraps. Methods of the wrapped client that
// reader.KinesisAPI does not name pass through untouched.
type Kinesis struct {
	reader.KinesisAPI
	in *injector
}

var _ reader.KinesisAPI = (*Kinesis)(nil)

// WrapKinesis returns api with the Kinesis faults of cfg.
func WrapKinesis(api reader.KinesisAPI, cfg Config) (*Kinesis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Kinesis{KinesisAPI: api, in: newInjector(serviceKinesis, cfg, cfg.Kinesis)}, nil
}

// DescribeStreamSummary calls the wrapped client, or fails.
func (k *Kinesis) DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	return call(ctx, k.in, "DescribeStreamSummary", in, func(ctx context.Context) (*kinesis.DescribeStreamSummaryOutput, error) {
		return k.KinesisAPI.DescribeStreamSummary(ctx, in, opts...)
	})
}

// ListShards calls the wrapped client, or fails.
func (k *Kinesis) ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return call(ctx, k.in, "ListShards", in, func(ctx context.Context) (*kinesis.ListShardsOutput, error) {
		return k.KinesisAPI.ListShards(ctx, in, opts...)
	})
}

// GetShardIterator calls the wrapped client, or fails.
func (k *Kinesis) GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	return call(ctx, k.in, "GetShardIterator", in, func(ctx context.Context) (*kinesis.GetShardIteratorOutput, error) {
		return k.KinesisAPI.GetShardIterator(ctx, in, opts...)
	})
}

// GetRecords calls the wrapped client, or fails.
func (k *Kinesis) GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	return call(ctx, k.in, "GetRecords", in, func(ctx context.Context) (*kinesis.GetRecordsOutput, error) {
		return k.KinesisAPI.GetRecords(ctx, in, opts...)
	})
}

// Outage makes every call fail in the given way until Restore.
func (k *Kinesis) Outage(mode OutageMode) { k.in.setOutage(mode) }

// Restore ends an outage.
func (k *Kinesis) Restore() { k.in.setOutage(0) }

// Stats returns the calls and faults so far, by operation.
func (k *Kinesis) Stats() map[string]Stats { return k.in.snapshot() }

// Calls returns the number of calls so far.
func (k *Kinesis) Calls() int64 { return k.in.total.Load() }

// DynamoDB is a [lease.DynamoDBAPI] that injects faults into the calls it
// passes to the client it wraps. Methods of the wrapped client that
// lease.DynamoDBAPI does not name pass through untouched.
type DynamoDB struct {
	lease.DynamoDBAPI
	in *injector
}

var _ lease.DynamoDBAPI = (*DynamoDB)(nil)

// WrapDynamoDB returns api with the DynamoDB faults of cfg.
func WrapDynamoDB(api lease.DynamoDBAPI, cfg Config) (*DynamoDB, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &DynamoDB{DynamoDBAPI: api, in: newInjector(serviceDynamoDB, cfg, cfg.DynamoDB)}, nil
}

// CreateTable calls the wrapped client, or fails.
func (d *DynamoDB) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	return call(ctx, d.in, "CreateTable", in, func(ctx context.Context) (*dynamodb.CreateTableOutput, error) {
		return d.DynamoDBAPI.CreateTable(ctx, in, opts...)
	})
}

// DescribeTable calls the wrapped client, or fails.
func (d *DynamoDB) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return call(ctx, d.in, "DescribeTable", in, func(ctx context.Context) (*dynamodb.DescribeTableOutput, error) {
		return d.DynamoDBAPI.DescribeTable(ctx, in, opts...)
	})
}

// GetItem calls the wrapped client, or fails.
func (d *DynamoDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return call(ctx, d.in, "GetItem", in, func(ctx context.Context) (*dynamodb.GetItemOutput, error) {
		return d.DynamoDBAPI.GetItem(ctx, in, opts...)
	})
}

// PutItem calls the wrapped client, or fails.
func (d *DynamoDB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return call(ctx, d.in, "PutItem", in, func(ctx context.Context) (*dynamodb.PutItemOutput, error) {
		return d.DynamoDBAPI.PutItem(ctx, in, opts...)
	})
}

// UpdateItem calls the wrapped client, or fails.
func (d *DynamoDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return call(ctx, d.in, "UpdateItem", in, func(ctx context.Context) (*dynamodb.UpdateItemOutput, error) {
		return d.DynamoDBAPI.UpdateItem(ctx, in, opts...)
	})
}

// DeleteItem calls the wrapped client, or fails.
func (d *DynamoDB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return call(ctx, d.in, "DeleteItem", in, func(ctx context.Context) (*dynamodb.DeleteItemOutput, error) {
		return d.DynamoDBAPI.DeleteItem(ctx, in, opts...)
	})
}

// Scan calls the wrapped client, or fails.
func (d *DynamoDB) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return call(ctx, d.in, "Scan", in, func(ctx context.Context) (*dynamodb.ScanOutput, error) {
		return d.DynamoDBAPI.Scan(ctx, in, opts...)
	})
}

// Outage makes every call fail in the given way until Restore.
func (d *DynamoDB) Outage(mode OutageMode) { d.in.setOutage(mode) }

// Restore ends an outage.
func (d *DynamoDB) Restore() { d.in.setOutage(0) }

// Stats returns the calls and faults so far, by operation.
func (d *DynamoDB) Stats() map[string]Stats { return d.in.snapshot() }

// Calls returns the number of calls so far.
func (d *DynamoDB) Calls() int64 { return d.in.total.Load() }
