//go:build !linux

package sandbox

import (
	"errors"
	"os/exec"
	"syscall"
	"time"
)

// Policy is a resolved Config; there is none off Linux.
type Policy struct{}

// Resolve refuses the sandbox: its restrictions are Linux's.
func Resolve(cfg Config, command, dir string, env []string, protect []string) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errors.New("sandbox: needs Linux (Landlock, namespaces, seccomp)")
}

// Child is one child's confinement; there is none off Linux.
type Child struct{}

func (p *Policy) Summary() string                           { return "" }
func (p *Policy) Skipped() []string                         { return nil }
func (p *Policy) Notes() []string                           { return nil }
func (p *Policy) WatchesMemory() bool                       { return false }
func (p *Policy) Wrap(cmd *exec.Cmd) (*Child, error)        { return nil, errors.New("sandbox: needs Linux") }
func (c *Child) Attr(*syscall.SysProcAttr)                  {}
func (c *Child) Kill()                                      {}
func (c *Child) Cgroup() string                             { return "" }
func (c *Child) Cleanup() error                             { return nil }
func (c *Child) Classify(error, time.Duration, bool) *Limit { return nil }

// OutOfMemory reports whether a stderr line reports running out of memory.
func OutOfMemory(line []byte) bool { return false }

// LandlockABI is 0: there is no Landlock here.
func LandlockABI() int { return 0 }
