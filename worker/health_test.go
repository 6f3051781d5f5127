package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/worker"
)

// heartbeatGate is a lease table whose presence heartbeats can be made to
// fail (the table unreachable) or to hang (a stuck renewal loop).
type heartbeatGate struct {
	lease.Store
	mu   sync.Mutex
	fail bool
	hang chan struct{} // when set, heartbeats wait until it is closed
}

func (g *heartbeatGate) Beat(ctx context.Context, id string, from int64, withdrawn, bump bool, stalls map[string]string) (lease.Fleet, error) {
	g.mu.Lock()
	fail, hang := g.fail, g.hang
	g.mu.Unlock()
	if hang != nil {
		<-hang
	}
	if fail {
		return lease.Fleet{}, errors.New("injected: table unreachable")
	}
	return g.Store.Beat(ctx, id, from, withdrawn, bump, stalls)
}

func (g *heartbeatGate) set(fail bool, hang chan struct{}) {
	g.mu.Lock()
	g.fail, g.hang = fail, hang
	g.mu.Unlock()
}

// probe asks the handler at path and returns the status and the Health in
// the body.
func probe(t *testing.T, h http.Handler, path string) (int, worker.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var got worker.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("%s: body %q is not a Health: %v", path, rec.Body.String(), err)
	}
	return rec.Code, got
}

// wantProbes checks the status of /livez and /readyz and that a failing
// probe says why.
func wantProbes(t *testing.T, w *worker.Worker, live, ready int, reason string) {
	t.Helper()
	for path, want := range map[string]int{"/livez": live, "/readyz": ready} {
		code, h := probe(t, w.HealthHandler(), path)
		if code != want || !strings.Contains(h.Reason, reason) {
			t.Errorf("%s: %d %+v, want %d and a reason containing %q", path, code, h, want, reason)
		}
	}
}

func TestHealthFollowsTheLeaseTableAndTheLoops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := newFakeStream("s", 2)
		gate := &heartbeatGate{Store: lease.NewMemoryStore()}
		cfg := fakeWorkerConfig(t, fs, gate, "w1", newKeyLog()) // LeaseDuration 3s, RenewInterval 1s
		w, err := worker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wantProbes(t, w, 200, 503, "starting")

		w, stop := runFake(t, cfg)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if h := w.Health(); !h.Live || !h.Ready || h.Reason != "" {
			t.Fatalf("running: %+v, want live and ready", h)
		}
		wantProbes(t, w, 200, 200, "")

		// The lease table unreachable: not ready (no leases can be taken or
		// kept), but live: a restart would not help.
		gate.set(true, nil)
		time.Sleep(cfg.LeaseDuration + 2*cfg.RenewInterval)
		synctest.Wait()
		wantProbes(t, w, 200, 503, "injected: table unreachable")
		gate.set(false, nil)
		time.Sleep(2 * cfg.RenewInterval)
		synctest.Wait()
		wantProbes(t, w, 200, 200, "")

		// The renewal loop stuck: not live.
		hang := make(chan struct{})
		gate.set(false, hang)
		time.Sleep(cfg.RenewInterval + 3*cfg.LeaseDuration + 2*time.Second)
		synctest.Wait()
		wantProbes(t, w, 503, 503, "lease renewal loop stuck")
		close(hang)
		time.Sleep(2 * cfg.RenewInterval)
		synctest.Wait()
		wantProbes(t, w, 200, 200, "")

		if err := stop(); err != nil {
			t.Fatal(err)
		}
		wantProbes(t, w, 503, 503, "stopped")
	})
}

func TestHealthOnTheEmulators(t *testing.T) {
	kc := testenv.Kinesis(t)
	stream := testenv.CreateStream(t, kc, 1)
	rec := newRecorder()
	w, err := worker.New(baseConfig(t, stream, testenv.UniqueName("app"), rec.factory))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.HealthHandler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if get("/readyz") != 503 || get("/livez") != 200 {
		t.Fatal("before Run: want live, not ready")
	}
	stop := start(t, w)
	put(t, kc, stream, 3, "h")
	rec.waitFor(t, 30*time.Second, "3 records", func() bool { return rec.count() == 3 })
	if get("/readyz") != 200 || get("/livez") != 200 {
		t.Fatalf("consuming: %+v, want live and ready", w.Health())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if get("/livez") != 503 || get("/readyz") != 503 {
		t.Fatalf("after Run returned: %+v, want neither live nor ready", w.Health())
	}
}

// listGate is a stream whose ListShards calls can be made to hang.
type listGate struct {
	*fakeStream
	mu   sync.Mutex
	hang chan struct{}
}

func (g *listGate) ListShards(ctx context.Context, in *kinesis.ListShardsInput, opts ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error) {
	g.mu.Lock()
	hang := g.hang
	g.mu.Unlock()
	if hang != nil {
		<-hang
	}
	return g.fakeStream.ListShards(ctx, in, opts...)
}

func TestHealthNotLiveWhileAShardSyncHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := &listGate{fakeStream: newFakeStream("s", 1)}
		cfg := fakeWorkerConfig(t, gate.fakeStream, lease.NewMemoryStore(), "w1", newKeyLog())
		cfg.Kinesis = gate
		cfg.ShardSyncInterval, cfg.StartupTimeout = 10*time.Second, 5*time.Second
		w, stop := runFake(t, cfg)
		time.Sleep(time.Second)
		synctest.Wait()
		wantProbes(t, w, 200, 200, "")

		hang := make(chan struct{})
		gate.mu.Lock()
		gate.hang = hang
		gate.mu.Unlock()
		// The next sync starts within ShardSyncInterval and hangs; it is
		// stuck once it has run for ShardSyncInterval + StartupTimeout.
		time.Sleep(cfg.ShardSyncInterval + cfg.ShardSyncInterval + cfg.StartupTimeout + time.Second)
		synctest.Wait()
		wantProbes(t, w, 503, 503, "shard sync stuck")
		close(hang)
		synctest.Wait()
		wantProbes(t, w, 200, 200, "")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
