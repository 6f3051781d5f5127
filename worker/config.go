package worker

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/shardline/shardline/fanout"
	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/reader"
	"github.com/shardline/shardline/kcl"
)

// Config configures a [Worker]. Zero fields take the defaults documented on
// each; [New] validates the whole and refuses anything unusable.
type Config struct {
	// StreamName is the Kinesis stream to consume. Either StreamName or
	// StreamARN is required.
	StreamName string
	// StreamARN identifies the stream by ARN instead of by name.
	StreamARN string
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
	Kinesis reader.KinesisAPI
	// DynamoDB is the DynamoDB client for the lease table; a
	// *dynamodb.Client satisfies it. Required unless LeaseStore is set.
	DynamoDB lease.DynamoDBAPI
	// LeaseStore replaces the DynamoDB lease table (for tests).
	LeaseStore lease.Store

	// ProcessorFactory makes one processor per shard lease. Required.
	ProcessorFactory kcl.ProcessorFactory
	// InitialPosition is where shards with no checkpoint start. Default:
	// LATEST, as in the Java KCL.
	InitialPosition kcl.InitialPosition

	// LeaseDuration is how long a lease stays valid without renewal.
	// Default 10s; at least 1s.
	LeaseDuration time.Duration
	// RenewInterval is how often held leases are renewed. Default:
	// LeaseDuration/3; must be below LeaseDuration/2.
	RenewInterval time.Duration
	// TakeInterval is how often the worker scans the lease table for leases
	// to take and for expired leases. Default: RenewInterval/2, which bounds
	// failover (from a worker's death to another one processing its shards)
	// by about LeaseDuration + RenewInterval.
	TakeInterval time.Duration
	// ShardSyncInterval is how often the shard list is compared with the
	// lease table. Default 60s. A shard that ends in a worker creates its
	// children's leases at once; the sync finds new shards, repairs missing
	// leases and cleans finished ones up.
	ShardSyncInterval time.Duration
	// KeepFinishedLeases keeps the leases of finished (SHARD_END) shards
	// forever. By default a shard sync deletes one once every child shard
	// has progressed past its start and the shard is gone from the stream
	// or FinishedLeaseRetention has passed.
	KeepFinishedLeases bool
	// FinishedLeaseRetention is how long the lease of a finished shard that
	// the stream still lists is kept after its children have progressed
	// (counted from when a worker first sees that). Default, and minimum:
	// the stream's retention period, so that a lease is never deleted while
	// its shard may still hold records.
	FinishedLeaseRetention time.Duration
	// CheckpointInterval, if positive, coalesces checkpoints: the
	// processor's Checkpoint records the position at once (the rules of
	// the Checkpointer apply as usual) and the worker writes it to the lease
	// table at most once per interval per shard, and always before a
	// hand-over, a graceful stop's release, a hard stop and at shard end
	// (prepared checkpoints and SHARD_END are written at once). After a
	// crash, or a lease lost before the held position was written, the next
	// owner starts after the last checkpoint written: up to CheckpointInterval
	// of processing more is delivered twice. Zero (the default) writes every
	// checkpoint at once.
	CheckpointInterval time.Duration

	// MaxRecords caps the records of one GetRecords call (1 to 10000).
	// Default 10000. With FanOut it caps the records of one batch handed to
	// the processor instead: a larger event is split into several batches,
	// in order (by default an event, at most 10000 records, is one batch).
	MaxRecords int
	// IdleTimeBetweenReads is the pause after a GetRecords call that
	// returned nothing new. Default 1s (5 calls/s per shard are shared by all
	// consumers of a stream). Polling only.
	IdleTimeBetweenReads time.Duration
	// PrefetchBatches bounds the batches fetched (or, with FanOut,
	// received) ahead of the processor per shard. Default 3. With FanOut a
	// full queue stops reading the subscription, and Kinesis stops sending.
	PrefetchBatches int
	// PrefetchBytes bounds the bytes fetched (or received) ahead of the
	// processor per shard. Default 16 MiB.
	PrefetchBytes int

	// FanOut selects enhanced fan-out: each held shard is read through a
	// SubscribeToShard subscription of a consumer registered on the stream,
	// with the shard's 2 MiB/s to itself and records pushed as they arrive,
	// instead of GetRecords polling, which shares the shard's throughput
	// with every other polling application. Processors see the same batches,
	// in the same order, with the same checkpoint and shard-end semantics,
	// either way. Kinesis must implement fanout.FanOutAPI (a
	// *kinesis.Client does), and the workers need the IAM permissions for
	// the consumer calls and SubscribeToShard. Default false: polling.
	FanOut bool
	// ConsumerName names the enhanced fan-out consumer. The first worker to
	// start registers it on the stream, the others (and later runs) reuse
	// it; it is never deregistered by the worker (fanout.DeregisterConsumer
	// does that). A stream has at most 20 consumers. Default:
	// ApplicationName. Fan-out only.
	ConsumerName string
	// FanOutEventTimeout is the longest wait for the next event of a
	// subscription. Kinesis sends one every few seconds even for an idle
	// shard, so silence means a dead (half-open) connection: the
	// subscription is replaced, resuming where it stopped. Time the
	// processor takes does not count. Default 35s; at least 1s. Fan-out
	// only.
	FanOutEventTimeout time.Duration

	// RetryInitialInterval is the first wait before a failed batch is
	// delivered again. Default 200ms.
	RetryInitialInterval time.Duration
	// RetryMaxInterval caps the wait between deliveries of a failing batch.
	// Default 30s. A failing batch is retried until it succeeds, the lease is
	// lost or the worker shuts down: records are never skipped.
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

	// BalanceByLoad balances the fleet by the records per second each shard
	// carries (measured by its holder and stored on the lease at renewal)
	// instead of by the number of shards, as the Java KCL 3.x does with
	// throughput. Off by default; every worker of an application should use
	// the same setting.
	BalanceByLoad bool

	// Logger receives structured logs. Default: slog.Default().
	Logger *slog.Logger

	// Hooks observe the worker: values implementing any of HookWorkerStart,
	// HookBatchProcessed, HookFetch, HookLease, HookCheckpoint, HookShard (the
	// metrics package provides one). A value implementing none is refused.
	Hooks []Hook
}

func (c *Config) setDefaults() {
	if c.TableName == "" {
		c.TableName = c.ApplicationName
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
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseDuration / 3
	}
	if c.TakeInterval == 0 {
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
	if c.ConsumerName == "" {
		c.ConsumerName = c.ApplicationName
	}
	if c.FanOutEventTimeout == 0 {
		c.FanOutEventTimeout = reader.DefaultEventTimeout
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
	if c.ApplicationName == "" {
		bad("ApplicationName is required")
	}
	if n := len(c.TableName); n < 3 || n > 255 || !validTableName(c.TableName) {
		bad("TableName %q is not a valid DynamoDB table name (3-255 of a-z A-Z 0-9 _ - .)", c.TableName)
	}
	if c.Kinesis == nil {
		bad("Kinesis client is required")
	}
	if c.DynamoDB == nil && c.LeaseStore == nil {
		bad("DynamoDB client (or LeaseStore) is required")
	}
	if c.ProcessorFactory == nil {
		bad("ProcessorFactory is required")
	}
	if err := c.InitialPosition.Validate(); err != nil {
		bad("%v", err)
	}
	if c.LeaseDuration < time.Second {
		bad("LeaseDuration %v is below 1s", c.LeaseDuration)
	}
	if c.RenewInterval <= 0 || c.RenewInterval*2 >= c.LeaseDuration {
		bad("RenewInterval %v must be positive and below half of LeaseDuration %v", c.RenewInterval, c.LeaseDuration)
	}
	if c.TakeInterval <= 0 {
		bad("TakeInterval %v must be positive", c.TakeInterval)
	}
	if c.ShardSyncInterval < time.Second {
		bad("ShardSyncInterval %v is below 1s", c.ShardSyncInterval)
	}
	if c.FinishedLeaseRetention < 0 {
		bad("FinishedLeaseRetention %v is negative", c.FinishedLeaseRetention)
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
	if c.FanOut {
		if _, ok := c.Kinesis.(fanout.FanOutAPI); c.Kinesis != nil && !ok {
			bad("FanOut needs a Kinesis client with the enhanced fan-out calls (fanout.FanOutAPI, as *kinesis.Client has); %T lacks them", c.Kinesis)
		}
		if fanout.ValidateConsumerName(c.ConsumerName) != nil {
			bad("ConsumerName %q (default: ApplicationName) must be 1-128 of a-z A-Z 0-9 _ . -", c.ConsumerName)
		}
		if c.FanOutEventTimeout < time.Second {
			bad("FanOutEventTimeout %v is below 1s", c.FanOutEventTimeout)
		}
	}
	if c.RetryInitialInterval <= 0 || c.RetryMaxInterval < c.RetryInitialInterval {
		bad("retry intervals %v..%v are not a positive range", c.RetryInitialInterval, c.RetryMaxInterval)
	}
	if c.StartupTimeout < 0 || c.ShutdownTimeout < 0 {
		bad("StartupTimeout and ShutdownTimeout must not be negative")
	}
	for i, h := range c.Hooks {
		if !knownHook(h) {
			bad("Hooks[%d] (%T) implements no hook interface", i, h)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", kcl.ErrInvalidConfig, strings.Join(errs, "; "))
	}
	return nil
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
