package mcpauth_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/mcpauth"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_auth")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"issuer twice", "mcp_auth {\n\tissuer https://a.example\n\tissuer https://b.example\n}", "issuer: set twice"},
		{"leeway twice", "mcp_auth {\n\tleeway 1s\n\tleeway 2s\n}", "leeway: set twice"},
		{"token_cache twice", "mcp_auth {\n\ttoken_cache off\n\ttoken_cache 10\n}", "token_cache: set twice"},
		{"pass_token twice", "mcp_auth {\n\tpass_token\n\tpass_token\n}", "pass_token: set twice"},
		{"scope_implies twice", "mcp_auth {\n\tscope_implies admin read\n\tscope_implies admin write\n}", "scope_implies admin: set twice"},
		{"lists and rules repeat", "mcp_auth {\n\taudience a\n\taudience b\n\tscopes x\n\tscopes y\n\talgorithms RS256\n\talgorithms ES256\n\tscope_implies admin read\n\tscope_implies write read\n\ttool a_* scopes x\n\ttool b_* scopes y\n\tprompt p scopes x\n\tprompt q scopes y\n\tresource file:///a scopes x\n\tresource file:///b scopes y\n\trate 10/1m\n\trate 1/1s tool a_*\n}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := new(mcpauth.Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
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
