//go:build unix

package childproc

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// setProcessGroup puts the child in a new process group, so signals reach
// every process it starts.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
}

// killGroup signals the child's whole process group.
func killGroup(c *child, hard bool) {
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-c.pid, sig)
}

// markFDsIn sets close-on-exec on the descriptors above stderr listed in
// dir (/proc/self/fd, /dev/fd).
func markFDsIn(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
