package stdiobridge_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// An audit entry names the route by its configured identity (not the
// client's Host header) and the client by Caddy's client IP, so a request
// through a trusted proxy is logged with the address it forwarded.
func TestAuditRouteAndClientIP(t *testing.T) {
	logPath := t.TempDir() + "/audit.log"
	global := "\tservers {\n\t\ttrusted_proxies static 127.0.0.0/8\n\t}\n" +
		"\tlog audit {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio.audit\n\t}\n"
	c := caddyrun.StartCaddyfile(t, global, fakeSite(t, "plain", "\n\t\tname fake-route"))
	cl := newClient(t, c.URL+"/mcp")
	cl.header.Set("X-Forwarded-For", "203.0.113.7")
	cl.initialize()
	cl.call("2", "tools/call", `{"name":"t"}`)
	var entry map[string]any
	for deadline := time.Now().Add(30 * time.Second); entry == nil; time.Sleep(20 * time.Millisecond) {
		raw, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["method"] == "tools/call" {
				entry = m
			}
		}
		if entry == nil && time.Now().After(deadline) {
			t.Fatalf("no audit entry: %s", raw)
		}
	}
	if entry["route"] != "fake-route" || entry["remote_ip"] != "203.0.113.7" {
		t.Fatalf("audit entry: route %v, remote_ip %v; want fake-route, 203.0.113.7", entry["route"], entry["remote_ip"])
	}
}
