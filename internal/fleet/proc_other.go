//go:build !linux

package fleet

import "syscall"

// sysProcAttr returns nil: outside Linux, Fleet.Close is the only guard
// against orphaned consumers.
func sysProcAttr() *syscall.SysProcAttr { return nil }
