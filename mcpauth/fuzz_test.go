package mcpauth

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// FuzzIntrospectionAnswer feeds arbitrary introspection answers (bodies of
// a 200) through the middleware: it must never panic; a request passes only
// for a JSON object with "active": true, a string sub and our audience;
// anything that is no answer at all is 503, never a pass or a challenge.
func FuzzIntrospectionAnswer(f *testing.F) {
	f.Add(`{"active":true,"sub":"a","aud":["` + testAudience + `"],"scope":"read:all","exp":4102444800}`)
	f.Add(`{"active":true,"sub":"a","aud":"` + testAudience + `","scope":"read:all","iss":"https://as.example","nbf":1,"iat":1}`)
	f.Add(`{"active":false}`)
	f.Add(`{"active":"true"}`)
	f.Add(`{"active":true,"exp":"soon","sub":["a"],"aud":[1,2],"scope":["read:all"]}`)
	f.Add(`{"active":true,"active":false}`)
	f.Add(`null`)
	f.Add(`[]`)
	f.Add(`{"active":true,"token_use":"refresh_token","sub":"a","aud":["` + testAudience + `"],"scope":"read:all"}`)
	f.Add(`{"active":true,"exp":1e400}`)
	h := fuzzIntrospectionHandler(f)
	f.Fuzz(func(t *testing.T, body string) {
		fuzzAnswer.Store(&body)
		res := serve(t, h, "POST", "http://example.com/mcp", http.Header{"Authorization": {"Bearer opaque-fuzz-token"}})
		claims, perr := parseIntrospection([]byte(body))
		switch res.status {
		case 200:
			sub, _ := claims["sub"].(string)
			if perr != nil || claims == nil || sub == "" || !res.called {
				t.Fatalf("passed an answer that is not an active token with a subject: %q", body)
			}
		case 401, 403:
			if perr != nil || res.called {
				t.Fatalf("%d for an answer that is no answer (%v)", res.status, perr)
			}
		case 503:
			if perr == nil || res.called || res.challenge != "" {
				t.Fatalf("503 for a readable answer, or with a challenge: %q", body)
			}
		default:
			t.Fatalf("status %d", res.status)
		}
		if strings.Contains(res.challenge+res.body, "opaque-fuzz-token") {
			t.Fatal("response echoes the token")
		}
	})
}

var (
	fuzzAnswer atomic.Pointer[string]
	fuzzIH     *Handler
)

// fuzzIntrospectionHandler introspects at an endpoint that answers
// fuzzAnswer, with no cache: every input is asked.
func fuzzIntrospectionHandler(tb testing.TB) *Handler {
	if fuzzIH == nil {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, *fuzzAnswer.Load())
		}))
		fuzzIH = &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, Scopes: []string{"read:all"},
			IntrospectionURL: ts.URL, IntrospectionCache: -1}
		provisionNoCleanup(tb, fuzzIH)
	}
	return fuzzIH
}
