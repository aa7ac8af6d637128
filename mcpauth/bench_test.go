package mcpauth

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// BenchmarkMiddleware measures a valid request through mcp_auth (JWKS
// already loaded) beside BenchmarkRawParse, the bare jwt.Parse of the same
// token with the public key in hand.
func BenchmarkMiddleware(b *testing.B) {
	for _, name := range []string{"RS256", "ES256", "EdDSA", "RS256 with token_cache"} {
		b.Run(name, func(b *testing.B) {
			alg, cache := name, -1 // every request verifies its token
			if a, ok := strings.CutSuffix(name, " with token_cache"); ok {
				alg, cache = a, 0 // the default cache
			}
			k := jwkstest.NewKey(b, "k", alg)
			is := jwkstest.NewIssuer(b, k)
			h := provision(b, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(), Scopes: []string{"read:all"}, TokenCache: cache})
			tok := jwkstest.Mint(b, k, is.Claims("alice", testAudience, "read:all"), nil)
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
			w := httptest.NewRecorder()
			// warm up: the first request loads the JWKS
			serveOnce(b, h, w, tok, next)
			before := is.Fetches.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				serveOnce(b, h, w, tok, next)
			}
			b.StopTimer()
			if n := is.Fetches.Load() - before; n != 0 {
				b.Fatalf("%d JWKS fetches on the hot path", n)
			}
		})
	}
}

func serveOnce(b *testing.B, h *Handler, w http.ResponseWriter, tok string, next caddyhttp.Handler) {
	req := httptest.NewRequest("POST", "http://localhost:3000/stdio/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	repl := caddy.NewReplacer()
	req = req.WithContext(caddyhttp.PrepareRequest(req, repl, w, nil).Context())
	if err := h.ServeHTTP(w, req, next); err != nil {
		b.Fatal(err)
	}
	if id, _ := repl.GetString("http.auth.user.id"); id != "alice" {
		b.Fatal("request not authenticated")
	}
}

// BenchmarkHarness is the per-request cost of the benchmark's own request
// set-up (request, replacer, Caddy's request preparation), to subtract
// from BenchmarkMiddleware.
func BenchmarkHarness(b *testing.B) {
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "http://localhost:3000/stdio/mcp", nil)
		req.Header.Set("Authorization", "Bearer x")
		repl := caddy.NewReplacer()
		repl.Set("http.auth.user.id", "alice")
		req = req.WithContext(caddyhttp.PrepareRequest(req, repl, w, nil).Context())
		if err := next.ServeHTTP(w, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRejected measures requests the middleware turns away.
func BenchmarkRejected(b *testing.B) {
	k := jwkstest.NewKey(b, "k", "RS256")
	ec := jwkstest.NewKey(b, "ec", "ES256")
	ed := jwkstest.NewKey(b, "ed", "EdDSA")
	is := jwkstest.NewIssuer(b, k, ec, ed)
	h := provision(b, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	expired := is.Claims("a", testAudience, "")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	cases := map[string]string{
		"no token":            "",
		"malformed":           "Bearer not.a.jwt",
		"expired RS256":       "Bearer " + jwkstest.Mint(b, k, expired, nil),
		"expired ES256":       "Bearer " + jwkstest.Mint(b, ec, expired, nil),
		"expired EdDSA":       "Bearer " + jwkstest.Mint(b, ed, expired, nil),
		"bad signature RS256": "Bearer " + jwkstest.Mint(b, jwkstest.NewKey(b, "k", "RS256"), is.Claims("a", testAudience, ""), nil),
		"bad signature ES256": "Bearer " + jwkstest.Mint(b, jwkstest.NewKey(b, "ec", "ES256"), is.Claims("a", testAudience, ""), nil),
		"bad signature EdDSA": "Bearer " + jwkstest.Mint(b, jwkstest.NewKey(b, "ed", "EdDSA"), is.Claims("a", testAudience, ""), nil),
		"unknown kid":         "Bearer " + jwkstest.Mint(b, k, is.Claims("a", testAudience, ""), map[string]any{"kid": "other"}),
		"wrong audience":      "Bearer " + jwkstest.Mint(b, k, is.Claims("a", "https://elsewhere/mcp", ""), nil),
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
	for name, auth := range cases {
		b.Run(name, func(b *testing.B) {
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "http://localhost:3000/stdio/mcp", nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				req = req.WithContext(caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil).Context())
				w.Body.Reset()
				if err := h.ServeHTTP(w, req, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRawParse(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			k := jwkstest.NewKey(b, "k", alg)
			is := jwkstest.NewIssuer(b, k)
			tok := jwkstest.Mint(b, k, is.Claims("alice", testAudience, "read:all"), nil)
			pub := k.Private.Public()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIntrospection is the cost per request of an opaque token through
// mcp_auth: answered from the introspection cache, and with the cache off
// (a call per request to a local httptest endpoint, over a kept-alive
// connection), beside a JWT on the same route (local verification, with
// and without token_cache) for comparison.
func BenchmarkIntrospection(b *testing.B) {
	k := jwkstest.NewKey(b, "k", "RS256")
	is := jwkstest.NewIssuer(b, k)
	ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"active":true,"iss":"` + is.URL() + `","sub":"alice","client_id":"cli","aud":["` + testAudience +
			`"],"scope":"read:all","exp":` + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + `,"token_type":"Bearer","token_use":"access_token"}`))
	}))
	b.Cleanup(ep.Close)
	jwt := jwkstest.Mint(b, k, is.Claims("alice", testAudience, "read:all"), nil)
	const opaque = "ory_at_Pg11OGyZrg5lNgwontJNuNMffLxdKDYxQBsD1LrK_bQ.MImWvOoM7KY--KZWVgX_G9OHTUe7AV4IndI-CW4vdVA"
	for _, bc := range []struct {
		name              string
		token             string
		tokenCache, cache int
	}{
		{"opaque, cache hit", opaque, 0, 0},
		{"opaque, introspection_cache off", opaque, 0, -1},
		{"JWT RS256, token_cache", jwt, 0, 0},
		{"JWT RS256, token_cache off", jwt, -1, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := provision(b, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(), Scopes: []string{"read:all"},
				TokenCache: bc.tokenCache, IntrospectionURL: ep.URL, IntrospectionCache: bc.cache})
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return nil })
			w := httptest.NewRecorder()
			serveOnce(b, h, w, bc.token, next) // warm up: JWKS, connection, cache
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				serveOnce(b, h, w, bc.token, next)
			}
		})
	}
}
