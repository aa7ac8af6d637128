package mcpauth_test

import (
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
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(mcpauth.Handler) }, []caddyfiledoc.Repeat{
		{Name: "issuer twice", In: "mcp_auth {\n\tissuer https://a.example\n\tissuer https://b.example\n}", Err: "issuer: set twice"},
		{Name: "leeway twice", In: "mcp_auth {\n\tleeway 1s\n\tleeway 2s\n}", Err: "leeway: set twice"},
		{Name: "token_cache twice", In: "mcp_auth {\n\ttoken_cache off\n\ttoken_cache 10\n}", Err: "token_cache: set twice"},
		{Name: "introspection_url twice", In: "mcp_auth {\n\tintrospection_url https://a.example/i\n\tintrospection_url https://b.example/i\n}", Err: "introspection_url: set twice"},
		{Name: "introspection_cache twice", In: "mcp_auth {\n\tintrospection_cache off\n\tintrospection_cache 10\n}", Err: "introspection_cache: set twice"},
		{Name: "introspection_cache_ttl twice", In: "mcp_auth {\n\tintrospection_cache_ttl 1m\n\tintrospection_cache_ttl 2m\n}", Err: "introspection_cache_ttl: set twice"},
		{Name: "pass_token twice", In: "mcp_auth {\n\tpass_token\n\tpass_token\n}", Err: "pass_token: set twice"},
		{Name: "scope_implies twice", In: "mcp_auth {\n\tscope_implies admin read\n\tscope_implies admin write\n}", Err: "scope_implies admin: set twice"},
		{Name: "lists and rules repeat", In: "mcp_auth {\n\taudience a\n\taudience b\n\tscopes x\n\tscopes y\n\talgorithms RS256\n\talgorithms ES256\n\tscope_implies admin read\n\tscope_implies write read\n\ttool a_* scopes x\n\ttool b_* scopes y\n\tprompt p scopes x\n\tprompt q scopes y\n\tresource file:///a scopes x\n\tresource file:///b scopes y\n\trate 10/1m\n\trate 1/1s tool a_*\n}", Err: ""},
	})
}
