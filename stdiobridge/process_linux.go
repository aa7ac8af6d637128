//go:build linux

package stdiobridge

import "syscall"

// setParentDeathSignal kills the child if Caddy itself dies without a
// chance to clean up.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
