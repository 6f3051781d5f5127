package shardproc

import (
	"errors"
	"fmt"
	"log/slog"
	"unicode/utf8"

	"github.com/shardline/shardline/kcl"
)

// MaxLoggedErrBytes caps the message of an error in the logs. Errors from
// application code (processors, their factory, dead-letter handlers, a
// panic value) may carry record data; the README promises that record data
// is not logged beyond this many bytes of such a message.
const MaxLoggedErrBytes = 200

// ErrAttr is the "err" attribute of a log line about an error that may come
// from application code: the error's type (for a panic, the panic value's
// type) and its message cut to MaxLoggedErrBytes, never the whole value.
func ErrAttr(err error) slog.Attr {
	if err == nil {
		return slog.Group("err", "type", "nil")
	}
	return slog.Group("err", "type", ErrorType(err), "msg", Truncate(err.Error(), MaxLoggedErrBytes))
}

// StackAttr is the "stack" attribute of a recovered panic's log line (a
// stack names functions and files, never record data); for other errors
// an empty group, which slog drops.
func StackAttr(err error) slog.Attr {
	var pe *kcl.ProcessorPanicError
	if errors.As(err, &pe) {
		return slog.String("stack", string(pe.Stack))
	}
	return slog.Group("stack")
}

// Truncate cuts s to at most n bytes on a rune boundary and says how much
// was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s...[%d bytes cut]", s[:cut], len(s)-cut)
}
