package stdiobridge_test

import (
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
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(stdiobridge.Handler) }, []caddyfiledoc.Repeat{
		{Name: "command twice", In: "mcp_stdio {\n\tcommand a\n\tcommand b\n}", Err: "command: set twice"},
		{Name: "max_sessions twice", In: "mcp_stdio {\n\tmax_sessions 1\n\tmax_sessions 2\n}", Err: "max_sessions: set twice"},
		{Name: "call_timeout twice", In: "mcp_stdio {\n\tcall_timeout off\n\tcall_timeout 1m\n}", Err: "call_timeout: set twice"},
		{Name: "stateless twice", In: "mcp_stdio {\n\tstateless\n\tstateless\n}", Err: "stateless: set twice"},
		{Name: "name twice", In: "mcp_stdio {\n\tname a\n\tname b\n}", Err: "name: set twice"},
		{Name: "roots twice", In: "mcp_stdio {\n\troots none\n\troots forward\n}", Err: "roots: set twice"},
		{Name: "env twice", In: "mcp_stdio {\n\tenv A 1\n\tenv A 2\n}", Err: "env A: set twice"},
		{Name: "lists and env repeat", In: "mcp_stdio {\n\tcommand a\n\tenv A 1\n\tenv B 2\n\tinherit_env PATH\n\tinherit_env HOME\n\tallowed_hosts a.example\n\tallowed_hosts b.example\n\tallowed_origins https://a.example\n\tallowed_origins https://b.example\n}", Err: ""},
	})
}
