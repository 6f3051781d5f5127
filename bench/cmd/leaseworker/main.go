// Command leaseworker runs one Shardline worker for the lease-cost
// benchmark: it reads a stream (normally the benchmark's in-process server
// with many idle shards) and keeps its leases in DynamoDB through a client
// that counts the calls by operation. Once a second it prints a JSON line
// with the counts and the number of shards held; the benchmark reads its CPU
// time and resident memory from /proc. It stops gracefully on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

func main() { os.Exit(run()) }

// Report is one line of the output.
type Report struct {
	// Time is when the line was written (Unix nanoseconds).
	Time int64 `json:"t"`
	// Held is the number of shards the worker processes.
	Held int `json:"held"`
	// Calls counts DynamoDB calls by operation since the start.
	Calls map[string]int64 `json:"calls"`
}

func run() int {
	stream := flag.String("stream", "", "stream name")
	app := flag.String("app", "", "application (lease table) name")
	kinesisEndpoint := flag.String("kinesis-endpoint", "", "Kinesis endpoint URL")
	dynamoEndpoint := flag.String("dynamodb-endpoint", "", "DynamoDB endpoint URL")
	leaseDuration := flag.Duration("lease-duration", 0, "LeaseDuration (0: the worker's default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "leaseworker:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "leaseworker:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("shardline", "shardline", "")}
	kc := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) { o.BaseEndpoint = aws.String(*kinesisEndpoint) })
	dc := &countingDynamo{
		DynamoDBAPI: dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
			o.BaseEndpoint = aws.String(*dynamoEndpoint)
			o.DisableValidateResponseChecksum = true
		}),
		calls: map[string]int64{},
	}
	w, err := worker.New(worker.Config{
		StreamName:      *stream,
		ApplicationName: *app,
		Kinesis:         kc,
		DynamoDB:        dc,
		InitialPosition: kcl.StartAtTrimHorizon(),
		LeaseDuration:   *leaseDuration,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		ProcessorFactory: func(string) (kcl.RecordProcessor, error) {
			return kcl.RecordProcessorFunc(func(context.Context, kcl.ProcessRecordsInput) error { return nil }), nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "leaseworker:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx) }()
	enc := json.NewEncoder(os.Stdout)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case err := <-errc:
			if err != nil {
				fmt.Fprintln(os.Stderr, "leaseworker:", err)
				return 1
			}
			return 0
		case <-t.C:
			_ = enc.Encode(Report{Time: time.Now().UnixNano(), Held: len(w.HeldShards()), Calls: dc.snapshot()})
		}
	}
}

// countingDynamo counts the calls made through it by operation.
type countingDynamo struct {
	lease.DynamoDBAPI
	mu    sync.Mutex
	calls map[string]int64
}

func (c *countingDynamo) count(op string) {
	c.mu.Lock()
	c.calls[op]++
	c.mu.Unlock()
}

func (c *countingDynamo) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.calls))
	for k, v := range c.calls {
		out[k] = v
	}
	return out
}

func (c *countingDynamo) CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error) {
	c.count("CreateTable")
	return c.DynamoDBAPI.CreateTable(ctx, in, opts...)
}

func (c *countingDynamo) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	c.count("DescribeTable")
	return c.DynamoDBAPI.DescribeTable(ctx, in, opts...)
}

func (c *countingDynamo) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.count("GetItem")
	return c.DynamoDBAPI.GetItem(ctx, in, opts...)
}

func (c *countingDynamo) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.count("PutItem")
	return c.DynamoDBAPI.PutItem(ctx, in, opts...)
}

func (c *countingDynamo) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.count("UpdateItem")
	return c.DynamoDBAPI.UpdateItem(ctx, in, opts...)
}

func (c *countingDynamo) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.count("DeleteItem")
	return c.DynamoDBAPI.DeleteItem(ctx, in, opts...)
}

func (c *countingDynamo) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	c.count("Scan")
	return c.DynamoDBAPI.Scan(ctx, in, opts...)
}
