package testenv

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logs keeps the log records of a test, for assertions on what was logged
// (and how often). Its logger also writes every record to t.Log.
type Logs struct {
	t    testing.TB
	text slog.Handler

	mu   sync.Mutex
	recs []slog.Record
}

// NewLogs returns an empty record of t's logs.
func NewLogs(t testing.TB) *Logs {
	l := &Logs{t: t}
	l.text = slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})
	return l
}

// Logger returns a logger, at level Debug, that records into l.
func (l *Logs) Logger() *slog.Logger { return slog.New(logsHandler{l: l, text: l.text}) }

// Count returns how many records at level contain msg in their message and
// have every attribute of attrs (key, value, key, value...; values compared
// as formatted by slog).
func (l *Logs) Count(level slog.Level, msg string, attrs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, msg) && hasAttrs(r, attrs) {
			n++
		}
	}
	return n
}

// Records returns the records at level whose message contains msg.
func (l *Logs) Records(level slog.Level, msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, msg) {
			out = append(out, r.Clone())
		}
	}
	return out
}

func hasAttrs(r slog.Record, attrs []string) bool {
	for i := 0; i+1 < len(attrs); i += 2 {
		found := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == attrs[i] && a.Value.String() == attrs[i+1] {
				found = true
				return false
			}
			return true
		})
		if !found {
			return false
		}
	}
	return true
}

type logsHandler struct {
	l     *Logs
	text  slog.Handler
	attrs []slog.Attr
}

func (h logsHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h logsHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.l.mu.Lock()
	h.l.recs = append(h.l.recs, r)
	h.l.mu.Unlock()
	return h.text.Handle(ctx, r)
}

func (h logsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.attrs = append(h.attrs[:len(h.attrs):len(h.attrs)], as...)
	return h
}

// WithGroup is not supported: attributes stay flat.
func (h logsHandler) WithGroup(string) slog.Handler { return h }

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
