//go:build linux

package stdiobridge

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setParentDeathSignal kills the child if Caddy itself dies without a
// chance to clean up.
func setParentDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }

// markInheritableFDs sets close-on-exec on every descriptor above stderr,
// so a child gets exactly stdin, stdout and stderr even when Caddy holds
// descriptors it inherited without close-on-exec (systemd socket
// activation, a supervisor's pipe). Go opens its own with close-on-exec.
func markInheritableFDs() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	markFDsIn("/proc/self/fd") // kernels before 5.11
}

// sweepMarked kills every process whose environment carries marker (our
// CADDYMCP_CHILD variable): descendants that left the child's process
// group (setsid, double fork) and outlived it.
func sweepMarked(marker string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	needle := []byte(marker + "\x00")
	self := os.Getpid()
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, needle) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// sweepDescendants kills what sweepMarked finds, in passes until one finds
// nothing: a descendant caught in execve (its environment unreadable for a
// moment) or forking while a pass runs is found by the next. At most 6
// passes, 10 ms apart and growing.
func sweepDescendants(marker string) int {
	total := 0
	for pass, wait := 0, 10*time.Millisecond; pass < 6; pass, wait = pass+1, wait*2 {
		n := sweepMarked(marker)
		total += n
		if n == 0 && pass > 0 {
			break
		}
		time.Sleep(wait)
	}
	return total
}
