package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/shardproc"
)

// Health is a worker's state as orchestrators probe it; see
// [Worker.HealthHandler].
type Health struct {
	// Live is false when the worker should be restarted: Run has returned,
	// or, while it runs, the lease renewal loop or the shard sync loop is
	// stuck (not merely failing: a DynamoDB or Kinesis outage is survived
	// by retrying, and a restart would not help). The renewal loop is the
	// one that writes the worker's heartbeat.
	Live bool `json:"live"`
	// Ready is true when the worker has started, is not stopping, and holds
	// leases or can take them: its heartbeat was written to the lease table
	// within the last LeaseDuration.
	Ready bool `json:"ready"`
	// Reason says why the worker is not live or not ready; empty otherwise.
	Reason string `json:"reason,omitempty"`
}

// healthState holds the timestamps Health is computed from (monotonic clock).
type healthState struct {
	mu        sync.Mutex
	started   bool      // start-up finished, the lease manager runs
	stopping  bool      // a stop began
	round     time.Time // the renewal loop's last presence write, done or failed
	presence  time.Time // its last successful one
	lastErr   error     // the last failed one's error
	syncSince time.Time // a running shard sync's start (zero when none)
}

// healthStore is the lease table as the lease manager sees it: every
// heartbeat (one write of the fleet row per heartbeat period) is timed for
// Health.
type healthStore struct {
	lease.Store
	h *healthState
}

// Unwrap returns the store under the timing, so that the lease layer finds
// the DynamoDB store's optional capabilities (transactions).
func (s healthStore) Unwrap() lease.Store { return s.Store }

func (s healthStore) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (lease.Fleet, error) {
	out, err := s.Store.Beat(ctx, id, from, withdrawn, bump, stalls)
	now := time.Now()
	s.h.mu.Lock()
	s.h.round, s.h.lastErr = now, err
	if err == nil {
		s.h.presence = now
	}
	s.h.mu.Unlock()
	return out, err
}

func (h *healthState) set(f func(h *healthState)) {
	h.mu.Lock()
	f(h)
	h.mu.Unlock()
}

// Health reports whether the worker is live and ready. It is cheap and safe
// to call from any goroutine, at any time.
func (w *Worker) Health() Health {
	now := time.Now()
	select {
	case <-w.done:
		return Health{Reason: "stopped: Run returned"}
	default:
	}
	h := &w.health
	h.mu.Lock()
	defer h.mu.Unlock()
	// A heartbeat (one write, bounded by LeaseDuration) is due every
	// min(RenewInterval, TakeInterval): a loop that has not come round for a
	// renewal interval plus three lease durations (one to spare) is stuck.
	renewBound := w.cfg.RenewInterval + 3*w.cfg.LeaseDuration
	syncBound := w.cfg.ShardSyncInterval + w.cfg.StartupTimeout
	switch {
	case !h.started:
		return Health{Live: true, Reason: "starting"}
	case h.stopping:
		return Health{Live: true, Reason: "stopping"}
	case now.Sub(h.round) > renewBound:
		return Health{Reason: fmt.Sprintf("lease renewal loop stuck: no round for %v (bound %v)",
			now.Sub(h.round).Round(time.Millisecond), renewBound)}
	case !h.syncSince.IsZero() && now.Sub(h.syncSince) > syncBound:
		return Health{Reason: fmt.Sprintf("shard sync stuck for %v (bound %v)",
			now.Sub(h.syncSince).Round(time.Millisecond), syncBound)}
	case now.Sub(h.presence) > w.cfg.LeaseDuration:
		reason := fmt.Sprintf("lease table not written for %v", now.Sub(h.presence).Round(time.Millisecond))
		if h.lastErr != nil {
			reason += ": " + shardproc.Truncate(h.lastErr.Error(), shardproc.MaxLoggedErrBytes)
		}
		return Health{Live: true, Reason: reason}
	}
	return Health{Live: true, Ready: true}
}

// HealthHandler serves [Worker.Health] for orchestrator probes: a request
// whose path ends in "/livez" is answered from Live, any other from Ready
// (mount it at /livez and /readyz). The status is 200 or 503, the body the
// Health as JSON. The application serves it; the worker starts no server.
func (w *Worker) HealthHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := w.Health()
		ok := h.Ready
		if strings.HasSuffix(r.URL.Path, "/livez") {
			ok = h.Live
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Header().Set("Cache-Control", "no-store")
		if !ok {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(h)
	})
}
