package mcpauth_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// sideDoorList is the answer the side-door upstream lists: one tool the
// read:all token may call, one it may not.
func sideDoorList(id string, pad int) []byte {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(id), "result": map[string]any{"tools": []any{
		map[string]any{"name": "read_file", "inputSchema": map[string]any{"type": "object"}},
		map[string]any{"name": "write_file", "description": strings.Repeat("w", pad), "inputSchema": map[string]any{"type": "object"}},
	}}})
	return b
}

// sideDoorUpstream answers every request with the list, carried the way
// the request's X-Answer header asks.
func sideDoorUpstream(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		// long enough for encode to compress it (minimum_length 512)
		list := sideDoorList("1", 1024)
		sse := func(events ...[]byte) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i, ev := range events {
				fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, ev)
				w.(http.Flusher).Flush()
			}
		}
		switch r.Header.Get("X-Answer") {
		case "json":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(list)
		case "gzip", "br":
			// compressed whatever the request accepts (br: the header alone,
			// the filter must not get as far as decoding it)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", r.Header.Get("X-Answer"))
			zw := gzip.NewWriter(w)
			_, _ = zw.Write(list)
			_ = zw.Close()
		case "sse-big-first":
			sse(sideDoorList("1", 17<<20))
		case "sse-big-second":
			sse([]byte(`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}`), sideDoorList("1", 17<<20))
		case "json-big":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(sideDoorList("1", 17<<20))
		case "early-hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(list)
		case "text":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(list)
		case "not-json":
			// two messages in one body: a reader of the first alone would
			// pass the second on unread
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(append(append(sideDoorList("1", 0), '\n'), list...))
		case "multiline":
			// one event, its JSON over three data lines
			w.Header().Set("Content-Type", "text/event-stream")
			s := string(list)
			i, j := strings.Index(s, `"result"`), strings.Index(s, `"tools"`)
			fmt.Fprintf(w, "id: 1\ndata: %s\ndata: %s\ndata: %s\n\n", s[:i], s[i:j], s[j:])
		case "stream":
			// a GET stream (or a listen stream) that carries an answer
			sse([]byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`), sideDoorList("7", 0))
		default:
			http.Error(w, "X-Answer?", http.StatusBadRequest)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// answer is what a client got: status, headers, the JSON-RPC messages in
// the (decoded) body, and the error that ended reading it.
type answer struct {
	status  int
	header  http.Header
	msgs    []map[string]any
	raw     string
	readErr error
}

// tools lists the tool names of every list result in the answer.
func (a answer) tools() []string {
	var names []string
	for _, m := range a.msgs {
		res, _ := m["result"].(map[string]any)
		list, _ := res["tools"].([]any)
		for _, x := range list {
			names = append(names, x.(map[string]any)["name"].(string))
		}
	}
	return names
}

// wireClient does no transparent decompression: a test sees the wire.
var wireClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

func doAnswer(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := wireClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	a.raw, a.readErr = string(raw), err
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		var data []string
		for sc.Scan() {
			line := sc.Text()
			if d, ok := strings.CutPrefix(line, "data:"); ok {
				data = append(data, strings.TrimPrefix(d, " "))
			} else if line == "" && len(data) > 0 {
				var m map[string]any
				if j := strings.Join(data, "\n"); j != "" {
					if err := json.Unmarshal([]byte(j), &m); err != nil {
						t.Errorf("an event that is not JSON: %.200q", j)
					}
					a.msgs = append(a.msgs, m)
				}
				data = nil
			}
		}
	} else if len(raw) > 0 {
		var m map[string]any
		if json.Unmarshal(raw, &m) == nil {
			a.msgs = append(a.msgs, m)
		}
	}
	return a
}

// Lists leave only filtered, whichever door they come through: a
// resumed stream (Last-Event-ID) replays the answer the stream log keeps,
// which is the child's own; a GET stream or a subscriptions/listen stream
// may carry an answer too.
func TestListFilterReplays(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	rules := "\t\t\ttool write_* scopes write:all\n"

	t.Run("Last-Event-ID replay from mcp_stdio", func(t *testing.T) {
		c := caddyrun.StartCaddyfile(t, "", ruleSite(is, "mcp_stdio {\n\t\t\tcommand "+mcpserver.Self(t)+"\n\t\t\tenv "+mcpserver.FakeEnv+" mrtr\n\t\t}", rules))
		url := c.URL + "/mcp"
		tok := jwkstest.Mint(t, k, is.Claims("sam", url, "read:all"), nil)
		post := func(body string, hdr map[string]string) answer {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tok)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			return doAnswer(t, req)
		}
		init := post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
		sess := map[string]string{"Mcp-Session-Id": init.header.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-11-25"}
		if init.status != 200 || sess["Mcp-Session-Id"] == "" {
			t.Fatalf("initialize: %d %s", init.status, init.raw)
		}
		if a := post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, sess); a.status != 202 {
			t.Fatalf("initialized: %d", a.status)
		}
		first := post(`{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, sess)
		if got := first.tools(); first.status != 200 || !slices.Equal(got, []string{"t", "read_file", "echo"}) {
			t.Fatalf("tools/list: %d %v", first.status, got)
		}
		// the priming event's id: resuming after it replays the answer
		var prime string
		for _, line := range strings.Split(first.raw, "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				prime = id
				break
			}
		}
		if !strings.HasSuffix(prime, "_0") {
			t.Fatalf("no priming event in %q", first.raw)
		}
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Mcp-Session-Id", sess["Mcp-Session-Id"])
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		req.Header.Set("Last-Event-ID", prime)
		replay := doAnswer(t, req)
		if len(replay.msgs) == 0 {
			t.Fatalf("the replay: %d %q", replay.status, replay.raw)
		}
		res, _ := replay.msgs[len(replay.msgs)-1]["result"].(map[string]any)
		if got := replay.tools(); replay.status != 200 || !slices.Equal(got, []string{"t", "read_file", "echo"}) || res["cacheScope"] != "private" {
			t.Fatalf("the replayed tools/list: %d %v %v", replay.status, got, replay.msgs)
		}
	})

	t.Run("answers on a GET or listen stream", func(t *testing.T) {
		c := caddyrun.StartCaddyfile(t, "", ruleSite(is, "reverse_proxy "+sideDoorUpstream(t), rules))
		url := c.URL + "/mcp"
		tok := jwkstest.Mint(t, k, is.Claims("sam", url, "read:all"), nil)
		get, _ := http.NewRequest("GET", url, nil)
		get.Header.Set("Accept", "text/event-stream")
		listen, _ := http.NewRequest("POST", url, strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},`+
			`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`))
		listen.Header.Set("Content-Type", "application/json")
		listen.Header.Set("Accept", "application/json, text/event-stream")
		listen.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		listen.Header.Set("Mcp-Method", "subscriptions/listen")
		for name, req := range map[string]*http.Request{"GET": get, "subscriptions/listen": listen} {
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("X-Answer", "stream")
			a := doAnswer(t, req)
			if got := a.tools(); a.status != 200 || len(a.msgs) != 2 || !slices.Equal(got, []string{"read_file"}) {
				t.Errorf("%s stream: %d %v %v", name, a.status, got, a.msgs)
			}
		}
	})
}

// A response the filter cannot read never passes: compressed (site-level
// encode, which Caddy's order puts inside mcp_auth, or an upstream), too
// large to hold, not JSON, or carried in a way the filter does not read.
// Compression is avoided where it can be (mcp_auth asks for identity);
// what is left is refused with 502 and a log line saying why, or, once a
// stream has begun, the stream is cut before the event.
func TestListFilterFailsClosed(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	up := sideDoorUpstream(t)
	logPath := filepath.Join(t.TempDir(), "mcp_auth.log")
	global := "\tlog listfilter {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_auth\n\t}\n"
	auth := `mcp_auth {
			issuer ` + is.URL() + `
			jwks_url ` + is.JWKSURL() + `
			audience http://127.0.0.1:{{PORT}}/mcp
			tool write_* scopes write:all
		}`
	static := t.TempDir()
	if err := os.MkdirAll(filepath.Join(static, "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(static, "static", "list"), append(append([]byte("id: 1\ndata: "), sideDoorList("1", 0)...), "\n\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	c := caddyrun.StartCaddyfile(t, global, `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		`+auth+`
		reverse_proxy `+up+`
	}
	route /nocompression {
		`+auth+`
		reverse_proxy `+up+` {
			transport http {
				compression off
			}
		}
	}
	route /static/* {
		`+auth+`
		header Content-Type text/event-stream
		file_server {
			root `+static+`
		}
	}
}

http://localhost:{{PORT}} {
	bind 127.0.0.1
	encode gzip
	`+auth+`
	reverse_proxy `+up+`
}
`)
	tok := jwkstest.Mint(t, k, is.Claims("sam", "http://127.0.0.1:"+strconv.Itoa(c.Port)+"/mcp", "read:all"), nil)
	list := func(host, path, how string) *http.Request {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:"+strconv.Itoa(c.Port)+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("Mcp-Session-Id", "s")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Answer", how)
		return req
	}
	local := "127.0.0.1:" + strconv.Itoa(c.Port)
	// logged counts the warn lines that give cause
	logged := func(cause string) int {
		raw, _ := os.ReadFile(logPath)
		n := 0
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, cause) {
				n++
			}
		}
		return n
	}
	filtered := func(t *testing.T, a answer) {
		t.Helper()
		if got := a.tools(); a.status != 200 || !slices.Equal(got, []string{"read_file"}) || a.readErr != nil {
			t.Fatalf("%d %v (read: %v) %.300s", a.status, got, a.readErr, a.raw)
		}
	}
	refused := func(t *testing.T, req *http.Request, cause string) {
		t.Helper()
		before := logged(cause)
		a := doAnswer(t, req)
		if a.status != 502 || len(a.tools()) != 0 || strings.Contains(a.raw, "write_file") {
			t.Fatalf("%d %v, want 502 and nothing listed", a.status, a.tools())
		}
		if logged(cause) != before+1 {
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("no new warn line with %q in the log:\n%s", cause, raw)
		}
	}
	t.Run("site-level encode gzip", func(t *testing.T) {
		filtered(t, doAnswer(t, list("localhost:"+strconv.Itoa(c.Port), "/mcp", "json")))
	})
	t.Run("upstream that gzips", func(t *testing.T) {
		filtered(t, doAnswer(t, list(local, "/mcp", "gzip")))
	})
	t.Run("upstream that gzips, transport without compression", func(t *testing.T) {
		refused(t, list(local, "/nocompression", "gzip"), "Content-Encoding gzip")
	})
	t.Run("upstream that answers br", func(t *testing.T) {
		refused(t, list(local, "/mcp", "br"), "Content-Encoding br")
	})
	// reverse_proxy sends an SSE stream's status line at once: the stream
	// has begun, and it is cut (aborted) before the event
	for how, before := range map[string]int{"sse-big-first": 0, "sse-big-second": 1} {
		t.Run(fmt.Sprintf("SSE event over 16 MiB after %d events", before), func(t *testing.T) {
			n := logged("an SSE event of more than 16777216 bytes")
			a := doAnswer(t, list(local, "/mcp", how))
			if a.status != 200 || a.readErr == nil || strings.Contains(a.raw, "write_file") || len(a.msgs) != before {
				t.Fatalf("%d (read: %v) %d messages %.300s", a.status, a.readErr, len(a.msgs), a.raw)
			}
			if before == 1 && a.msgs[0]["method"] != "notifications/progress" {
				t.Fatalf("the event before: %v", a.msgs[0])
			}
			if logged("an SSE event of more than 16777216 bytes") != n+1 {
				t.Fatal("no log line for the cut stream")
			}
		})
	}
	t.Run("JSON body over 16 MiB", func(t *testing.T) {
		refused(t, list(local, "/mcp", "json-big"), "a JSON body of more than 16777216 bytes")
	})
	t.Run("103 Early Hints first", func(t *testing.T) {
		filtered(t, doAnswer(t, list(local, "/mcp", "early-hints")))
	})
	t.Run("text/plain", func(t *testing.T) {
		refused(t, list(local, "/mcp", "text"), "Content-Type text/plain")
	})
	t.Run("not JSON", func(t *testing.T) {
		refused(t, list(local, "/mcp", "not-json"), "not JSON")
	})
	t.Run("an event over several data lines", func(t *testing.T) {
		filtered(t, doAnswer(t, list(local, "/mcp", "multiline")))
	})
	t.Run("a stream copied by io.Copy (file_server)", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+local+"/static/list", nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		filtered(t, doAnswer(t, req))
	})
}
