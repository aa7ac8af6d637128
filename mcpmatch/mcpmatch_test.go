package mcpmatch_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	_ "github.com/caddymcp/caddymcp"
	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

const site = `
:{{PORT}} {
	bind 127.0.0.1
	@mcp mcp *
	header @mcp X-MCP "{http.mcp.method}|{http.mcp.name}|{http.mcp.era}|{http.mcp.protocol_version}|{http.mcp.session_id}"
	@writes mcp tools/call write_* delete_*
	@reads mcp resources/read file:///srv/*
	@cel expression mcp('prompts/get', 'secret_*')
	respond @writes "writes {http.request.body}" 200
	respond @reads "reads" 200
	respond @cel "cel" 200
	respond "other" 200
}
`

func post(t *testing.T, url, body string, header map[string]string) (string, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.Header.Get("X-MCP")
}

func TestMatcherThroughCaddy(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", site)
	url := c.URL + "/mcp"
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	call := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `","arguments":{}}}`
	}
	sess := map[string]string{"Mcp-Session-Id": "abc", "Mcp-Protocol-Version": "2025-11-25"}
	for _, tc := range []struct {
		name, body string
		header     map[string]string
		want, x    string
	}{
		{"write tool", call("write_file"), sess, "writes " + call("write_file"), "tools/call|write_file|2025|2025-11-25|abc"},
		{"delete tool", call("delete_all"), sess, "writes " + call("delete_all"), "tools/call|delete_all|2025|2025-11-25|abc"},
		{"read tool", call("read_file"), sess, "other", "tools/call|read_file|2025|2025-11-25|abc"},
		{"resource in the tree", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/a/b"}}`, sess, "reads", "resources/read|file:///srv/a/b|2025|2025-11-25|abc"},
		{"resource outside", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/passwd"}}`, sess, "other", "resources/read|file:///etc/passwd|2025|2025-11-25|abc"},
		{"CEL", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret_plan"}}`, sess, "cel", "prompts/get|secret_plan|2025|2025-11-25|abc"},
		{"batch with a write", `[{"jsonrpc":"2.0","id":1,"method":"ping"},` + call("write_x") + `]`, sess, "writes [" + `{"jsonrpc":"2.0","id":1,"method":"ping"},` + call("write_x") + `]`, "ping,tools/call|,write_x|2025|2025-11-25|abc"},
		{"2026 write", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x",` + meta + `}}`,
			map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "write_x"}, "writes", "tools/call|write_x|2026|2026-07-28|"},
		{"not JSON", `hello`, map[string]string{"Content-Type": "text/plain"}, "other", ""},
		{"some other API's JSON", `{"ID":1,"Name":"x"}`, nil, "other", ""},
	} {
		got, x := post(t, url, tc.body, tc.header)
		if !strings.HasPrefix(got, tc.want) || x != tc.x {
			t.Errorf("%s: got %q, X-MCP %q; want %q, %q", tc.name, got, x, tc.want, tc.x)
		}
	}
}

// The matcher fails closed: a POST it cannot read is refused (400, or 413
// beyond max_size), never passed on to what would serve it, whatever the
// matcher guards; `mcp { unreadable }` matches it, and {http.mcp.error}
// says why.
func TestMatcherFailsClosed(t *testing.T) {
	var reached []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reached = append(reached, string(b[:min(len(b), 80)]))
		io.WriteString(w, "served")
	}))
	t.Cleanup(backend.Close)
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /guarded {
		@secret mcp tools/call secret_*
		respond @secret 403
		reverse_proxy `+strings.TrimPrefix(backend.URL, "http://")+`
	}
	route /unreadable {
		@unreadable mcp {
			unreadable
			max_size 1KiB
		}
		respond @unreadable "unreadable: {http.mcp.error}" 400
		respond "readable"
	}
	handle_errors {
		respond "{http.error.status_code} {http.error.message}"
	}
}
`)
	call := func(params string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{` + params + `}}`
	}
	utf16 := func(s string) string {
		out := []byte{0xff, 0xfe}
		for _, r := range s {
			out = append(out, byte(r), 0)
		}
		return string(out)
	}
	sess := map[string]string{"Mcp-Session-Id": "abc", "Content-Type": "application/json"}
	for _, tc := range []struct {
		name, body string
		header     map[string]string
		status     int
	}{
		{"plain secret", call(`"name":"secret_x"`), sess, 403},
		{"public", call(`"name":"public_x"`), sess, 200},
		{"escaped key", call(`"na\u006de":"secret_x"`), sess, 400},
		{"name twice", call(`"name":"public_x","name":"secret_x"`), sess, 400},
		{"Name", call(`"Name":"secret_x"`), sess, 400},
		{"over 4 MiB", call(`"name":"secret_x","arguments":{"pad":"` + strings.Repeat("x", 4<<20) + `"}`), sess, 413},
		{"UTF-16", utf16(call(`"name":"secret_x"`)), sess, 400},
		{"2026 lying header", call(`"name":"secret_x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`),
			map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "public_x", "Content-Type": "application/json"}, 400},
		{"a form post", "a=b", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reached = nil
			req, _ := http.NewRequest("POST", c.URL+"/guarded", strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (tc.status == 200) != (len(reached) == 1) {
				t.Fatalf("%d %q, reached %q; want %d", resp.StatusCode, b, reached, tc.status)
			}
		})
	}
	for _, tc := range []struct{ body, want string }{
		{call(`"name":"x"`), "readable"},
		{call(`"Name":"x"`), `unreadable: ambiguous message: params has "Name"`},
		{call(`"name":"` + strings.Repeat("x", 2000) + `"`), "unreadable: body larger than the bound"},
		{`{"jsonrpc":`, "unreadable: body is not valid JSON"},
	} {
		got, _ := post(t, c.URL+"/unreadable", tc.body, nil)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%.40s: %q, want %q", tc.body, got, tc.want)
		}
	}
}
