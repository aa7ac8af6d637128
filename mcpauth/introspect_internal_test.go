package mcpauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// activeEndpoint answers every token as active for testAudience (sub: the
// token itself), counting its calls; hold, when set, runs first.
func activeEndpoint(t testing.TB, hold func(r *http.Request)) (string, *atomic.Int64) {
	t.Helper()
	var calls atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_ = r.ParseForm() // and the server notices a client that leaves
		if hold != nil {
			hold(r)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "iss": "https://as.example", "sub": r.PostForm.Get("token"),
			"aud": []string{testAudience}, "scope": "read:all", "exp": time.Now().Add(time.Hour).Unix()})
	}))
	t.Cleanup(ts.Close)
	return ts.URL, &calls
}

// serveCtx serves one request with ctx and returns its status.
func serveCtx(ctx context.Context, h *Handler, token string) int {
	req := httptest.NewRequestWithContext(ctx, "GET", testAudience, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { w.WriteHeader(200); return nil })
	_ = h.ServeHTTP(rec, req, next)
	return rec.Code
}

// joins receives a value each time a request has joined a call, until t
// ends.
func joins(t *testing.T) <-chan struct{} {
	ch := make(chan struct{}, 64)
	f := func() { ch <- struct{}{} }
	introspectJoin.Store(&f)
	t.Cleanup(func() { introspectJoin.Store(nil) })
	return ch
}

// A client that leaves while its token is introspected fails only itself:
// the call runs on the handler's context and answers the others.
func TestIntrospectionClientLeaves(t *testing.T) {
	release := make(chan struct{})
	u, calls := activeEndpoint(t, func(*http.Request) { <-release })
	h := provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: u})
	joined := joins(t)
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan int)
	go func() { left <- serveCtx(ctx, h, "shared") }()
	stayed := make(chan int)
	go func() { stayed <- serveCtx(context.Background(), h, "shared") }()
	<-joined
	<-joined
	cancel()
	if s := <-left; s != http.StatusServiceUnavailable {
		t.Fatalf("the request that left: %d", s)
	}
	close(release)
	if s := <-stayed; s != 200 {
		t.Fatalf("the request that stayed: %d", s)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d calls for one token", calls.Load())
	}
}

// Cleanup ends a call in flight (no goroutine outlives its config): the
// request waiting on it gets 503 at once, not after introspection_timeout.
func TestIntrospectionCleanupEndsCalls(t *testing.T) {
	arrived, ended := make(chan struct{}), make(chan struct{})
	u, _ := activeEndpoint(t, func(r *http.Request) {
		close(arrived)
		<-r.Context().Done()
		close(ended)
	})
	h := &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: u,
		IntrospectionTimeout: caddy.Duration(time.Hour)}
	cancel := provisionNoCleanup(t, h)
	defer cancel()
	status := make(chan int)
	go func() { status <- serveCtx(context.Background(), h, "t") }()
	<-arrived
	start := time.Now()
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if s := <-status; s != http.StatusServiceUnavailable {
		t.Fatalf("request during Cleanup: %d", s)
	}
	<-ended // the endpoint saw the call end
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the call ended %s after Cleanup", d)
	}
}

// introspection_cache bounds the cache in entries: 1000 distinct tokens in
// a cache of 16 leave at most 16 entries, each token asked once.
func TestIntrospectionCacheBound(t *testing.T) {
	u, calls := activeEndpoint(t, nil)
	h := provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: u, IntrospectionCache: 16})
	for i := range 1000 {
		if s := serveCtx(context.Background(), h, "tok-"+strconv.Itoa(i)); s != 200 {
			t.Fatalf("token %d: %d", i, s)
		}
	}
	if n := h.introspect.cache.len(); n > 16 || n == 0 {
		t.Fatalf("%d entries in a cache of 16", n)
	}
	if calls.Load() != 1000 {
		t.Fatalf("%d calls for 1000 tokens", calls.Load())
	}
}

// Defaults, as the README states them.
func TestIntrospectionDefaults(t *testing.T) {
	h := provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: "https://as.example/introspect"})
	i := h.introspect
	if i.timeout != 5*time.Second || i.ttl != time.Minute || i.negativeTTL != 10*time.Second || h.IntrospectionCache != 4096 ||
		i.post || h.IntrospectionAuthMethod != clientSecretBasic || i.cache == nil {
		t.Fatalf("defaults: timeout %s ttl %s negative %s cache %d post %v", i.timeout, i.ttl, i.negativeTTL, h.IntrospectionCache, i.post)
	}
	off := provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: "https://as.example/introspect", IntrospectionCache: -1})
	if off.introspect.cache != nil {
		t.Fatal("introspection_cache off keeps a cache")
	}
	if provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}}).introspect != nil {
		t.Fatal("an introspector without introspection_url")
	}
}

// Global placeholders in the client credentials are resolved at load.
func TestIntrospectionCredentialPlaceholders(t *testing.T) {
	t.Setenv("CADDYMCP_TEST_INTROSPECTION_SECRET", "from-env")
	var got string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, got, _ = r.BasicAuth()
		_, _ = io.WriteString(w, `{"active":false}`)
	}))
	defer ts.Close()
	h := provision(t, &Handler{Issuer: "https://as.example", Audience: []string{testAudience}, IntrospectionURL: ts.URL,
		IntrospectionClientID: "gw", IntrospectionClientSecret: "{env.CADDYMCP_TEST_INTROSPECTION_SECRET}"})
	if s := serveCtx(context.Background(), h, "x"); s != 401 || got != "from-env" {
		t.Fatalf("%d, secret sent %q", s, got)
	}
}

// isJWS tells a JWS from anything else by its shape and header alone.
func TestIsJWS(t *testing.T) {
	for tok, want := range map[string]bool{
		"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln": true,
		"eyAiYWxnIjoiUlMyNTYifQ.e30.c2ln":           true, // `{ "alg"` with a space
		"ory_at_abc.def":                            false,
		"a.b.c":                                     false,
		"eyJhbGciOiJSUzI1NiJ9..c2ln":                false, // detached payload
		"eyJhbGciOiJSUzI1NiJ9.e30.c2ln.x":           false,
		"eyJhbGciOiJSUzI1NiJ9.e30":                  false,
		"WzFd.e30.c2ln":                             false, // header [1]
		"eyJhbGciOiJSUzI1NiJ9.e30.c2ln=":            false, // padding is not base64url
		"eyJhbGciOiJSUzI1NiJ9.e+30.c2ln":            false,
		"opaque":                                    false,
	} {
		if got := isJWS(tok); got != want {
			t.Errorf("isJWS(%q) = %v, want %v", tok, got, want)
		}
	}
}
