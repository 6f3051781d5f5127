// Command consumer is a minimal Shardline consumer to copy from: it reads a
// Kinesis stream together with any number of replicas of itself, logs each
// record, checkpoints after every batch and stops gracefully on SIGTERM or
// SIGINT.
//
// Against AWS (the default credential chain and region):
//
//	go run ./examples/consumer -stream orders -app orders-billing
//
// Against the local emulators (`scripts/emulators.sh start`):
//
//	go run ./examples/consumer -stream orders -app orders-billing \
//	    -kinesis-endpoint http://127.0.0.1:4568 -dynamodb-endpoint http://127.0.0.1:8000
//
// With -metrics-addr 127.0.0.1:9090 it serves Prometheus metrics on
// http://127.0.0.1:9090/metrics and health probes on /livez and /readyz.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/metrics"
	"github.com/shardline/shardline/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run() error {
	stream := flag.String("stream", "", "Kinesis stream name (required)")
	app := flag.String("app", "", "application name, also the lease table's name (required)")
	kinesisEndpoint := flag.String("kinesis-endpoint", "", "Kinesis endpoint URL (default: AWS)")
	dynamoEndpoint := flag.String("dynamodb-endpoint", "", "DynamoDB endpoint URL (default: AWS)")
	metricsAddr := flag.String("metrics-addr", "", "serve /metrics, /livez and /readyz on ADDR (default: off)")
	flag.Parse()
	if *stream == "" || *app == "" {
		return errors.New("-stream and -app are required")
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	if *kinesisEndpoint != "" || *dynamoEndpoint != "" {
		// The emulators accept any credentials and region.
		cfg.Region = "us-east-1"
		cfg.Credentials = credentials.NewStaticCredentialsProvider("shardline", "shardline", "")
	}
	kc := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if *kinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(*kinesisEndpoint)
		}
	})
	dc := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if *dynamoEndpoint != "" {
			o.BaseEndpoint = aws.String(*dynamoEndpoint)
			// DynamoDB Local's error responses fail the SDK's checksum check.
			o.DisableValidateResponseChecksum = true
		}
	})

	var hooks []worker.Hook
	m, err := metrics.New()
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		hooks = append(hooks, m)
	}

	w, err := worker.New(worker.Config{
		StreamName:      *stream,
		ApplicationName: *app,
		Kinesis:         kc,
		DynamoDB:        dc,
		ProcessorFactory: func(shardID string) (kcl.RecordProcessor, error) {
			return &processor{log: log.With("shard", shardID)}, nil
		},
		InitialPosition: kcl.StartAtTrimHorizon(),
		Logger:          log,
		Hooks:           hooks,
	})
	if err != nil {
		return err
	}
	if *metricsAddr != "" {
		// Prometheus metrics, and the probes of an orchestrator: /livez
		// (restart me) and /readyz (send me work).
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		mux.Handle("/livez", w.HealthHandler())
		mux.Handle("/readyz", w.HealthHandler())
		srv := &http.Server{Addr: *metricsAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
			}
		}()
		defer srv.Close()
	}

	// Run until a signal arrives, then shut down gracefully: every shard
	// checkpoints and hands its lease over.
	runErr := make(chan error, 1)
	go func() { runErr <- w.Run(context.Background()) }()
	select {
	case err := <-runErr:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-runErr; err != nil && !errors.Is(err, kcl.ErrShutdown) {
		return err
	}
	return nil
}

// processor handles the records of one shard, one batch at a time.
type processor struct {
	log *slog.Logger
}

// ProcessRecords does the work, then checkpoints: a crash before the
// checkpoint delivers the batch again, never loses it.
func (p *processor) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	for _, r := range in.Records {
		p.log.Info("record", "partition_key", r.PartitionKey, "bytes", len(r.Data))
	}
	if len(in.Records) == 0 {
		return nil
	}
	return in.Checkpointer.Checkpoint(ctx)
}

// ShutdownRequested stores the final position when the worker gives the
// shard up, so that its next owner does not deliver these records again.
func (p *processor) ShutdownRequested(ctx context.Context, in kcl.ShutdownRequestedInput) error {
	return in.Checkpointer.Checkpoint(ctx)
}
