package lease

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/shardline/shardline/kcl"
)

// WithDynamoCallTimeout bounds every DynamoDB call the store makes (each
// page of a Scan is one call). Without a bound, a call sent into a network
// that drops packets can hang for many minutes with the SDK's default HTTP
// client, stalling lease taking and presence heartbeats long after DynamoDB
// is reachable again. The worker sets it to the lease duration: an answer
// later than that is of no use to the lease protocol.
func WithDynamoCallTimeout(d time.Duration) DynamoOption {
	return func(s *DynamoStore) error {
		if d <= 0 {
			return fmt.Errorf("%w: lease: call timeout %v is not positive", kcl.ErrInvalidConfig, d)
		}
		s.client = timeoutClient{DynamoDBAPI: s.client, d: d}
		return nil
	}
}

// timeoutClient gives every call its own deadline. Methods added to
// DynamoDBAPI later pass through unbounded until they are listed here.
type timeoutClient struct {
	DynamoDBAPI
	d time.Duration
}

func (c timeoutClient) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.CreateTable(ctx, in, opts...)
}

func (c timeoutClient) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.DescribeTable(ctx, in, opts...)
}

func (c timeoutClient) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.GetItem(ctx, in, opts...)
}

func (c timeoutClient) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.PutItem(ctx, in, opts...)
}

func (c timeoutClient) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.UpdateItem(ctx, in, opts...)
}

func (c timeoutClient) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.DeleteItem(ctx, in, opts...)
}

func (c timeoutClient) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.DynamoDBAPI.Scan(ctx, in, opts...)
}
