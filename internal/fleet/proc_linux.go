package fleet

import "syscall"

// sysProcAttr makes the kernel kill a child when the process that started it
// dies, so that no consumer outlives a crashed test or demo.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
