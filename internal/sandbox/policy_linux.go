package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddymcp/caddymcp/internal/sandbox/launch"
	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Policy is a Config resolved on this machine for one command: the
// launcher's spec, the namespaces and what the probe found applied.
type Policy struct {
	base       launch.Spec
	cloneflags uintptr
	memory     *Limit
	cpu        *Limit
	fsize      *Limit
	procs      *Limit // with pids.max: a server that exits after reaching it
	cpuTime    time.Duration
	cg         *cgroups // nil: no cgroup per child
	hostUID    int      // with CLONE_NEWUSER: Caddy's uid and gid, root inside
	hostGID    int
	summary    string
	skipped    []string
	notes      []string // how limits applied, where not as configured first (a cgroup)
}

// minABI is the Landlock ABI the sandbox needs: 4 (Linux 6.7) restricts
// TCP bind and connect.
const minABI = 4

// defaultRead are the read-only paths every server gets (those that
// exist): the system's binaries and libraries, the /etc files a runtime
// reads to resolve names and verify certificates, /proc (another
// process's environ and memory stay closed: Landlock refuses ptrace
// access across domains), and the devices every program opens.
var defaultRead = []string{
	"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies",
	"/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/nsswitch.conf", "/etc/gai.conf",
	"/etc/passwd", "/etc/group", "/etc/hostname", "/etc/localtime", "/etc/timezone", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
	"/etc/alternatives", "/etc/os-release", "/etc/protocols", "/etc/services", "/etc/mime.types", "/etc/nodejs",
	"/proc", "/sys/devices/system/cpu", "/sys/fs/cgroup",
	"/dev/urandom", "/dev/random",
}

// defaultWrite are the devices every program writes.
var defaultWrite = []string{"/dev/null", "/dev/zero", "/dev/full"}

// Resolve checks cfg against this kernel and Caddy's privileges for the
// command (as exec.Command resolves it in dir) and the environment its
// children get, with protect (Caddy's data, config and storage
// directories) never opened to them, and runs the launcher once to prove that every restriction
// applies. Without best_effort, any that does not fails with an error
// naming it.
func Resolve(cfg Config, command, dir string, env []string, protect []string) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	protect = realPaths(protect) // resolved once: covers compares every path with them
	p := &Policy{}
	p.memory, p.cpu, p.fsize = cfg.limitsOf()
	p.cpuTime = time.Duration(cfg.CPUTime)
	s := &p.base
	s.UID, s.GID = -1, -1
	s.BestEffort = cfg.BestEffort
	s.Seccomp = cfg.seccomp()
	s.Unix = cfg.UnixSockets
	root := os.Geteuid() == 0

	// Landlock
	abi, err := llsyscall.LandlockGetABIVersion()
	switch {
	case err != nil || abi < 1:
		if !cfg.BestEffort {
			return nil, fmt.Errorf("sandbox: Landlock is not available on this kernel (Linux 5.13+ with landlock in the lsm= list); add best_effort to start servers without it")
		}
		p.skipped = append(p.skipped, "landlock: not available")
	case abi < minABI && !cfg.BestEffort:
		return nil, fmt.Errorf("sandbox: this kernel's Landlock ABI is %d; the sandbox needs %d (Linux 6.7) to restrict TCP; add best_effort to start servers with ABI %d", abi, minABI, abi)
	default:
		s.ABI = min(abi, len(launch.Presets)-1)
	}
	s.NetHandled = llsyscall.AccessNetBindTCP
	if cfg.network() == "none" || len(cfg.ConnectPorts) > 0 {
		s.NetHandled |= llsyscall.AccessNetConnectTCP
	}
	for _, port := range cfg.ConnectPorts {
		s.Connect = append(s.Connect, uint16(port))
	}

	// paths
	var ro, rw []string
	if !cfg.NoDefaultPaths {
		ro = append(ro, defaultRead...)
		rw = append(rw, defaultWrite...)
		ro = append(ro, commandPaths(command, dir, env)...)
		if home := envValue(env, "HOME"); home != "" {
			// the npm and uv caches (npx and uvx read their packages there),
			// not ~/.npmrc or ~/.config (tokens)
			ro = append(ro, filepath.Join(home, ".npm"), filepath.Join(home, ".cache", "uv"), filepath.Join(home, ".local", "share", "uv"))
		}
		ro = slices.DeleteFunc(ro, func(p string) bool { return covers(p, protect) != "" })
	}
	for _, path := range append(append([]string(nil), cfg.Read...), cfg.Write...) {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		if p := covers(path, protect); p != "" {
			return nil, fmt.Errorf("sandbox: %s would give the server Caddy's own %s", path, p)
		}
	}
	ro = append(ro, cfg.Read...)
	rw = append(rw, cfg.Write...)
	s.RODirs, s.ROFiles = splitPaths(ro)
	s.RWDirs, s.RWFiles = splitPaths(rw)
	if cfg.UnixSockets {
		s.UnixDirs, s.UnixFiles = splitPaths(append(append([]string(nil), cfg.Read...), cfg.Write...))
	}

	// namespaces: a PID namespace always (no descendant outlives the
	// server), a network namespace for network none; without root, in a
	// user namespace of its own where Caddy's uid and gid are root (the
	// launcher has the capabilities it needs there and drops them all
	// before the server runs; outside, the server is Caddy's user)
	p.cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC // System V IPC objects are per IPC namespace
	if cfg.network() == "none" {
		p.cloneflags |= syscall.CLONE_NEWNET
		s.LoUp = true
	}
	if !root {
		p.cloneflags |= syscall.CLONE_NEWUSER
		p.hostUID, p.hostGID = os.Geteuid(), os.Getegid()
	}

	// identity
	s.DropCaps = true // as root, or root in the user namespace
	if cfg.User != "" {
		if !root {
			return nil, fmt.Errorf("sandbox: user %s needs Caddy to run as root (it runs as uid %d)", cfg.User, os.Geteuid())
		}
		uid, gid, err := lookupUser(cfg.User, cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		s.UID, s.GID = uid, gid
	}
	childUID := os.Geteuid() // without root, RLIMIT_NPROC counts in the child's own user namespace
	if s.UID >= 0 {
		childUID = s.UID
	}

	// cgroups: one per child, for the limits whose controllers the base
	// can enable; rlimits for the others
	var cgApplied []string
	base, why, err := findCgroupBase(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	not := map[string]string{}
	if base != "" {
		g, n, err := setupCgroups(base, cfg.Memory, cfg.Processes, cfg.CPUs)
		switch {
		case err == nil:
			p.cg, not = g, n
			cgApplied = g.applied
		case cfg.Cgroup != "" && !cfg.BestEffort:
			return nil, fmt.Errorf("sandbox: cgroup: %w", err)
		default:
			why = err.Error()
		}
	}
	if p.cg == nil {
		for _, l := range []string{"memory", "processes", "cpus"} {
			not[l] = why
		}
	}
	if why != "" && p.cg == nil && cfg.Cgroup != "off" {
		p.notes = append(p.notes, "no cgroup: "+why)
	}
	if cfg.CPUs > 0 && (p.cg == nil || p.cg.cpuMax == "") {
		if !cfg.BestEffort {
			return nil, fmt.Errorf("sandbox: cpus needs a cgroup v2 with the cpu controller: %s", not["cpus"])
		}
		p.skipped = append(p.skipped, "cpus: "+not["cpus"])
	}

	// rlimits
	if cfg.Memory > 0 && (p.cg == nil || p.cg.memory == 0) {
		s.Rlimits = append(s.Rlimits, launch.Rlimit{Name: "memory", Resource: syscall.RLIMIT_DATA, Cur: uint64(cfg.Memory), Max: uint64(cfg.Memory)})
		if cfg.Cgroup != "off" {
			p.notes = append(p.notes, "memory by rlimit: "+not["memory"])
		}
	}
	if cfg.Processes > 0 && p.cg != nil && p.cg.pids > 0 {
		p.procs = &Limit{Cause: "processes", Value: strconv.Itoa(cfg.Processes)}
	} else if cfg.Processes > 0 {
		if cfg.Cgroup != "off" {
			p.notes = append(p.notes, "processes by rlimit: "+not["processes"])
		}
		if childUID == 0 {
			if !cfg.BestEffort {
				return nil, fmt.Errorf("sandbox: processes cannot bind a server that runs as root (the kernel exempts root from RLIMIT_NPROC); set user")
			}
			p.skipped = append(p.skipped, "rlimit processes: the server runs as root")
		} else {
			s.Rlimits = append(s.Rlimits, launch.Rlimit{Name: "processes", Resource: unix.RLIMIT_NPROC, Cur: uint64(cfg.Processes), Max: uint64(cfg.Processes)})
		}
	}
	if cfg.CPUTime > 0 {
		secs := uint64((time.Duration(cfg.CPUTime) + time.Second - 1) / time.Second)
		// SIGXCPU at the limit, SIGKILL a second later
		s.Rlimits = append(s.Rlimits, launch.Rlimit{Name: "cpu_time", Resource: syscall.RLIMIT_CPU, Cur: secs, Max: secs + 1})
	}
	if cfg.OpenFiles > 0 {
		s.Rlimits = append(s.Rlimits, launch.Rlimit{Name: "open_files", Resource: syscall.RLIMIT_NOFILE, Cur: uint64(cfg.OpenFiles), Max: uint64(cfg.OpenFiles)})
	}
	if cfg.FileSize > 0 {
		s.Rlimits = append(s.Rlimits, launch.Rlimit{Name: "file_size", Resource: syscall.RLIMIT_FSIZE, Cur: uint64(cfg.FileSize), Max: uint64(cfg.FileSize)})
	}

	rep, err := p.probe()
	if err != nil && cfg.BestEffort && p.cloneflags != 0 {
		// namespaces need root, or user namespaces this kernel lets an
		// unprivileged user create: without them, a server shares
		// Caddy's network and PID namespaces
		p.skipped = append(p.skipped, "namespaces: "+err.Error())
		p.cloneflags, s.LoUp = 0, false
		s.DropCaps = root
		rep, err = p.probe()
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	p.skipped = append(p.skipped, rep.Skipped...)
	applied := rep.Applied
	if p.cloneflags&syscall.CLONE_NEWNET != 0 {
		applied = append([]string{"network namespace"}, applied...)
	}
	if p.cloneflags&syscall.CLONE_NEWIPC != 0 {
		applied = append([]string{"ipc namespace"}, applied...)
	}
	if p.cloneflags&syscall.CLONE_NEWPID != 0 {
		applied = append([]string{"pid namespace"}, applied...)
	}
	if p.cloneflags&syscall.CLONE_NEWUSER != 0 {
		applied = append([]string{"user namespace"}, applied...)
	}
	applied = append(applied, cgApplied...)
	p.summary = strings.Join(applied, ", ")
	return p, nil
}

// probe runs the launcher with the policy and no server, and reads what
// it applied.
func (p *Policy) probe() (*launch.Report, error) {
	b, _ := json.Marshal(p.base)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{launch.Name, string(b)}
	cmd.Env = []string{"HOME=/", "PATH=/usr/bin:/bin"} // Caddy's init then finds its directories
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.namespaces(cmd.SysProcAttr)
	if p.cg != nil {
		cg, err := p.cg.create()
		if err != nil {
			return nil, err
		}
		defer cg.remove(10 * time.Second)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cg.fd
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var msg string
		for _, line := range strings.Split(stderr.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, "caddymcp sandbox: "); ok {
				msg = rest
			}
		}
		switch {
		case msg != "":
		case p.cloneflags != 0 && (errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC)):
			msg = "cannot create the PID and network namespaces (" + err.Error() + "): Caddy needs root, or a kernel that lets it create user namespaces (kernel.unprivileged_userns_clone, user.max_user_namespaces, AppArmor's restriction of unprivileged user namespaces)"
		default:
			msg = "the launcher failed (" + err.Error() + "): " + strings.TrimSpace(stderr.String())
		}
		return nil, errors.New(msg)
	}
	var rep launch.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("the launcher's report: %w", err)
	}
	return &rep, nil
}

// Summary says what a child of this policy runs under, for the log line
// that starts it.
func (p *Policy) Summary() string { return p.summary }

// Notes says how limits applied where the first choice (a cgroup) did
// not, and why: "memory by rlimit: no memory controller in …".
func (p *Policy) Notes() []string { return slices.Clone(p.notes) }

// Skipped lists what best_effort left out, and why.
func (p *Policy) Skipped() []string { return slices.Clone(p.skipped) }

// namespaces sets the policy's namespaces and the session of a child's
// start (Child.Attr).
func (p *Policy) namespaces(a *syscall.SysProcAttr) {
	a.Cloneflags = p.cloneflags
	if p.cloneflags&syscall.CLONE_NEWUSER != 0 {
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: p.hostUID, Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: p.hostGID, Size: 1}}
		a.GidMappingsEnableSetgroups = false
	}
	a.Setsid, a.Setpgid = true, false
}

// WatchesMemory reports whether a memory limit is set: the server's
// stderr is then read for an out-of-memory report.
func (p *Policy) WatchesMemory() bool { return p.memory != nil }

// Child is one child's confinement, made by Wrap: its private temporary
// directory and, with cgroups, its cgroup.
type Child struct {
	p   *Policy
	tmp string
	cg  *childCgroup
}

// Wrap turns cmd (the server, as exec.Command made it) into the launcher
// that confines and then becomes it, with a private temporary directory
// (TMPDIR) and, with cgroups, a cgroup of its own; Cleanup removes them
// once the child has exited.
func (p *Policy) Wrap(cmd *exec.Cmd) (*Child, error) {
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	tmp, err := os.MkdirTemp("", "caddymcp-child-")
	if err != nil {
		return nil, err
	}
	c := &Child{p: p, tmp: tmp}
	if p.base.UID >= 0 {
		if err := os.Chown(tmp, p.base.UID, p.base.GID); err != nil {
			c.Cleanup()
			return nil, err
		}
	}
	s := p.base
	s.Path, s.Args = cmd.Path, cmd.Args
	s.RWDirs = append(slices.Clone(s.RWDirs), tmp)
	b, err := json.Marshal(s)
	if err != nil {
		c.Cleanup()
		return nil, err
	}
	if p.cg != nil {
		if c.cg, err = p.cg.create(); err != nil {
			c.Cleanup()
			return nil, err
		}
	}
	cmd.Path = "/proc/self/exe"
	cmd.Args = []string{launch.Name, string(b)}
	env := make([]string, 0, len(cmd.Env)+1)
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "TMPDIR="+tmp)
	return c, nil
}

// Attr sets up the child's start: the policy's namespaces (with the uid
// and gid maps of a user namespace), a session of its own (a process
// group of its own too, so the group kill still reaches it) so that it
// has no controlling terminal (Caddy's terminal, if it has one, is not the
// server's to write to or read keystrokes from), and its cgroup, which
// clone3 starts it in.
func (c *Child) Attr(a *syscall.SysProcAttr) {
	c.p.namespaces(a)
	if c.cg != nil {
		a.UseCgroupFD, a.CgroupFD = true, c.cg.fd
	}
}

// Kill kills every process of the child's cgroup (none without one).
func (c *Child) Kill() {
	if c.cg != nil {
		c.cg.kill()
	}
}

// Cgroup is the child's cgroup directory ("": none).
func (c *Child) Cgroup() string {
	if c.cg == nil {
		return ""
	}
	return c.cg.dir
}

// Cleanup removes the child's temporary directory and cgroup (what is
// left in it killed first), once the child has exited.
func (c *Child) Cleanup() error {
	var err error
	if c.cg != nil {
		err = c.cg.remove(10 * time.Second)
		c.cg = nil
	}
	if c.tmp != "" {
		err = errors.Join(err, os.RemoveAll(c.tmp))
		c.tmp = ""
	}
	return err
}

// Classify says which limit ended the child, if one did: err is how it
// exited, cpu the CPU time it used, oom whether its stderr reported
// running out of memory. With a cgroup, its counters say too: the OOM
// killer's kills (memory.events) and forks refused at pids.max
// (pids.events). Call it before Cleanup.
func (c *Child) Classify(err error, cpu time.Duration, oom bool) *Limit {
	if err == nil {
		return nil
	}
	if c.cg != nil {
		if c.p.memory != nil && c.cg.event("memory.events", "oom_kill") > 0 {
			return c.p.memory
		}
	}
	if l := c.p.classify(err, cpu, oom); l != nil {
		return l
	}
	if c.cg != nil && c.p.procs != nil && c.cg.event("pids.events", "max") > 0 {
		return c.p.procs
	}
	return nil
}

// classify says which limit ended a child from how it exited: err, the
// CPU time it used, whether its stderr reported running out of memory.
func (p *Policy) classify(err error, cpu time.Duration, oom bool) *Limit {
	var ws syscall.WaitStatus
	var w WaitStatus
	var ps interface{ Sys() any } // os/exec's ExitError
	switch {
	case errors.As(err, &w):
		ws = w.WaitStatus()
	case errors.As(err, &ps):
		ws, _ = ps.Sys().(syscall.WaitStatus)
	}
	if ws.Signaled() {
		switch ws.Signal() {
		case syscall.SIGXCPU:
			if p.cpu != nil {
				return p.cpu
			}
		case syscall.SIGXFSZ:
			if p.fsize != nil {
				return p.fsize
			}
		case syscall.SIGKILL:
			if p.cpu != nil && cpu >= p.cpuTime {
				return p.cpu
			}
		}
	}
	if oom && p.memory != nil {
		return p.memory
	}
	return nil
}

// WaitStatus lets childproc's own exit error say how a child ended.
type WaitStatus interface{ WaitStatus() syscall.WaitStatus }

// OutOfMemory reports whether a stderr line is a runtime saying it ran
// out of memory (Go, Node.js, Python, C++, glibc).
func OutOfMemory(line []byte) bool {
	l := bytes.ToLower(line)
	for _, m := range oomMarkers {
		if bytes.Contains(l, m) {
			return true
		}
	}
	return false
}

var oomMarkers = [][]byte{[]byte("out of memory"), []byte("memoryerror"), []byte("bad_alloc"),
	[]byte("cannot allocate memory"), []byte("allocation failed"), []byte("enomem")}

// commandPaths are the read-only paths a command needs: its directory
// (its install prefix if it lies in a bin directory), and those of the
// interpreter its #! line names, looked up in the child's PATH.
func commandPaths(command, dir string, env []string) []string {
	if strings.Contains(command, "/") && !filepath.IsAbs(command) && dir != "" {
		command = filepath.Join(dir, command) // os/exec resolves it in the child's dir
	}
	path, err := exec.LookPath(command)
	if err != nil {
		return nil
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	out := prefixOf(path)
	interp := shebang(path)
	if len(interp) == 0 {
		return out
	}
	name := interp[0]
	if filepath.Base(name) == "env" && len(interp) > 1 {
		name = interp[len(interp)-1]
		for _, a := range interp[1:] {
			if !strings.HasPrefix(a, "-") {
				name = a
				break
			}
		}
		if p, ok := lookPathIn(name, envValue(env, "PATH")); ok {
			name = p
		}
	}
	if filepath.IsAbs(name) {
		out = append(out, prefixOf(name)...)
	}
	return out
}

// prefixOf is the directory of path and of its target, and, for a target
// in a bin directory, the install prefix's lib, lib64, libexec, share and
// node_modules beside it (/opt/node/bin/node: /opt/node/lib…), never the
// whole parent (a ~/bin must not open the home directory).
func prefixOf(path string) []string {
	out := []string{filepath.Dir(path)}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return out
	}
	dir := filepath.Dir(real)
	out = append(out, dir)
	if filepath.Base(dir) == "bin" {
		up := filepath.Dir(dir)
		for _, sub := range []string{"lib", "lib64", "libexec", "share", "node_modules"} {
			if st, err := os.Stat(filepath.Join(up, sub)); err == nil && st.IsDir() {
				out = append(out, filepath.Join(up, sub))
			}
		}
	}
	return out
}

// shebang reads the interpreter line of a script ("" words: a binary).
func shebang(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 256).ReadSlice('\n')
	if err != nil && len(line) == 0 {
		return nil
	}
	if !bytes.HasPrefix(line, []byte("#!")) {
		return nil
	}
	return strings.Fields(string(line[2:]))
}

func lookPathIn(name, path string) (string, bool) {
	if strings.Contains(name, "/") {
		return name, true
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

func envValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// covers returns the protected path that path is or holds, or "".
// protect holds real paths (realPaths).
func covers(path string, protect []string) string {
	path = realPath(path)
	for _, p := range protect {
		if p == path || strings.HasPrefix(p, strings.TrimSuffix(path, "/")+"/") {
			return p
		}
	}
	return ""
}

// realPath is path cleaned, its symbolic links resolved where it exists.
func realPath(path string) string {
	path = filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}

// realPaths is realPath of each non-empty path.
func realPaths(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p != "" {
			out = append(out, realPath(p))
		}
	}
	return out
}

// splitPaths sorts existing paths into directories and files (Landlock's
// directory rights do not apply to a file), each once.
func splitPaths(paths []string) (dirs, files []string) {
	seen := map[string]bool{}
	for _, p := range paths {
		p = filepath.Clean(p)
		if seen[p] {
			continue
		}
		seen[p] = true
		st, err := os.Stat(p)
		switch {
		case err != nil:
		case st.IsDir():
			dirs = append(dirs, p)
		default:
			files = append(files, p)
		}
	}
	return dirs, files
}

// lookupUser resolves a user and group (names or numbers).
func lookupUser(name, group string) (uid, gid int, err error) {
	var u *user.User
	if n, err := strconv.Atoi(name); err == nil {
		uid, gid = n, n
		if u, err = user.LookupId(name); err == nil {
			gid, _ = strconv.Atoi(u.Gid)
		}
	} else {
		if u, err = user.Lookup(name); err != nil {
			return 0, 0, err
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if group != "" {
		if n, err := strconv.Atoi(group); err == nil {
			gid = n
		} else {
			g, err := user.LookupGroup(group)
			if err != nil {
				return 0, 0, err
			}
			gid, _ = strconv.Atoi(g.Gid)
		}
	}
	return uid, gid, nil
}

// LandlockABI is the Landlock ABI this kernel offers (0: none).
func LandlockABI() int {
	abi, err := llsyscall.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return abi
}
