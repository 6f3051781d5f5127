package worker_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// A complete consumer: one processor per shard, checkpoint after each batch,
// graceful stop on SIGTERM. Run as many replicas as you like with the same
// ApplicationName; they share the shards.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		slog.Error("aws config", "err", err)
		return
	}
	w, err := worker.New(worker.Config{
		StreamName:      "orders",
		ApplicationName: "order-indexer", // also the lease table's name
		Kinesis:         kinesis.NewFromConfig(cfg),
		DynamoDB:        dynamodb.NewFromConfig(cfg),
		InitialPosition: kcl.StartAtTrimHorizon(),
		ProcessorFactory: func(shardID string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(ctx context.Context, in kcl.ProcessRecordsInput) error {
				for _, r := range in.Records {
					_ = r.Data // index the order
				}
				return in.Checkpointer.Checkpoint(ctx)
			}), nil
		},
	})
	if err != nil {
		slog.Error("bad configuration", "err", err)
		return
	}
	// Run returns after a graceful stop when ctx ends (SIGTERM).
	if err := w.Run(ctx); err != nil {
		slog.Error("worker stopped", "err", err)
	}
}

// A hook of one's own: every event goes to OnEvent; Kind says which fields
// are set.
func ExampleHookFunc() {
	var cfg worker.Config // the rest as in the package example
	lost := worker.HookFunc(func(e worker.Event) {
		switch e.Kind {
		case worker.EventLeaseLost:
			slog.Warn("lease lost", "shard", e.ShardID, "cause", e.Reason, "err", e.Err)
		case worker.EventShardStopped:
			slog.Info("shard stopped", "shard", e.ShardID, "reason", e.Reason)
		}
	})
	cfg.Hooks = append(cfg.Hooks, lost)
}
