package stdiobridge_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// A reload that raises max_message_size reaches the children already
// running, a 2025 session's and the 2026 pool's, and the 2026 error names
// the bound.
func TestReloadRaisesMaxMessageSize(t *testing.T) {
	site := func(size string) string {
		return fakeSite(t, "huge", "\n\t\tmax_message_size "+size+"\n\t\tchild_era legacy")
	}
	c := caddyrun.StartCaddyfile(t, "", site("1MiB"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	s := newClient(t, url)
	s.initialize()
	if msgs := s.call("2", "tools/call", `{"name":"t","arguments":{}}`); len(msgs) != 1 || !strings.Contains(msgs[0], "exceeded max_message_size (1048576 bytes)") {
		t.Fatalf("2025 before the reload: %.300v", msgs)
	}
	_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"t","arguments":{}}`)
	if e, _ := r["error"].(map[string]any); e == nil || !strings.Contains(e["message"].(string), "exceeded max_message_size (1048576 bytes)") {
		t.Fatalf("2026 before the reload: %.300v", r)
	}
	c.LoadCaddyfile("", site("8MiB"))
	// a connection the old server accepted may still be reset: ask until the new one answers
	for i := 0; i < 5; i++ {
		http.DefaultClient.CloseIdleConnections()
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			break
		}
	}
	if msgs := s.call("3", "tools/call", `{"name":"t","arguments":{}}`); len(msgs) != 1 || !strings.Contains(msgs[0], `"result"`) || len(msgs[0]) < 5<<20 {
		t.Fatalf("2025 session after raising max_message_size: %.300v", msgs)
	}
	_, r = modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"t","arguments":{}}`)
	if len(textOf(r)) != 5<<20 {
		t.Fatalf("2026 after raising max_message_size: %.300v", r)
	}
}

// pidsMatching lists live processes whose command line contains marker.
func pidsMatching(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), marker) {
			out = append(out, pid)
		}
	}
	return out
}

// A reload never waits for the children of a changed route to exit: one
// that ignores the end of stdin and SIGTERM is still being ended (in the
// background) when the reload has returned.
func TestReloadDoesNotWaitForChildren(t *testing.T) {
	marker := "linger-" + strconv.Itoa(os.Getpid())
	site := func(extra string) string {
		return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + ` ` + marker + `
		env CADDYMCP_FAKE_SERVER plain,linger,ignore-term
		shutdown_timeout 10s` + extra + `
	}
}
`
	}
	c := caddyrun.StartCaddyfile(t, "", site(""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	newClient(t, url).initialize()
	if n := len(pidsMatching(marker)); n != 1 {
		t.Fatalf("%d children, want 1", n)
	}
	c.LoadCaddyfile("", site("\n\t\tenv CHANGED 1")) // the route changes: its session ends
	if n := len(pidsMatching(marker)); n != 1 {
		t.Fatalf("the reload returned after its child was ended (%d left): it waited for it", n)
	}
	for _, pid := range pidsMatching(marker) {
		_ = syscall.Kill(pid, syscall.SIGKILL) // rather than wait 20 s for the bridge to get there
	}
	waitNoProcesses(t, marker, 30*time.Second)
}
