package reader

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shardline/shardline/internal/awsx"
	"github.com/shardline/shardline/kcl"
)

// ErrClosed is returned by [Reader.Next] after [Reader.Close].
var ErrClosed = errors.New("reader: closed")

type errKind = awsx.Kind

const (
	kindTransient = awsx.Transient
	kindThrottled = awsx.Throttled
	kindInUse     = awsx.InUse // SubscribeToShard during a hand-over: routine, not throttling
	kindExpired   = awsx.Expired
	kindTrimmed   = awsx.Trimmed
	kindNotFound  = awsx.NotFound
	kindFatal     = awsx.Fatal
)

func classify(err error) errKind { return awsx.Classify(err) }

// ErrorKind names the class of a Kinesis error as FetchEvent.ErrorKind does.
func ErrorKind(err error) string { return awsx.Label(err) }

// sleep waits for d or until ctx ends (then returning ctx's error).
func sleep(ctx context.Context, d time.Duration) error { return awsx.Sleep(ctx, d) }

// fatal wraps an error that ends the reader.
func (r *shardReader) fatal(op string, err error) error {
	if classify(err) == kindNotFound && !errors.Is(err, kcl.ErrStreamNotFound) {
		err = fmt.Errorf("%w: %w", kcl.ErrStreamNotFound, err)
	}
	return fmt.Errorf("shardline: shard %s: %s: %w", r.shardID, op, err)
}
