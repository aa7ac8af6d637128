package mcpmatch_test

import (
	"io"
	"net/http"
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
		{"batch with a write", `[{"jsonrpc":"2.0","id":1,"method":"ping"},` + call("write_x") + `]`, sess, "writes [" + `{"jsonrpc":"2.0","id":1,"method":"ping"},` + call("write_x") + `]`, "ping||2025|2025-11-25|abc"},
		{"2026 write", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x",` + meta + `}}`,
			map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "write_x"}, "writes", "tools/call|write_x|2026|2026-07-28|"},
		// the header says read_file, the body write_x: no rule may trust the header
		{"2026 lying header", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x",` + meta + `}}`,
			map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_file"}, "other", ""},
		{"not JSON-RPC", `hello`, nil, "other", ""},
	} {
		got, x := post(t, url, tc.body, tc.header)
		if !strings.HasPrefix(got, tc.want) || x != tc.x {
			t.Errorf("%s: got %q, X-MCP %q; want %q, %q", tc.name, got, x, tc.want, tc.x)
		}
	}
}
