package stdiobridge_test

import (
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// mcp_stdio serves only what every module before it could read: a message
// that mcpreq calls ambiguous (a member twice, escaped, or in another case
// that the case-insensitive child would read) is refused with 400 before
// the child sees it, in a 2025 session and on the 2026 path alike, so that
// no matcher or rule in front of it is walked around.
func TestAmbiguousMessagesAreNotServed(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", "\n\t\tchild_era legacy"))
	url := c.URL + "/mcp"
	s := newClient(t, url)
	s.initialize()
	modern := newClient(t, url)
	modern.version = "2026-07-28"
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	for _, tc := range []struct{ name, params string }{
		{"Name", `"Name":"echo","arguments":{}`},
		{"escaped name", `"na\u006de":"echo","arguments":{}`},
		{"name twice", `"name":"whoami","name":"echo","arguments":{}`},
		{"name and Name", `"name":"whoami","Name":"echo","arguments":{}`},
	} {
		for _, cl := range []*mcpClient{s, modern} {
			body := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{` + tc.params + `}}`
			if cl == modern {
				body = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{` + tc.params + `,` + meta + `}}`
				cl.header.Set("Mcp-Method", "tools/call")
				cl.header.Set("Mcp-Name", "whoami")
			}
			status, got := cl.status("POST", body, nil)
			if status != 400 || strings.Contains(got, "echo=") || !strings.Contains(got, "ambiguous") {
				t.Errorf("%s (version %s): %d %s", tc.name, cl.version, status, got)
			}
		}
	}
	// the same call spelled plainly is served
	if msgs := s.call("8", "tools/call", `{"name":"echo","arguments":{"a":1}}`); len(msgs) != 1 || !strings.Contains(msgs[0], "echo=") {
		t.Fatalf("a plain call: %v", msgs)
	}
}
