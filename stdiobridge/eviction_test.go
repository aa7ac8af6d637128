package stdiobridge_test

import (
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// TestPerUserCapEvictsIdleSession: clients that never send DELETE (the
// Inspector CLI, mcp-remote) must not lock their user out until
// session_idle_timeout. At max_sessions_per_user a new initialize ends the
// user's least recently used idle session; where every session is busy (an
// open stream), the 429's Retry-After says when the soonest one expires.
func TestPerUserCapEvictsIdleSession(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", `
		max_sessions 10
		max_sessions_per_user 2
		initialize_rate 100
		session_idle_timeout 10m`))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	a, b := newClient(t, url), newClient(t, url)
	a.initialize()
	b.initialize()
	b.call("2", "tools/list", "") // b was used after a: a is the least recently used
	third := newClient(t, url)
	third.initialize() // old code: 429 "too many sessions for this user"
	if st, body := a.status("POST", `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}`, nil); st != 404 {
		t.Fatalf("the least recently used idle session was not ended: %d %s", st, body)
	}
	b.call("4", "tools/list", "") // still served

	// b and third hold GET streams: nothing is idle, so the next is refused,
	// with a Retry-After that is when the soonest of them expires
	for _, cl := range []*mcpClient{b, third} {
		resp := cl.do("GET", "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
		defer resp.Body.Close()
	}
	fourth := newClient(t, url)
	resp := fourth.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("with every session holding a stream: %d %s", resp.StatusCode, body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 500 || ra > 600 { // session_idle_timeout 10m, minus the test's own time
		t.Fatalf("Retry-After %q, want about 600 (when the soonest session expires)", resp.Header.Get("Retry-After"))
	}
}
