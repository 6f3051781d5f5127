package reader

import (
	"errors"

	"github.com/shardline/shardline/internal/awsx"
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
