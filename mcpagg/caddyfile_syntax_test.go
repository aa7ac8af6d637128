package mcpagg_test

import (
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_aggregate")
}
