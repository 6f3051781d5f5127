package lease

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/shardline/shardline/kcl"
)

// blackhole is a DynamoDB client whose calls never get an answer: they
// return only when their context ends.
type blackhole struct{ DynamoDBAPI }

func (blackhole) GetItem(ctx context.Context, _ *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (blackhole) Scan(ctx context.Context, _ *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (blackhole) UpdateItem(ctx context.Context, _ *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestDynamoCallTimeoutBoundsEveryCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := NewDynamoStore(blackhole{}, "t", WithDynamoCallTimeout(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for name, call := range map[string]func() error{
			"Get":   func() error { _, err := s.Get(ctx, "shard"); return err },
			"List":  func() error { _, err := s.List(ctx); return err },
			"Renew": func() error { _, err := s.Renew(ctx, Lease{Key: "shard", Owner: "w", Counter: 1}); return err },
			"Beat":  func() error { _, err := s.Beat(ctx, "w", 0, false, false, nil); return err },
		} {
			start := time.Now()
			err := call()
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 3*time.Second {
				t.Errorf("%s: %v after %v, want a deadline after 3s", name, err, time.Since(start))
			}
		}
		// The caller's own, shorter deadline still applies.
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		start := time.Now()
		if _, err := s.Get(short, "shard"); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("Get with a 1s context: %v after %v", err, time.Since(start))
		}
	})
	if _, err := NewDynamoStore(blackhole{}, "t", WithDynamoCallTimeout(0)); !errors.Is(err, kcl.ErrInvalidConfig) {
		t.Errorf("zero call timeout: %v, want ErrInvalidConfig", err)
	}
}
