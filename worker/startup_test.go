package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	"github.com/shardline/shardline/internal/faults"
	"github.com/shardline/shardline/kcl"
)

// nopKinesis and nopDynamo succeed at everything with empty answers.
type nopKinesis struct{}

func (nopKinesis) DescribeStreamSummary(context.Context, *kinesis.DescribeStreamSummaryInput, ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error) {
	return &kinesis.DescribeStreamSummaryOutput{}, nil
}
func (nopKinesis) ListShards(context.Context, *kinesis.ListShardsInput, ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	return &kinesis.ListShardsOutput{}, nil
}
func (nopKinesis) GetShardIterator(context.Context, *kinesis.GetShardIteratorInput, ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error) {
	return &kinesis.GetShardIteratorOutput{ShardIterator: aws.String("it")}, nil
}
func (nopKinesis) GetRecords(context.Context, *kinesis.GetRecordsInput, ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error) {
	return &kinesis.GetRecordsOutput{NextShardIterator: aws.String("it")}, nil
}

type nopDynamo struct{}

func (nopDynamo) CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	return &dynamodb.CreateTableOutput{}, nil
}
func (nopDynamo) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return &dynamodb.DescribeTableOutput{}, nil
}
func (nopDynamo) GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{}, nil
}
func (nopDynamo) PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return &dynamodb.PutItemOutput{}, nil
}
func (nopDynamo) UpdateItem(context.Context, *dynamodb.UpdateItemInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return &dynamodb.UpdateItemOutput{}, nil
}
func (nopDynamo) DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return &dynamodb.DeleteItemOutput{}, nil
}
func (nopDynamo) Scan(context.Context, *dynamodb.ScanInput, ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return &dynamodb.ScanOutput{}, nil
}

// Every fault the injector produces (as the SDK would surface it) is
// retried at start-up; errors that retrying cannot fix are not.
func TestStartupRetriesTransientErrors(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{"throttle", "5xx", "timeout"} {
		cfg, err := faults.Parse("seed=1,kinesis." + kind + "=1,dynamodb." + kind + "=1")
		if err != nil {
			t.Fatal(err)
		}
		k, _ := faults.WrapKinesis(nopKinesis{}, cfg)
		d, _ := faults.WrapDynamoDB(nopDynamo{}, cfg)
		for range 10 { // both variants of throttling and 5xx
			_, kerr := k.ListShards(ctx, &kinesis.ListShardsInput{})
			_, derr := d.Scan(ctx, &dynamodb.ScanInput{})
			for _, err := range []error{kerr, derr, fmt.Errorf("shardline: wrapped: %w", kerr)} {
				if !transientStartupError(err) {
					t.Errorf("%s: %v not retried", kind, err)
				}
			}
		}
	}
	d, _ := faults.WrapDynamoDB(nopDynamo{}, faults.Config{})
	d.Outage(faults.Refuse)
	if _, err := d.DescribeTable(ctx, &dynamodb.DescribeTableInput{}); !transientStartupError(err) {
		t.Errorf("refused connection %v not retried", err)
	}

	for _, err := range []error{
		fmt.Errorf("%w: stream s", kcl.ErrStreamNotFound),
		fmt.Errorf("%w: bad table", kcl.ErrInvalidConfig),
		&smithy.OperationError{ServiceID: "Kinesis", OperationName: "ListShards", Err: &ktypes.InvalidArgumentException{Message: aws.String("bad")}},
		&smithy.OperationError{ServiceID: "Kinesis", OperationName: "ListShards", Err: &smithy.GenericAPIError{Code: "AccessDeniedException", Fault: smithy.FaultClient}},
		context.Canceled,
		errors.New("something else"),
	} {
		if transientStartupError(err) {
			t.Errorf("%v retried at start-up", err)
		}
	}
}
