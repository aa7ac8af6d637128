package stdiobridge_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/stdiobridge"
)

// A child answering server/discover with -32022 (unsupported protocol
// version) is a modern server: the bridge does not fall back to the 2025
// handshake (basic/transports/stdio, Backward Compatibility), so a 2026
// call gets an error rather than a translated answer.
func TestProbeUnsupportedVersionIsModern(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "v32022", ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	status, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"t","arguments":{}}`)
	if r["error"] == nil || r["result"] != nil {
		t.Fatalf("a -32022 server was treated as 2025-era (translated): %d %v", status, r)
	}
}

// waitLog waits (bounded) until the fake's log holds want.
func waitLog(t *testing.T, read func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(read(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the child never logged %q; log:\n%s", want, read())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A 2025 session's call the child never answers ends at call_timeout: the
// client gets -32603 naming call_timeout, the child notifications/cancelled.
func TestCallTimeoutSession(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", "\n\t\tenv CADDYMCP_FAKE_LOG "+log+"\n\t\tcall_timeout 300ms"))
	cl := newClient(t, "http://127.0.0.1:"+strconv.Itoa(c.Port)+"/mcp")
	cl.initialize()
	msgs := cl.call("2", "tools/call", `{"name":"hold","arguments":{}}`)
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"code":-32603`) || !strings.Contains(msgs[0], "call_timeout") {
		t.Fatalf("held call: %v", msgs)
	}
	waitLog(t, read, "cancelled ")
}

// The same for a 2026-07-28 call on the pool.
func TestCallTimeoutModern(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, "\n\t\tcall_timeout 300ms"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status, r := modernPost(ctx, t, url, "", 1, "tools/call", `{"name":"hold","arguments":{}}`)
	e, _ := r["error"].(map[string]any)
	if e == nil || e["code"] != float64(-32603) || !strings.Contains(e["message"].(string), "call_timeout") {
		t.Fatalf("held call: %d %v", status, r)
	}
	waitLog(t, read, "cancelled ")
}

// A probe that got no answer in time (a cold npx still fetching a
// 2026-only server) leaves a guessed legacy verdict; when the legacy
// handshake is then refused, the next request probes again and is passed
// through to the modern server, without a reload.
func TestReprobeAfterProbeTimeout(t *testing.T) {
	// the first process (the first probe's) never answers server/discover
	defer stdiobridge.SetProbeTimeout(300 * time.Millisecond)()
	log, read := fakeLog(t)
	count := filepath.Join(t.TempDir(), "count")
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "modern,mrtr,cold",
		"\n\t\tenv CADDYMCP_FAKE_LOG "+log+"\n\t\tenv CADDYMCP_FAKE_COUNT "+count))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	status, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"whoami","arguments":{}}`)
	if r["result"] != nil {
		t.Fatalf("the first call was answered although its probe timed out and initialize is refused: %d %v", status, r)
	}
	if !strings.Contains(read(), "initialize refused") {
		t.Fatalf("the first request did not go through a refused handshake; log:\n%s", read())
	}
	// the second probe must be answered however slowly a loaded machine
	// starts the process: only the first was meant to time out
	stdiobridge.SetProbeTimeout(time.Minute)
	status, r = modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"whoami","arguments":{}}`)
	if status != 200 || resultOf(r)["resultType"] != "complete" {
		t.Fatalf("after the refused handshake the route is still pinned to 2025 (no re-probe): %d %v\nlog:\n%s", status, r, read())
	}
}

// Without call_timeout a route still bounds its calls, by the default
// (30m, lowered here): a call the child never answers ends in both eras.
func TestCallTimeoutDefault(t *testing.T) {
	defer stdiobridge.SetDefaultCallTimeout(300 * time.Millisecond)()
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", "\n\t\tenv CADDYMCP_FAKE_LOG "+log))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	cl := newClient(t, url)
	cl.initialize()
	msgs := cl.call("2", "tools/call", `{"name":"hold","arguments":{}}`)
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"code":-32603`) || !strings.Contains(msgs[0], "call_timeout") {
		t.Fatalf("2025: held call without call_timeout: %v", msgs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status, r := modernPost(ctx, t, url, "", 1, "tools/call", `{"name":"hold","arguments":{}}`)
	e, _ := r["error"].(map[string]any)
	if e == nil || e["code"] != float64(-32603) || !strings.Contains(fmt.Sprint(e["message"]), "call_timeout") {
		t.Fatalf("2026: held call without call_timeout: %d %v", status, r)
	}
	waitLog(t, read, "cancelled ")
}
