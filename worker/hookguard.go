package worker

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardline/shardline/internal/shardproc"
)

// hookPanicLogEvery is how often, at most, the panics of hooks of one kind
// are logged after the first (each log line carries the running count).
const hookPanicLogEvery = time.Minute

// hookGuard keeps a panicking hook from crashing the worker: the panic is
// recovered, counted, and logged at ERROR with its stack, the first time for
// each kind of event and then at most once per hookPanicLogEvery.
type hookGuard struct {
	log    *slog.Logger
	panics atomic.Int64
	mu     sync.Mutex
	logged map[string]time.Time // event kind -> last log line
}

// call runs one hook call for an event of the given kind under the guard.
func (g *hookGuard) call(kind string, fn func()) {
	err := shardproc.Recover(func() error { fn(); return nil })
	if err == nil {
		return
	}
	n := g.panics.Add(1)
	now := time.Now()
	g.mu.Lock()
	last, seen := g.logged[kind]
	due := !seen || now.Sub(last) >= hookPanicLogEvery
	if due {
		if g.logged == nil {
			g.logged = map[string]time.Time{}
		}
		g.logged[kind] = now
	}
	g.mu.Unlock()
	if due && g.log != nil {
		g.log.Error("a hook panicked; the panic was recovered and the event skipped for that hook",
			"event", kind, "hook_panics", n, shardproc.ErrAttr(err), shardproc.StackAttr(err))
	}
}
