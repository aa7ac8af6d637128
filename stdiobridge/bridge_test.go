package stdiobridge_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

func TestTransportStatuses(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tmax_message_size 64KiB"))
	cl := newClient(t, c.URL+"/mcp")

	type row struct {
		name, method, body string
		mod                func(*http.Request)
		status             int
		contains           string
	}
	rows := []row{
		{"wrong content type", "POST", `{}`, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, 415, "Content-Type must be application/json"},
		{"Accept without SSE", "POST", `{}`, func(r *http.Request) { r.Header.Set("Accept", "application/json") }, 406, "Accept must include"},
		{"invalid JSON", "POST", `{"jsonrpc":`, nil, 400, `"code":-32700`},
		{"wrong jsonrpc version", "POST", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, nil, 400, `"id":1,"error":{"code":-32600`},
		// the rules read only identity-encoded bodies (mcpreq): one with a
		// Content-Encoding is refused, never served as the bytes it came in
		{"Content-Encoding", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") }, 415, "must not have a Content-Encoding"},
		{"not an object", "POST", `42`, nil, 400, `"code":-32600`},
		{"object id", "POST", `{"jsonrpc":"2.0","id":{},"method":"ping"}`, nil, 400, `"code":-32600`},
		// the era rule (mcpreq.Era): a message with no 2026 signal (no _meta
		// version, no header naming a 2026 version) is 2025's and needs a
		// session; one with the 2026 header needs its _meta envelope
		{"request without session", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil, 400, `"code":-32600,"message":"Bad Request: Mcp-Session-Id header is required"`},
		// a _meta version that is not a string is no 2026 signal, for the
		// bridge as for mcp_auth's rules and {http.mcp.era}
		{"_meta version not a string", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":5}}}`, nil, 400, `"code":-32600,"message":"Bad Request: Mcp-Session-Id header is required"`},
		{"2026 request without _meta", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(r *http.Request) { r.Header.Set("Mcp-Protocol-Version", "2026-07-28") }, 400, `"code":-32602,"message":"missing _meta`},
		{"unknown session", "POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(r *http.Request) { r.Header.Set("Mcp-Session-Id", "nope") }, 404, "Session not found"},
		{"unsupported protocol version", "POST", `{"jsonrpc":"2.0","id":7,"method":"ping"}`, func(r *http.Request) { r.Header.Set("Mcp-Protocol-Version", "1999-01-01") }, 400, `"code":-32022`},
		{"server/discover without _meta", "POST", `{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{}}`, func(r *http.Request) { r.Header.Set("Mcp-Protocol-Version", "2026-07-28") }, 400,
			`{"jsonrpc":"2.0","id":"d","error":{"code":-32602,"message":"missing _meta`},
		{"too large", "POST", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"` + strings.Repeat("a", 70<<10) + `"}}`, nil, 413, "max_message_size"},
		{"GET without session", "GET", ``, nil, 400, "Mcp-Session-Id header is required"},
		{"GET not accepting SSE", "GET", ``, func(r *http.Request) { r.Header.Set("Accept", "application/json") }, 406, "text/event-stream"},
		{"DELETE unknown session", "DELETE", ``, func(r *http.Request) { r.Header.Set("Mcp-Session-Id", "nope") }, 404, "Session not found"},
		{"PUT", "PUT", `{}`, nil, 405, "Method Not Allowed"},
		{"foreign Host on loopback listener", "POST", `{}`, func(r *http.Request) { r.Host = "evil.example" }, 403, "not a loopback name"},
		{"foreign Origin", "POST", `{}`, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }, 403, "Origin"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			status, body := cl.status(r.method, r.body, r.mod)
			if status != r.status || !strings.Contains(body, r.contains) {
				t.Fatalf("got %d %s\nwant %d containing %s", status, body, r.status, r.contains)
			}
		})
	}
	if n := processesMatching(self(t)); n != 0 {
		t.Fatalf("%d server processes spawned by rejected requests", n)
	}
	t.Run("PUT has Allow", func(t *testing.T) {
		resp := cl.do("PUT", "{}", nil)
		resp.Body.Close()
		if resp.Header.Get("Allow") != "GET, POST, DELETE" {
			t.Fatalf("Allow = %q", resp.Header.Get("Allow"))
		}
	})
	t.Run("loopback Origin and localhost Host are fine", func(t *testing.T) {
		status, _ := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(r *http.Request) {
			r.Host = "localhost:1234"
			r.Header.Set("Origin", "http://localhost:6274")
		})
		if status != 400 { // gets past the origin check to the missing session
			t.Fatalf("status %d", status)
		}
	})

	cl.initialize()
	t.Run("ids of every legal type come back unchanged", func(t *testing.T) {
		for _, id := range []string{`"abc"`, `0`, `-5`, `1.5`, `123456789012345678901234567890`, `"` + strings.Repeat("i", 1000) + `"`, `"1"`} {
			msgs := cl.call(id, "tools/list", "")
			if len(msgs) != 1 || !strings.Contains(msgs[0], `"id":`+id+`,`) || decode(t, msgs[0])["result"] == nil {
				t.Fatalf("id %s: %v", id, msgs)
			}
		}
	})
	t.Run("priming event then the answer, with event ids", func(t *testing.T) {
		resp := cl.do("POST", `{"jsonrpc":"2.0","id":9,"method":"ping"}`, nil)
		evs := readEvents(t, resp)
		if len(evs) != 2 || evs[0].data != "" || evs[0].id == "" || evs[1].id == "" || evs[0].id == evs[1].id {
			t.Fatalf("events %+v", evs)
		}
	})
	t.Run("notifications and responses get 202", func(t *testing.T) {
		for _, body := range []string{
			`{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`,
			`{"jsonrpc":"2.0","id":"srv-1","result":{}}`,
		} {
			if status, b := cl.status("POST", body, nil); status != 202 || b != "" {
				t.Fatalf("%s: %d %q", body, status, b)
			}
		}
	})
	t.Run("batch refused for 2025-06-18 and later", func(t *testing.T) {
		status, body := cl.status("POST", `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, nil)
		if status != 400 || !strings.Contains(body, "batches are not supported in protocol version 2025-11-25") {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("initialize with a session id", func(t *testing.T) {
		status, body := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, nil)
		if status != 400 || !strings.Contains(body, "initialize must not carry an Mcp-Session-Id") {
			t.Fatalf("%d %s", status, body)
		}
	})
}

func TestBatchFor20250326(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.version = "2025-03-26"
	cl.initialize()
	resp := cl.do("POST", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":"two","method":"tools/list"}]`, nil)
	msgs := messages(readEvents(t, resp))
	if len(msgs) != 2 || !strings.Contains(strings.Join(msgs, ""), `"id":1,`) || !strings.Contains(strings.Join(msgs, ""), `"id":"two",`) {
		t.Fatalf("batch answers: %v", msgs)
	}
}

func TestChildCrashMidCall(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "crash", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	msgs := cl.call("5", "tools/call", `{"name":"t"}`)
	if len(msgs) != 1 || msgs[0] != `{"jsonrpc":"2.0","id":5,"error":{"code":-32603,"message":"MCP server process exited (exit status 3)"}}` {
		t.Fatalf("in-flight request after crash: %v", msgs)
	}
	if status, body := cl.status("POST", `{"jsonrpc":"2.0","id":6,"method":"ping"}`, nil); status != 404 {
		t.Fatalf("after crash: %d %s", status, body)
	}
}

func TestGarbageOnStdout(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "garbage", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	for i := 0; i < 3; i++ {
		if msgs := cl.call("2", "tools/call", `{"name":"t"}`); len(msgs) != 1 || !strings.Contains(msgs[0], `"text":"ok"`) {
			t.Fatalf("call %d: %v", i, msgs)
		}
	}
}

func TestOversizedChildMessage(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "huge", "\n\t\tmax_message_size 1MiB"))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	msgs := cl.call(`"big"`, "tools/call", `{"name":"t"}`)
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"id":"big","error":{"code":-32603,"message":"the server's response of 5242954 bytes exceeded max_message_size (1048576 bytes)"`) {
		t.Fatalf("oversized answer: %v", truncateAll(msgs))
	}
	if msgs := cl.call("3", "ping", ""); len(msgs) != 1 || !strings.Contains(msgs[0], `"result":{}`) {
		t.Fatalf("session after oversized message: %v", msgs)
	}
}

func truncateAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		if len(s) > 300 {
			s = s[:300] + "…"
		}
		out[i] = s
	}
	return out
}

func TestMaxSessions(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tmax_sessions 2\n\t\tmax_sessions_per_user 2"))
	a, b := newClient(t, c.URL+"/mcp"), newClient(t, c.URL+"/mcp")
	a.initialize()
	b.initialize()
	third := newClient(t, c.URL+"/mcp")
	resp := third.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`, nil)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third session: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if status, _ := a.status("DELETE", "", nil); status != 204 {
		t.Fatalf("DELETE: %d", status)
	}
	third.initialize() // a slot is free again
}

func TestDeleteEndsSessionAndProcess(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	if n := processesMatching(self(t)); n != 1 {
		t.Fatalf("%d server processes, want 1", n)
	}
	start := time.Now()
	if status, _ := cl.status("DELETE", "", nil); status != 204 {
		t.Fatalf("DELETE: %d", status)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Logf("DELETE took %s", d)
	}
	if status, _ := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil); status != 404 {
		t.Fatalf("after DELETE: %d", status)
	}
	waitNoProcesses(t, self(t), 30*time.Second)
}

func TestIdleExpiryWithOpenGETStream(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tsession_idle_timeout 2s"))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	resp := cl.do("GET", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	done := make(chan []sseEvent)
	go func() { done <- readEvents(t, resp) }()
	select {
	case <-done: // the stream ended with the session
	case <-time.After(5 * time.Second):
		t.Fatal("GET stream still open long after the idle timeout")
	}
	if status, _ := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil); status != 404 {
		t.Fatalf("after expiry: %d", status)
	}
	waitNoProcesses(t, self(t), 30*time.Second)
}

func TestStateless(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tstateless"))
	cl := newClient(t, c.URL+"/mcp")
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`, nil)
	if resp.Header.Get("Mcp-Session-Id") != "" {
		t.Fatal("stateless answer carries a session id")
	}
	if msgs := messages(readEvents(t, resp)); len(msgs) != 1 || !strings.Contains(msgs[0], `"text":"ok"`) {
		t.Fatalf("stateless call: %v", msgs)
	}
	resp = cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`, nil)
	if resp.Header.Get("Mcp-Session-Id") != "" {
		t.Fatal("stateless initialize carries a session id")
	}
	if msgs := messages(readEvents(t, resp)); len(msgs) != 1 || !strings.Contains(msgs[0], `"protocolVersion":"2025-06-18"`) {
		t.Fatalf("stateless initialize: %v", msgs)
	}
	for _, m := range []string{"GET", "DELETE"} {
		resp := cl.do(m, "", nil)
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("%s: %d Allow %q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	waitNoProcesses(t, self(t), 30*time.Second)
}

func TestChildEnvironment(t *testing.T) {
	t.Setenv("CADDYMCP_SECRET", "s3cret")
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "env", "\n\t\tenv GREETING \"hello {http.request.header.X-Who}\""))
	cl := newClient(t, c.URL+"/mcp")
	cl.header.Set("X-Who", "bob")
	cl.initialize()
	msgs := cl.call("1", "tools/call", `{"name":"t"}`)
	env := strings.Join(msgs, "")
	if !strings.Contains(env, `GREETING=hello bob`) || !strings.Contains(env, "PATH=") {
		t.Fatalf("env lacks configured values: %s", env)
	}
	if strings.Contains(env, "CADDYMCP_SECRET") {
		t.Fatalf("Caddy's environment leaked into the child: %s", env)
	}
}
