package mcpmatch_test

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/mcpmatch"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(mcpmatch.MatchMCP) }, []caddyfiledoc.Repeat{
		{Name: "max_size twice", In: "mcp tools/call {\n\tmax_size 1MiB\n\tmax_size 2MiB\n}", Err: "max_size: set twice"},
		{Name: "unreadable twice", In: "mcp {\n\tunreadable\n\tunreadable\n}", Err: "unreadable: set twice"},
		{Name: "each once", In: "mcp {\n\tunreadable\n\tmax_size 1MiB\n}", Err: ""},
	})
}
