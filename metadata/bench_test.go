package metadata

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkServe renders the reference document (derived resource) per
// request, including Caddy's request preparation.
func BenchmarkServe(b *testing.B) {
	h := &Handler{
		AuthorizationServers:   []string{"http://localhost:9000"},
		BearerMethodsSupported: []string{"header", "body", "query"},
		ResourceDocumentation:  "http://localhost:3000/stdio/docs",
		ResourcePolicyURI:      "http://localhost:3000/stdio/policies",
		ScopesSupported:        []string{"read:all"},
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "http://localhost:3000/.well-known/oauth-protected-resource/stdio/mcp", nil)
		rec := httptest.NewRecorder()
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
		if err := h.ServeHTTP(rec, req, nil); err != nil || rec.Code != 200 {
			b.Fatal(err, rec.Code)
		}
	}
}
