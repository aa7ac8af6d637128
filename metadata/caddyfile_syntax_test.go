package metadata_test

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/metadata"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "oauth_protected_resource")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(metadata.Handler) }, []caddyfiledoc.Repeat{
		{Name: "resource twice", In: "oauth_protected_resource {\n\tresource https://a.example/mcp\n\tresource https://b.example/mcp\n}", Err: "resource: set twice"},
		{Name: "max_age twice", In: "oauth_protected_resource {\n\tmax_age 1h\n\tmax_age 2h\n}", Err: "max_age: set twice"},
		{Name: "tls_client_certificate_bound_access_tokens twice", In: "oauth_protected_resource {\n\ttls_client_certificate_bound_access_tokens\n\ttls_client_certificate_bound_access_tokens\n}", Err: "tls_client_certificate_bound_access_tokens: set twice"},
		{Name: "lists, field and cors repeat", In: "oauth_protected_resource {\n\tauthorization_servers https://a.example\n\tauthorization_servers https://b.example\n\tscopes_supported x\n\tscopes_supported y\n\tfield a 1\n\tfield b 2\n\tcors https://a.example\n\tcors https://b.example\n}", Err: ""},
	})
}
