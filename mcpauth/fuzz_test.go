package mcpauth

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// FuzzAuthorizationHeader feeds arbitrary Authorization headers through the
// middleware: it must never panic, never let a request through, and always
// answer with a 400 or 401 challenge that does not echo the credential.
func FuzzAuthorizationHeader(f *testing.F) {
	f.Add("Bearer abc.def.ghi")
	f.Add("bearer  x")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("Bearer " + strings.Repeat("A", 20000))
	f.Add("Bearer a b")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		h := fuzzHandler(t)
		hdr := http.Header{}
		if header != "" {
			hdr.Set("Authorization", header)
		}
		res := serve(t, h, "POST", "http://example.com/mcp", hdr)
		checkRejected(t, res, header)
	})
}

// FuzzToken feeds arbitrary tokens (seeded with real ones, signed by real
// keys) through parsing and verification.
func FuzzToken(f *testing.F) {
	fx := fuzzFixture(f)
	for _, k := range []*jwkstest.Key{fx.rsa, fx.ec, fx.ed} {
		c := fx.issuer.Claims("fuzz", "https://other.example/mcp", "")
		f.Add(jwkstest.Mint(f, k, c, nil)) // valid signature, wrong audience
	}
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		res := serve(t, fuzzHandler(t), "POST", "http://example.com/mcp", http.Header{"Authorization": {"Bearer " + token}})
		checkRejected(t, res, token)
	})
}

func checkRejected(t *testing.T, res result, credential string) {
	t.Helper()
	if res.called || (res.status != 400 && res.status != 401) {
		t.Fatalf("status %d, next called %v", res.status, res.called)
	}
	if !strings.HasPrefix(res.challenge, "Bearer ") || !strings.Contains(res.challenge, `resource_metadata="`) {
		t.Fatalf("challenge %q", res.challenge)
	}
	if len(credential) >= 12 && strings.Contains(res.challenge+res.body, credential) {
		t.Fatal("response echoes the credential")
	}
}

var (
	fuzzFx *fixture
	fuzzH  *Handler
)

func fuzzFixture(tb testing.TB) *fixture {
	if fuzzFx == nil {
		fuzzFx = newFixtureNoCleanup(tb)
	}
	return fuzzFx
}

// fuzzHandler is one handler for the whole fuzzing process: provisioning
// per input would dominate the run.
func fuzzHandler(tb testing.TB) *Handler {
	if fuzzH == nil {
		fx := fuzzFixture(tb)
		fuzzH = &Handler{Issuer: fx.issuer.URL(), Audience: []string{testAudience}, JWKSURL: fx.issuer.JWKSURL(), Scopes: []string{"read:all"}}
		provisionNoCleanup(tb, fuzzH)
	}
	return fuzzH
}
