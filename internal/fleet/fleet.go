// Package fleet runs several replicas of the harness consumer
// (internal/cmd/fleetworker) as child processes against the local emulators, so that
// integration tests and the demo can kill, stop and restart real worker
// processes and then check what was delivered.
//
// A [Fleet] builds nothing itself: [Build] compiles the consumer once and the
// fleet starts that binary as many times as asked, each process with its own
// worker ID, events file and log file in the fleet's directory. Every
// process a fleet starts is killed by [Fleet.Close], and on Linux also when
// the parent process dies.
//
// A [Producer] writes records whose data carries a per-partition-key counter
// ("pk-3:17") and remembers the shard and sequence number of each; [Check]
// compares them with the events the consumers wrote and reports records lost,
// duplicated or delivered out of order.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shardline/shardline/internal/testenv"
)

// ConsumerPackage is the import path of the program a fleet runs.
const ConsumerPackage = "github.com/shardline/shardline/internal/cmd/fleetworker"

// Build compiles the harness consumer into dir and returns the binary's
// path. With race set the binary is built with the race detector. It must run
// from inside the module (tests and `go run` from the repository do).
func Build(ctx context.Context, dir string, race bool) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "consumer")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, ConsumerPackage)
	cmd := exec.CommandContext(ctx, goTool, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("fleet: go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// Config describes the replicas of a fleet. They all consume the same stream
// (or the same streams file) as the same application.
type Config struct {
	// Binary is the consumer program, from [Build]. Required.
	Binary string
	// Dir receives one events file (<id>.events.jsonl) and one log file
	// (<id>.log) per worker ID. Required.
	Dir string
	// Stream and App are the stream name and the application name (which is
	// also the lease table name). Required, except Stream when StreamsFile
	// is set.
	Stream, App string
	// StreamsFile, instead of Stream, makes multi-stream consumers: they
	// consume the streams named in this file, one a line, and read it again
	// at every shard sync (the consumer's -streams-file).
	StreamsFile string
	// KinesisEndpoint and DynamoDBEndpoint are the emulators' URLs. Required.
	KinesisEndpoint, DynamoDBEndpoint string
	// InitialPosition is "trim_horizon" (default) or "latest".
	InitialPosition string
	// LeaseDuration, IdleTime, CheckpointInterval and ShutdownTimeout are
	// passed to the consumer; zero leaves the consumer's default.
	LeaseDuration, IdleTime, CheckpointInterval, ShutdownTimeout time.Duration
	// ExtraArgs are appended to every consumer's command line.
	ExtraArgs []string
}

// Fleet is a set of consumer processes sharing one stream and application.
type Fleet struct {
	cfg Config

	mu    sync.Mutex
	procs []*Process // every process started, in start order
}

// New checks cfg and returns a fleet with no process running.
func New(cfg Config) (*Fleet, error) {
	var missing []string
	for name, v := range map[string]string{
		"Binary": cfg.Binary, "Dir": cfg.Dir, "Stream or StreamsFile": cfg.Stream + cfg.StreamsFile, "App": cfg.App,
		"KinesisEndpoint": cfg.KinesisEndpoint, "DynamoDBEndpoint": cfg.DynamoDBEndpoint,
	} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("fleet: missing config: %s", strings.Join(missing, ", "))
	}
	if cfg.InitialPosition == "" {
		cfg.InitialPosition = "trim_horizon"
	}
	return &Fleet{cfg: cfg}, nil
}

// Config returns the fleet's configuration.
func (f *Fleet) Config() Config { return f.cfg }

// EventsPath returns the events file of worker id.
func (f *Fleet) EventsPath(id string) string {
	return filepath.Join(f.cfg.Dir, id+".events.jsonl")
}

// LogPath returns the log file (the consumer's stderr and stdout) of worker id.
func (f *Fleet) LogPath(id string) string {
	return filepath.Join(f.cfg.Dir, id+".log")
}

// Start starts a consumer with worker ID id, with extra appended to its
// command line after Config.ExtraArgs. Starting an ID again after its
// process ended restarts it: the new process appends to the same events and
// log files. Starting an ID whose process still runs is an error.
func (f *Fleet) Start(id string, extra ...string) (*Process, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs {
		if p.ID == id && p.Running() {
			return nil, fmt.Errorf("fleet: worker %s already running (pid %d)", id, p.PID)
		}
	}
	args := []string{"-stream", f.cfg.Stream}
	if f.cfg.StreamsFile != "" {
		args = []string{"-streams-file", f.cfg.StreamsFile}
	}
	args = append(args,
		"-app", f.cfg.App,
		"-worker-id", id,
		"-kinesis-endpoint", f.cfg.KinesisEndpoint,
		"-dynamodb-endpoint", f.cfg.DynamoDBEndpoint,
		"-initial-position", f.cfg.InitialPosition,
		"-events", f.EventsPath(id),
	)
	for flagName, d := range map[string]time.Duration{
		"-lease-duration": f.cfg.LeaseDuration, "-idle-time": f.cfg.IdleTime,
		"-checkpoint-interval": f.cfg.CheckpointInterval, "-shutdown-timeout": f.cfg.ShutdownTimeout,
	} {
		if d > 0 {
			args = append(args, flagName, d.String())
		}
	}
	args = append(args, f.cfg.ExtraArgs...)
	args = append(args, extra...)

	logFile, err := os.OpenFile(f.LogPath(id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	cmd := exec.Command(f.cfg.Binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("fleet: start %s: %w", id, err)
	}
	p := &Process{ID: id, PID: cmd.Process.Pid, Started: time.Now(), cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logFile.Close()
		p.exitErr = err
		close(p.done)
	}()
	f.procs = append(f.procs, p)
	return p, nil
}

// Process returns the latest process started with worker ID id, or nil.
func (f *Fleet) Process(id string) *Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.procs) - 1; i >= 0; i-- {
		if f.procs[i].ID == id {
			return f.procs[i]
		}
	}
	return nil
}

// IDs returns the worker IDs started so far, in first-start order.
func (f *Fleet) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	seen := make(map[string]bool)
	for _, p := range f.procs {
		if !seen[p.ID] {
			seen[p.ID] = true
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// Events reads the events files of every worker started so far.
func (f *Fleet) Events() (Events, error) {
	var all Events
	for _, id := range f.IDs() {
		evs, err := ReadEvents(f.EventsPath(id))
		if err != nil {
			return all, err
		}
		all.Records = append(all.Records, evs.Records...)
		all.Damaged += evs.Damaged
	}
	return all, nil
}

// Check compares the produced records with every worker's events (see
// [Check]) and adds the shard ownership read from the lease table.
func (f *Fleet) Check(ctx context.Context, produced []Produced) (Report, error) {
	evs, err := f.Events()
	if err != nil {
		return Report{}, err
	}
	r := Check(produced, evs)
	ls, err := Leases(ctx, testenv.NewDynamoDBClient(f.cfg.DynamoDBEndpoint), f.cfg.App)
	if err != nil {
		return r, err
	}
	r.Ownership = Ownership(ls)
	return r, nil
}

// Close kills every process of the fleet that still runs (SIGKILL) and
// waits for them to exit. It is safe to call more than once.
func (f *Fleet) Close() {
	f.mu.Lock()
	procs := append([]*Process(nil), f.procs...)
	f.mu.Unlock()
	for _, p := range procs {
		_, _ = p.Kill()
	}
}

// DataRaces returns the race detector reports found in the log files (only
// binaries built with race report any).
func (f *Fleet) DataRaces() ([]string, error) {
	var races []string
	for _, id := range f.IDs() {
		b, err := os.ReadFile(f.LogPath(id))
		if err != nil {
			return nil, err
		}
		for _, part := range strings.Split(string(b), "==================\n")[1:] {
			if strings.HasPrefix(part, "WARNING: DATA RACE") {
				races = append(races, id+": "+part)
			}
		}
	}
	return races, nil
}

// Process is one consumer process.
type Process struct {
	// ID is the worker ID.
	ID string
	// PID is the operating system's process ID.
	PID int
	// Started is when the process was started.
	Started time.Time

	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error // set before done is closed
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// ExitErr returns how the process ended (nil for exit status 0); call it
// after Done is closed.
func (p *Process) ExitErr() error {
	<-p.done
	return p.exitErr
}

// Kill sends SIGKILL and waits for the process to exit. It returns the time
// the signal was sent (zero if the process had already exited).
func (p *Process) Kill() (time.Time, error) {
	if !p.Running() {
		return time.Time{}, nil
	}
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return at, fmt.Errorf("fleet: kill %s: %w", p.ID, err)
	}
	<-p.done
	return at, nil
}

// Terminate sends SIGTERM and waits for the process to exit. It returns the
// time the signal was sent, and an error if the process did not exit with
// status 0. If ctx ends first, the process is killed and ctx's error
// returned.
func (p *Process) Terminate(ctx context.Context) (time.Time, error) {
	if !p.Running() {
		return time.Time{}, fmt.Errorf("fleet: terminate %s: process already exited: %v", p.ID, p.exitErr)
	}
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return at, fmt.Errorf("fleet: terminate %s: %w", p.ID, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_, _ = p.Kill()
		return at, fmt.Errorf("fleet: %s did not stop after SIGTERM: %w", p.ID, ctx.Err())
	}
	if p.exitErr != nil {
		return at, fmt.Errorf("fleet: %s stopped after SIGTERM: %w", p.ID, p.exitErr)
	}
	return at, nil
}

// Poll calls cond every interval until it reports true, fails, or ctx ends.
// On timeout the error names what was awaited and includes cond's last
// error, if any. It never sleeps past ctx's deadline.
func Poll(ctx context.Context, interval time.Duration, what string, cond func(ctx context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok && err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("fleet: waiting for %s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("fleet: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
