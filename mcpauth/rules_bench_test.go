package mcpauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// BenchmarkRules measures a tools/call through mcp_auth with RS256 and the
// token cache, without and with 10 scope rules and a per-tool rate limit:
// the difference is what the body parse, the rules and the limiter cost
// per request.
func BenchmarkRules(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/tmp/x"}}}`)
	for _, withRules := range []bool{false, true} {
		b.Run(fmt.Sprintf("rules=%v", withRules), func(b *testing.B) {
			k := jwkstest.NewKey(b, "k", "RS256")
			is := jwkstest.NewIssuer(b, k)
			h := &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(), Scopes: []string{"read:all"}, TokenCache: 1000}
			if withRules {
				for i := 0; i < 10; i++ {
					h.Rules = append(h.Rules, ScopeRule{Kind: "tool", Names: []string{fmt.Sprintf("write_%d_*", i), "delete_*"}, Scopes: []string{"write:all"}})
				}
				h.Rates = []RateLimit{{Requests: 1 << 30, Window: caddy.Duration(1e9), Tools: []string{"read_*"}}}
			}
			h = provision(b, h)
			tok := jwkstest.Mint(b, k, is.Claims("alice", testAudience, "read:all"), nil)
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				_, err := io.Copy(io.Discard, r.Body)
				return err
			})
			w := httptest.NewRecorder()
			serve := func() {
				req := httptest.NewRequest("POST", "http://localhost:3000/stdio/mcp", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Mcp-Session-Id", "s")
				repl := caddy.NewReplacer()
				req = req.WithContext(caddyhttp.PrepareRequest(req, repl, w, nil).Context())
				if err := h.ServeHTTP(w, req, next); err != nil {
					b.Fatal(err)
				}
			}
			serve()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				serve()
			}
		})
	}
}

// BenchmarkFilterList filters a 100-tool list (JSON) for a token that may
// call half of them.
func BenchmarkFilterList(b *testing.B) {
	h := &Handler{Rules: []ScopeRule{{Kind: "tool", Names: []string{"write_*"}, Scopes: []string{"write:all"}}}}
	tools := make([]any, 100)
	for i := range tools {
		name := fmt.Sprintf("read_%d", i)
		if i%2 == 1 {
			name = fmt.Sprintf("write_%d", i)
		}
		tools[i] = map[string]any{"name": name, "description": "a tool that does something useful with a file",
			"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"path": map[string]any{"type": "string"}}}}
	}
	msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "result": map[string]any{"tools": tools}})
	f := &listFilter{h: h, granted: []string{"read:all"}}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		out, ok, err := f.filterJSON(msg)
		if err != nil || !ok || len(out) >= len(msg) {
			b.Fatal("not filtered")
		}
	}
}

// BenchmarkRuleCost is what the rules add to a request once its token is
// verified: the body parse, 10 scope rules and a per-tool rate limit
// (serveWithRules), beside the same request handed straight to next.
func BenchmarkRuleCost(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/tmp/x"}}}`)
	h := &Handler{Issuer: "https://issuer.example", Audience: []string{testAudience}, JWKSURL: "https://issuer.example/jwks"}
	for i := 0; i < 10; i++ {
		h.Rules = append(h.Rules, ScopeRule{Kind: "tool", Names: []string{fmt.Sprintf("write_%d_*", i), "delete_*"}, Scopes: []string{"write:all"}})
	}
	h.Rates = []RateLimit{{Requests: 1 << 30, Window: caddy.Duration(1e9), Tools: []string{"read_*"}}}
	h = provision(b, h)
	claims := map[string]any{"iss": "https://issuer.example", "sub": "alice", "scope": "read:all"}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, err := io.Copy(io.Discard, r.Body)
		return err
	})
	w := httptest.NewRecorder()
	for _, withRules := range []bool{false, true} {
		b.Run(fmt.Sprintf("rules=%v", withRules), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "http://localhost:3000/stdio/mcp", bytes.NewReader(body))
				req.Header.Set("Mcp-Session-Id", "s")
				repl := caddy.NewReplacer()
				req = req.WithContext(caddyhttp.PrepareRequest(req, repl, w, nil).Context())
				var err error
				if withRules {
					err = h.serveWithRules(w, req, repl, claims, next)
				} else {
					err = next.ServeHTTP(w, req)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
