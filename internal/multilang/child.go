package multilang

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// stderrTailLines is how many of a child's last stderr lines an error quotes.
const stderrTailLines = 20

// ErrChildTimeout reports a child that did not answer within the timeout.
var ErrChildTimeout = errors.New("multilang: child did not answer in time")

// ErrChildExited reports a child that ended while an action was in
// progress.
var ErrChildExited = errors.New("multilang: child process ended")

// child is one running record processor process.
type child struct {
	shard string
	log   *slog.Logger
	cmd   *exec.Cmd
	stdin *os.File

	lines    chan lineOrErr // stdout messages; closed at EOF
	exited   chan struct{}  // closed once the process was waited for
	status   error          // exit status, set before exited is closed
	readers  sync.WaitGroup // the stdout and stderr readers
	stop     chan struct{}  // closed when the daemon is done with the child
	stopOnce sync.Once

	mu   sync.Mutex
	tail []string // last stderr lines
}

type lineOrErr struct {
	msg childMsg
	err error
}

// startChild starts argv for shard.
func startChild(shard string, argv []string, dir string, env []string, log *slog.Logger) (*child, error) {
	if len(argv) == 0 {
		return nil, errors.New("multilang: no executable")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = childProcAttr()
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("multilang: start %q: %w", strings.Join(argv, " "), err)
	}
	c := &child{shard: shard, log: log.With("pid", cmd.Process.Pid), cmd: cmd, stdin: inW,
		lines: make(chan lineOrErr, 16), exited: make(chan struct{}), stop: make(chan struct{})}
	c.readers.Add(2)
	go func() { defer c.readers.Done(); c.readStdout(outR) }()
	go func() { defer c.readers.Done(); c.readStderr(errR) }()
	go func() {
		c.status = cmd.Wait()
		close(c.exited)
	}()
	c.log.Info("child process started", "command", strings.Join(argv, " "))
	return c, nil
}

// readStdout turns the child's stdout into messages. Empty lines are
// skipped (the libraries frame each message with newlines); anything else
// that is not a message is a protocol error, reported once, after which the
// rest of the output is discarded.
func (c *child) readStdout(r *os.File) {
	defer close(c.lines)
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	broken := false
	for {
		line, err := br.ReadBytes('\n')
		if t := bytes.TrimSpace(line); len(t) > 0 && !broken {
			m, perr := parseChildLine(t)
			if perr != nil {
				broken = true
			}
			select {
			case c.lines <- lineOrErr{msg: m, err: perr}:
			case <-c.stop: // nobody reads any more: drain to the end
				broken = true
			}
		}
		if err != nil {
			return
		}
	}
}

// readStderr logs the child's stderr line by line and keeps its tail.
func (c *child) readStderr(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		c.log.Info("child stderr", "line", line)
		c.mu.Lock()
		c.tail = append(c.tail, line)
		if len(c.tail) > stderrTailLines {
			c.tail = c.tail[len(c.tail)-stderrTailLines:]
		}
		c.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// stderrTail returns the child's last stderr lines.
func (c *child) stderrTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// send writes one message, giving up after timeout. A []byte is written
// as it is (an encoded message); anything else is encoded as JSON.
func (c *child) send(v any, timeout time.Duration) error {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	b = append(b, '\n')
	if timeout > 0 {
		_ = c.stdin.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := c.stdin.Write(b); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: writing to its stdin blocked for %v", ErrChildTimeout, timeout)
		}
		return fmt.Errorf("%w: writing to its stdin: %v", ErrChildExited, err)
	}
	return nil
}

// exitGrace is how long the messages a child wrote before it exited may
// take to be read once it has exited (its stdout may stay open if it left
// a process behind that inherited it).
const exitGrace = time.Second

// next waits for the child's next message. A quiet period of timeout (0:
// none) is an error.
func (c *child) next(ctx context.Context, timeout time.Duration) (childMsg, error) {
	var tc <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		tc = t.C
	}
	exited := c.exited
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return childMsg{}, c.exitError()
			}
			return l.msg, l.err
		case <-exited:
			// Messages written before the exit are still read, for a
			// while; after that the exit is what counts.
			exited = nil
			t := time.NewTimer(exitGrace)
			defer t.Stop()
			tc = t.C
		case <-tc:
			if exited == nil {
				return childMsg{}, c.exitError()
			}
			return childMsg{}, fmt.Errorf("%w: no message for %v", ErrChildTimeout, timeout)
		case <-ctx.Done():
			return childMsg{}, context.Cause(ctx)
		}
	}
}

// ended reports whether the child process has exited.
func (c *child) ended() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// exitError describes the end of a child.
func (c *child) exitError() error {
	select {
	case <-c.exited:
	case <-time.After(exitGrace):
		return fmt.Errorf("%w: its stdout closed", ErrChildExited)
	}
	if c.status == nil {
		return fmt.Errorf("%w with status 0", ErrChildExited)
	}
	return fmt.Errorf("%w: %v", ErrChildExited, c.status)
}

// kill ends the child at once and waits for it.
func (c *child) kill() {
	c.stopOnce.Do(func() { close(c.stop) })
	killTree(c.cmd.Process)
	c.stdin.Close()
	<-c.exited
	c.waitReaders()
}

// waitReaders waits for the output readers, which end when every process
// holding the child's stdout and stderr has closed them; a process the
// child left behind may hold them longer, and is then not waited for.
func (c *child) waitReaders() {
	done := make(chan struct{})
	go func() { c.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(exitGrace):
		c.log.Warn("the child's output stays open after its exit (a process it started holds it?)")
	}
}

// close ends the child gracefully: its stdin is closed (the libraries exit
// at end of input), then it gets grace to exit before being killed. It
// returns the exit status.
func (c *child) close(grace time.Duration) error {
	c.stopOnce.Do(func() { close(c.stop) })
	c.stdin.Close()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.log.Warn("child did not exit after its stdin was closed; killing it", "grace", grace)
		killTree(c.cmd.Process)
		<-c.exited
	}
	c.waitReaders()
	return c.status
}
