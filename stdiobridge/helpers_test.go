package stdiobridge_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

func TestMain(m *testing.M) {
	mcpserver.RunFakeIfRequested()
	os.Exit(m.Run())
}

// self is this test binary, which acts as a fake MCP server (see TestMain).
func self(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// fakeSite runs the fake server in mode behind mcp_stdio at /mcp.
func fakeSite(t *testing.T, mode, extra string) string {
	return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env ` + mcpserver.FakeEnv + ` ` + mode + `
		shutdown_timeout 500ms` + extra + `
	}
}
`
}

// mcpClient speaks raw Streamable HTTP so tests see exact statuses.
type mcpClient struct {
	t       *testing.T
	url     string
	session string
	version string
	header  http.Header
}

func newClient(t *testing.T, url string) *mcpClient {
	return &mcpClient{t: t, url: url, version: "2025-11-25", header: http.Header{}}
}

func (c *mcpClient) do(method, body string, mod func(*http.Request)) *http.Response {
	c.t.Helper()
	// a connection that the server a reload just replaced accepted may be
	// reset before it read the request: sent again, a few times (the
	// request did not reach the handler)
	for i := 0; ; i++ {
		resp, err := c.try(method, body, mod)
		if err == nil {
			return resp
		}
		if i == 3 || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)) {
			c.t.Fatalf("%s: %v", method, err)
		}
		http.DefaultClient.CloseIdleConnections()
	}
}

func (c *mcpClient) try(method, body string, mod func(*http.Request)) (*http.Response, error) {
	req, err := http.NewRequest(method, c.url, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	if c.version != "" {
		req.Header.Set("Mcp-Protocol-Version", c.version)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	if mod != nil {
		mod(req)
	}
	return http.DefaultClient.Do(req)
}

type sseEvent struct {
	id   string
	data string
}

// readEvents reads an SSE response to its end.
func readEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("not an event stream: %d %s %s", resp.StatusCode, ct, b)
	}
	var evs []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.id != "" || cur.data != "" {
				evs = append(evs, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			cur.data += line[6:]
		}
	}
	return evs
}

// messages returns the non-empty data of the events.
func messages(evs []sseEvent) []string {
	var out []string
	for _, e := range evs {
		if e.data != "" {
			out = append(out, e.data)
		}
	}
	return out
}

func (c *mcpClient) initialize() {
	c.t.Helper()
	resp := c.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+c.version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("initialize: %d %s", resp.StatusCode, b)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	msgs := messages(readEvents(c.t, resp))
	if c.session == "" || len(msgs) != 1 || !strings.Contains(msgs[0], `"result"`) {
		c.t.Fatalf("initialize: session %q, messages %v", c.session, msgs)
	}
	resp = c.do("POST", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		c.t.Fatalf("initialized: %d", resp.StatusCode)
	}
}

// call sends a request and returns the messages of its stream.
func (c *mcpClient) call(id, method, params string) []string {
	c.t.Helper()
	if params == "" {
		params = "{}"
	}
	resp := c.do("POST", `{"jsonrpc":"2.0","id":`+id+`,"method":"`+method+`","params":`+params+`}`, nil)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("%s: %d %s", method, resp.StatusCode, b)
	}
	return messages(readEvents(c.t, resp))
}

// status sends a body and returns the status and body.
func (c *mcpClient) status(method, body string, mod func(*http.Request)) (int, string) {
	c.t.Helper()
	resp := c.do(method, body, mod)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %s", s)
	}
	return m
}

// runTag tells this test process's grandchildren from those of another
// test run on the machine (a second make test beside this one): markers
// such as "sleep 6123." + runTag are unique to this run. The fake's setsid
// grandchild carries its parent's pid the same way.
var runTag = fmt.Sprintf("%07d", os.Getpid()) // fixed width: no tag is a prefix of another

// processesMatching counts live (non-zombie) processes whose command line
// contains marker, by reading /proc.
func processesMatching(marker string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), marker) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			n++ // a zombie counts: nobody reaped it
			continue
		}
		n++
	}
	return n
}

// waitNoProcesses waits until no process matches marker.
func waitNoProcesses(t *testing.T, marker string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := processesMatching(marker)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes matching %q still alive after %s", n, marker, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func caddyJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

// builtCaddy is the Caddy binary that `make test` built
// (CADDYMCP_CADDY_BIN), for tests that need a process of its own; without
// it the test is skipped.
func builtCaddy(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("CADDYMCP_CADDY_BIN")
	if bin == "" {
		t.Skip("CADDYMCP_CADDY_BIN not set; `make test` builds Caddy and sets it")
	}
	return bin
}

// awaitListen waits (at most 30 s) until something listens on port; logs
// says why not, when it fails.
func awaitListen(t *testing.T, port int, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not listen:\n%s", logs())
		}
		time.Sleep(20 * time.Millisecond) // polling a port another process opens
	}
}

// authOpts describes a route of mcp_auth (issuer and JWKS from a
// jwkstest.Issuer, audience http://Host:{{PORT}}/mcp) in front of
// mcp_stdio; the zero value is the fake at /mcp on 127.0.0.1.
type authOpts struct {
	Host    string // the site's host and the audience's; 127.0.0.1 when empty
	Path    string // the route's path; /mcp when empty
	Command string // the child; this test binary (the fake) when empty
	Mode    string // the fake's mode (CADDYMCP_FAKE_SERVER); none when empty
	Era     string // child_era; mcp_stdio's default when empty
	Auth    string // more mcp_auth lines, each starting "\n\t\t\t"
	Stdio   string // more mcp_stdio lines, each starting "\n\t\t\t"
	Site    string // more of the site block, after the route
}

// authRoute is the route block of o (inside a site block).
func authRoute(t *testing.T, is *jwkstest.Issuer, o authOpts) string {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Path == "" {
		o.Path = "/mcp"
	}
	if o.Command == "" {
		o.Command = self(t)
	}
	stdio := ""
	if o.Mode != "" {
		stdio += "\n\t\t\tenv " + mcpserver.FakeEnv + " " + o.Mode
	}
	if o.Era != "" {
		stdio += "\n\t\t\tchild_era " + o.Era
	}
	return `
	route ` + o.Path + ` {
		mcp_auth {
			issuer ` + is.URL() + `
			jwks_url ` + is.JWKSURL() + `
			audience http://` + o.Host + `:{{PORT}}/mcp` + o.Auth + `
		}
		mcp_stdio {
			command ` + o.Command + stdio + `
			shutdown_timeout 500ms` + o.Stdio + `
		}
	}
`
}

// authSiteWith is a site (http://Host:{{PORT}}) holding o's route.
func authSiteWith(t *testing.T, is *jwkstest.Issuer, o authOpts) string {
	host := o.Host
	if host == "" {
		host = "127.0.0.1"
	}
	return `
http://` + host + `:{{PORT}} {
	bind 127.0.0.1` + authRoute(t, is, o) + o.Site + `}
`
}
