package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups is the cgroup v2 directory (the base) under which each child of
// a policy gets a cgroup of its own, started in it by clone3
// (CLONE_INTO_CGROUP): killed whole with cgroup.kill when the child ends,
// and, for each limit whose controller the base could enable for its
// children, bounded by memory.max, pids.max or cpu.max (the others stay
// rlimits).
//
// Lock order: none; it is set once at Resolve.
type cgroups struct {
	base    string
	memory  int64  // memory.max (0: not by cgroup)
	pids    int    // pids.max (0: not by cgroup)
	cpuMax  string // cpu.max ("": not by cgroup)
	applied []string
}

// cgroupSeq numbers children's cgroups, across policies (every route's
// base may be the same directory).
var cgroupSeq atomic.Uint64

// cgroup2Magic is the cgroup v2 file system's statfs type.
const cgroup2Magic = 0x63677270

// cgroupPrefix names a child's cgroup: cgroupPrefix + Caddy's pid + "-" + seq.
const cgroupPrefix = "caddymcp-"

// findCgroupBase decides where children's cgroups go. want is the
// Config's cgroup: "" (auto: Caddy's own cgroup when it is delegated to
// Caddy or is the root of the hierarchy, or its parent when Caddy's cgroup
// is a subgroup of a delegated unit, as systemd's DelegateSubgroup= makes
// it), "off", or a directory. It returns "" and why when there is none.
func findCgroupBase(want string) (base, why string, err error) {
	switch want {
	case "off":
		return "", "cgroup off", nil
	case "":
	default:
		if err := isCgroup2(want); err != nil {
			return "", "", err
		}
		return want, "", nil
	}
	own, mount, err := ownCgroup()
	if err != nil {
		return "", "no cgroup v2 hierarchy (" + err.Error() + ")", nil
	}
	parent := filepath.Dir(own)
	if own != mount && delegated(parent) && empty(parent) {
		return parent, "", nil // Caddy lives in a subgroup of a delegated cgroup
	}
	if own == mount || delegated(own) {
		return own, "", nil
	}
	return "", "Caddy's cgroup " + own + " is not delegated to it (systemd: Delegate=yes, DelegateSubgroup=)", nil
}

// isCgroup2 checks that dir is a directory of a cgroup v2 file system.
func isCgroup2(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("sandbox: cgroup %q is not an absolute path", dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("sandbox: cgroup %s: %w", dir, err)
	}
	if st.Type != cgroup2Magic {
		return fmt.Errorf("sandbox: cgroup %s is not a cgroup v2 directory", dir)
	}
	return nil
}

// ownCgroup is the directory of Caddy's own cgroup v2 and the mount point
// of the hierarchy it is in.
func ownCgroup() (dir, mount string, err error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	var path string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			path = rest
		}
	}
	if path == "" {
		return "", "", errors.New("Caddy is in no cgroup v2")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(mi), "\n") {
		// id parent major:minor root mountpoint options ... - fstype source options
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			continue
		}
		root, point := unescapeMount(f[3]), unescapeMount(f[4])
		rel, ok := strings.CutPrefix(path, root)
		if !ok || (rel != "" && root != "/" && !strings.HasPrefix(rel, "/")) {
			continue
		}
		return filepath.Join(point, rel), point, nil
	}
	return "", "", errors.New("no cgroup2 file system is mounted")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// delegated reports whether systemd delegated dir (Delegate=yes marks it
// with a trusted.delegate or user.delegate attribute).
func delegated(dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && n > 0 && buf[0] == '1' {
			return true
		}
	}
	return false
}

// empty reports whether dir's cgroup holds no process itself.
func empty(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return err == nil && len(bytes.TrimSpace(b)) == 0
}

// setupCgroups checks that base takes children's cgroups and enables the
// controllers that the configured limits need. memory, pids and cpus are
// the limits (0: none); for each it says whether the cgroup applies it, or
// why not (the caller then falls back to an rlimit, or refuses).
func setupCgroups(base string, memory int64, pids int, cpus float64) (*cgroups, map[string]string, error) {
	g := &cgroups{base: base}
	sweepCgroups(base)
	// the base must take a cgroup of ours: one made and removed
	probe := filepath.Join(base, fmt.Sprintf("%s%d-probe", cgroupPrefix, os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, nil, fmt.Errorf("cannot create a cgroup in %s: %w", base, err)
	}
	_, noKill := os.Stat(filepath.Join(probe, "cgroup.kill"))
	if err := os.Remove(probe); err != nil {
		return nil, nil, fmt.Errorf("cannot remove a cgroup in %s: %w", base, err)
	}
	if noKill != nil {
		return nil, nil, fmt.Errorf("cgroups in %s have no cgroup.kill (Linux 5.14)", base)
	}
	g.applied = []string{"cgroup " + base}
	not := map[string]string{}
	avail := strings.Fields(readFile(filepath.Join(base, "cgroup.controllers")))
	enable := func(controller string) string {
		if !slices.Contains(avail, controller) {
			return "no " + controller + " controller in " + base
		}
		if slices.Contains(strings.Fields(readFile(filepath.Join(base, "cgroup.subtree_control"))), controller) {
			return ""
		}
		err := os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte("+"+controller), 0)
		switch {
		case errors.Is(err, unix.EBUSY):
			return base + " holds processes itself, so it cannot enable " + controller + " for children (systemd: DelegateSubgroup=)"
		case err != nil:
			return "cannot enable " + controller + " in " + base + ": " + err.Error()
		}
		return ""
	}
	if memory > 0 {
		if why := enable("memory"); why != "" {
			not["memory"] = why
		} else {
			g.memory = memory
			g.applied = append(g.applied, "memory.max")
		}
	}
	if pids > 0 {
		if why := enable("pids"); why != "" {
			not["processes"] = why
		} else {
			g.pids = pids
			g.applied = append(g.applied, "pids.max")
		}
	}
	if cpus > 0 {
		if why := enable("cpu"); why != "" {
			not["cpus"] = why
		} else {
			period := 100000
			g.cpuMax = fmt.Sprintf("%d %d", max(1000, int(cpus*float64(period))), period)
			g.applied = append(g.applied, "cpu.max")
		}
	}
	return g, not, nil
}

// sweepCgroups removes the empty cgroups of Caddy processes that no longer
// run (one that crashed left them).
func sweepCgroups(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = os.Remove(filepath.Join(base, e.Name())) // fails, harmlessly, while populated
		}
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// childCgroup is one child's cgroup, and an O_PATH descriptor of it that
// clone3 starts the child in.
type childCgroup struct {
	dir string
	fd  int
}

// create makes a child's cgroup with the limits set.
func (g *cgroups) create() (*childCgroup, error) {
	dir := filepath.Join(g.base, fmt.Sprintf("%s%d-%d", cgroupPrefix, os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: cgroup: %w", err)
	}
	c := &childCgroup{dir: dir, fd: -1}
	write := func(file, value string, optional bool) error {
		err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0)
		if err != nil && optional && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var err error
	if g.memory > 0 {
		err = errors.Join(err,
			write("memory.max", strconv.FormatInt(g.memory, 10), false),
			write("memory.swap.max", "0", true),  // the limit is memory, not memory plus swap
			write("memory.oom.group", "1", true)) // the OOM killer ends the whole child
	}
	if g.pids > 0 {
		err = errors.Join(err, write("pids.max", strconv.Itoa(g.pids), false))
	}
	if g.cpuMax != "" {
		err = errors.Join(err, write("cpu.max", g.cpuMax, false))
	}
	if err == nil {
		c.fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("sandbox: cgroup %s: %w", dir, err)
	}
	return c, nil
}

// kill kills every process in the cgroup (cgroup.kill: also those that
// left the process group and the PID namespace's reach).
func (c *childCgroup) kill() {
	_ = os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
}

// event reads one counter of a cgroup events file (memory.events oom_kill,
// pids.events max).
func (c *childCgroup) event(file, key string) int64 {
	for _, line := range strings.Split(readFile(filepath.Join(c.dir, file)), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// populated reports whether a process is still in the cgroup.
func (c *childCgroup) populated() bool {
	return c.event("cgroup.events", "populated") != 0
}

// remove kills what is left in the cgroup, waits (at most within) until
// it is empty, watching cgroup.events, and removes it.
func (c *childCgroup) remove(within time.Duration) error {
	defer func() {
		if c.fd >= 0 {
			unix.Close(c.fd)
			c.fd = -1
		}
	}()
	if c.populated() {
		c.kill()
		if err := c.awaitEmpty(within); err != nil {
			return err
		}
	}
	return os.Remove(c.dir)
}

// awaitEmpty waits until cgroup.events says populated 0: the kernel
// signals each change of it to inotify watchers (IN_MODIFY).
func (c *childCgroup) awaitEmpty(within time.Duration) error {
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, filepath.Join(c.dir, "cgroup.events"), unix.IN_MODIFY); err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	buf := make([]byte, 4096)
	for c.populated() {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("cgroup %s still holds processes %v after cgroup.kill", c.dir, within)
		}
		fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		for {
			if _, err := unix.Read(in, buf); err != nil {
				break
			}
		}
	}
	return nil
}
