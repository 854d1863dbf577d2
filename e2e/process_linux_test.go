package e2e

import "syscall"

// sysProcAttr has the kernel kill a child when the test binary dies without
// running its cleanups (a -timeout panic, a SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
