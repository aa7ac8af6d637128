package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cgroupBaseForTest is the base that auto finds here, or skips.
func cgroupBaseForTest(t *testing.T) string {
	t.Helper()
	base, why, err := findCgroupBase("")
	if err != nil || base == "" {
		t.Skipf("no cgroup v2 base for children here: %s %v", why, err)
	}
	if _, _, err := setupCgroups(base, 0, 0, 0); err != nil {
		t.Skipf("cgroup v2 base %s does not take cgroups: %v", base, err)
	}
	return base
}

// A child started in its cgroup is there with everything it starts
// (whatever process group or session they leave for), and removing the
// cgroup kills them all and leaves nothing behind.
func TestCgroupKillsEveryDescendant(t *testing.T) {
	base := cgroupBaseForTest(t)
	g, _, err := setupCgroups(base, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := g.create()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(cg.dir), cgroupPrefix+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("cgroup %s is not named for this Caddy", cg.dir)
	}
	// a shell that starts two sleepers in sessions of their own (no
	// process group kill reaches them) and waits
	cmd := exec.Command("/bin/sh", "-c", "setsid sleep 1000 & setsid sleep 1000 & echo started; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cg.fd}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	self, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cgroup")
	if !strings.Contains(string(self), filepath.Base(cg.dir)) {
		t.Fatalf("the child is not in its cgroup: %s", self)
	}
	// the sleepers are in it too, three processes: each was forked (into
	// the shell's cgroup) before the shell wrote "started"
	procs := strings.Fields(readFile(filepath.Join(cg.dir, "cgroup.procs")))
	if len(procs) != 3 {
		t.Fatalf("cgroup.procs: %v, want the shell and its two sleepers", procs)
	}
	if !cg.populated() {
		t.Fatal("cgroup.events says not populated")
	}
	cg.kill()
	_ = cmd.Wait() // the shell, killed
	if err := cg.remove(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg.dir); !os.IsNotExist(err) {
		t.Fatalf("the cgroup is still there: %v", err)
	}
	for _, p := range procs {
		b, _ := os.ReadFile("/proc/" + p + "/cmdline")
		if strings.Contains(string(b), "sleep") {
			t.Errorf("process %s (%q) outlived its cgroup", p, b)
		}
	}
}

// Limits are written to the child's cgroup where the base enables their
// controllers; where it cannot, the reason names the controller.
func TestCgroupLimits(t *testing.T) {
	base := cgroupBaseForTest(t)
	g, not, err := setupCgroups(base, 256<<20, 64, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	cg, err := g.create()
	if err != nil {
		t.Fatal(err)
	}
	defer cg.remove(10 * time.Second)
	for limit, file := range map[string]string{"memory": "memory.max", "processes": "pids.max", "cpus": "cpu.max"} {
		want := map[string]string{"memory": "268435456", "processes": "64", "cpus": "50000 100000"}[limit]
		if why, ok := not[limit]; ok {
			t.Logf("%s: not by cgroup: %s", limit, why)
			if !strings.Contains(why, map[string]string{"memory": "memory", "processes": "pids", "cpus": "cpu"}[limit]) {
				t.Errorf("%s: the reason does not name the controller: %s", limit, why)
			}
			continue
		}
		if got := strings.TrimSpace(readFile(filepath.Join(cg.dir, file))); got != want {
			t.Errorf("%s: %s is %q, want %q", limit, file, got, want)
		}
	}
}

// A Caddy that crashed leaves empty cgroups named for its pid; the next
// provision removes them, never another live Caddy's.
func TestCgroupSweep(t *testing.T) {
	base := cgroupBaseForTest(t)
	// a pid that runs no process: a child that has exited and been reaped
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(base, cgroupPrefix+strconv.Itoa(cmd.Process.Pid)+"-7")
	live := filepath.Join(base, cgroupPrefix+"1-7") // pid 1 runs
	for _, d := range []string{dead, live} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer os.Remove(live)
	defer os.Remove(dead)
	sweepCgroups(base)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead Caddy's cgroup was not removed: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live process's cgroup was removed: %v", err)
	}
}

// mountinfo escapes spaces and other characters in paths as octal.
func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/sys/fs/cgroup/a\040b`); got != "/sys/fs/cgroup/a b" {
		t.Errorf("unescape: %q", got)
	}
}
