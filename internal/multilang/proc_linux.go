package multilang

import (
	"os"
	"syscall"
)

// childProcAttr puts a child in its own process group (so that a wrapper
// script and what it starts are killed together) and makes the kernel kill
// it if the daemon dies.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killTree kills the child's process group.
func killTree(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
