package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shardline/shardline/internal/fleet"
	"github.com/shardline/shardline/internal/testenv"
	"github.com/shardline/shardline/kcl"
)

// requireNodeKCL skips the test unless node and the npm aws-kcl package
// (installed by `npm ci` at the repository root) are available, and returns
// the directory of the JavaScript processor.
func requireNodeKCL(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed")
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "-e", "require.resolve('aws-kcl')")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("the npm package aws-kcl is not installed (run npm ci at the repository root): %v\n%s", err, out)
	}
	return dir
}

// buildDaemon compiles this command into dir.
func buildDaemon(t testing.TB, dir string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "shardline-multilang")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command(goTool, append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemon is one shardline-multilang process of the test.
type daemon struct {
	id      string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	err     error // set before done is closed
}

// daemons starts and tracks shardline-multilang processes sharing one
// properties file; each writes its events (through its JavaScript
// children) to <dir>/<id>.events.jsonl and its log to <dir>/<id>.log.
type daemons struct {
	t          testing.TB
	bin, props string
	appDir     string
	dir        string

	mu    sync.Mutex
	procs []*daemon
	ids   []string
}

func (d *daemons) eventsPath(id string) string { return filepath.Join(d.dir, id+".events.jsonl") }

func (d *daemons) start(id string) *daemon {
	d.t.Helper()
	logFile, err := os.OpenFile(filepath.Join(d.dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, "-worker-id", id, "-log-level", "info", d.props)
	cmd.Dir = d.appDir // executableName is relative, as in a Java daemon deployment
	cmd.Env = append(os.Environ(), "SHARDLINE_EVENTS="+d.eventsPath(id), "SHARDLINE_WORKER_ID="+id, "SHARDLINE_WORK_MS=200",
		"AWS_ACCESS_KEY_ID=shardline", "AWS_SECRET_ACCESS_KEY=shardline")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The "start" line opens a new incarnation for fleet.Check; it is
	// written before any child of the new process can write.
	ev, _ := json.Marshal(fleet.Event{Type: fleet.EventStart, Time: time.Now(), Worker: id})
	f, err := os.OpenFile(d.eventsPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	_, _ = f.Write(append(ev, '\n'))
	f.Close()
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	p := &daemon{id: id, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	if !slices.Contains(d.ids, id) {
		d.ids = append(d.ids, id)
	}
	d.mu.Unlock()
	return p
}

func (d *daemons) killAll() {
	d.mu.Lock()
	procs := slices.Clone(d.procs)
	d.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (d *daemons) events() fleet.Events {
	d.t.Helper()
	var all fleet.Events
	d.mu.Lock()
	ids := slices.Clone(d.ids)
	d.mu.Unlock()
	for _, id := range ids {
		evs, err := fleet.ReadEvents(d.eventsPath(id))
		if err != nil {
			d.t.Fatal(err)
		}
		all.Records = append(all.Records, evs.Records...)
		all.Damaged += evs.Damaged
	}
	return all
}

func (p *daemon) signal(t testing.TB, sig syscall.Signal) time.Time {
	t.Helper()
	at := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.id, err)
	}
	return at
}

func (p *daemon) wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v", p.id, within)
		return nil
	}
}

// TestNodeProcessorFleet runs a record processor written with the npm
// aws-kcl library under two daemons on a 4-shard stream with continuous
// production, kills one (SIGKILL), restarts it, stops the other gracefully
// (SIGTERM), and checks that every record was delivered in order per shard,
// with duplicates only from the killed daemon's shards after their last
// checkpoint, and that the lease table holds the checkpoints the processors
// asked for.
func TestNodeProcessorFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	testenv.Require(t)
	appDir := requireNodeKCL(t)
	dir := t.TempDir()
	bin := buildDaemon(t, dir)

	kc := testenv.Kinesis(t)
	dc := testenv.DynamoDB(t)
	stream := testenv.CreateStream(t, kc, 4)
	app := testenv.UniqueName("multilang")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = fleet.DeleteTable(ctx, dc, app)
	})
	props := filepath.Join(dir, "app.properties")
	err := os.WriteFile(props, fmt.Appendf(nil, `# A MultiLangDaemon configuration, as the Java daemon reads it.
executableName = node processor.js
streamName = %s
applicationName = %s
processingLanguage = nodejs/20
initialPositionInStream = TRIM_HORIZON
regionName = us-east-1
kinesisEndpoint = %s
dynamoDBEndpoint = %s
AWSCredentialsProvider = EnvironmentVariableCredentialsProvider
maxRecords = 200
idleTimeBetweenReadsInMillis = 200
failoverTimeMillis = 3000
timeoutInSeconds = 60
shutdownGraceMillis = 30000
`, stream, app, testenv.KinesisEndpoint(), testenv.DynamoDBEndpoint()), 0o644)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	prod, err := fleet.NewProducer(ctx, kc, stream, 2)
	if err != nil {
		t.Fatal(err)
	}
	shards := make(map[string]bool)
	d := &daemons{t: t, bin: bin, props: props, appDir: appDir, dir: dir}
	t.Cleanup(d.killAll)
	t.Cleanup(func() {
		if t.Failed() {
			for _, id := range d.ids {
				b, _ := os.ReadFile(filepath.Join(dir, id+".log"))
				t.Logf("log of %s (tail):\n%s", id, tail(string(b), 60))
			}
		}
	})

	prod.Start(50*time.Millisecond, 8)
	defer func() { _ = prod.Stop() }()
	a := d.start("a")
	b := d.start("b")

	// deliveredSince: every shard had a delivery after since.
	deliveredSince := func(since time.Time) func(context.Context) (bool, error) {
		return func(context.Context) (bool, error) {
			ids := slices.Collect(maps.Keys(shards))
			return len(ids) == 4 && len(d.events().FirstDeliveries(ids, since, "")) == 4, nil
		}
	}
	balanced := func(workers ...string) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			ls, err := fleet.Leases(ctx, dc, app)
			if err != nil || len(ls) != 4 {
				return false, err
			}
			for _, l := range ls {
				shards[l.Key] = true
			}
			return fleet.Balanced(ls, workers, 0), nil
		}
	}
	poll := func(what string, cond func(context.Context) (bool, error)) {
		t.Helper()
		if err := fleet.Poll(ctx, 200*time.Millisecond, what, cond); err != nil {
			t.Fatal(err)
		}
	}
	// produceMore keeps a phase going until n more records were written.
	const perPhase = 300
	produceMore := func(n int) {
		t.Helper()
		want := prod.Count() + n
		poll(fmt.Sprintf("%d more records produced", n), func(context.Context) (bool, error) { return prod.Count() >= want, nil })
	}
	poll("both daemons holding 2 shards", balanced("a", "b"))
	poll("records on every shard", deliveredSince(a.started))
	produceMore(perPhase)

	// SIGKILL a: its children die with it (mid-batch, possibly between a
	// delivery and its checkpoint); b takes the shards after failover.
	ls, err := fleet.Leases(ctx, dc, app)
	if err != nil {
		t.Fatal(err)
	}
	killedShards := fleet.Ownership(ls)["a"]
	// Kill while a batch of a's is between its records and its checkpoint,
	// so that the takeover repeats records.
	poll("a batch of a's in flight", func(context.Context) (bool, error) {
		last := make(map[string]string) // shard -> type of a's newest record or checkpoint event
		for _, ev := range d.events().Records {
			if ev.Worker == "a" && slices.Contains(killedShards, ev.Shard) &&
				(ev.Type == fleet.EventRecord || ev.Type == fleet.EventCheckpoint) {
				last[ev.Shard] = ev.Type
			}
		}
		for _, typ := range last {
			if typ == fleet.EventRecord {
				return true, nil
			}
		}
		return false, nil
	})
	killAt := a.signal(t, syscall.SIGKILL)
	_ = a.wait(t, 30*time.Second)
	poll("b holding every shard", balanced("b"))
	poll("deliveries on every shard after the kill", deliveredSince(killAt))
	produceMore(perPhase)

	// Restart a: the shards are balanced again by hand-overs.
	restartAt := time.Now()
	a = d.start("a")
	poll("a and b balanced again", balanced("a", "b"))
	poll("deliveries on every shard after the restart", deliveredSince(restartAt))
	produceMore(perPhase)

	// SIGTERM b: shutdownRequested to its children, their checkpoints, then
	// the leases go to a at once.
	termAt := b.signal(t, syscall.SIGTERM)
	if err := b.wait(t, 60*time.Second); err != nil {
		t.Fatalf("b after SIGTERM: %v", err)
	}
	poll("a holding every shard", balanced("a"))
	poll("deliveries on every shard after the SIGTERM", deliveredSince(termAt))
	produceMore(perPhase)

	if err := prod.Stop(); err != nil {
		t.Fatalf("producer: %v", err)
	}
	produced := prod.Records()
	poll("every record delivered", func(context.Context) (bool, error) {
		r := fleet.Check(produced, d.events())
		return len(r.Lost) == 0, nil
	})
	// Let a checkpoint the last batches, then stop it gracefully too.
	lastByShard := make(map[string]string)
	for _, p := range produced {
		if cur, ok := lastByShard[p.Shard]; !ok || kcl.NewSequence(p.Seq).Compare(kcl.NewSequence(cur)) > 0 {
			lastByShard[p.Shard] = p.Seq
		}
	}
	poll("checkpoints at the last records", func(ctx context.Context) (bool, error) {
		ls, err := fleet.Leases(ctx, dc, app)
		if err != nil {
			return false, err
		}
		cps := fleet.Checkpoints(ls)
		for shard, seq := range lastByShard {
			if cps[shard].SequenceNumber != seq {
				return false, fmt.Errorf("shard %s checkpoint %s, want %s", shard, cps[shard], seq)
			}
		}
		return true, nil
	})
	a.signal(t, syscall.SIGTERM)
	if err := a.wait(t, 60*time.Second); err != nil {
		t.Fatalf("a after SIGTERM: %v", err)
	}

	for _, id := range d.ids {
		b, err := os.ReadFile(filepath.Join(dir, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			t.Errorf("data race in daemon %s", id)
		}
	}

	evs := d.events()
	r := fleet.Check(produced, evs)
	t.Logf("report:\n%s", r)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.Damaged > 0 {
		t.Errorf("%d damaged event lines", r.Damaged)
	}
	if r.Produced < 4*perPhase {
		t.Errorf("only %d records produced", r.Produced)
	}

	// Duplicates: only in the sessions that took over the killed daemon's
	// shards (between the kill and its restart), never after a graceful
	// hand-over or the SIGTERM.
	for _, ev := range r.DuplicateDeliveries {
		began := sessionStart(evs, ev)
		if !slices.Contains(killedShards, ev.Shard) || began.Before(killAt) || !began.Before(restartAt) {
			t.Errorf("duplicate %s/%s delivered by %s in a session begun at %s; only takeovers of %v between the kill (%s) and the restart (%s) may repeat records",
				ev.Shard, ev.Seq, ev.Worker, began.Format(time.StampMilli), killedShards,
				killAt.Format(time.StampMilli), restartAt.Format(time.StampMilli))
		}
	}

	// Every checkpoint the processors asked for is in the lease table (the
	// newest one per shard), and the SIGTERM gave b's children their
	// shutdownRequested.
	ls, err = fleet.Leases(ctx, dc, app)
	if err != nil {
		t.Fatal(err)
	}
	cps := fleet.Checkpoints(ls)
	newest := make(map[string]kcl.ExtendedSequenceNumber)
	shutdownRequested := 0
	for _, ev := range evs.Records {
		switch ev.Type {
		case fleet.EventCheckpoint:
			pos, err := fleet.ParsePosition(ev.Position)
			if err != nil {
				t.Errorf("checkpoint event: %v", err)
				continue
			}
			if cur, ok := newest[ev.Shard]; !ok || pos.Compare(cur) > 0 {
				newest[ev.Shard] = pos
			}
		case fleet.EventShutdownRequested:
			if ev.Worker == "b" && ev.Time.After(termAt) {
				shutdownRequested++
			}
		}
	}
	for shard := range shards {
		if cps[shard].Compare(newest[shard]) != 0 {
			t.Errorf("shard %s: lease table checkpoint %s, newest checkpoint the processor made %s", shard, cps[shard], newest[shard])
		}
	}
	if shutdownRequested == 0 {
		t.Error("b's children never received shutdownRequested after the SIGTERM")
	}
	t.Logf("killed daemon held %v; duplicates %d; shutdownRequested after SIGTERM %d", killedShards, r.Duplicates, shutdownRequested)
}

// sessionStart returns when the session that delivered ev began: the newest
// initialize of its shard by the same worker incarnation at or before it.
func sessionStart(evs fleet.Events, ev fleet.Event) time.Time {
	var began time.Time
	for _, e := range evs.Records {
		if e.Type == fleet.EventInitialize && e.Worker == ev.Worker && e.Incarnation == ev.Incarnation &&
			e.Shard == ev.Shard && !e.Time.After(ev.Time) && e.Time.After(began) {
			began = e.Time
		}
	}
	return began
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
