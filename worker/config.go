package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/awsx"
	ilease "github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/lease"
)

// Config configures a [Worker]. Zero fields take the defaults documented on
// each; [New] validates the whole and refuses anything unusable.
type Config struct {
	// StreamName is the Kinesis stream to consume. Either StreamName or
	// StreamARN is required, unless Streams or StreamsFunc is set.
	StreamName string
	// StreamARN identifies the stream by ARN instead of by name.
	StreamARN string
	// Streams makes a multi-stream worker: it consumes every stream listed,
	// with one lease table, as the Java KCL's multi-stream mode does (lease
	// keys ACCOUNT:STREAM:CREATIONEPOCH:SHARD, see the README). Mutually
	// exclusive with StreamName, StreamARN and StreamsFunc.
	Streams []StreamConfig
	// StreamsFunc makes a multi-stream worker whose streams may change: it
	// returns the streams to consume, and is called at start and before
	// every shard sync (every ShardSyncInterval). Streams it no longer
	// returns are stopped (see DrainRemovedStreams); a failing call keeps
	// the streams as they were. Mutually exclusive with StreamName,
	// StreamARN and Streams.
	StreamsFunc func(ctx context.Context) ([]StreamConfig, error)
	// DrainRemovedStreams, in a multi-stream worker, keeps reading each
	// held shard of a stream removed from the configuration until it has
	// caught up with the stream's tip (a read finds no more records), then
	// checkpoints and releases it, as in a graceful shutdown. A shard
	// written to faster than it is read never catches up. By default (false) the shards of a
	// removed stream stop at once, as in a graceful shutdown: the processor
	// may checkpoint in ShutdownRequested, then the lease is released. The
	// leases stay in the table either way, so adding the stream again
	// resumes at its checkpoints.
	DrainRemovedStreams bool
	// ApplicationName names the consuming application. Required. Workers with
	// the same application name share the work.
	ApplicationName string
	// TableName is the DynamoDB lease table. Default: ApplicationName.
	TableName string
	// WorkerID identifies this worker in the lease table. Default: the host
	// name and a random suffix.
	WorkerID string

	// Kinesis is the Kinesis client; a *kinesis.Client satisfies it.
	// Required.
	Kinesis KinesisAPI
	// DynamoDB is the DynamoDB client for the lease table; a
	// *dynamodb.Client satisfies it. Required.
	DynamoDB lease.DynamoDBAPI

	// ProcessorFactory makes one processor per shard lease, called with the
	// shard ID (a plain shard ID in a multi-stream worker too). Required,
	// unless every StreamConfig has its own.
	ProcessorFactory kcl.ProcessorFactory
	// InitialPosition is where shards with no checkpoint start. Default:
	// LATEST, as in the Java KCL.
	InitialPosition kcl.InitialPosition

	// LeaseDuration is how long a lease stays valid without renewal.
	// Default 10s; at least 1s.
	LeaseDuration time.Duration
	// RenewInterval bounds the heartbeat period: the worker writes its
	// heartbeat to the lease table's fleet row (which keeps every lease it
	// holds valid) every min(RenewInterval, TakeInterval). With
	// BalanceByLoad it is also how often each lease's measured throughput
	// is stored. Default: LeaseDuration/3; must be below LeaseDuration/2.
	RenewInterval time.Duration
	// TakeInterval is how often the worker plans: it looks at the fleet row
	// (which each heartbeat returns) for dead workers and at the leases for
	// ones to take; the whole lease table is read only when something
	// changed, or about every 20 s across the fleet. Default:
	// RenewInterval/2. Failover (from a worker's death to another one
	// holding its shards) takes at most LeaseDuration + the heartbeat period
	// + a read and a write.
	TakeInterval time.Duration
	// ShardSyncInterval is how often the shard list is compared with the
	// lease table. Default 60s. A shard that ends in a worker creates its
	// children's leases at once; the sync finds new shards, repairs missing
	// leases and cleans finished ones up.
	ShardSyncInterval time.Duration
	// FinishedLeaseRetention is how long the lease of a finished
	// (SHARD_END) shard that the stream still lists is kept after its
	// children have progressed (counted from when a worker first sees
	// that); a shard sync then deletes it, and at once when the shard is
	// gone from the stream. Default, and minimum: the stream's retention
	// period, so that a lease is never deleted while its shard may still
	// hold records. A negative value keeps finished leases forever.
	FinishedLeaseRetention time.Duration
	// CheckpointInterval, if positive, coalesces checkpoints: the
	// processor's Checkpoint records the position at once (the rules of
	// the Checkpointer apply as usual) and the worker writes it to the lease
	// table at most once per interval per shard, and always before a
	// hand-over, a graceful stop's hand-over or release, a hard stop and at shard end
	// (prepared checkpoints and SHARD_END are written at once). After a
	// crash, or a lease lost before the held position was written, the next
	// owner starts after the last checkpoint written: up to CheckpointInterval
	// of processing more is delivered twice. Zero (the default) writes every
	// checkpoint at once.
	CheckpointInterval time.Duration

	// MaxRecords caps the records of one GetRecords call (1 to 10000),
	// and the user records of one batch read: the user records unpacked
	// from KPL aggregates (a 1 MiB aggregate may hold some 175,000) and,
	// with FanOut, the records of an event are split into batches of at
	// most MaxRecords, in order. Default 10000.
	MaxRecords int
	// IdleTimeBetweenReads is the pause after a GetRecords call that
	// returned nothing new. Default 1s (5 calls/s per shard are shared by all
	// consumers of a stream). Polling only.
	IdleTimeBetweenReads time.Duration
	// PrefetchBatches bounds the batches fetched (or, with FanOut,
	// received) ahead of the processor per shard. Default 3. With FanOut a
	// full queue stops reading the subscription, and Kinesis stops sending.
	PrefetchBatches int
	// PrefetchBytes bounds the memory of the records fetched (or
	// received) ahead of the processor per shard: each record counts its
	// data, keys and sequence number and the record itself (some 200
	// bytes), so that many empty records cannot pass for nothing. Default
	// 16 MiB.
	PrefetchBytes int

	// FanOut, when set, reads with enhanced fan-out (SubscribeToShard
	// through a registered consumer) instead of GetRecords polling; see
	// [fanout.Options]. Kinesis must then implement fanout.FanOutAPI, as a
	// *kinesis.Client does. Default nil: polling.
	FanOut *fanout.Options

	// RetryInitialInterval is the first wait before a failed batch is
	// delivered again, and the shortest wait of every retry of the worker:
	// processor calls, the ProcessorFactory, opening a shard, stop duties,
	// start-up steps and reads (throttled or failed Kinesis calls). Waits
	// double from it, with up to a fifth more of jitter. Default 200ms.
	RetryInitialInterval time.Duration
	// RetryMaxInterval caps the wait between deliveries of a failing batch
	// (and between the other retries of a shard; reads back off to at most
	// 10 s, start-up steps to at most 2 s). Default 30s. A failing batch is
	// retried until it succeeds, the lease is lost or the worker shuts
	// down: records are never skipped.
	RetryMaxInterval time.Duration

	// DisableDeaggregation delivers KPL aggregated records as they are, one
	// record each. By default they are unpacked into their user records,
	// which share the Kinesis sequence number and have sub-sequence numbers
	// 0, 1, 2...; a checkpoint can land between them.
	DisableDeaggregation bool
	// RecordDecoder, when set, is applied to every user record after
	// de-aggregation (client-side decryption, decompression), before the
	// processor sees it. A record it fails on is delivered anyway, its data
	// as read, with DecodeErr matching kcl.ErrRecordDecode.
	RecordDecoder kcl.RecordDecoder

	// CallProcessorOnEmptyBatches makes the worker call ProcessRecords with
	// empty batches too (useful for time-based checkpointing).
	CallProcessorOnEmptyBatches bool

	// StartupTimeout bounds Run's start-up checks (stream, lease table, first
	// shard sync) so that an unreachable endpoint fails instead of hanging.
	// Throttling, 5xx answers, timeouts and refused connections are retried
	// with backoff until then. Default 30s.
	StartupTimeout time.Duration
	// ShutdownTimeout bounds the graceful stop that follows the cancellation
	// of Run's context; after it processors' contexts are cancelled.
	// Default 30s. (Shutdown's own context bounds a Shutdown call.)
	ShutdownTimeout time.Duration

	// StallTimeout is how long a held shard may go without progress (a
	// batch processed, or a read at the tip of the shard) before it is
	// reported as stalled with reason "no-progress"; see the README's
	// "Stalled shards". Default 2 minutes; at least 1s. A shard whose
	// opening, reads, processing or checkpoints keep failing is reported
	// sooner, after a few failures in a row, and one whose stored checkpoint
	// cannot be read from ("bad-checkpoint") at the first refusal.
	StallTimeout time.Duration

	// BalanceByLoad balances the fleet by the records per second each shard
	// carries (measured by its holder and stored on the lease at renewal)
	// instead of by the number of shards, as the Java KCL 3.x does with
	// throughput. Off by default; every worker of an application should use
	// the same setting.
	BalanceByLoad bool

	// Delivery holds the delivery controls (batching window, filter,
	// bisect on error, poison records and their dead-letter handler); all
	// off by default. See [DeliveryPolicy].
	Delivery DeliveryPolicy

	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger

	// Hooks observe the worker: each receives every [Event] (the metrics
	// package provides one). A nil hook is refused.
	Hooks []Hook

	// store replaces the DynamoDB lease table in this package's tests.
	store ilease.Store
}

// StreamConfig is one stream of a multi-stream worker (see Config.Streams).
type StreamConfig struct {
	// Stream is the stream's name or its ARN (arn:...:stream/NAME); an ARN
	// may name a stream of another account, which the Kinesis client's
	// credentials must be allowed to read. Required.
	Stream string
	// InitialPosition is where this stream's shards with no checkpoint
	// start; nil means Config.InitialPosition.
	InitialPosition *kcl.InitialPosition
	// ProcessorFactory makes the processors of this stream's shards; nil
	// means Config.ProcessorFactory. A closure learns the stream this way.
	ProcessorFactory kcl.ProcessorFactory
}

// multiStream reports whether the configuration names streams through
// Streams or StreamsFunc.
func (c *Config) multiStream() bool { return c.Streams != nil || c.StreamsFunc != nil }

// validateStreams checks a multi-stream configuration's stream list (also
// each StreamsFunc result); it returns one message per problem.
func (c *Config) validateStreams(streams []StreamConfig) []string {
	var errs []string
	seen := map[string]bool{}
	for i, sc := range streams {
		name := sc.Stream
		if strings.HasPrefix(sc.Stream, "arn:") {
			n, err := streamNameOfARN(sc.Stream)
			if err != nil {
				errs = append(errs, fmt.Sprintf("Streams[%d] %q is not a Kinesis stream ARN: %v", i, sc.Stream, err))
				continue
			}
			name = n
		} else if name == "" || len(name) > 128 || !validTableName(name) {
			errs = append(errs, fmt.Sprintf("Streams[%d] %q is not a stream name (1-128 of a-z A-Z 0-9 _ - .) or ARN", i, sc.Stream))
			continue
		}
		if seen[sc.Stream] {
			errs = append(errs, fmt.Sprintf("Streams[%d] %q is listed twice", i, sc.Stream))
		}
		seen[sc.Stream] = true
		if sc.ProcessorFactory == nil && c.ProcessorFactory == nil {
			errs = append(errs, fmt.Sprintf("Streams[%d] %q has no ProcessorFactory, and Config has none", i, sc.Stream))
		}
		if p := sc.InitialPosition; p != nil {
			if err := p.Validate(); err != nil {
				errs = append(errs, fmt.Sprintf("Streams[%d] %q: %s", i, sc.Stream, strings.TrimPrefix(err.Error(), kcl.ErrInvalidConfig.Error()+": ")))
			}
		}
	}
	return errs
}

// KinesisAPI is the part of the Kinesis client a worker uses for polling and
// shard discovery. A *kinesis.Client satisfies it (and [fanout.FanOutAPI],
// which enhanced fan-out needs as well).
type KinesisAPI interface {
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, opts ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, opts ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, opts ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
}

var _ KinesisAPI = (*kinesis.Client)(nil)

func (c *Config) setDefaults() {
	if c.TableName == "" {
		c.TableName = c.ApplicationName // left empty without one: validate reports ApplicationName alone
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.WorkerID = host + "-" + hex.EncodeToString(b[:])
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 10 * time.Second
	}
	// Defaults are derived only from usable values: a bad LeaseDuration is
	// reported once, not again through the intervals derived from it (they
	// stay zero, and validate skips them).
	if c.RenewInterval == 0 && c.LeaseDuration >= time.Second {
		c.RenewInterval = c.LeaseDuration / 3
	}
	if c.TakeInterval == 0 && c.RenewInterval > 0 {
		c.TakeInterval = c.RenewInterval / 2
	}
	if c.ShardSyncInterval == 0 {
		c.ShardSyncInterval = time.Minute
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = 10000
	}
	if c.IdleTimeBetweenReads == 0 {
		c.IdleTimeBetweenReads = time.Second
	}
	if c.PrefetchBatches == 0 {
		c.PrefetchBatches = 3
	}
	if c.PrefetchBytes == 0 {
		c.PrefetchBytes = 16 << 20
	}
	if c.FanOut != nil {
		o := *c.FanOut // the caller's value is left alone
		if o.ConsumerName == "" {
			o.ConsumerName = c.ApplicationName
		}
		if o.EventTimeout == 0 {
			o.EventTimeout = reader.DefaultEventTimeout
		}
		c.FanOut = &o
	}
	if c.RetryInitialInterval == 0 {
		c.RetryInitialInterval = 200 * time.Millisecond
	}
	if c.RetryMaxInterval == 0 {
		c.RetryMaxInterval = 30 * time.Second
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = defaultStallTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	switch {
	case c.multiStream() && (c.StreamName != "" || c.StreamARN != ""):
		bad("StreamName/StreamARN (one stream) and Streams/StreamsFunc (several) are mutually exclusive")
	case c.Streams != nil && c.StreamsFunc != nil:
		bad("Streams and StreamsFunc are mutually exclusive")
	case c.multiStream():
		errs = append(errs, c.validateStreams(c.Streams)...)
	case c.StreamName == "" && c.StreamARN == "":
		bad("StreamName or StreamARN (or Streams or StreamsFunc) is required")
	}
	if c.StreamARN != "" {
		name, err := streamNameOfARN(c.StreamARN)
		switch {
		case err != nil:
			bad("StreamARN %q is not a Kinesis stream ARN (arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME): %v", c.StreamARN, err)
		case c.StreamName != "" && c.StreamName != name:
			bad("StreamName %q and StreamARN %q name different streams; set one of them", c.StreamName, c.StreamARN)
		}
	}
	if c.ApplicationName == "" {
		bad("ApplicationName is required")
	}
	if c.TableName != "" && (len(c.TableName) < 3 || len(c.TableName) > 255 || !validTableName(c.TableName)) {
		bad("TableName %q (default: ApplicationName) is not a valid DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)", c.TableName)
	}
	if err := validWorkerID(c.WorkerID); err != nil {
		bad("WorkerID %.40q: %v", c.WorkerID, err)
	}
	if c.Kinesis == nil {
		bad("Kinesis client is required")
	}
	if c.DynamoDB == nil && c.store == nil {
		bad("DynamoDB client is required")
	}
	if c.ProcessorFactory == nil && !c.multiStream() {
		bad("ProcessorFactory is required")
	}
	if err := c.InitialPosition.Validate(); err != nil {
		// The error already says "invalid configuration"; the list below
		// says it once for all.
		bad("%s", strings.TrimPrefix(err.Error(), kcl.ErrInvalidConfig.Error()+": "))
	} else if at := c.InitialPosition.Timestamp(); at.After(time.Now().Add(maxClockSkew)) {
		bad("InitialPosition AT_TIMESTAMP %s is in the future (more than %v ahead of this clock): shards would read nothing until then",
			at.UTC().Format(time.RFC3339), maxClockSkew)
	}
	leaseOK := c.LeaseDuration >= time.Second
	if !leaseOK {
		bad("LeaseDuration %v is below 1s", c.LeaseDuration)
	}
	// A zero interval here was not derived because its source is bad, which
	// is reported already.
	switch r := c.RenewInterval; {
	case r < 0 || r == 0 && leaseOK:
		bad("RenewInterval %v must be positive", r)
	case r > 0 && leaseOK && r*2 >= c.LeaseDuration:
		bad("RenewInterval %v must be below half of LeaseDuration %v", r, c.LeaseDuration)
	}
	if c.TakeInterval < 0 || c.TakeInterval == 0 && c.RenewInterval > 0 {
		bad("TakeInterval %v must be positive", c.TakeInterval)
	}
	if c.ShardSyncInterval < time.Second {
		bad("ShardSyncInterval %v is below 1s", c.ShardSyncInterval)
	}
	if c.CheckpointInterval < 0 {
		bad("CheckpointInterval %v is negative", c.CheckpointInterval)
	}
	if c.MaxRecords < 1 || c.MaxRecords > 10000 {
		bad("MaxRecords %d is outside 1..10000", c.MaxRecords)
	}
	if c.IdleTimeBetweenReads < 0 {
		bad("IdleTimeBetweenReads %v is negative", c.IdleTimeBetweenReads)
	}
	if c.PrefetchBatches < 1 {
		bad("PrefetchBatches %d is below 1", c.PrefetchBatches)
	}
	if c.PrefetchBytes < 1<<20 {
		bad("PrefetchBytes %d is below 1 MiB (one GetRecords call can return 10 MiB)", c.PrefetchBytes)
	}
	if c.FanOut != nil {
		if _, ok := c.Kinesis.(fanout.FanOutAPI); c.Kinesis != nil && !ok {
			bad("FanOut needs a Kinesis client with the enhanced fan-out calls (fanout.FanOutAPI, as *kinesis.Client has); %T lacks them", c.Kinesis)
		}
		if !awsx.ValidConsumerName(c.FanOut.ConsumerName) {
			bad("FanOut.ConsumerName %q (default: ApplicationName) must be 1-128 of a-z A-Z 0-9 _ . -", c.FanOut.ConsumerName)
		}
		if c.FanOut.EventTimeout < time.Second {
			bad("FanOut.EventTimeout %v is below 1s", c.FanOut.EventTimeout)
		}
	}
	if c.RetryInitialInterval <= 0 || c.RetryMaxInterval < c.RetryInitialInterval {
		bad("retry intervals %v..%v are not a positive range", c.RetryInitialInterval, c.RetryMaxInterval)
	}
	if c.StartupTimeout < 0 || c.ShutdownTimeout < 0 {
		bad("StartupTimeout and ShutdownTimeout must not be negative")
	}
	if c.StallTimeout < time.Second {
		bad("StallTimeout %v is below 1s", c.StallTimeout)
	}
	if err := c.Delivery.validate(); err != nil {
		bad("%v", err)
	}
	for i, h := range c.Hooks {
		if h == nil {
			bad("Hooks[%d] is nil", i)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", kcl.ErrInvalidConfig, strings.Join(errs, "; "))
	}
	return nil
}

// maxClockSkew is how far in the future an AT_TIMESTAMP position may lie:
// the time may come from another machine's clock. Kinesis itself refuses a
// future timestamp; an emulator would wait for it, reading nothing.
const maxClockSkew = time.Minute

// maxWorkerIDBytes bounds WorkerID: it is stored in every lease the worker
// holds and is its key in the fleet row.
const maxWorkerIDBytes = 255

// validWorkerID refuses worker IDs that the lease table or the logs cannot
// carry: empty, too long, not UTF-8, or holding control characters
// (newlines would forge log lines).
func validWorkerID(id string) error {
	switch {
	case strings.TrimSpace(id) == "":
		return errors.New("is blank")
	case len(id) > maxWorkerIDBytes:
		return fmt.Errorf("is %d bytes long, more than %d", len(id), maxWorkerIDBytes)
	case !utf8.ValidString(id):
		return errors.New("is not valid UTF-8")
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return errors.New("holds a control character (newline, tab, ...)")
	}
	return nil
}

// streamNameOfARN returns the stream name of a Kinesis stream ARN,
// arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME.
func streamNameOfARN(arn string) (string, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return "", errors.New("want six colon-separated parts starting with arn")
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	name, isStream := strings.CutPrefix(resource, "stream/")
	switch {
	case partition == "" || region == "":
		return "", errors.New("partition and region are required")
	case service != "kinesis":
		return "", fmt.Errorf("service %q is not kinesis", service)
	case len(account) != 12 || strings.Trim(account, "0123456789") != "":
		return "", fmt.Errorf("account %q is not 12 digits", account)
	case !isStream || name == "" || len(name) > 128 || !validTableName(name):
		return "", fmt.Errorf("resource %q is not stream/NAME (1-128 of a-z A-Z 0-9 _ - .)", resource)
	}
	return name, nil
}

func validTableName(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}
