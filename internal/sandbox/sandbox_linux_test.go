package sandbox_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caddymcp/caddymcp/internal/sandbox"
)

// resolveEnv makes this test binary resolve the Config in it (JSON) and
// print the outcome: the child of TestResolveWithoutRoot.
const resolveEnv = "CADDYMCP_TEST_RESOLVE"

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
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Without root the namespaces cannot be created: provisioning fails with
// what is missing; best_effort starts servers with the rest (Landlock,
// seccomp, no_new_privs work unprivileged).
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
	run := func(cfg string) string {
		cmd := exec.Command(exe)
		cmd.Env = []string{resolveEnv + "=" + cfg, "HOME=/", "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(`{}`); !strings.Contains(got, "error: sandbox: cannot create PID and network namespaces") || !strings.Contains(got, "Caddy needs root or CAP_SYS_ADMIN") {
		t.Errorf("as nobody: %s", got)
	}
	if got := run(`{"user":"root"}`); !strings.Contains(got, "error: sandbox: user root needs Caddy to run as root") {
		t.Errorf("user, as nobody: %s", got)
	}
	got := run(`{"best_effort":true}`)
	if !strings.HasPrefix(got, "ok: ") || strings.Contains(got, "pid namespace") || !strings.Contains(got, "landlock (ABI") ||
		!strings.Contains(got, "seccomp") || !strings.Contains(got, "skipped: namespaces: cannot create") {
		t.Errorf("best_effort, as nobody: %s", got)
	}
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
	for _, want := range []string{"pid namespace", "network namespace", "loopback", "capability bounding set", "no_new_privs",
		"no capabilities", "rlimit memory", "rlimit open_files", "landlock (ABI", "seccomp"} {
		if !strings.Contains(p.Summary(), want) {
			t.Errorf("summary %q lacks %q", p.Summary(), want)
		}
	}
	if len(p.Skipped()) != 0 {
		t.Errorf("skipped: %v", p.Skipped())
	}
}
