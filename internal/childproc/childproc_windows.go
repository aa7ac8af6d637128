//go:build windows

package childproc

import (
	"os"
	"os/exec"
	"syscall"
)

func setProcessGroup(*exec.Cmd) {}

func killGroup(c *child, _ bool) {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
	}
}

// startChild starts the server process through os/exec.
func startChild(cmd *exec.Cmd, stdin, stdout, stderr *os.File, ns func(*syscall.SysProcAttr)) (*child, error) {
	return startWithExec(cmd, stdin, stdout, stderr, ns)
}

// markInheritableFDs: Windows children inherit only handles marked
// inheritable, and Go marks none but the child's stdio.
func markInheritableFDs() {}

// sweepDescendants is not available on Windows (README, Security).
func sweepDescendants(string) int { return 0 }

// sweepSupported: descendants that leave the group are not found here.
const sweepSupported = false
