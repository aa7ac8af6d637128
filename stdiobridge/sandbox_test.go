//go:build linux

package stdiobridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
	"github.com/caddymcp/caddymcp/internal/sandbox"
)

// needSandbox skips where the kernel or the privileges cannot sandbox (the
// tests of what then happens are TestSandboxFailsClosed).
func needSandbox(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "the sandbox tests start children in namespaces and as other users: they need root"
	case sandbox.LandlockABI() < 4:
		why = fmt.Sprintf("this kernel's Landlock ABI is %d; the sandbox needs 4", sandbox.LandlockABI())
	}
	if why == "" {
		return
	}
	if os.Getenv("CADDYMCP_REQUIRE_SANDBOX") != "" {
		t.Fatal(why + " (CADDYMCP_REQUIRE_SANDBOX is set)")
	}
	t.Skip(why)
}

// escapeSite serves the escape server twice: /bare without a sandbox and
// /boxed with box (a sandbox block's body).
func escapeSite(t *testing.T, box string) string {
	return escapeSiteWith(t, self(t), box)
}

// escapeSiteWith is escapeSite with the server exe.
func escapeSiteWith(t *testing.T, exe, box string) string {
	route := func(path, extra string) string {
		return `
	mcp_stdio ` + path + ` {
		command ` + exe + `
		env ` + mcpserver.FakeEnv + ` escape
		env ESCAPE_SECRET secret-of-` + strings.TrimPrefix(path, "/") + `
		shutdown_timeout 500ms` + extra + `
	}`
	}
	return `
:{{PORT}} {
	bind 127.0.0.1
	metrics /metrics` + route("/bare", "") + route("/boxed", "\n\t\tsandbox {"+box+"\n\t\t}") + `
}
`
}

// openBoth opens a session on each of escapeSite's routes.
func openBoth(t *testing.T, c *caddyrun.Caddy) (bare, boxed *mcpClient) {
	t.Helper()
	bare, boxed = newClient(t, c.URL+"/bare"), newClient(t, c.URL+"/boxed")
	bare.initialize()
	boxed.initialize()
	return bare, boxed
}

// tool calls one of the escape server's tools and returns its text (or
// the JSON-RPC error's message, prefixed "error: ").
func tool(t *testing.T, cl *mcpClient, name string, args any) string {
	t.Helper()
	a, _ := json.Marshal(args)
	msgs := cl.call(strconv.Itoa(int(time.Now().UnixNano()%1e9)), "tools/call", `{"name":"`+name+`","arguments":`+string(a)+`}`)
	if len(msgs) == 0 {
		t.Fatalf("%s: no answer", name)
	}
	var m struct {
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(msgs[len(msgs)-1]), &m); err != nil {
		t.Fatalf("%s: %v: %s", name, err, msgs)
	}
	if m.Error != nil {
		return "error: " + m.Error.Message
	}
	if len(m.Result.Content) == 0 {
		t.Fatalf("%s: %s", name, msgs)
	}
	return m.Result.Content[0].Text
}

// sysvSegment makes a System V shared memory segment of Caddy's user (mode
// 0600) and returns its key; it is removed when the test ends.
func sysvSegment(t *testing.T) int {
	t.Helper()
	key := 0x5ead0000 + os.Getpid()%0xffff
	id, _, errno := syscall.RawSyscall(syscall.SYS_SHMGET, uintptr(key), 4096, 01000|0o600 /* IPC_CREAT */)
	if errno != 0 {
		t.Fatalf("shmget: %v", errno)
	}
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_SHMCTL, id, 0 /* IPC_RMID */, 0) })
	return key
}

func listenLoopback(t *testing.T) (net.Listener, int) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go acceptAndClose(l)
	return l, l.Addr().(*net.TCPAddr).Port
}

// acceptAndClose accepts and closes connections until l is closed.
func acceptAndClose(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Every escape a sandboxed server tries is refused, and the same attempt
// by the same server without the sandbox succeeds (so that no row passes
// because the attempt was broken).
func TestSandboxRefusesEscapes(t *testing.T) {
	needSandbox(t)
	storage := t.TempDir()
	if err := os.WriteFile(filepath.Join(storage, "key.pem"), []byte("PRIVATE KEY"), 0o600); err != nil {
		t.Fatal(err)
	}
	allowedDir := t.TempDir()
	outside := t.TempDir()
	shmKey := sysvSegment(t)
	sock := filepath.Join(t.TempDir(), "daemon.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go acceptAndClose(ul)
	_, allowedPort := listenLoopback(t)
	_, otherPort := listenLoopback(t)
	box := "\n\t\t\tnetwork outbound " + strconv.Itoa(allowedPort) + "\n\t\t\twrite " + allowedDir
	c := caddyrun.StartCaddyfile(t, "\tstorage file_system "+storage+"\n", escapeSite(t, box))

	open := func(path string) *mcpClient {
		cl := newClient(t, c.URL+path)
		cl.initialize()
		return cl
	}
	bare, boxed := open("/bare"), open("/boxed")
	bare2, boxed2 := open("/bare"), open("/boxed")
	pidOf := func(cl *mcpClient) int {
		s := tool(t, cl, "pid", nil)
		n, err := strconv.Atoi(strings.TrimPrefix(s, "ok: "))
		if err != nil {
			t.Fatalf("pid: %s", s)
		}
		return n
	}
	bareSibling, boxedSibling := pidOf(bare2), pidOf(boxed2)

	rows := []struct {
		name       string
		tool       string
		args       func(sibling int) map[string]any
		wantBoxed  string // a prefix of the sandboxed answer
		bareToo    bool   // the bare server must succeed ("ok: ")
		boxedAllow bool   // allowed in the sandbox as well
	}{
		{"read Caddy's storage", "read", func(int) map[string]any { return map[string]any{"path": storage} }, "refused:", true, false},
		{"read a key in Caddy's storage", "read", func(int) map[string]any { return map[string]any{"path": filepath.Join(storage, "key.pem")} }, "refused:", true, false},
		{"read /etc/shadow", "read", func(int) map[string]any { return map[string]any{"path": "/etc/shadow"} }, "refused:", true, false},
		{"write outside the allowed paths", "write", func(int) map[string]any { return map[string]any{"path": filepath.Join(outside, "x")} }, "refused:", true, false},
		{"write an allowed path", "write", func(int) map[string]any { return map[string]any{"path": filepath.Join(allowedDir, "x")} }, "ok:", true, true},
		{"read a sibling's environ", "environ", func(sibling int) map[string]any { return map[string]any{"pid": sibling} }, "refused:", true, false},
		{"read Caddy's environ", "environ", func(int) map[string]any { return map[string]any{"pid": os.Getpid()} }, "refused:", true, false},
		{"connect to a port not allowed", "connect", func(int) map[string]any { return map[string]any{"addr": "127.0.0.1:" + strconv.Itoa(otherPort)} }, "refused:", true, false},
		{"connect to the allowed port", "connect", func(int) map[string]any { return map[string]any{"addr": "127.0.0.1:" + strconv.Itoa(allowedPort)} }, "ok:", true, true},
		{"connect to a local daemon's UNIX socket", "unix", func(int) map[string]any { return map[string]any{"path": sock} }, "refused:", true, false},
		{"socket of MPTCP with the protocol's high bits set", "sys", func(int) map[string]any { return map[string]any{"op": "mptcp_high_bits"} }, "refused:", true, false},
		{"socket of UNIX with the family's high bits set", "sys", func(int) map[string]any { return map[string]any{"op": "unix_high_bits"} }, "refused:", true, false},
		{"socket of VSOCK", "sys", func(int) map[string]any { return map[string]any{"op": "vsock"} }, "refused:", true, false},
		{"TCP Fast Open to a port not allowed", "sys", func(int) map[string]any {
			return map[string]any{"op": "tcp_fast_open", "addr": "127.0.0.1:" + strconv.Itoa(otherPort)}
		}, "refused:", true, false},
		{"listen without bind", "sys", func(int) map[string]any { return map[string]any{"op": "listen_unbound"} }, "refused:", true, false},
		{"clone into a user namespace", "sys", func(int) map[string]any { return map[string]any{"op": "clone_newuser"} }, "refused:", true, false},
		{"clone3", "sys", func(int) map[string]any { return map[string]any{"op": "clone3"} }, "refused:", true, false},
		{"unshare into a user namespace", "sys", func(int) map[string]any { return map[string]any{"op": "unshare_newuser"} }, "refused:", true, false},
		{"io_uring", "sys", func(int) map[string]any { return map[string]any{"op": "io_uring"} }, "refused:", true, false},
		{"attach to Caddy's user's System V shared memory", "sys", func(int) map[string]any {
			return map[string]any{"op": "sysv_shm", "addr": strconv.Itoa(shmKey)}
		}, "refused:", true, false},
		{"listen on a port", "listen", func(int) map[string]any { return map[string]any{"addr": "127.0.0.1:0"} }, "refused:", true, false},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got := tool(t, boxed, row.tool, row.args(boxedSibling))
			if !strings.HasPrefix(got, row.wantBoxed) {
				t.Errorf("sandboxed: %s; want %s…", got, row.wantBoxed)
			}
			if row.bareToo {
				if got := tool(t, bare, row.tool, row.args(bareSibling)); !strings.HasPrefix(got, "ok:") {
					t.Errorf("without the sandbox: %s; want ok (the attempt itself must work)", got)
				}
			}
		})
	}
	if got := tool(t, bare, "environ", map[string]any{"pid": bareSibling}); !strings.Contains(got, "secret-of-bare") {
		t.Errorf("without the sandbox a sibling's environ holds its secret: %s", got)
	}
}

// With network none a server has only loopback of its own: even a port
// Caddy's machine listens on cannot be reached.
func TestSandboxNetworkNone(t *testing.T) {
	needSandbox(t)
	_, port := listenLoopback(t)
	c := caddyrun.StartCaddyfile(t, "", escapeSite(t, ""))
	bare, boxed := openBoth(t, c)
	addr := map[string]any{"addr": "127.0.0.1:" + strconv.Itoa(port)}
	if got := tool(t, boxed, "connect", addr); !strings.HasPrefix(got, "refused:") {
		t.Errorf("network none: %s", got)
	}
	if got := tool(t, bare, "connect", addr); !strings.HasPrefix(got, "ok:") {
		t.Errorf("without the sandbox: %s", got)
	}
	if got := tool(t, boxed, "connect", map[string]any{"addr": "1.1.1.1:443"}); !strings.HasPrefix(got, "refused:") {
		t.Errorf("network none, outside: %s", got)
	}
}

// A grandchild that leaves the process group, drops the bridge's marker
// and ignores SIGTERM is gone when its sandboxed server's session ends
// (the PID namespace ends with its first process); without the sandbox it
// outlives the session.
func TestSandboxGrandchildEndsWithSession(t *testing.T) {
	needSandbox(t)
	c := caddyrun.StartCaddyfile(t, "", escapeSite(t, ""))
	for _, path := range []string{"/boxed", "/bare"} {
		tag := strings.TrimPrefix(path, "/") + runTag
		cl := newClient(t, c.URL+path)
		cl.initialize()
		pid, err := strconv.Atoi(strings.TrimPrefix(tool(t, cl, "pid", nil), "ok: "))
		if err != nil {
			t.Fatal(err)
		}
		if got := tool(t, cl, "grandchild", map[string]any{"tag": tag}); !strings.HasPrefix(got, "ok:") {
			t.Fatalf("%s grandchild: %s", path, got)
		}
		marker := "caddymcp-orphan-" + tag
		if processesMatching(marker) != 1 {
			t.Fatalf("%s: the grandchild is not running", path)
		}
		if code, body := cl.status("DELETE", "", nil); code != 204 && code != 200 {
			t.Fatalf("DELETE: %d %s", code, body)
		}
		if path == "/boxed" {
			waitNoProcesses(t, marker, 30*time.Second)
			continue
		}
		// without the sandbox: the session's server ends, its grandchild
		// does not (the gap the sandbox closes)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the bare server %d did not end with its session", pid)
			}
		}
		if processesMatching(marker) != 1 {
			t.Fatalf("without the sandbox the grandchild was ended too: the test cannot tell the sandbox's work apart")
		}
		killMatching(marker)
	}
}

// killMatching SIGKILLs the processes whose command line holds marker.
func killMatching(marker string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), marker) {
			p, _ := os.FindProcess(pid)
			_ = p.Kill()
		}
	}
}

// A server that allocates past its memory limit dies, and the client whose
// call it was serving is told why; so do the log, the metric and the audit
// entry. A server that burns its CPU time is killed and reported so.
func TestSandboxLimitsReportTheCause(t *testing.T) {
	needSandbox(t)
	logPath := t.TempDir() + "/audit.log"
	global := "\tlog audit {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio.audit\n\t}\n"
	// the fake as a program of its own, without the race detector (whose
	// shadow memory would not fit in the limit)
	exe := filepath.Join(t.TempDir(), "fakeserver")
	build := exec.Command("go", "build", "-o", exe, "github.com/caddymcp/caddymcp/internal/mcpserver/fakeserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build fakeserver: %v\n%s", err, out)
	}
	c := caddyrun.StartCaddyfile(t, global, escapeSiteWith(t, exe, "\n\t\t\tmemory 256MiB\n\t\t\tcpu_time 1s"))
	bare, boxed := openBoth(t, c)
	if got := tool(t, bare, "alloc", map[string]any{"mib": 400}); got != "ok: 400 MiB" {
		t.Fatalf("without the sandbox: %s", got)
	}
	got := tool(t, boxed, "alloc", map[string]any{"mib": 400})
	if !strings.Contains(got, "server ran out of memory (limit 256 MiB)") {
		t.Fatalf("past the memory limit the client got: %s", got)
	}
	spin := newClient(t, c.URL+"/boxed")
	spin.initialize()
	if got := tool(t, spin, "spin", nil); !strings.Contains(got, "server exceeded its CPU time (limit 1s)") {
		t.Fatalf("past the CPU limit the client got: %s", got)
	}
	m := scrape(t, c.URL+"/metrics")
	causes := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, "mcp_stdio_child_exits_total{") {
			for _, cause := range []string{"memory", "cpu"} {
				if strings.Contains(k, `cause="`+cause+`"`) {
					causes[cause] += v
				}
			}
		}
	}
	if causes["memory"] != 1 || causes["cpu"] != 1 {
		t.Errorf("mcp_stdio_child_exits_total by cause: %v; want memory 1, cpu 1", causes)
	}
	want := map[string]bool{"memory": false, "cpu": false}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		raw, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(raw), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil {
				if cause, ok := e["exit_cause"].(string); ok {
					want[cause] = true
				}
			}
		}
		if want["memory"] && want["cpu"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit entries with exit_cause: %v\n%s", want, raw)
		}
	}
}

// publicCopy copies this test binary where another user may run it (go
// test's build directory is root's alone).
func publicCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caddymcp-sandbox-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self(t))
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "escape-server")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// A server run as another user with a process limit cannot fork past it;
// the same server without the sandbox can. The user is a uid of its own
// (RLIMIT_NPROC counts every process of the user: nobody's other
// processes on the machine would count too).
func TestSandboxProcessLimit(t *testing.T) {
	needSandbox(t)
	exe := publicCopy(t)
	site := `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /bare {
		command ` + exe + `
		env ` + mcpserver.FakeEnv + ` escape
		shutdown_timeout 500ms
	}
	mcp_stdio /boxed {
		command ` + exe + `
		env ` + mcpserver.FakeEnv + ` escape
		shutdown_timeout 500ms
		sandbox {
			user 64123
			processes 24
		}
	}
}
`
	c := caddyrun.StartCaddyfile(t, "", site)
	bare, boxed := openBoth(t, c)
	if got := tool(t, bare, "fork", map[string]any{"n": 40}); got != "ok: 40 started" {
		t.Fatalf("without the sandbox: %s", got)
	}
	got := tool(t, boxed, "fork", map[string]any{"n": 40})
	if !strings.HasPrefix(got, "refused: ") || !strings.Contains(got, "resource temporarily unavailable") {
		t.Fatalf("past processes 24: %s", got)
	}
	t.Logf("past processes 24: %s", got)
	// it still serves: the limit refused the forks, it did not end the server
	if got := tool(t, boxed, "pid", nil); !strings.HasPrefix(got, "ok: ") {
		t.Fatalf("after the refused forks: %s", got)
	}
	// and it runs as that user, the bare one as Caddy's root
	if got := tool(t, boxed, "uid", nil); got != "ok: uid=64123 gid=64123" {
		t.Errorf("sandboxed with user 64123: %s", got)
	}
	if got := tool(t, bare, "uid", nil); got != "ok: uid=0 gid=0" {
		t.Errorf("without the sandbox: %s", got)
	}
}

// A restriction that cannot be applied fails the config with an error
// naming it; best_effort loads it with what can be applied, logged.
func TestSandboxFailsClosed(t *testing.T) {
	needSandbox(t)
	storage := t.TempDir()
	c := caddyrun.StartCaddyfile(t, "\tstorage file_system "+storage+"\n", `
:{{PORT}} {
	bind 127.0.0.1
	respond "up"
}
`)
	route := func(box string) string {
		return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env ` + mcpserver.FakeEnv + ` escape
		sandbox {` + box + `
		}
	}
}
`
	}
	for _, row := range []struct{ box, err string }{
		{"\n\t\t\twrite " + storage, "would give the server Caddy's own " + storage},
		{"\n\t\t\tread " + filepath.Dir(storage), "would give the server Caddy's own " + storage},
		{"\n\t\t\tuser no-such-user-here", "unknown user no-such-user-here"},
		{"\n\t\t\tprocesses 10", "the kernel exempts root from RLIMIT_NPROC"},
		{"\n\t\t\tread /does/not/exist", "no such file or directory"},
	} {
		err := c.TryLoadCaddyfile("\tstorage file_system "+storage+"\n", route(row.box))
		if err == nil || !strings.Contains(err.Error(), row.err) {
			t.Errorf("sandbox {%s }: %v; want an error with %q", strings.ReplaceAll(row.box, "\n\t\t\t", " "), err, row.err)
		}
	}
	// best_effort: the limit that cannot bind root is left out, and said so
	logPath := t.TempDir() + "/caddy.log"
	global := "\tstorage file_system " + storage + "\n\tlog {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio\n\t}\n"
	if err := c.TryLoadCaddyfile(global, route("\n\t\t\tprocesses 10\n\t\t\tbest_effort")); err != nil {
		t.Fatalf("best_effort: %v", err)
	}
	logs, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logs), "sandbox best_effort: a restriction is not applied") || !strings.Contains(string(logs), "rlimit processes: the server runs as root") {
		t.Errorf("best_effort did not log what it left out: %s", logs)
	}
}

// The sandbox applies to every child of a route: a 2026-07-28 pool child,
// a prewarmed session child and a stateless request's child are as
// confined as a session's own.
func TestSandboxEveryChild(t *testing.T) {
	needSandbox(t)
	logPath := t.TempDir() + "/caddy.log"
	global := "\tlog {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio\n\t}\n"
	c := caddyrun.StartCaddyfile(t, global, `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+self(t)+`
		env `+mcpserver.FakeEnv+` escape
		child_era legacy
		prewarm 1
		shutdown_timeout 500ms
		sandbox
	}
	mcp_stdio /stateless {
		command `+self(t)+`
		env `+mcpserver.FakeEnv+` escape
		stateless
		shutdown_timeout 500ms
		sandbox
	}
}
`)
	// stateless: a child per request
	st := newClient(t, c.URL+"/stateless")
	if got := tool(t, st, "read", map[string]any{"path": "/etc/shadow"}); !strings.HasPrefix(got, "refused:") {
		t.Errorf("stateless child read /etc/shadow: %s", got)
	}
	// 2026: a pool child
	_, msg := modernPost(context.Background(), t, c.URL+"/mcp", "", 1, "tools/call", `{"name":"read","arguments":{"path":"/etc/shadow"}}`)
	b, _ := json.Marshal(msg)
	if !strings.Contains(string(b), "refused: ") {
		t.Errorf("2026 pool child read /etc/shadow: %s", b)
	}
	// 2025: the prewarmed child
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	if got := tool(t, cl, "read", map[string]any{"path": "/etc/shadow"}); !strings.HasPrefix(got, "refused:") {
		t.Errorf("2025 session child read /etc/shadow: %s", got)
	}
	logs, _ := os.ReadFile(logPath)
	for _, line := range []string{`"pool child started"`, `"session started"`} {
		ok := false
		for _, l := range strings.Split(string(logs), "\n") {
			if strings.Contains(l, line) && strings.Contains(l, `"sandbox":"pid namespace, ipc namespace, network namespace`) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no %s line names the sandbox:\n%s", line, logs)
		}
	}
	if !strings.Contains(string(logs), `"prewarmed":true`) {
		t.Errorf("the session did not get the prewarmed child")
	}
}

// A reload that adds (or changes) the sandbox ends every child started
// without it: none serves on unconfined, in either era.
func TestSandboxReloadEndsUnconfinedChildren(t *testing.T) {
	needSandbox(t)
	site := func(box string) string {
		return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env ` + mcpserver.FakeEnv + ` escape
		child_era legacy
		shutdown_timeout 500ms` + box + `
	}
}
`
	}
	c := caddyrun.StartCaddyfile(t, "", site(""))
	old := newClient(t, c.URL+"/mcp")
	old.initialize()
	shadow := map[string]any{"path": "/etc/shadow"}
	if got := tool(t, old, "read", shadow); !strings.HasPrefix(got, "ok:") {
		t.Fatalf("without the sandbox: %s", got)
	}
	_, msg := modernPost(context.Background(), t, c.URL+"/mcp", "", 1, "tools/call", `{"name":"read","arguments":{"path":"/etc/shadow"}}`)
	if b, _ := json.Marshal(msg); !strings.Contains(string(b), "ok: ") {
		t.Fatalf("2026 without the sandbox: %s", b)
	}
	c.LoadCaddyfile("", site("\n\t\tsandbox"))
	http.DefaultClient.CloseIdleConnections()
	if code, _ := old.status("POST", `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read","arguments":{"path":"/etc/shadow"}}}`, nil); code != http.StatusNotFound {
		t.Errorf("the unconfined session after the reload: %d, want 404 (ended with its child)", code)
	}
	_, msg = modernPost(context.Background(), t, c.URL+"/mcp", "", 2, "tools/call", `{"name":"read","arguments":{"path":"/etc/shadow"}}`)
	if b, _ := json.Marshal(msg); !strings.Contains(string(b), "refused: ") {
		t.Errorf("2026 after the reload (a pool child started without the sandbox served?): %s", b)
	}
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	if got := tool(t, cl, "read", shadow); !strings.HasPrefix(got, "refused:") {
		t.Errorf("a new session after the reload: %s", got)
	}
}

// seccomp off leaves out the deny list only: the argument rules (io_uring,
// namespaces, sockets Landlock does not confine) still hold.
func TestSandboxSeccompOffKeepsTheArgumentRules(t *testing.T) {
	needSandbox(t)
	c := caddyrun.StartCaddyfile(t, "", escapeSite(t, "\n\t\t\tseccomp off"))
	bare, boxed := openBoth(t, c)
	for _, op := range []string{"io_uring", "unshare_newuser", "mptcp_high_bits", "vsock", "listen_unbound", "clone_newuser"} {
		if got := tool(t, boxed, "sys", map[string]any{"op": op}); !strings.HasPrefix(got, "refused:") {
			t.Errorf("seccomp off, %s: %s", op, got)
		}
		if got := tool(t, bare, "sys", map[string]any{"op": op}); !strings.HasPrefix(got, "ok:") {
			t.Errorf("without the sandbox, %s: %s", op, got)
		}
	}
	// the deny list is off: what only it refuses reaches the kernel
	if got := tool(t, boxed, "sys", map[string]any{"op": "clone3"}); !strings.HasPrefix(got, "refused:") {
		t.Errorf("seccomp off, clone3 (an argument rule): %s", got)
	}
}

// unix_sockets lets a server reach a local daemon's socket (beneath a read
// path, as Landlock ABI 9 wants), which the default refuses.
func TestSandboxUnixSockets(t *testing.T) {
	needSandbox(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "daemon.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go acceptAndClose(l)
	c := caddyrun.StartCaddyfile(t, "", escapeSite(t, "\n\t\t\tunix_sockets\n\t\t\tread "+dir))
	_, boxed := openBoth(t, c)
	if got := tool(t, boxed, "unix", map[string]any{"path": sock}); got != "ok: connected" {
		t.Errorf("with unix_sockets: %s", got)
	}
	// still no other family, and no TCP connect (network none)
	if got := tool(t, boxed, "sys", map[string]any{"op": "vsock"}); !strings.HasPrefix(got, "refused:") {
		t.Errorf("with unix_sockets, vsock: %s", got)
	}
}

// cgroupBase is the cgroup v2 directory children's cgroups go in here
// (what the sandbox's auto finds), or skips the test: it says why.
func cgroupBase(t *testing.T) string {
	t.Helper()
	p, err := sandbox.Resolve(sandbox.Config{}, "/bin/sh", "", os.Environ(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(p.Summary(), ", ") {
		if base, ok := strings.CutPrefix(part, "cgroup "); ok {
			return base
		}
	}
	why := fmt.Sprintf("no cgroup v2 subtree for children here (%v)", p.Notes())
	if os.Getenv("CADDYMCP_REQUIRE_CGROUP") != "" {
		t.Fatal(why + " (CADDYMCP_REQUIRE_CGROUP is set)")
	}
	t.Skip(why)
	return ""
}

// Where a cgroup v2 subtree is Caddy's to use, each sandboxed child runs
// in a cgroup of its own (the start line names it), cannot move itself
// out of it (the bare server can), and the cgroup is gone once its session
// has ended, with every process in it.
func TestSandboxCgroupPerChild(t *testing.T) {
	needSandbox(t)
	base := cgroupBase(t)
	logPath := t.TempDir() + "/caddy.log"
	global := "\tlog {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio\n\t}\n"
	c := caddyrun.StartCaddyfile(t, global, escapeSite(t, ""))
	bare, boxed := openBoth(t, c)
	rel := strings.TrimPrefix(tool(t, boxed, "cgroup", nil), "ok: ")
	dir := filepath.Join(base, rel)
	if !strings.HasPrefix(filepath.Base(dir), "caddymcp-") {
		t.Fatalf("the sandboxed server's cgroup is %q", rel)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		t.Fatalf("its cgroup %s: %v", dir, err)
	}
	other := strings.TrimPrefix(tool(t, bare, "cgroup", nil), "ok: ")
	if strings.Contains(other, "caddymcp-") {
		t.Fatalf("the bare server is in a cgroup of ours: %s", other)
	}
	// leaving its cgroup for Caddy's: refused boxed, done bare
	target := filepath.Join(base, "cgroup.procs")
	if got := tool(t, boxed, "cgroup_move", map[string]any{"path": target}); !strings.HasPrefix(got, "refused: ") {
		t.Errorf("the sandboxed server left its cgroup: %s", got)
	}
	if got := tool(t, bare, "cgroup_move", map[string]any{"path": filepath.Join(base, other, "cgroup.procs")}); got != "ok: moved" {
		t.Errorf("without the sandbox the move failed (the test cannot tell the sandbox's work apart): %s", got)
	}
	// a grandchild is in the cgroup too, and ends with it
	if got := tool(t, boxed, "grandchild", map[string]any{"tag": "cg" + runTag}); !strings.HasPrefix(got, "ok:") {
		t.Fatalf("grandchild: %s", got)
	}
	if n := len(strings.Fields(string(must(os.ReadFile(filepath.Join(dir, "cgroup.procs")))))); n < 2 {
		t.Errorf("the cgroup holds %d processes; want the server and its grandchild", n)
	}
	logs, _ := os.ReadFile(logPath)
	if !strings.Contains(string(logs), "("+dir+")") {
		t.Errorf("no start line names the child's cgroup %s:\n%s", dir, logs)
	}
	if code, body := boxed.status("DELETE", "", nil); code != 204 && code != 200 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	waitNoProcesses(t, "caddymcp-orphan-cg"+runTag, 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ended session's cgroup %s is still there", dir)
		}
	}
}

// Where the cgroup's controllers are Caddy's to enable, memory, processes
// and cpus are cgroup limits: a server past memory.max is ended by the OOM
// killer and reported so, a root server cannot fork past pids.max (no user
// needed), and cpu.max is set. Skips where the controllers are not
// delegated (this development machine), saying so.
func TestSandboxCgroupLimits(t *testing.T) {
	needSandbox(t)
	base := cgroupBase(t)
	p, err := sandbox.Resolve(sandbox.Config{Memory: 256 << 20, Processes: 24, CPUs: 0.5, BestEffort: true}, "/bin/sh", "", os.Environ(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"memory.max", "pids.max", "cpu.max"} {
		if !strings.Contains(p.Summary(), want) {
			why := fmt.Sprintf("the cgroup %s cannot enable every controller: %v", base, p.Notes())
			if os.Getenv("CADDYMCP_REQUIRE_CGROUP") != "" {
				t.Fatal(why)
			}
			t.Skip(why)
		}
	}
	exe := filepath.Join(t.TempDir(), "fakeserver")
	build := exec.Command("go", "build", "-o", exe, "github.com/caddymcp/caddymcp/internal/mcpserver/fakeserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build fakeserver: %v\n%s", err, out)
	}
	c := caddyrun.StartCaddyfile(t, "", escapeSiteWith(t, exe, "\n\t\t\tmemory 256MiB\n\t\t\tprocesses 24\n\t\t\tcpus 0.5"))
	bare, boxed := openBoth(t, c)
	dir := filepath.Join(base, strings.TrimPrefix(tool(t, boxed, "cgroup", nil), "ok: "))
	for file, want := range map[string]string{"memory.max": "268435456", "pids.max": "24", "cpu.max": "50000 100000"} {
		if got := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(dir, file))))); got != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
	if got := tool(t, bare, "fork", map[string]any{"n": 40}); got != "ok: 40 started" {
		t.Fatalf("without the sandbox: %s", got)
	}
	if got := tool(t, boxed, "fork", map[string]any{"n": 40}); !strings.HasPrefix(got, "refused: ") {
		t.Errorf("a root server forked past pids.max 24: %s", got)
	}
	if got := tool(t, bare, "alloc", map[string]any{"mib": 400}); got != "ok: 400 MiB" {
		t.Fatalf("without the sandbox: %s", got)
	}
	if got := tool(t, boxed, "alloc", map[string]any{"mib": 400}); !strings.Contains(got, "server ran out of memory (limit 256 MiB)") {
		t.Errorf("past memory.max the client got: %s", got)
	}
}
