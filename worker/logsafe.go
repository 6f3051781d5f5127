package worker

import (
	"log/slog"

	"github.com/shardline/shardline/internal/shardproc"
)

// maxLoggedErrBytes caps the message of an application error in the logs
// (see shardproc.MaxLoggedErrBytes).
const maxLoggedErrBytes = shardproc.MaxLoggedErrBytes

// errAttr is the "err" attribute of a log line about an error that may come
// from application code (see shardproc.ErrAttr).
func errAttr(err error) slog.Attr { return shardproc.ErrAttr(err) }

// truncate cuts s to at most n bytes (see shardproc.Truncate).
func truncate(s string, n int) string { return shardproc.Truncate(s, n) }
