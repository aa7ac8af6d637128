// Package sandbox confines the stdio MCP servers that mcp_stdio starts,
// with the Linux kernel's own primitives and no container runtime:
// Landlock (through go-landlock) for the file system, TCP ports and IPC
// scopes, a network namespace with only loopback, a PID namespace so that
// no descendant outlives its server, a seccomp filter (through
// elastic/go-seccomp-bpf), no_new_privs, no capabilities, another user,
// and rlimits.
//
// A child is started as Caddy's own executable (/proc/self/exe) under the
// name "caddymcp-sandbox": the package's init applies the restrictions to
// that process and then executes the server in its place, so the server
// never runs a single instruction unconfined. Provision (Resolve) runs the
// same launcher once without a server, so that a restriction this kernel
// or Caddy's privileges cannot apply fails the config, not a session.
package sandbox

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/dustin/go-humanize"
)

// Config is a route's sandbox block. Every child of the route (sessions,
// pools, the probe, prewarmed children) is started under it.
type Config struct {
	// Read lists files and directories the server may read and execute
	// (directories: everything beneath), added to the defaults: the
	// system's libraries and binaries, the certificates and name-service
	// files of /etc, /proc, the command's own install prefix and that of
	// the interpreter its #! line names, and the npm and uv caches.
	Read []string `json:"read,omitempty"`
	// Write lists files and directories the server may also write,
	// create and remove beneath. Each child gets a private writable
	// temporary directory of its own as well (TMPDIR), removed when it
	// exits.
	Write []string `json:"write,omitempty"`
	// NoDefaultPaths leaves out the default read-only paths: the server
	// sees only Read, Write and its temporary directory.
	NoDefaultPaths bool `json:"no_default_paths,omitempty"`
	// Network is "none" (default: a network namespace of its own with
	// only loopback, and no TCP connect) or "outbound" (the host's
	// network; TCP connect only to ConnectPorts, or to any port if none
	// are listed). Listening on a TCP port (bind) is refused in both.
	Network string `json:"network,omitempty"`
	// ConnectPorts are the TCP ports an outbound server may connect to.
	ConnectPorts []int `json:"connect_ports,omitempty"`
	// User runs the server as this user (a name or a numeric uid); it
	// needs Caddy to run as root (or with CAP_SETUID and CAP_SETGID).
	User string `json:"user,omitempty"`
	// Group is the server's group (a name or gid); default: the user's.
	Group string `json:"group,omitempty"`
	// Memory bounds the server's memory in bytes: with a cgroup whose
	// memory controller Caddy may enable, memory.max of the child's
	// cgroup (everything it and its descendants use, no swap; the kernel's
	// OOM killer ends the whole child past it); otherwise RLIMIT_DATA per
	// process (private writable memory).
	Memory int64 `json:"memory,omitempty"`
	// Processes bounds the processes and threads: with a cgroup whose
	// pids controller Caddy may enable, pids.max of the child's cgroup
	// (the child and its descendants, root or not); otherwise
	// RLIMIT_NPROC, counted per user (a route's own user makes it the
	// route's bound), which the kernel does not apply to root: it then
	// needs User when Caddy runs as root.
	Processes int `json:"processes,omitempty"`
	// CPUs bounds the CPU bandwidth of the child and its descendants, in
	// CPUs (0.5: half of one): cpu.max of its cgroup. It needs a cgroup
	// whose cpu controller Caddy may enable (there is no rlimit for it).
	CPUs float64 `json:"cpus,omitempty"`
	// Cgroup is where each child gets a cgroup v2 of its own: "" (auto:
	// Caddy's own cgroup when systemd delegated it, Delegate=yes, or its
	// parent when Caddy runs in a subgroup of a delegated unit,
	// DelegateSubgroup=, or the root of the hierarchy when Caddy runs
	// there; none otherwise, and the log says why), "off" (no cgroups:
	// rlimits), or the path of a cgroup v2 directory Caddy may create
	// cgroups in (one that does not work fails provisioning, unless
	// best_effort). A child's cgroup is killed whole when the child ends
	// (cgroup.kill) and holds memory, processes and cpus when the base
	// can enable their controllers.
	Cgroup string `json:"cgroup,omitempty"`
	// CPUTime bounds the CPU time of each process of the server
	// (RLIMIT_CPU); a server past it is killed (SIGKILL a second after
	// the limit) and reported so.
	CPUTime caddy.Duration `json:"cpu_time,omitempty"`
	// OpenFiles bounds the server's open descriptors (RLIMIT_NOFILE).
	OpenFiles int `json:"open_files,omitempty"`
	// FileSize bounds the size of a file the server writes, in bytes
	// (RLIMIT_FSIZE): a write past it fails with EFBIG. (The server, the
	// first process of its PID namespace, does not get SIGXFSZ; without a
	// PID namespace it dies of it, and is reported so.)
	FileSize int64 `json:"file_size,omitempty"`
	// Seccomp is false to leave out the seccomp filter (default true:
	// the system calls a stdio server never needs are refused with
	// EPERM: ptrace, mount, kernel modules, keyctl, bpf, namespaces…).
	Seccomp *bool `json:"seccomp,omitempty"`
	// UnixSockets lets the server create UNIX domain sockets
	// (socket(AF_UNIX)), to reach a local daemon. Default: refused, as
	// Landlock before ABI 9 does not confine them to paths: a server could
	// connect to any socket file its user may write (a root server to
	// /var/run/docker.sock). socketpair(2) works either way. Where
	// Landlock has ABI 9 (which confines such connects to paths), the
	// socket must lie beneath a read or write path.
	UnixSockets bool `json:"unix_sockets,omitempty"`
	// BestEffort starts the server with what this kernel and Caddy's
	// privileges allow, logging what could not be applied. Without it,
	// a restriction that cannot be applied fails provisioning.
	BestEffort bool `json:"best_effort,omitempty"`
}

// Validate checks the block without looking at the machine.
func (c *Config) Validate() error {
	switch c.Network {
	case "", "none":
		if len(c.ConnectPorts) > 0 {
			return fmt.Errorf("sandbox: connect ports need network outbound")
		}
	case "outbound":
	default:
		return fmt.Errorf("sandbox: network must be none or outbound, not %q", c.Network)
	}
	for _, p := range c.ConnectPorts {
		if p < 1 || p > 65535 {
			return fmt.Errorf("sandbox: connect port %d is not a TCP port", p)
		}
	}
	for _, p := range append(append([]string(nil), c.Read...), c.Write...) {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("sandbox: path %q is not absolute", p)
		}
	}
	if c.Cgroup != "" && c.Cgroup != "off" && !strings.HasPrefix(c.Cgroup, "/") {
		return fmt.Errorf("sandbox: cgroup %q is not off or an absolute path", c.Cgroup)
	}
	if c.CPUs < 0 || c.CPUs > 4096 || c.CPUs != c.CPUs {
		return fmt.Errorf("sandbox: cpus %v is not a number of CPUs", c.CPUs)
	}
	if c.Memory < 0 || c.Processes < 0 || c.CPUTime < 0 || c.OpenFiles < 0 || c.FileSize < 0 {
		return fmt.Errorf("sandbox: a limit is negative")
	}
	if c.Group != "" && c.User == "" {
		return fmt.Errorf("sandbox: group needs user")
	}
	return nil
}

func (c *Config) network() string {
	if c.Network == "" {
		return "none"
	}
	return c.Network
}

func (c *Config) seccomp() bool { return c.Seccomp == nil || *c.Seccomp }

// Limit names a resource bound that can end a server, for reporting.
type Limit struct {
	Cause string // memory, cpu, file_size, processes
	Value string // as configured, in words: "256 MiB", "10s"
}

// limitsOf lists the bounds that can end a server (the others only refuse).
func (c *Config) limitsOf() (memory, cpu, fsize *Limit) {
	if c.Memory > 0 {
		memory = &Limit{Cause: "memory", Value: humanize.IBytes(uint64(c.Memory))}
	}
	if c.CPUTime > 0 {
		cpu = &Limit{Cause: "cpu", Value: time.Duration(c.CPUTime).String()}
	}
	if c.FileSize > 0 {
		fsize = &Limit{Cause: "file_size", Value: humanize.IBytes(uint64(c.FileSize))}
	}
	return
}

// CauseMessage words a limit that ended a server, for its client.
func CauseMessage(l *Limit) string {
	switch l.Cause {
	case "memory":
		return "server ran out of memory (limit " + l.Value + ")"
	case "cpu":
		return "server exceeded its CPU time (limit " + l.Value + ")"
	case "file_size":
		return "server wrote a file past its size limit (limit " + l.Value + ")"
	case "processes":
		return "server exited after reaching its process limit (limit " + l.Value + ")"
	}
	return "server hit a limit (" + l.Cause + ")"
}
