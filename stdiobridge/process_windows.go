//go:build windows

package stdiobridge

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

func killGroup(cmd *exec.Cmd, _ bool) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

// markInheritableFDs: Windows children inherit only handles marked
// inheritable, and Go marks none but the child's stdio.
func markInheritableFDs() {}

// sweepDescendants is not available on Windows (README, Security).
func sweepDescendants(string) int { return 0 }
