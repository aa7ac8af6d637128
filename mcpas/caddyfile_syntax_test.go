package mcpas_test

import (
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/mcpas"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_authorization_server")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; the lists and rules accumulate.
func TestCaddyfileSetTwice(t *testing.T) {
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(mcpas.Handler) }, []caddyfiledoc.Repeat{
		{Name: "issuer twice", In: "mcp_authorization_server {\n\tissuer https://a.example\n\tissuer https://b.example\n}", Err: "issuer: set twice"},
		{Name: "client_id twice", In: "mcp_authorization_server {\n\tupstream g oidc https://accounts.google.com {\n\t\tclient_id a\n\t\tclient_id b\n\t}\n}", Err: "client_id: set twice"},
		{Name: "lists and rules repeat", In: "mcp_authorization_server {\n\tresource https://a.example/mcp\n\tresource https://b.example/mcp\n\tscopes a\n\tscopes b\n\tupstream g oidc https://accounts.google.com {\n\t\tclient_id x\n\t}\n\tupstream gh github {\n\t\tclient_id y\n\t}\n\tallow email_domain example.com\n\tallow upstream gh github_org acme\n\tgrant a\n\tgrant b if claim groups admins\n}", Err: ""},
	})
}

// TestREADMEProviderBlocks: every provider block of the README's
// Providers section parses, inside a minimal mcp_authorization_server.
func TestREADMEProviderBlocks(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "### Providers\n")
	end := strings.Index(text[start:], "### JSON")
	if start < 0 || end < 0 {
		t.Fatal("no Providers section")
	}
	blocks := strings.Split(text[start:start+end], "```caddyfile\n")[1:]
	if len(blocks) < 7 {
		t.Fatalf("%d provider blocks, want 7", len(blocks))
	}
	for _, blk := range blocks {
		blk = blk[:strings.Index(blk, "```")]
		in := "mcp_authorization_server {\n\tissuer https://auth.example.com\n\tresource https://mcp.example.com/mcp\n\tscopes tools:read tools:write\n" + blk + "}\n"
		h := new(mcpas.Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
			t.Errorf("%v:\n%s", err, blk)
		}
		if len(h.Upstreams) == 0 || len(h.Allow) == 0 {
			t.Errorf("no upstream or allow rule:\n%s", blk)
		}
	}
}
