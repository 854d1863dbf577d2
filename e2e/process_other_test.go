//go:build !linux

package e2e

import "syscall"

// sysProcAttr: only Linux can have a child killed with its parent.
func sysProcAttr() *syscall.SysProcAttr { return nil }
