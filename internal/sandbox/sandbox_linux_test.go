package sandbox_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/caddymcp/caddymcp/internal/sandbox"
)

// resolveEnv makes this test binary resolve the Config in it (JSON) and
// print the outcome: the child of TestResolveWithoutRoot.
const resolveEnv = "CADDYMCP_TEST_RESOLVE"

// scriptEnv, with resolveEnv, is a shell script the child then runs under
// the policy.
const scriptEnv = "CADDYMCP_TEST_SCRIPT"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(resolveEnv); cfg != "" {
		var c sandbox.Config
		_ = json.Unmarshal([]byte(cfg), &c)
		p, err := sandbox.Resolve(c, "/bin/sh", "", os.Environ(), nil)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		fmt.Println("ok:", p.Summary(), "| skipped:", strings.Join(p.Skipped(), "; "))
		if script := os.Getenv(scriptEnv); script != "" {
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			child, err := p.Wrap(cmd)
			if err != nil {
				fmt.Println("wrap:", err)
				os.Exit(0)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{}
			child.Attr(cmd.SysProcAttr)
			out, err := cmd.CombinedOutput()
			_ = child.Cleanup()
			fmt.Printf("%s(exit: %v)\n", out, err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Without root (Caddy as its own user, as its packages run it) the
// namespaces come from a user namespace of the child's own, where Caddy's
// uid is root: the whole sandbox applies. user still needs root.
func TestResolveWithoutRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs a copy of itself as nobody: needs root")
	}
	if sandbox.LandlockABI() < 4 {
		t.Skip("no Landlock ABI 4")
	}
	dir, err := os.MkdirTemp("", "caddymcp-resolve-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	b, _ := os.ReadFile(self)
	exe := filepath.Join(dir, "sandbox.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(cfg, script string) string {
		cmd := exec.Command(exe)
		cmd.Env = []string{resolveEnv + "=" + cfg, scriptEnv + "=" + script, "HOME=/", "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(`{"user":"root"}`, ""); !strings.Contains(got, "error: sandbox: user root needs Caddy to run as root") {
		t.Errorf("user, as nobody: %s", got)
	}
	if !userNamespaces() {
		got := run(`{}`, "")
		if !strings.Contains(got, "error: sandbox: cannot create the PID and network namespaces") {
			t.Errorf("as nobody, without user namespaces: %s", got)
		}
		t.Skip("this kernel does not let an unprivileged user create user namespaces")
	}
	got := run(`{"processes":64}`, `echo "pid $$"; cat /etc/shadow; ls /root; echo x > /tmp/x; cat /proc/1/environ;
grep -E '^(CapEff|NSpid|Uid)' /proc/self/status; cat /proc/net/dev; echo > $TMPDIR/ok && echo tmp ok`)
	t.Log(got)
	for _, want := range []string{"ok: user namespace, pid namespace, ipc namespace, network namespace, loopback, capability bounding set, no_new_privs, no capabilities, rlimit processes",
		"pid 1", "/etc/shadow: Permission denied", "/root", "/tmp/x: Permission denied", "/proc/1/environ: Permission denied",
		"CapEff:\t0000000000000000", "Uid:\t0\t0\t0\t0", " lo:", "tmp ok"} {
		if !strings.Contains(got, want) {
			t.Errorf("as nobody, no %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "eth") || strings.Contains(got, "skipped: n") {
		t.Errorf("as nobody, the server saw the host's network or a namespace was skipped:\n%s", got)
	}
}

// userNamespaces reports whether an unprivileged user may create one here.
func userNamespaces() bool {
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return false
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		return false
	}
	return true
}

// As root, every restriction applies and the summary names each.
func TestResolveAsRoot(t *testing.T) {
	if os.Geteuid() != 0 || sandbox.LandlockABI() < 4 {
		t.Skip("needs root and Landlock ABI 4")
	}
	p, err := sandbox.Resolve(sandbox.Config{Memory: 1 << 30, OpenFiles: 512}, "/bin/sh", "", os.Environ(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pid namespace", "ipc namespace", "network namespace", "loopback", "capability bounding set", "no_new_privs",
		"no capabilities", "rlimit memory", "rlimit open_files", "landlock (ABI", "seccomp"} {
		if !strings.Contains(p.Summary(), want) {
			t.Errorf("summary %q lacks %q", p.Summary(), want)
		}
	}
	if len(p.Skipped()) != 0 {
		t.Errorf("skipped: %v", p.Skipped())
	}
	// memory by the child's cgroup, or by rlimit with the reason said
	if !strings.Contains(p.Summary(), "memory.max") && !slices.ContainsFunc(p.Notes(), func(n string) bool {
		return strings.HasPrefix(n, "memory by rlimit: ") || strings.HasPrefix(n, "no cgroup: ")
	}) {
		t.Errorf("neither the summary %q nor the notes %q say how memory is bounded", p.Summary(), p.Notes())
	}
	// cgroup off: rlimits, and no note about cgroups
	p, err = sandbox.Resolve(sandbox.Config{Memory: 1 << 30, Cgroup: "off"}, "/bin/sh", "", os.Environ(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.Summary(), "cgroup") || len(p.Notes()) != 0 || !strings.Contains(p.Summary(), "rlimit memory") {
		t.Errorf("cgroup off: summary %q, notes %q", p.Summary(), p.Notes())
	}
	// a cgroup path that is not one fails, as does cpus without a cpu controller
	if _, err := sandbox.Resolve(sandbox.Config{Cgroup: t.TempDir()}, "/bin/sh", "", os.Environ(), nil); err == nil || !strings.Contains(err.Error(), "is not a cgroup v2 directory") {
		t.Errorf("cgroup at a temporary directory: %v", err)
	}
	if p, err := sandbox.Resolve(sandbox.Config{CPUs: 0.5}, "/bin/sh", "", os.Environ(), nil); err == nil {
		if !strings.Contains(p.Summary(), "cpu.max") {
			t.Errorf("cpus 0.5 resolved without cpu.max: %q", p.Summary())
		}
	} else if !strings.Contains(err.Error(), "cpus needs a cgroup v2 with the cpu controller") {
		t.Errorf("cpus without a cpu controller: %v", err)
	}
}
