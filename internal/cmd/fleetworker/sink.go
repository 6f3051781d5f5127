package main

import (
	"context"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/shardline/shardline/checkpoint"
	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/kcl"
)

// With -sink-table, each batch's records are also counted per partition key
// in a DynamoDB table (item k = the partition key, n = its count), and the
// counts are committed together with the checkpoint (checkpoint.Transact):
// after kills, failovers and retries the counts equal what was produced,
// where the events file shows the duplicates of at-least-once delivery.
// internal/fleet's CheckSink compares them.

// commitToSink commits one increment per record, with the checkpoint of
// the record. A failure is returned, so that the batch is delivered again:
// Transact then commits only what was not committed yet. The worker's
// ShutdownRequested stores no checkpoint in this mode, so that a batch
// whose transaction failed is never checkpointed without its writes.
func (p *processor) commitToSink(ctx context.Context, in kcl.ProcessRecordsInput) error {
	ws := make([]checkpoint.Write, len(in.Records))
	for i, r := range in.Records {
		ws[i] = checkpoint.Write{Position: r.Position(), Items: []types.TransactWriteItem{{Update: &types.Update{
			TableName:                 aws.String(p.sink),
			Key:                       map[string]types.AttributeValue{"k": &types.AttributeValueMemberS{Value: r.PartitionKey}},
			UpdateExpression:          aws.String("ADD n :one"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":one": &types.AttributeValueMemberN{Value: strconv.Itoa(1)}},
		}}}}
	}
	if err := checkpoint.Transact(ctx, in.Checkpointer, ws...); err != nil {
		p.log.Warn("sink transaction failed; the batch will be delivered again", "err", err)
		p.write(fleet.Event{Type: fleet.EventCheckpointFailed})
		_ = p.events.Flush()
		return err
	}
	p.checkpointed(in.Checkpointer)
	return nil
}
