package mcpauth

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

const testAudience = "http://localhost:3000/stdio/mcp"

// provision builds a handler the way Caddy does and cleans it up after t.
func provision(t testing.TB, h *Handler) *Handler {
	t.Helper()
	cancel := provisionNoCleanup(t, h)
	t.Cleanup(func() {
		_ = h.Cleanup()
		cancel()
	})
	return h
}

func provisionNoCleanup(t testing.TB, h *Handler) context.CancelFunc {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		cancel()
		t.Fatalf("Provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return cancel
}

// result is what the next handler saw, or the challenge.
type result struct {
	status    int
	challenge string
	body      string
	// seen by next:
	called      bool
	authHeader  string
	userID      string
	scope       string
	clientID    string
	iss         string
	claimCustom string
}

func serve(t testing.TB, h *Handler, method, target string, header http.Header) result {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, rec, nil)
	var res result
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		res.called = true
		res.authHeader = r.Header.Get("Authorization")
		res.userID, _ = repl.GetString("http.auth.user.id")
		res.scope, _ = repl.GetString("http.auth.user.scope")
		res.clientID, _ = repl.GetString("http.auth.user.client_id")
		res.iss, _ = repl.GetString("http.auth.user.iss")
		res.claimCustom, _ = repl.GetString("http.auth.claims.custom")
		w.WriteHeader(http.StatusOK)
		return nil
	})
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP returned %v", err)
	}
	res.status = rec.Code
	res.challenge = rec.Header().Get("WWW-Authenticate")
	res.body = rec.Body.String()
	return res
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

type fixture struct {
	issuer *jwkstest.Issuer
	rsa    *jwkstest.Key
	ec     *jwkstest.Key
	ed     *jwkstest.Key
}

func newFixture(t testing.TB) *fixture { return buildFixture(t, true) }

// newFixtureNoCleanup keeps the issuer running for the whole process (fuzzing).
func newFixtureNoCleanup(t testing.TB) *fixture { return buildFixture(t, false) }

func buildFixture(t testing.TB, cleanup bool) *fixture {
	f := &fixture{
		rsa: jwkstest.NewKey(t, "rsa-1", "RS256"),
		ec:  jwkstest.NewKey(t, "ec-1", "ES256"),
		ed:  jwkstest.NewKey(t, "ed-1", "EdDSA"),
	}
	if cleanup {
		f.issuer = jwkstest.NewIssuer(t, f.rsa, f.ec, f.ed)
	} else {
		f.issuer = jwkstest.NewIssuerNoCleanup(t, f.rsa, f.ec, f.ed)
	}
	return f
}

func (f *fixture) handler(t testing.TB, mod func(*Handler)) *Handler {
	h := &Handler{Issuer: f.issuer.URL(), Audience: []string{"HTTP://localhost:3000/stdio/mcp/"}, JWKSURL: f.issuer.JWKSURL()}
	if mod != nil {
		mod(h)
	}
	return provision(t, h)
}

const metaURL = "http://example.com/.well-known/oauth-protected-resource/stdio/mcp"

func TestChallengesAndVerification(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, func(h *Handler) { h.Scopes = []string{"read:all"} })
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := f.issuer.Claims("alice", testAudience, "read:all write")
		c["custom"] = "x"
		if mod != nil {
			mod(c)
		}
		return c
	}
	mint := func(k *jwkstest.Key, mod func(jwt.MapClaims)) string {
		return jwkstest.Mint(t, k, claims(mod), nil)
	}
	invalid := func(desc string) string {
		return `Bearer resource_metadata="` + metaURL + `", error="invalid_token", error_description="` + desc + `", scope="read:all"`
	}
	badRequest := func(desc string) string {
		return `Bearer resource_metadata="` + metaURL + `", error="invalid_request", error_description="` + desc + `", scope="read:all"`
	}
	now := time.Now()
	hsKeyConfusion := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
		tok.Header["kid"] = "rsa-1"
		s, err := tok.SignedString(jwkstest.JWKS(t, f.rsa))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	noneToken := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil))
		tok.Header["kid"] = "rsa-1"
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	good := mint(f.rsa, nil)
	parts := strings.Split(good, ".")
	// a claims set nested 4000 deep, with a forged signature
	bomb := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"a":`+strings.Repeat("[", 4000)+strings.Repeat("]", 4000)+`}`)) + "." + parts[2]
	// a valid token padded to just under the size limit
	padded := mint(f.rsa, func(c jwt.MapClaims) { c["pad"] = strings.Repeat("p", 11500) })

	tests := []struct {
		name      string
		header    http.Header
		target    string
		status    int
		challenge string
	}{
		{"no token", nil, "", 401, `Bearer resource_metadata="` + metaURL + `", scope="read:all"`},
		{"token in query string is not accepted", nil, "/stdio/mcp?access_token=" + good, 401, `Bearer resource_metadata="` + metaURL + `", scope="read:all"`},
		{"RS256", bearer(good), "", 200, ""},
		{"ES256", bearer(mint(f.ec, nil)), "", 200, ""},
		{"EdDSA", bearer(mint(f.ed, nil)), "", 200, ""},
		{"lowercase bearer", http.Header{"Authorization": {"bearer " + good}}, "", 200, ""},
		{"aud array containing ours", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["aud"] = []string{"other", testAudience} })), "", 200, ""},
		{"aud canonical: case, default port, trailing slash", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["aud"] = "HTTP://LocalHost:3000/stdio/mcp/" })), "", 200, ""},
		{"scopes from scp array", bearer(mint(f.rsa, func(c jwt.MapClaims) { delete(c, "scope"); c["scp"] = []string{"read:all"} })), "", 200, ""},
		{"expired", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), "", 401, invalid("token is expired")},
		{"expired within leeway", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["exp"] = now.Add(-20 * time.Second).Unix() })), "", 200, ""},
		{"no exp", bearer(mint(f.rsa, func(c jwt.MapClaims) { delete(c, "exp") })), "", 401, invalid("token has no expiry (exp)")},
		{"nbf in the future", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), "", 401, invalid("token is not valid yet (nbf)")},
		{"nbf within leeway", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["nbf"] = now.Add(20 * time.Second).Unix() })), "", 200, ""},
		{"iat far in the future", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), "", 401, invalid("token is issued in the future (iat)")},
		{"wrong iss", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), "", 401, invalid("token issuer is not accepted")},
		{"iss with trailing slash", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["iss"] = f.issuer.URL() + "/" })), "", 401, invalid("token issuer is not accepted")},
		{"iss differing in case", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["iss"] = strings.ToUpper(f.issuer.URL()) })), "", 401, invalid("token issuer is not accepted")},
		{"aud missing", bearer(mint(f.rsa, func(c jwt.MapClaims) { delete(c, "aud") })), "", 401, invalid("token has no audience (aud)")},
		{"aud wrong", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["aud"] = "http://localhost:3000/remote/mcp" })), "", 401, invalid("token audience (aud) does not include this resource")},
		{"aud array without ours", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["aud"] = []string{"a", "b"} })), "", 401, invalid("token audience (aud) does not include this resource")},
		{"alg none", bearer(noneToken), "", 401, invalid("token signing algorithm is not allowed")},
		{"HS256 keyed with the RSA public key", bearer(hsKeyConfusion), "", 401, invalid("token signing algorithm is not allowed")},
		{"unknown kid", bearer(jwkstest.Mint(t, f.rsa, claims(nil), map[string]any{"kid": "nope"})), "", 401, invalid("token signing key (kid) is not in the JWKS")},
		{"kid not a string", bearer(jwkstest.Mint(t, f.rsa, claims(nil), map[string]any{"kid": 7})), "", 401, invalid("token kid header is not a string")},
		{"missing kid, key found among several", bearer(jwkstest.Mint(t, f.ec, claims(nil), map[string]any{"kid": nil})), "", 200, ""},
		{"bad signature", bearer(parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))), "", 401, invalid("token signature is invalid")},
		{"signature of another key with the same kid", bearer(jwkstest.Mint(t, jwkstest.NewKey(t, "rsa-1", "RS256"), claims(nil), nil)), "", 401, invalid("token signature is invalid")},
		{"truncated", bearer(parts[0] + "." + parts[1]), "", 401, invalid("token is malformed")},
		{"extra segment", bearer(good + ".AAAA"), "", 401, invalid("token is malformed")},
		{"not base64url", bearer("eyJ+" + good[4:]), "", 401, invalid("token is malformed")},
		{"signature respelled: an unused trailing bit set", bearer(respell(good)), "", 401, invalid("token is malformed")},
		{"claims not JSON", bearer(parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("[[[[")) + "." + parts[2]), "", 401, invalid("token is malformed")},
		{"oversized token (16 KiB + 1)", bearer(strings.Repeat("a", maxTokenLength+1)), "", 401, invalid("token is larger than 16384 bytes")},
		{"16 KiB of garbage", bearer(strings.Repeat("a", maxTokenLength)), "", 401, invalid("token is malformed")},
		{"valid token near the size limit", bearer(padded), "", 200, ""},
		{"JSON bomb claims", bearer(bomb), "", 401, invalid("token signature is invalid")},
		{"missing kid, no key verifies", bearer(jwkstest.Mint(t, jwkstest.NewKey(t, "x", "RS256"), claims(nil), map[string]any{"kid": nil})), "", 401, invalid("token signature is invalid")},
		{"alg header not a string", bearer(jwkstest.Mint(t, f.rsa, claims(nil), map[string]any{"alg": 5})), "", 401, invalid("token signing algorithm is not allowed")},
		{"scope missing", bearer(mint(f.rsa, func(c jwt.MapClaims) { delete(c, "scope") })), "", 403,
			`Bearer error="insufficient_scope", scope="read:all", resource_metadata="` + metaURL + `", error_description="token lacks required scope: read:all"`},
		{"scope empty", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["scope"] = "" })), "", 403,
			`Bearer error="insufficient_scope", scope="read:all", resource_metadata="` + metaURL + `", error_description="token lacks required scope: read:all"`},
		{"scope is a prefix only", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["scope"] = "read read:allx" })), "", 403,
			`Bearer error="insufficient_scope", scope="read:all", resource_metadata="` + metaURL + `", error_description="token lacks required scope: read:all"`},
		{"two Authorization headers", http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, "", 400, badRequest("more than one Authorization header")},
		{"two tokens", http.Header{"Authorization": {"Bearer " + good + " " + good}}, "", 400, badRequest("Authorization header must carry exactly one Bearer token")},
		{"Bearer without token", http.Header{"Authorization": {"Bearer"}}, "", 400, badRequest("Bearer token missing in Authorization header")},
		{"Bearer and a space", http.Header{"Authorization": {"Bearer "}}, "", 400, badRequest("Bearer token missing in Authorization header")},
		{"Basic scheme is no credentials (RFC 6750 3.1)", http.Header{"Authorization": {"Basic YTpi"}}, "", 401, `Bearer resource_metadata="` + metaURL + `", scope="read:all"`},
		{"other scheme is no credentials", http.Header{"Authorization": {"DPoP " + good}}, "", 401, `Bearer resource_metadata="` + metaURL + `", scope="read:all"`},
		{"no sub", bearer(mint(f.rsa, func(c jwt.MapClaims) { delete(c, "sub") })), "", 401, invalid("token has no subject (sub)")},
		{"sub not a string", bearer(mint(f.rsa, func(c jwt.MapClaims) { c["sub"] = 7 })), "", 401, invalid("token has no subject (sub)")},
		{"token with illegal characters", bearer("abc$def"), "", 400, badRequest("Bearer token contains characters not allowed by RFC 6750")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == "" {
				target = "/stdio/mcp"
			}
			res := serve(t, h, "POST", "http://example.com"+target, tt.header)
			if res.status != tt.status {
				t.Fatalf("status = %d, want %d (challenge %q, body %s)", res.status, tt.status, res.challenge, res.body)
			}
			if res.challenge != tt.challenge {
				t.Errorf("WWW-Authenticate =\n  %s\nwant\n  %s", res.challenge, tt.challenge)
			}
			if tt.status == 200 {
				if res.userID != "alice" || res.iss != f.issuer.URL() || res.clientID != "test-client" || res.claimCustom != "x" {
					t.Errorf("placeholders: id=%q iss=%q client=%q custom=%q", res.userID, res.iss, res.clientID, res.claimCustom)
				}
				if res.authHeader != "" {
					t.Errorf("Authorization header reached the next handler")
				}
			} else if res.called {
				t.Errorf("next handler was called for a rejected request")
			}
			if strings.Contains(res.challenge+res.body, good) {
				t.Errorf("response echoes the token")
			}
		})
	}
}

func TestNoTokenWireFormat(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, nil)
	req := httptest.NewRequest("GET", "http://localhost:3000/stdio/mcp", nil)
	rec := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
	if err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Fatal("next called")
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 401 {
		t.Fatalf("status %d", rec.Code)
	}
	want := map[string]string{
		"WWW-Authenticate": `Bearer resource_metadata="http://localhost:3000/.well-known/oauth-protected-resource/stdio/mcp"`,
		"Content-Type":     "application/json",
	}
	for k, v := range want {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := rec.Body.String(); got != `{"error":"unauthorized","error_description":"JWT token required"}` {
		t.Errorf("body = %s", got)
	}
}

func TestPassTokenAndPreflight(t *testing.T) {
	f := newFixture(t)
	tok := jwkstest.Mint(t, f.rsa, f.issuer.Claims("bob", testAudience, ""), nil)
	h := f.handler(t, func(h *Handler) { h.PassToken = true })
	if res := serve(t, h, "POST", "http://example.com/stdio/mcp", bearer(tok)); res.status != 200 || res.authHeader != "Bearer "+tok {
		t.Errorf("pass_token: status %d, Authorization %q", res.status, res.authHeader)
	}
	strict := f.handler(t, nil)
	preflight := http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"}}
	if res := serve(t, strict, "OPTIONS", "http://example.com/stdio/mcp", preflight); res.status != 200 || !res.called {
		t.Errorf("CORS preflight: status %d; want it passed through unchallenged", res.status)
	}
	withToken := preflight.Clone()
	withToken.Set("Authorization", "Bearer "+tok)
	if res := serve(t, strict, "OPTIONS", "http://example.com/stdio/mcp", withToken); !res.called || res.authHeader != "" {
		t.Errorf("CORS preflight with a token: called %v, Authorization %q reached next", res.called, res.authHeader)
	}
	// no path and no other OPTIONS request is exempt
	for _, tc := range []struct {
		method, path string
		header       http.Header
	}{
		{"OPTIONS", "/stdio/mcp", nil},
		{"OPTIONS", "/stdio/mcp", http.Header{"Origin": {"https://app.example"}}},
		{"OPTIONS", "/stdio/mcp", http.Header{"Access-Control-Request-Method": {"POST"}}},
		{"GET", "/.well-known/oauth-protected-resource/stdio/mcp", nil},
		{"POST", "/.well-known/oauth-protected-resource", nil},
		{"POST", "/.well-known/oauth-authorization-server", nil},
		{"POST", "/.well-known/openid-configuration", nil},
	} {
		if res := serve(t, strict, tc.method, "http://example.com"+tc.path, tc.header); res.status != 401 || res.called {
			t.Errorf("%s %s %v: status %d, next called %v; want 401", tc.method, tc.path, tc.header, res.status, res.called)
		}
	}
}

func TestModes(t *testing.T) {
	f := newFixture(t)
	good := jwkstest.Mint(t, f.rsa, f.issuer.Claims("carol", testAudience, "read:all"), nil)
	expiredClaims := f.issuer.Claims("carol", testAudience, "read:all")
	expiredClaims["exp"] = time.Now().Add(-time.Hour).Unix()
	expired := jwkstest.Mint(t, f.rsa, expiredClaims, nil)
	tests := []struct {
		mode                string
		none, bad, valid    int
		noneUser, validUser string
	}{
		{"strict", 401, 401, 200, "", "carol"},
		{"optional", 200, 401, 200, "", "carol"},
		{"permissive", 200, 200, 200, "", "carol"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			h := f.handler(t, func(h *Handler) { h.Mode = tt.mode })
			if r := serve(t, h, "POST", "http://e/mcp", nil); r.status != tt.none || r.userID != tt.noneUser {
				t.Errorf("no token: %d user %q", r.status, r.userID)
			}
			if r := serve(t, h, "POST", "http://e/mcp", bearer(expired)); r.status != tt.bad || r.userID != "" {
				t.Errorf("bad token: %d user %q", r.status, r.userID)
			}
			if r := serve(t, h, "POST", "http://e/mcp", bearer(good)); r.status != tt.valid || r.userID != tt.validUser {
				t.Errorf("valid token: %d user %q", r.status, r.userID)
			}
			// whatever the mode, the credential never reaches next
			for name, hdr := range map[string]http.Header{"valid": bearer(good), "expired": bearer(expired),
				"garbage": bearer("abc"), "basic": {"Authorization": {"Basic YTpi"}}} {
				if r := serve(t, h, "POST", "http://e/mcp", hdr); r.called && r.authHeader != "" {
					t.Errorf("%s token: Authorization %q reached the next handler", name, r.authHeader)
				}
			}
		})
	}
}

func TestConfiguredResourceMetadata(t *testing.T) {
	f := newFixture(t)
	h := f.handler(t, func(h *Handler) {
		h.ResourceMetadata = "https://{http.request.host}/.well-known/oauth-protected-resource/custom"
	})
	r := serve(t, h, "GET", "http://mcp.example/x", nil)
	if want := `Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/custom"`; r.challenge != want {
		t.Errorf("challenge %q, want %q", r.challenge, want)
	}
	// the root resource maps to the bare well-known path
	h2 := f.handler(t, nil)
	if r := serve(t, h2, "GET", "http://mcp.example/", nil); r.challenge != `Bearer resource_metadata="http://mcp.example/.well-known/oauth-protected-resource"` {
		t.Errorf("root challenge %q", r.challenge)
	}
}

func TestJWKSAlgMustMatchToken(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	k.JWKAlg = "RS512"
	is := jwkstest.NewIssuer(t, k)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL()})
	r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, is.Claims("a", testAudience, ""), nil)))
	if r.status != 401 || !strings.Contains(r.challenge, `error_description="token alg does not match the alg of its JWK"`) {
		t.Errorf("got %d %q", r.status, r.challenge)
	}
	// without kid, a key whose JWK alg differs is not tried either
	r = serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, is.Claims("a", testAudience, ""), map[string]any{"kid": nil})))
	if r.status != 401 || !strings.Contains(r.challenge, `no key in the JWKS matches the token (no kid)`) {
		t.Errorf("no kid: got %d %q", r.status, r.challenge)
	}
}

func TestKeyRotationAndRemoval(t *testing.T) {
	old := jwkstest.NewKey(t, "old", "RS256")
	next := jwkstest.NewKey(t, "next", "ES256")
	is := jwkstest.NewIssuer(t, old)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		JWKSRefreshMinInterval: caddy.Duration(50 * time.Millisecond)})
	claims := is.Claims("a", testAudience, "")
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, old, claims, nil))); r.status != 200 {
		t.Fatalf("old key: %d %s", r.status, r.challenge)
	}
	is.SetKeys(old, next)
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, next, claims, nil))); r.status != 200 {
		t.Fatalf("rotated-in key: %d %s", r.status, r.challenge)
	}
	// the old key is removed: once the JWKS is refreshed (here: triggered by
	// another unknown kid), tokens signed by it are rejected
	is.SetKeys(next)
	time.Sleep(60 * time.Millisecond) // waits out jwks_refresh_min_interval (50ms), a time the handler measures: no event to wait for
	serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, jwkstest.NewKey(t, "other", "RS256"), claims, nil)))
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, old, claims, nil))); r.status != 401 {
		t.Fatalf("removed key still accepted: %d", r.status)
	}
}

func TestPeriodicRefresh(t *testing.T) {
	a := jwkstest.NewKey(t, "a", "RS256")
	b := jwkstest.NewKey(t, "b", "RS256")
	is := jwkstest.NewIssuer(t, a, b)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		JWKSRefreshInterval: caddy.Duration(50 * time.Millisecond), JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	claims := is.Claims("a", testAudience, "")
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, a, claims, nil))); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.challenge)
	}
	is.SetKeys(b)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, a, claims, nil)))
		if r.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key a still accepted after periodic refresh interval")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIssuerDownAtStartThenUp(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "ES256")
	is := jwkstest.NewIssuer(t, k)
	is.SetFault("down", 0)
	// Provision must not contact the issuer.
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience},
		JWKSRefreshMinInterval: caddy.Duration(50 * time.Millisecond)}) // discovered from issuer metadata
	if n := is.Fetches.Load(); n != 0 {
		t.Fatalf("Provision fetched the JWKS %d times", n)
	}
	tok := jwkstest.Mint(t, k, is.Claims("a", testAudience, ""), nil)
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 401 {
		t.Fatalf("issuer down: %d", r.status)
	}
	is.SetFault("", 0)
	time.Sleep(60 * time.Millisecond) // waits out jwks_refresh_min_interval (50ms), a time the handler measures: no event to wait for
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 200 {
		t.Fatalf("issuer up again: %d %s", r.status, r.challenge)
	}
}

func TestDiscoveryFailureThenRecovery(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "ES256")
	is := jwkstest.NewIssuer(t, k)
	// no metadata for this issuer: it is not trusted (a mismatching issuer:
	// TestDiscoveryIssuerMismatch)
	h := provision(t, &Handler{Issuer: is.URL() + "/tenant", Audience: []string{testAudience},
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	c := is.Claims("a", testAudience, "")
	c["iss"] = is.URL() + "/tenant"
	r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, c, nil)))
	if r.status != 401 || !strings.Contains(r.challenge, "token signing keys are not available: the issuer's metadata could not be fetched") {
		t.Fatalf("got %d %q", r.status, r.challenge)
	}
}

func TestUnknownKidFloodIsRateLimited(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	claims := is.Claims("a", testAudience, "")
	for i := 0; i < 200; i++ {
		tok := jwkstest.Mint(t, k, claims, map[string]any{"kid": "random-" + string(rune('a'+i%26)) + time.Now().String()})
		if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 401 {
			t.Fatalf("unknown kid %d: %d", i, r.status)
		}
	}
	// one initial load plus one unknown-kid refresh in the interval
	if n := is.Fetches.Load(); n > 2 {
		t.Fatalf("200 random kids caused %d JWKS fetches, want at most 2", n)
	}
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, claims, nil))); r.status != 200 {
		t.Fatalf("known kid after flood: %d", r.status)
	}
}

func TestJWKSFaults(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	for _, fault := range []string{"garbage", "empty", "down"} {
		t.Run(fault, func(t *testing.T) {
			is := jwkstest.NewIssuer(t, k)
			is.SetFault(fault, 0)
			h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
				JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
			r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, is.Claims("a", testAudience, ""), nil)))
			if r.status != 401 || !strings.Contains(r.challenge, `error="invalid_token"`) {
				t.Fatalf("got %d %q", r.status, r.challenge)
			}
		})
	}
}

func TestJWKSFile(t *testing.T) {
	k := jwkstest.NewKey(t, "file-key", "EdDSA")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwkstest.JWKS(t, k), 0o600); err != nil {
		t.Fatal(err)
	}
	h := provision(t, &Handler{Issuer: "https://issuer.example", Audience: []string{testAudience}, JWKSFile: path})
	c := jwt.MapClaims{"iss": "https://issuer.example", "sub": "f", "aud": testAudience, "exp": time.Now().Add(time.Minute).Unix()}
	if r := serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, c, nil))); r.status != 200 {
		t.Fatalf("jwks_file: %d %s", r.status, r.challenge)
	}
}

func TestKeySourceSharedAndReleased(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	mk := func() *Handler {
		h := &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL()}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b := mk(), mk()
	if a.keys != b.keys {
		t.Fatal("two handlers with the same JWKS URL do not share the key source")
	}
	_ = a.Cleanup()
	if _, ok := keySources.References(a.poolKey); !ok {
		t.Fatal("key source released while still in use")
	}
	_ = b.Cleanup()
	if _, ok := keySources.References(a.poolKey); ok {
		t.Fatal("key source not released after the last handler")
	}
	if a.keys.ctx.Err() == nil {
		t.Fatal("released key source still running")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		want string
	}{
		{"missing issuer", Handler{Audience: []string{"a"}}, "issuer: required"},
		{"relative issuer", Handler{Issuer: "issuer", Audience: []string{"a"}}, "issuer:"},
		{"missing audience", Handler{Issuer: "https://i"}, "audience: required"},
		{"empty audience", Handler{Issuer: "https://i", Audience: []string{" "}}, "audience[0]: empty"},
		{"bad jwks_url", Handler{Issuer: "https://i", Audience: []string{"a"}, JWKSURL: "jwks"}, "jwks_url:"},
		{"both jwks sources", Handler{Issuer: "https://i", Audience: []string{"a"}, JWKSURL: "https://i/j", JWKSFile: "f"}, "jwks_url and jwks_file"},
		{"HS256", Handler{Issuer: "https://i", Audience: []string{"a"}, Algorithms: []string{"HS256"}}, `algorithms: "HS256" is not allowed`},
		{"none", Handler{Issuer: "https://i", Audience: []string{"a"}, Algorithms: []string{"none"}}, `algorithms: "none" is not allowed`},
		{"mode", Handler{Issuer: "https://i", Audience: []string{"a"}, Mode: "lenient"}, "mode:"},
		{"scope", Handler{Issuer: "https://i", Audience: []string{"a"}, Scopes: []string{"a b"}}, "scopes:"},
		{"resource_metadata", Handler{Issuer: "https://i", Audience: []string{"a"}, ResourceMetadata: "/x"}, "resource_metadata:"},
		{"leeway", Handler{Issuer: "https://i", Audience: []string{"a"}, Leeway: -1}, "leeway:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := tt.h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Provision() = %v, want error containing %q", err, tt.want)
			}
		})
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := Handler{Issuer: "https://i", Audience: []string{"a"}, JWKSFile: "/does/not/exist"}
	if err := h.Provision(ctx); err == nil || !strings.Contains(err.Error(), "jwks_file") {
		t.Fatalf("missing jwks_file: %v", err)
	}
}

func TestSlowJWKSTimesOut(t *testing.T) {
	saved := fetchTimeout
	fetchTimeout = 200 * time.Millisecond
	t.Cleanup(func() { fetchTimeout = saved })
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	is.SetFault("slow", 5*time.Second)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		JWKSRefreshMinInterval: caddy.Duration(50 * time.Millisecond)})
	tok := jwkstest.Mint(t, k, is.Claims("a", testAudience, ""), nil)
	start := time.Now()
	r := serve(t, h, "POST", "http://e/mcp", bearer(tok))
	if r.status != 401 || !strings.Contains(r.challenge, `error="invalid_token"`) {
		t.Fatalf("slow JWKS: %d %q", r.status, r.challenge)
	}
	// the JWKS answers after 5s; the fetch gives up after 200ms
	if d := time.Since(start); d > 4500*time.Millisecond {
		t.Fatalf("request held %s by a slow JWKS", d)
	}
	is.SetFault("", 0)
	time.Sleep(60 * time.Millisecond) // waits out jwks_refresh_min_interval (50ms), a time the handler measures: no event to wait for
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 200 {
		t.Fatalf("after the JWKS recovered: %d %s", r.status, r.challenge)
	}
}

func TestTokenCache(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	other := jwkstest.NewKey(t, "other", "RS256")
	is := jwkstest.NewIssuer(t, k, other)
	h := provision(t, &Handler{Issuer: is.URL(), Audience: []string{testAudience}, JWKSURL: is.JWKSURL(),
		TokenCache: 100, Leeway: caddy.Duration(time.Nanosecond), JWKSRefreshMinInterval: caddy.Duration(10 * time.Millisecond)})
	c := is.Claims("cached", testAudience, "")
	c["exp"] = time.Now().Add(1500 * time.Millisecond).Unix()
	tok := jwkstest.Mint(t, k, c, nil)
	for i := 0; i < 3; i++ {
		if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 200 || r.userID != "cached" {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	if n := h.cache.len(); n != 1 {
		t.Fatalf("%d cache entries, want 1", n)
	}
	// removing the key from the JWKS invalidates the cache at the next refresh
	is.SetKeys(other)
	time.Sleep(20 * time.Millisecond) // waits out jwks_refresh_min_interval (10ms), a time the handler measures
	serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, is.Claims("x", testAudience, ""), map[string]any{"kid": "new"})))
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 401 {
		t.Fatalf("cached token of a removed key: %d", r.status)
	}
	// and an entry never outlives exp
	is.SetKeys(k, other)
	time.Sleep(20 * time.Millisecond) // waits out jwks_refresh_min_interval (10ms), a time the handler measures
	serve(t, h, "POST", "http://e/mcp", bearer(jwkstest.Mint(t, k, is.Claims("x", testAudience, ""), map[string]any{"kid": "newer"})))
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 200 {
		t.Fatalf("token after the key came back: %d %s", r.status, r.challenge)
	}
	time.Sleep(time.Until(time.Unix(c["exp"].(int64), 0)) + 100*time.Millisecond) // until the token has expired: a clock, not an event
	if r := serve(t, h, "POST", "http://e/mcp", bearer(tok)); r.status != 401 || !strings.Contains(r.challenge, "token is expired") {
		t.Fatalf("cached token after exp: %d %s", r.status, r.challenge)
	}
}

// respell sets an unused bit of a token's last base64url character (an
// RS256 signature, 256 bytes, ends in a character with 2 bits used of 6): a
// lenient decoder reads the same signature.
func respell(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[last^1])
}
