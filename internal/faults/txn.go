package faults

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/shardline/shardline/internal/lease"
)

var _ lease.TransactAPI = (*DynamoDB)(nil)

// TransactWriteItems calls the wrapped client, or fails (transactional
// checkpoints, see lease.Handle.Transact). A wrapped client without the
// method fails every call.
func (d *DynamoDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	api, ok := d.DynamoDBAPI.(lease.TransactAPI)
	if !ok {
		return nil, fmt.Errorf("faults: wrapped DynamoDB client %T has no TransactWriteItems", d.DynamoDBAPI)
	}
	return call(ctx, d.in, "TransactWriteItems", in, func(ctx context.Context) (*dynamodb.TransactWriteItemsOutput, error) {
		return api.TransactWriteItems(ctx, in, opts...)
	})
}
