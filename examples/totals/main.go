// Command totals keeps per-key running totals of a Kinesis stream in a
// DynamoDB table, exactly: each record's amount is added to its key's
// total once, through crashes (kill -9), failovers and restarts.
//
// Every record carries an integer amount in its data (a record whose data is
// not a number counts 1); its partition key names the total it adds to. Each
// batch's additions are summed per key and committed together with the
// shard's checkpoint in one DynamoDB transaction fenced by the shard's lease
// (checkpoint.Transact). So a batch's additions and its checkpoint are
// stored together or not at all, and a worker that lost its lease cannot add
// anything: when the batch is delivered again after a failover, it is added
// once. Plain at-least-once processing would count it twice.
//
// Against the local emulators (scripts/emulators.sh start):
//
//	go run ./examples/totals -stream orders -app orders-totals -table orders-totals-by-key \
//	    -kinesis-endpoint http://127.0.0.1:4568 -dynamodb-endpoint http://127.0.0.1:8000
//
// Run as many replicas as you like, kill some: the table's totals stay exact.
// The totals table (hash key "key", a string; attributes total and records)
// is created if missing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/checkpoint"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "totals:", err)
		os.Exit(1)
	}
}

func run() error {
	stream := flag.String("stream", "", "Kinesis stream name (required)")
	app := flag.String("app", "", "application name; also the lease table (required)")
	table := flag.String("table", "", "totals table (required)")
	kinesisEndpoint := flag.String("kinesis-endpoint", "", "Kinesis endpoint URL (default: AWS)")
	dynamoEndpoint := flag.String("dynamodb-endpoint", "", "DynamoDB endpoint URL (default: AWS)")
	flag.Parse()
	if *stream == "" || *app == "" || *table == "" {
		flag.Usage()
		return errors.New("-stream, -app and -table are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	kc, dc, err := clients(ctx, *kinesisEndpoint, *dynamoEndpoint)
	if err != nil {
		return err
	}
	if err := ensureTable(ctx, dc, *table); err != nil {
		return err
	}
	w, err := worker.New(worker.Config{
		StreamName:      *stream,
		ApplicationName: *app,
		Kinesis:         kc,
		DynamoDB:        dc, // transactions go through the lease table's client
		Logger:          log,
		ProcessorFactory: func(shardID string) (kcl.RecordProcessor, error) {
			return &totals{table: *table}, nil
		},
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(context.Background()) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-done; err != nil && !errors.Is(err, kcl.ErrShutdown) && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// totals is the processor of one shard.
type totals struct {
	table string
}

// ProcessRecords adds the batch to the totals. It returns Transact's error,
// so that a batch that could not be committed is delivered again (Transact
// skips what an earlier attempt committed); it must never return nil for a
// batch whose additions are not stored, or the worker would checkpoint past
// them.
func (t *totals) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	return checkpoint.Transact(ctx, in.Checkpointer, t.writes(in.Records)...)
}

// writes sums the records per key into Writes of at most
// checkpoint.MaxItems keys, one Update per key, each carrying the position
// of the last record it covers.
func (t *totals) writes(recs []kcl.Record) []checkpoint.Write {
	var (
		out   []checkpoint.Write
		sum   = map[string]int64{}
		count = map[string]int64{}
		order []string
	)
	flush := func(pos kcl.ExtendedSequenceNumber) {
		w := checkpoint.Write{Position: pos}
		for _, k := range order {
			w.Items = append(w.Items, t.add(k, sum[k], count[k]))
		}
		out = append(out, w)
		clear(sum)
		clear(count)
		order = order[:0]
	}
	for i, r := range recs {
		k := r.PartitionKey
		if _, seen := sum[k]; !seen && len(order) == checkpoint.MaxItems {
			flush(recs[i-1].Position())
		}
		if _, seen := sum[k]; !seen {
			order = append(order, k)
		}
		amount, err := strconv.ParseInt(string(r.Data), 10, 64)
		if err != nil {
			amount = 1
		}
		sum[k] += amount
		count[k]++
	}
	if len(recs) > 0 {
		flush(recs[len(recs)-1].Position())
	}
	return out
}

// add is the Update adding amount and n records to key's total.
func (t *totals) add(key string, amount, n int64) types.TransactWriteItem {
	return types.TransactWriteItem{Update: &types.Update{
		TableName:                aws.String(t.table),
		Key:                      map[string]types.AttributeValue{"key": &types.AttributeValueMemberS{Value: key}},
		UpdateExpression:         aws.String("ADD #t :a, #r :n"),
		ExpressionAttributeNames: map[string]string{"#t": "total", "#r": "records"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":a": &types.AttributeValueMemberN{Value: strconv.FormatInt(amount, 10)},
			":n": &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)},
		},
	}}
}

// ensureTable creates the totals table unless it exists.
func ensureTable(ctx context.Context, dc *dynamodb.Client, table string) error {
	_, err := dc.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("key"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("key"), KeyType: types.KeyTypeHash}},
	})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return fmt.Errorf("create table %s: %w", table, err)
	}
	return dynamodb.NewTableExistsWaiter(dc).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute)
}

// clients returns the AWS clients: the default configuration, or the local
// emulators with dummy credentials when endpoints are given.
func clients(ctx context.Context, kinesisEndpoint, dynamoEndpoint string) (*kinesis.Client, *dynamodb.Client, error) {
	var cfg aws.Config
	if kinesisEndpoint != "" || dynamoEndpoint != "" {
		cfg = aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("shardline", "shardline", "")}
	} else {
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx); err != nil {
			return nil, nil, err
		}
	}
	kc := kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
		if kinesisEndpoint != "" {
			o.BaseEndpoint = aws.String(kinesisEndpoint)
		}
	})
	dc := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if dynamoEndpoint != "" {
			o.BaseEndpoint = aws.String(dynamoEndpoint)
			o.DisableValidateResponseChecksum = true
		}
	})
	return kc, dc, nil
}
