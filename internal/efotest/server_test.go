package efotest

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

const shard0 = "shardId-000000000000"

// subscribe calls SubscribeToShard through the real SDK client.
func subscribe(t *testing.T, kc *kinesis.Client, arn string, pos types.StartingPosition) *kinesis.SubscribeToShardEventStream {
	t.Helper()
	out, err := kc.SubscribeToShard(t.Context(), &kinesis.SubscribeToShardInput{
		ConsumerARN: aws.String(arn), ShardId: aws.String(shard0), StartingPosition: &pos,
	})
	if err != nil {
		t.Fatalf("SubscribeToShard: %v", err)
	}
	return out.GetStream()
}

func event(t *testing.T, es *kinesis.SubscribeToShardEventStream) types.SubscribeToShardEvent {
	t.Helper()
	ev, ok := <-es.Events()
	if !ok {
		t.Fatalf("stream ended: %v", es.Err())
	}
	e, ok := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent)
	if !ok {
		t.Fatalf("unexpected event %T", ev)
	}
	return e.Value
}

func TestServerStreamsEventsToTheSDK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(ServerOptions{})
		defer srv.Close()
		srv.AddShard(shard0)
		seqs := srv.Put(shard0, 3)
		arn := srv.RegisterConsumer("app")
		kc := srv.Client()

		es := subscribe(t, kc, arn, types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon})
		e := event(t, es)
		if len(e.Records) != 3 || aws.ToString(e.Records[2].SequenceNumber) != seqs[2] || string(e.Records[0].Data) != shard0+"/0" {
			t.Fatalf("first event: %+v", e.Records)
		}
		if got := aws.ToString(e.ContinuationSequenceNumber); got != seqs[2] {
			t.Fatalf("continuation %s, want %s", got, seqs[2])
		}
		start := time.Now()
		e = event(t, es) // idle: an empty event after EventInterval
		if len(e.Records) != 0 || time.Since(start) != DefaultEventInterval {
			t.Fatalf("idle event after %v with %d records", time.Since(start), len(e.Records))
		}
		more := srv.Put(shard0, 1)
		if e = event(t, es); len(e.Records) != 1 || aws.ToString(e.Records[0].SequenceNumber) != more[0] {
			t.Fatalf("pushed event: %+v", e.Records)
		}
		if err := es.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		synctest.Wait()
		if n := srv.Active(); n != 0 {
			t.Fatalf("%d subscriptions still served after Close", n)
		}
	})
}

func TestServerFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewServer(ServerOptions{})
		defer srv.Close()
		srv.AddShard(shard0)
		seqs := srv.Put(shard0, 2)
		arn := srv.RegisterConsumer("app")
		kc := srv.Client()
		srv.OnSubscribe(func(c SubscribeCall) Fault {
			switch c.N {
			case 1:
				return Fault{Reject: "ResourceInUseException"}
			case 2:
				return Fault{After: 1, Exception: "ResourceInUseException"}
			}
			return Fault{After: 1, End: true}
		})
		_, err := kc.SubscribeToShard(t.Context(), &kinesis.SubscribeToShardInput{ConsumerARN: aws.String(arn),
			ShardId: aws.String(shard0), StartingPosition: &types.StartingPosition{Type: types.ShardIteratorTypeLatest}})
		var inUse *types.ResourceInUseException
		if !errors.As(err, &inUse) {
			t.Fatalf("rejected call: %v, want ResourceInUseException", err)
		}

		es := subscribe(t, kc, arn, types.StartingPosition{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: aws.String(seqs[0])})
		if e := event(t, es); len(e.Records) != 1 || *e.Records[0].SequenceNumber != seqs[1] {
			t.Fatalf("AFTER_SEQUENCE_NUMBER: %+v", e.Records)
		}
		if _, ok := <-es.Events(); ok {
			t.Fatal("event after the exception")
		}
		if err := es.Err(); !errors.As(err, &inUse) {
			t.Fatalf("stream error %v, want ResourceInUseException", err)
		}
		es.Close()

		es = subscribe(t, kc, arn, types.StartingPosition{Type: types.ShardIteratorTypeAtSequenceNumber, SequenceNumber: aws.String(seqs[1])})
		event(t, es)
		if _, ok := <-es.Events(); ok || es.Err() != nil {
			t.Fatalf("normal end: ok=%v err=%v", ok, es.Err())
		}
		es.Close()

		srv.CloseShard(shard0, "shardId-000000000001", "shardId-000000000002")
		srv.OnSubscribe(nil)
		es = subscribe(t, kc, arn, types.StartingPosition{Type: types.ShardIteratorTypeAfterSequenceNumber, SequenceNumber: aws.String(seqs[1])})
		e := event(t, es)
		if e.ContinuationSequenceNumber != nil || len(e.ChildShards) != 2 {
			t.Fatalf("last event of a closed shard: continuation %v, children %v", e.ContinuationSequenceNumber, e.ChildShards)
		}
		es.Close()
	})
}

func TestInitialResponseClientOnEmulator(t *testing.T) {
	kc := EmulatorKinesis(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	name := "efotest-" + time.Now().Format("150405.000000")
	if _, err := kc.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	defer kc.DeleteStream(context.Background(), &kinesis.DeleteStreamInput{StreamName: aws.String(name), EnforceConsumerDeletion: aws.Bool(true)})
	var arn *string
	for arn == nil {
		d, err := kc.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatal(err)
		}
		if d.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			arn = d.StreamDescriptionSummary.StreamARN
		}
	}
	reg, err := kc.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{StreamARN: arn, ConsumerName: aws.String("c")})
	if err != nil {
		t.Fatal(err)
	}
	put, err := kc.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(name), PartitionKey: aws.String("k"), Data: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := kc.SubscribeToShard(ctx, &kinesis.SubscribeToShardInput{ConsumerARN: reg.Consumer.ConsumerARN,
		ShardId: put.ShardId, StartingPosition: &types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon}})
	if err != nil {
		t.Fatalf("SubscribeToShard through the wrapper: %v", err)
	}
	es := out.GetStream()
	defer es.Close()
	for {
		ev, ok := <-es.Events()
		if !ok {
			t.Fatalf("stream ended before the record: %v", es.Err())
		}
		e := ev.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent).Value
		if len(e.Records) > 0 {
			if string(e.Records[0].Data) != "hello" || *e.Records[0].SequenceNumber != *put.SequenceNumber {
				t.Fatalf("record %q %s", e.Records[0].Data, *e.Records[0].SequenceNumber)
			}
			return
		}
	}
}
