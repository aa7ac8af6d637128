package mcplb_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/mcplb"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "lb_policy mcp")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		// reverse_proxy hands the policy its tokens from its name on: mcp { … }.
		{"max_size twice", "mcp {\n\tmax_size 1MiB\n\tmax_size 2MiB\n}", "max_size: set twice"},
		{"fallback twice", "mcp {\n\tfallback least_conn\n\tfallback random\n}", "fallback: set twice"},
		{"instance twice", "mcp {\n\tinstance a a:80\n\tinstance a b:80\n}", "instance a: set twice"},
		{"instances and drain repeat", "mcp {\n\tinstance a a:80\n\tinstance b b:80\n\tdrain a\n\tdrain b\n\tfallback least_conn\n\tmax_size 1MiB\n}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(mcplb.Selection).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
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
