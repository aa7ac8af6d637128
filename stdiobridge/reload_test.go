package stdiobridge_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// routesSite is one site with a `route <path> { mcp_stdio }` per path, all
// running the same command; extra[path] goes into that block.
func routesSite(t *testing.T, paths []string, extra map[string]string) string {
	var b strings.Builder
	b.WriteString(":{{PORT}} {\n\tbind 127.0.0.1\n")
	// which config answers (loadRoutes waits for it)
	b.WriteString("\thandle /config {\n\t\trespond \"config " + strings.Join(paths, ",") + "\" 200\n\t}\n")
	for _, p := range paths {
		b.WriteString("\troute " + p + " {\n\t\tmcp_stdio {\n\t\t\tcommand " + self(t) +
			"\n\t\t\tenv " + mcpserver.FakeEnv + " plain\n\t\t\tshutdown_timeout 500ms\n" + extra[p] + "\t\t}\n\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// A reload that adds, removes or reorders routes running the same command
// keeps every session on the route that made it, with that route's own
// limits: tables are keyed by the route (its matchers), not by position
// among identical blocks (the adapter sorts routes by path length).
func TestReloadKeepsRoutesApart(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", routesSite(t, []string{"/a/mcp"}, nil))
	// a fresh connection per request, and a request the old server closed
	// unanswered while it shut down is sent again, as clients do
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	post := func(path, session, body string) *http.Response {
		t.Helper()
		var err error
		for range 5 {
			req, _ := http.NewRequest("POST", c.URL+path, strings.NewReader(body))
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			if session != "" {
				req.Header.Set("Mcp-Session-Id", session)
			}
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				return resp
			}
		}
		t.Fatalf("POST %s: %v", path, err)
		return nil
	}
	start := func(path string) string {
		t.Helper()
		resp := post(path, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Mcp-Session-Id") == "" {
			t.Fatalf("initialize on %s: %d %s", path, resp.StatusCode, b)
		}
		sid := resp.Header.Get("Mcp-Session-Id")
		resp = post(path, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		resp.Body.Close()
		return sid
	}
	on := func(session, path string) int {
		t.Helper()
		resp := post(path, session, `{"jsonrpc":"2.0","id":9,"method":"ping"}`)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	check := func(step, session, home string, elsewhere ...string) {
		t.Helper()
		if s := on(session, home); s != 200 {
			t.Fatalf("%s: session of %s answered %d there, want 200", step, home, s)
		}
		for _, p := range elsewhere {
			if s := on(session, p); s != 404 {
				t.Fatalf("%s: session of %s answered %d on %s, want 404", step, home, s, p)
			}
		}
	}
	// Caddy's reload returns once the old server has begun to shut down,
	// but a loaded machine may let it accept one more connection and
	// serve it with the old config; each step waits until the new config
	// answers
	load := func(paths []string, extra map[string]string) {
		t.Helper()
		c.LoadCaddyfile("", routesSite(t, paths, extra))
		want := "config " + strings.Join(paths, ",")
		caddyrun.WaitFor(t, 10*time.Second, func() bool {
			resp, err := client.Get(c.URL + "/config")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b) == want
		}, "the reloaded config answers "+want)
	}
	a := start("/a/mcp")

	// added: a longer path, sorted before /a/mcp, with its own limit
	limit := map[string]string{"/bbbbbbbb/mcp": "\t\t\tmax_sessions 3\n\t\t\tmax_sessions_per_user 3\n"}
	load([]string{"/a/mcp", "/bbbbbbbb/mcp"}, limit)
	check("route added", a, "/a/mcp", "/bbbbbbbb/mcp")
	var b []string
	for range 3 { // all of the new route's max_sessions: it inherited no count
		b = append(b, start("/bbbbbbbb/mcp"))
	}
	check("route added", b[0], "/bbbbbbbb/mcp", "/a/mcp")

	// another added, and the blocks written in another order
	load([]string{"/bbbbbbbb/mcp", "/cc/mcp", "/a/mcp"}, limit)
	check("reordered", a, "/a/mcp", "/bbbbbbbb/mcp", "/cc/mcp")
	check("reordered", b[2], "/bbbbbbbb/mcp", "/a/mcp", "/cc/mcp")
	cc := start("/cc/mcp")

	// removed: the other routes keep theirs
	load([]string{"/cc/mcp", "/a/mcp"}, nil)
	check("route removed", a, "/a/mcp", "/cc/mcp")
	check("route removed", cc, "/cc/mcp", "/a/mcp")
	if s := on(b[1], "/a/mcp"); s != 404 {
		t.Fatalf("session of the removed route answered %d on /a/mcp, want 404", s)
	}
}

// Two routes running the same program get their own `route` label by
// default (host and path of their matchers), not the command's base name.
func TestRouteLabelDefault(t *testing.T) {
	site := strings.Replace(routesSite(t, []string{"/x/mcp", "/yy/mcp"}, nil), "\tbind 127.0.0.1\n", "\tbind 127.0.0.1\n\tmetrics /metrics\n", 1)
	c := caddyrun.StartCaddyfile(t, "", site)
	newClient(t, c.URL+"/x/mcp").initialize()
	for range 2 {
		newClient(t, c.URL+"/yy/mcp").initialize()
	}
	m := scrape(t, c.URL+"/metrics")
	if x, y := m[`mcp_stdio_sessions{route="/x/mcp"}`], m[`mcp_stdio_sessions{route="/yy/mcp"}`]; x != 1 || y != 2 {
		t.Fatalf("sessions by route: /x/mcp %v, /yy/mcp %v, want 1 and 2", x, y)
	}
}
