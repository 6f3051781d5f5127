package reader

import (
	"log/slog"
	"strings"
	"time"
)

// readerOptions are the options a Poller and a Subscriber share: which
// stream, how much to read ahead, how to back off, where to log. Each
// options type hands pointers to its own fields so that one piece of code
// sets their defaults and checks them.
type readerOptions struct {
	streamName, streamARN      *string
	prefetchBatches            *int
	prefetchBytes              *int64
	backoffInitial, backoffMax *time.Duration
	logger                     **slog.Logger
}

// setDefaults gives every zero shared field its default.
func (o readerOptions) setDefaults() {
	if *o.prefetchBatches == 0 {
		*o.prefetchBatches = DefaultPrefetchBatches
	}
	if *o.prefetchBytes == 0 {
		*o.prefetchBytes = DefaultPrefetchBytes
	}
	if *o.backoffInitial == 0 {
		*o.backoffInitial = DefaultBackoffInitial
	}
	if *o.backoffMax == 0 {
		*o.backoffMax = DefaultBackoffMax
	}
	if *o.logger == nil {
		*o.logger = slog.Default()
	}
}

// validate checks the shared fields (after setDefaults); bad formats the
// caller's error.
func (o readerOptions) validate(bad func(format string, args ...any) error) error {
	switch {
	case *o.streamName == "" && *o.streamARN == "":
		return bad("StreamName or StreamARN is required")
	case *o.streamARN != "" && !strings.HasPrefix(*o.streamARN, "arn:"):
		return bad("StreamARN %q is not an ARN", *o.streamARN)
	case *o.prefetchBatches < 1:
		return bad("PrefetchBatches %d must be positive", *o.prefetchBatches)
	case *o.prefetchBytes < 1:
		return bad("PrefetchBytes %d must be positive", *o.prefetchBytes)
	case *o.backoffInitial < 0:
		return bad("BackoffInitial %v is negative", *o.backoffInitial)
	case *o.backoffMax < *o.backoffInitial:
		return bad("BackoffMax %v is below BackoffInitial %v", *o.backoffMax, *o.backoffInitial)
	}
	return nil
}
