//go:build unix && !linux

package stdiobridge

import "syscall"

func setParentDeathSignal(*syscall.SysProcAttr) {}
