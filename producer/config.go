package producer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/shardline/shardline/kcl"
)

// Kinesis service limits the producer enforces locally.
const (
	// maxRecordSize is the largest Kinesis record: data and partition key
	// together, 1 MiB.
	maxRecordSize = 1 << 20
	// maxPartitionKeyLength is the longest partition key, in Unicode
	// characters.
	maxPartitionKeyLength = 256
	// maxBatchRecordsLimit is the most records one PutRecords call takes.
	maxBatchRecordsLimit = 500
	// maxBatchBytesLimit is the most bytes (data and partition keys) one
	// PutRecords call takes, 5 MiB.
	maxBatchBytesLimit = 5 << 20
)

// Defaults of [Config].
const (
	defaultLinger              = 100 * time.Millisecond
	defaultMaxInFlight         = 16
	defaultMaxBufferedRecords  = 50_000
	defaultMaxBufferedBytes    = 64 << 20
	defaultAggregationMaxBytes = 50 << 10
	defaultRetryTimeout        = 30 * time.Second
	defaultBackoffInitial      = 100 * time.Millisecond
	defaultBackoffMax          = 5 * time.Second
)

// KinesisAPI is the part of the Kinesis client the producer uses. A
// *kinesis.Client satisfies it; tests wrap it to inject faults.
type KinesisAPI interface {
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
}

var _ KinesisAPI = (*kinesis.Client)(nil)

// Encoder transforms each user record's data before it is sent (client-side
// encryption, compression); a consumer undoes it with a kcl.RecordDecoder.
// It is called by Put, in the caller's goroutine, before the size limits are
// checked, so it must be safe for concurrent use. With aggregation it applies
// to each user record, not to the aggregate.
type Encoder func(ctx context.Context, partitionKey string, data []byte) ([]byte, error)

// Config configures a [Producer]. Zero fields take the defaults documented
// on each; [New] validates the whole and refuses anything unusable with an
// error matching kcl.ErrInvalidConfig.
type Config struct {
	// StreamName is the stream to write to. StreamName or StreamARN is
	// required.
	StreamName string
	// StreamARN identifies the stream; when set it is used instead of
	// StreamName.
	StreamARN string
	// Client is the Kinesis client. Required.
	Client KinesisAPI

	// MaxBatchRecords caps the records of one PutRecords call (1 to 500,
	// default 500); a call also carries at most 5 MiB.
	MaxBatchRecords int
	// Linger is how long a record may wait for others to fill a batch
	// (default 100ms). A full batch is sent at once; a negative Linger sends
	// whatever is buffered as soon as a request slot is free.
	Linger time.Duration
	// MaxInFlight bounds the PutRecords calls running at once (default 16).
	MaxInFlight int
	// MaxBufferedRecords and MaxBufferedBytes bound the records accepted by
	// Put and not yet written or failed (defaults 50,000 and 64 MiB). Put
	// blocks while they are reached.
	MaxBufferedRecords int
	MaxBufferedBytes   int

	// KeepOrder keeps the records of each partition key in the order Put
	// accepted them, retries included: a key's next record is not sent
	// while an earlier one is in flight or waiting for a retry. Without
	// aggregation a request carries at most one record per partition key;
	// with aggregation the unit is the shard: one aggregate per shard per
	// request, one request in flight per shard. Order can still break
	// across a reshard.
	KeepOrder bool

	// Aggregate packs user records bound for the same shard into KPL
	// aggregated records (read by Shardline's consumer and the KCL). It
	// needs ListShards permission: the producer maps hash keys to shards,
	// loads the map at the first Put and refreshes it when Kinesis puts an
	// aggregate on an unexpected shard.
	Aggregate bool
	// AggregationMaxBytes caps the size of one aggregated record (default
	// 50 KiB, at most 1 MiB). A user record too large to share one is sent
	// on its own.
	AggregationMaxBytes int

	// Encoder, when set, transforms each user record's data in Put.
	Encoder Encoder

	// RetryTimeout is how long a record is retried after its first failed
	// attempt before its result reports the failure (default 30s).
	RetryTimeout time.Duration

	// Logger receives warnings about retries and failures (default
	// slog.Default()).
	Logger *slog.Logger

	// backoffInitial and backoffMax bound the exponential, jittered wait
	// before a retry (defaults 100ms and 5s; tests shorten them).
	backoffInitial, backoffMax time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxBatchRecords == 0 {
		c.MaxBatchRecords = maxBatchRecordsLimit
	}
	if c.Linger == 0 {
		c.Linger = defaultLinger
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = defaultMaxInFlight
	}
	if c.MaxBufferedRecords == 0 {
		c.MaxBufferedRecords = defaultMaxBufferedRecords
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = defaultMaxBufferedBytes
	}
	if c.AggregationMaxBytes == 0 {
		c.AggregationMaxBytes = defaultAggregationMaxBytes
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = defaultRetryTimeout
	}
	if c.backoffInitial == 0 {
		c.backoffInitial = defaultBackoffInitial
	}
	if c.backoffMax == 0 {
		c.backoffMax = defaultBackoffMax
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.StreamName == "" && c.StreamARN == "" {
		bad("StreamName or StreamARN is required")
	}
	if c.StreamARN != "" && !strings.HasPrefix(c.StreamARN, "arn:") {
		bad("StreamARN %q is not an ARN", c.StreamARN)
	}
	if c.Client == nil {
		bad("Client is required")
	}
	if c.MaxBatchRecords < 1 || c.MaxBatchRecords > maxBatchRecordsLimit {
		bad("MaxBatchRecords %d is outside 1..%d", c.MaxBatchRecords, maxBatchRecordsLimit)
	}
	if c.MaxInFlight < 1 {
		bad("MaxInFlight %d is below 1", c.MaxInFlight)
	}
	if c.MaxBufferedRecords < 1 {
		bad("MaxBufferedRecords %d is below 1", c.MaxBufferedRecords)
	}
	if c.MaxBufferedBytes < maxRecordSize {
		bad("MaxBufferedBytes %d is below 1 MiB", c.MaxBufferedBytes)
	}
	if c.AggregationMaxBytes < 1024 || c.AggregationMaxBytes > maxRecordSize {
		bad("AggregationMaxBytes %d is outside 1024..%d", c.AggregationMaxBytes, maxRecordSize)
	}
	if c.RetryTimeout < 0 {
		bad("RetryTimeout %v is negative", c.RetryTimeout)
	}
	if len(errs) > 0 {
		return fmt.Errorf("producer: %w: %s", kcl.ErrInvalidConfig, strings.Join(errs, "; "))
	}
	return nil
}

func (c *Config) stream() string {
	if c.StreamARN != "" {
		return c.StreamARN
	}
	return c.StreamName
}
