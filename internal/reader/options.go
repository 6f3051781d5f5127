package reader

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/kcl"
)

// Defaults and limits of [Options].
const (
	// DefaultMaxRecords is the default GetRecords limit (the API's maximum)
	// and, with fan-out, the default cap on the records of one batch (the
	// most records one event carries, so events are not split).
	DefaultMaxRecords = 10000
	// DefaultIdleTimeBetweenReads is the default pause after a read that
	// returned no records.
	DefaultIdleTimeBetweenReads = time.Second
	// DefaultPrefetchBatches is the default number of batches a reader keeps
	// ready ahead of the consumer.
	DefaultPrefetchBatches = 3
	// DefaultPrefetchBytes is the default bound on the record memory a reader
	// keeps ready ahead of the consumer.
	DefaultPrefetchBytes = 16 << 20
	// DefaultBackoffInitial is the default first retry delay after an error.
	DefaultBackoffInitial = 100 * time.Millisecond
	// DefaultBackoffMax is the default longest retry delay after errors.
	DefaultBackoffMax = 10 * time.Second
	// DefaultCallTimeout is the default bound on one GetRecords or
	// GetShardIterator call.
	DefaultCallTimeout = 30 * time.Second
	// DefaultEventTimeout is the default longest wait for the next event of a
	// subscription. Kinesis sends an event every few seconds even when a
	// shard is idle, so a longer silence means a dead (half-open) connection.
	// The Java KCL gives up after 35 seconds too.
	DefaultEventTimeout = 35 * time.Second

	// maxGetRecordsLimit is the largest Limit GetRecords accepts.
	maxGetRecordsLimit = 10000
)

// Options configures the readers of a stream's shards, polling or fan-out.
// Zero values select the defaults; fields of the other way of reading are
// ignored.
type Options struct {
	// StreamName names the stream. StreamName or StreamARN is required.
	// With fan-out and the name only, the ARN is looked up once
	// (DescribeStreamSummary).
	StreamName string
	// StreamARN identifies the stream; when set, polling passes it on every
	// API call instead of StreamName.
	StreamARN string

	// ConsumerName names the enhanced fan-out consumer, registered on the
	// stream on first use unless it exists. Fan-out only; required unless
	// ConsumerARN is set.
	ConsumerName string
	// ConsumerARN, if set, is an existing consumer to subscribe through: no
	// registration is attempted. Fan-out only.
	ConsumerARN string

	// MaxRecords, 1 to 10000 (default 10000), is the GetRecords limit per
	// call when polling, and the cap on the user records of one batch: the
	// records of a fan-out event, and those unpacked from KPL aggregates,
	// are split into several batches, in order.
	MaxRecords int
	// IdleTimeBetweenReads is the pause after a GetRecords call that
	// returned no records (default 1s; a negative value means no pause).
	// Whatever its value, calls that return no records are at least 200ms
	// apart, the per-shard limit of 5 GetRecords calls per second. After a
	// read with records the next call follows at once; the prefetch bound is
	// the brake. Polling only.
	IdleTimeBetweenReads time.Duration
	// CallTimeout bounds each GetRecords and GetShardIterator call (default
	// 30s; a negative value means no bound beyond the reader's life). A call
	// still unanswered then (a black-holed connection, say) is abandoned and
	// counts as a transient error: the reader backs off and calls again,
	// with a new shard iterator if the old one expired meanwhile. Keep it
	// above the client's own retry budget. Polling only.
	CallTimeout time.Duration
	// EventTimeout is the longest wait for the next event of a subscription
	// (default 35s). After it the subscription is taken for dead (a
	// half-open connection) and replaced. Time spent waiting for the
	// consumer of the batches (backpressure) does not count. Fan-out only.
	EventTimeout time.Duration

	// PrefetchBatches bounds the number of batches fetched ahead of the
	// consumer (default 3). With fan-out, when the queue is full, reading
	// the subscription stops, and Kinesis stops sending (HTTP/2 flow
	// control).
	PrefetchBatches int
	// PrefetchBytes bounds the memory of the records fetched ahead of the
	// consumer, as [RecordsMemory] counts it (default 16 MiB). One batch
	// larger than this is still accepted when nothing else is waiting.
	PrefetchBytes int64
	// BackoffInitial is the first delay before retrying after a throttled or
	// failed call (default 100ms), and the shortest. Delays grow
	// exponentially with jitter.
	// With fan-out, whatever the backoff, subscribe calls for one shard are
	// at least one second apart.
	BackoffInitial time.Duration
	// BackoffMax bounds the delay between retries (default 10s). Retries go
	// on until they succeed or the reader is closed.
	BackoffMax time.Duration
	// Logger receives warnings about retention gaps, retried errors and,
	// with fan-out, the consumer's registration and resubscriptions
	// (default slog.Default()).
	Logger *slog.Logger
	// Observer, if set, is told about every read call: GetRecords when
	// polling; with fan-out every SubscribeToShard call (Op
	// "SubscribeToShard", also when a subscription ends with an error) and
	// every event received (Op "SubscribeToShardEvent").
	Observer Observer
	// Records says how Kinesis records become user records: KPL
	// de-aggregation (on by default), a decoder, anomaly counts.
	Records RecordOptions
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	orDefault(&o.MaxRecords, DefaultMaxRecords)
	orDefault(&o.IdleTimeBetweenReads, DefaultIdleTimeBetweenReads)
	orDefault(&o.CallTimeout, DefaultCallTimeout)
	orDefault(&o.EventTimeout, DefaultEventTimeout)
	orDefault(&o.PrefetchBatches, DefaultPrefetchBatches)
	orDefault(&o.PrefetchBytes, DefaultPrefetchBytes)
	orDefault(&o.BackoffInitial, DefaultBackoffInitial)
	orDefault(&o.BackoffMax, DefaultBackoffMax)
	orDefault(&o.Logger, slog.Default())
	return o
}

// orDefault sets *v to def when it is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// invalid returns an error wrapping kcl.ErrInvalidConfig.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: reader: %s", kcl.ErrInvalidConfig, fmt.Sprintf(format, args...))
}

// validate checks options after withDefaults; fanOut adds the checks of
// the consumer and the event timeout.
func (o Options) validate(fanOut bool) error {
	switch {
	case o.StreamName == "" && o.StreamARN == "":
		return invalid("StreamName or StreamARN is required")
	case o.StreamARN != "" && !strings.HasPrefix(o.StreamARN, "arn:"):
		return invalid("StreamARN %q is not an ARN", o.StreamARN)
	case o.MaxRecords < 1 || o.MaxRecords > maxGetRecordsLimit:
		return invalid("MaxRecords %d is outside 1..%d", o.MaxRecords, maxGetRecordsLimit)
	case o.PrefetchBatches < 1:
		return invalid("PrefetchBatches %d must be positive", o.PrefetchBatches)
	case o.PrefetchBytes < 1:
		return invalid("PrefetchBytes %d must be positive", o.PrefetchBytes)
	case o.BackoffInitial < 0:
		return invalid("BackoffInitial %v is negative", o.BackoffInitial)
	case o.BackoffMax < o.BackoffInitial:
		return invalid("BackoffMax %v is below BackoffInitial %v", o.BackoffMax, o.BackoffInitial)
	case !fanOut:
		return nil
	case o.ConsumerARN != "" && !strings.HasPrefix(o.ConsumerARN, "arn:"):
		return invalid("ConsumerARN %q is not an ARN", o.ConsumerARN)
	case o.ConsumerARN == "" && !awsx.ValidConsumerName(o.ConsumerName):
		return invalid("ConsumerName %q must be 1-128 of a-z A-Z 0-9 _ . - (or set ConsumerARN)", o.ConsumerName)
	case o.EventTimeout < 0:
		return invalid("EventTimeout %v is negative", o.EventTimeout)
	}
	return nil
}

// stream returns the stream's ARN, else its name, for logs and errors.
func (o Options) stream() string {
	if o.StreamARN != "" {
		return o.StreamARN
	}
	return o.StreamName
}
