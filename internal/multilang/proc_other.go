//go:build !linux

package multilang

import (
	"os"
	"syscall"
)

// childProcAttr returns nil: outside Linux a child is killed alone, and the
// daemon's own exit path is the only guard against orphans.
func childProcAttr() *syscall.SysProcAttr { return nil }

// killTree kills the child.
func killTree(p *os.Process) { _ = p.Kill() }
