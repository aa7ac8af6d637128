package stdiobridge_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/stdiobridge"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_stdio")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"command twice", "mcp_stdio {\n\tcommand a\n\tcommand b\n}", "command: set twice"},
		{"max_sessions twice", "mcp_stdio {\n\tmax_sessions 1\n\tmax_sessions 2\n}", "max_sessions: set twice"},
		{"call_timeout twice", "mcp_stdio {\n\tcall_timeout off\n\tcall_timeout 1m\n}", "call_timeout: set twice"},
		{"stateless twice", "mcp_stdio {\n\tstateless\n\tstateless\n}", "stateless: set twice"},
		{"name twice", "mcp_stdio {\n\tname a\n\tname b\n}", "name: set twice"},
		{"roots twice", "mcp_stdio {\n\troots none\n\troots forward\n}", "roots: set twice"},
		{"env twice", "mcp_stdio {\n\tenv A 1\n\tenv A 2\n}", "env A: set twice"},
		{"lists and env repeat", "mcp_stdio {\n\tcommand a\n\tenv A 1\n\tenv B 2\n\tinherit_env PATH\n\tinherit_env HOME\n\tallowed_hosts a.example\n\tallowed_hosts b.example\n\tallowed_origins https://a.example\n\tallowed_origins https://b.example\n}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(stdiobridge.Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
			if tc.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
