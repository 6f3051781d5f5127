package fleet

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Pause stops the process with SIGSTOP: it keeps its memory, connections
// and timers but runs no code until [Process.Resume], as if stuck in a very
// long garbage collection or a frozen VM. It returns the time the signal was
// sent.
func (p *Process) Pause() (time.Time, error) { return p.signal(syscall.SIGSTOP, "pause") }

// Resume lets a paused process run again with SIGCONT. It returns the time
// the signal was sent.
func (p *Process) Resume() (time.Time, error) { return p.signal(syscall.SIGCONT, "resume") }

func (p *Process) signal(sig syscall.Signal, what string) (time.Time, error) {
	if !p.Running() {
		return time.Time{}, fmt.Errorf("fleet: %s %s: process already exited: %v", what, p.ID, p.exitErr)
	}
	at := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return at, fmt.Errorf("fleet: %s %s: %w", what, p.ID, err)
	}
	return at, nil
}
