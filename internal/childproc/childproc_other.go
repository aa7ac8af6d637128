//go:build unix && !linux

package childproc

import (
	"os"
	"os/exec"
	"syscall"
)

// startChild starts the server process through os/exec.
func startChild(cmd *exec.Cmd, stdin, stdout, stderr *os.File, ns func(*syscall.SysProcAttr)) (*child, error) {
	return startWithExec(cmd, stdin, stdout, stderr, ns)
}

func setParentDeathSignal(*syscall.SysProcAttr) {}

// markInheritableFDs sets close-on-exec on every descriptor above stderr.
func markInheritableFDs() { markFDsIn("/dev/fd") }

// sweepDescendants is not available here: descendants that leave the child's
// process group are not found (README, Security).
func sweepDescendants(string) int { return 0 }

// sweepSupported: descendants that leave the group are not found here.
const sweepSupported = false
