package mcplb_test

import (
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
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(mcplb.Selection) }, []caddyfiledoc.Repeat{
		// reverse_proxy hands the policy its tokens from its name on: mcp { … }.
		{Name: "max_size twice", In: "mcp {\n\tmax_size 1MiB\n\tmax_size 2MiB\n}", Err: "max_size: set twice"},
		{Name: "fallback twice", In: "mcp {\n\tfallback least_conn\n\tfallback random\n}", Err: "fallback: set twice"},
		{Name: "instance twice", In: "mcp {\n\tinstance a a:80\n\tinstance a b:80\n}", Err: "instance a: set twice"},
		{Name: "instances and drain repeat", In: "mcp {\n\tinstance a a:80\n\tinstance b b:80\n\tdrain a\n\tdrain b\n\tfallback least_conn\n\tmax_size 1MiB\n}", Err: ""},
	})
}
