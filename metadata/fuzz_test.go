package metadata

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// FuzzCaddyfile parses arbitrary option blocks: the parser and Validate
// must never panic, and a config that validates must render a JSON object
// that holds every configured extra field.
func FuzzCaddyfile(f *testing.F) {
	f.Add("resource https://x/mcp\nauthorization_servers https://a https://b")
	f.Add("field resource_name#de `\"Beispiel\"`\nfield x {\"a\":1}")
	f.Add("bearer_methods_supported header\ncors https://app\nmax_age 5m")
	f.Add("bearer_methods_supported header body query")
	f.Add("dpop_signing_alg_values_supported none")
	f.Add("field resource `1`")
	f.Add("resource {http.request.host}\nscopes_supported a b")
	f.Fuzz(func(t *testing.T, body string) {
		var h Handler
		// with an authorization server (required), so that what follows is
		// what decides
		// Tokenize, not NewTestDispenser: that one exits the process on input
		// the lexer refuses (a heredoc with too many '<'), which Caddy
		// answers with an error
		tokens, err := caddyfile.Tokenize([]byte("oauth_protected_resource {\nauthorization_servers https://as.example\n"+body+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			return
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := h.Provision(ctx); err != nil {
			return
		}
		req := httptest.NewRequest("GET", "http://example.com/.well-known/oauth-protected-resource/mcp", nil)
		rec := httptest.NewRecorder()
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
		if err := h.ServeHTTP(rec, req, nil); err != nil {
			t.Fatalf("ServeHTTP: %v", err)
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("document is not a JSON object: %v\n%s", err, rec.Body.Bytes())
		}
		if doc["resource"] == nil {
			t.Fatal("document has no resource")
		}
		for name := range h.Fields {
			if doc[name] == nil {
				t.Fatalf("field %q missing from the document", name)
			}
		}
	})
}
