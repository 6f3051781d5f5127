package worker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shardline/shardline/internal/lease"
	"github.com/shardline/shardline/kcl"
	"github.com/shardline/shardline/worker"
)

// logBuffer collects a worker's log lines (and passes them to t.Log).
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain every one of parts.
func (l *logBuffer) count(parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(l.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func captureLogs(t *testing.T, cfg *worker.Config) *logBuffer {
	l := &logBuffer{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return l
}

// oneShard is a worker "w1" on a one-shard fake stream holding 32 records
// (produced: per shard), its processors recording into k, its logs
// captured.
func oneShard(t *testing.T) (produced map[string]int, k *keyLog, cfg worker.Config, logs *logBuffer) {
	fs := newFakeStream("s", 1)
	produced = fs.putKeys(8, 4)
	k = newKeyLog()
	cfg = fakeWorkerConfig(t, fs, lease.NewMemoryStore(), "w1", k)
	logs = captureLogs(t, &cfg)
	return produced, k, cfg, logs
}

// waitUntil advances the bubble's clock until cond holds, failing after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Issue 19, item 7: a factory returning (nil, nil) used to make the shard
// cycle through take and release about twice a second, logged with
// err=null. Now it is an error that says so, the factory is called again
// after a wait that doubles from RetryInitialInterval, the failure is
// logged once, and once the factory works every record is delivered.
func TestFactoryFailuresBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		produced, k, cfg, logs := oneShard(t)
		var mu sync.Mutex
		var calls []time.Time
		broken := true
		cfg.ProcessorFactory = func(shard string) (kcl.RecordProcessor, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, time.Now())
			if broken && len(calls) >= 100 { // no backoff: stop spinning, and fail
				t.Error("factory called 100 times")
				broken = false
			}
			if broken {
				return nil, nil
			}
			return k.factory("w1")(shard)
		}
		_, stop := runFake(t, cfg)
		time.Sleep(12 * time.Second)
		mu.Lock()
		got := append([]time.Time(nil), calls...)
		broken = false
		mu.Unlock()
		if len(got) < 3 || len(got) > 10 {
			t.Errorf("factory called %d times in 12 s, want a handful (backoff from 50 ms, doubling)", len(got))
		}
		for i := 2; i < len(got); i++ {
			prev, gap := got[i-1].Sub(got[i-2]), got[i].Sub(got[i-1])
			if prev < cfg.RetryInitialInterval || gap < prev*3/2 {
				t.Errorf("factory calls %v and %v apart: want at least RetryInitialInterval, doubling", prev, gap)
				break
			}
		}
		if n := logs.count("level=ERROR", "processor factory failed"); n != 1 {
			t.Errorf("%d ERROR lines about the factory, want 1 (once per change)", n)
		}
		if n := logs.count("nil processor"); n < 1 {
			t.Errorf("no log line says the factory returned a nil processor")
		}
		if n := logs.count("err=null"); n != 0 {
			t.Errorf("%d log lines with err=null", n)
		}
		want := produced[shard0]
		waitUntil(t, time.Minute, "every record", func() bool { return len(k.deliveries()) >= want })
		if n := logs.count("processor factory succeeded again"); n != 1 {
			t.Errorf("%d log lines about the factory's recovery, want 1", n)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// panicHook panics on every event it observes.
type panicHook struct{}

func (h *panicHook) OnEvent(e worker.Event) { panic("hook: " + string(e.Kind)) }

// Issue 19, item 9: a panicking ProcessorFactory crashed the process, and
// so did a panicking hook. Now the factory's panic is a
// *kcl.ProcessorPanicError, logged with its stack, and retried with
// backoff; a hook's panic is recovered and logged; nothing is lost.
func TestPanickingFactoryAndHooksDoNotCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		produced, k, cfg, logs := oneShard(t)
		cfg.Hooks = []worker.Hook{&panicHook{}}
		var mu sync.Mutex
		calls := 0
		cfg.ProcessorFactory = func(shard string) (kcl.RecordProcessor, error) {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n <= 2 {
				panic("factory is broken")
			}
			return k.factory("w1")(shard)
		}
		_, stop := runFake(t, cfg)
		want := produced[shard0]
		waitUntil(t, time.Minute, "every record", func() bool { return len(k.deliveries()) >= want })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n := logs.count("level=ERROR", "processor factory failed", "panic(string)", "stack="); n != 1 {
			t.Errorf("%d ERROR lines about the factory's panic with its type and stack, want 1", n)
		}
		for _, kind := range []worker.EventKind{worker.EventBatchProcessed, worker.EventShardStarted, worker.EventLeaseAcquired} {
			if n := logs.count("level=ERROR", "a hook panicked", "event="+string(kind), "stack="); n != 1 {
				t.Errorf("%d ERROR lines about the %s hook's panics, want 1 (the first; then once a minute)", n, kind)
			}
		}
	})
}

// stuckProc blocks in its first ProcessRecords, ignoring its context,
// until release is closed.
type stuckProc struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *stuckProc) ProcessRecords(ctx context.Context, in kcl.ProcessRecordsInput) error {
	p.once.Do(func() { close(p.entered) })
	<-p.release
	return nil
}

// workerGoroutines returns the stacks of the goroutines running code of
// the module's non-test packages, except those inside stuckProc.
func workerGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "stuckProc") || strings.Contains(g, "worker_test.") && !strings.Contains(g, "shardline/worker.") {
			continue
		}
		if strings.Contains(g, "github.com/shardline/shardline/worker.") || strings.Contains(g, "github.com/shardline/shardline/internal/") {
			out = append(out, g)
		}
	}
	return out
}

// Issue 19, item 8: with a processor that ignores its context, neither
// Shutdown(ctx) nor ShutdownTimeout bounded anything. Now Run and Shutdown
// return by the bound with an error naming the stuck shard; the stuck
// callback's goroutine is the only one of the worker left; the stuck
// shard's lease is not released (it expires).
func TestStopIsBoundedWhenAProcessorIgnoresItsContext(t *testing.T) {
	for _, via := range []string{"Shutdown", "ShutdownTimeout"} {
		t.Run(via, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fs := newFakeStream("s", 2)
				fs.putKeys(8, 4)
				store := lease.NewMemoryStore()
				k := newKeyLog()
				cfg := fakeWorkerConfig(t, fs, store, "w1", k)
				cfg.ShutdownTimeout = 3 * time.Second
				stuck := &stuckProc{entered: make(chan struct{}), release: make(chan struct{})}
				cfg.ProcessorFactory = func(shard string) (kcl.RecordProcessor, error) {
					if shard == shard0 {
						return stuck, nil
					}
					return k.factory("w1")(shard)
				}
				w, err := worker.New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				runErr := make(chan error, 1)
				go func() { runErr <- w.Run(ctx) }()
				<-stuck.entered
				waitUntil(t, time.Minute, "shard 1 delivering", func() bool { return len(k.deliveries()) > 0 })

				begin := time.Now()
				var err1, err2 error
				done := make(chan struct{})
				go func() {
					defer close(done)
					if via == "Shutdown" {
						sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
						err1 = w.Shutdown(sctx)
						scancel()
						err2 = <-runErr
					} else {
						cancel()
						err2 = <-runErr
						err1 = err2
					}
				}()
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					t.Errorf("%s had not returned 30 s after its 3 s bound", via)
					close(stuck.release)
					<-done
					synctest.Wait()
					return
				}
				if took := time.Since(begin); took > 3*time.Second {
					t.Errorf("%s returned after %v, want by its 3 s bound", via, took)
				}
				for _, err := range []error{err1, err2} {
					if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), shard0) || strings.Contains(err.Error(), shard1) {
						t.Errorf("error %v: want context.DeadlineExceeded naming %s only", err, shard0)
					}
				}
				synctest.Wait()
				if left := workerGoroutines(); len(left) > 0 {
					t.Errorf("%d goroutines of the worker outlive it besides the stuck callback:\n%s", len(left), strings.Join(left, "\n\n"))
				}
				if l, ok := leaseOf(t, store, shard0); !ok || l.Owner != "w1" {
					t.Errorf("stuck shard's lease %+v: want it still held by w1 (not released; it expires)", l)
				}
				if l, ok := leaseOf(t, store, shard1); !ok || l.Owner != "" {
					t.Errorf("healthy shard's lease %+v: want it released", l)
				}
				close(stuck.release) // the abandoned goroutine ends: its lease is lost
				// Let it end (it logs through t) before the test does.
				synctest.Wait()
			})
		})
	}
}
