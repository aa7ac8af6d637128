package mcpmatch_test

import (
	"strings"
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
	for _, tc := range []struct{ name, in, err string }{
		{"max_size twice", "mcp tools/call {\n\tmax_size 1MiB\n\tmax_size 2MiB\n}", "max_size: set twice"},
		{"unreadable twice", "mcp {\n\tunreadable\n\tunreadable\n}", "unreadable: set twice"},
		{"each once", "mcp {\n\tunreadable\n\tmax_size 1MiB\n}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(mcpmatch.MatchMCP).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
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
