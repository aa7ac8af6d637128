package mcpauth_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/mcpauth"
)

// The fake authorization server's side of introspection: its issuer and
// the credentials mcp_auth must present (the secret has characters that
// RFC 6749's form-encoding before Basic changes).
const (
	introIssuer   = "https://as.example"
	introClient   = "gateway"
	introSecret   = "s3:cr+t/é"
	introSecretCF = `"s3:cr+t/é"`
)

// endpoint is a real RFC 7662 introspection endpoint over HTTP: it checks
// the client's credentials (Basic, or client_secret_post in the form),
// counts its calls and answers from a table of tokens (unknown tokens are
// inactive). fail, when set, answers instead.
type endpoint struct {
	url     string
	calls   atomic.Int64
	methods sync.Map // "basic" | "post" -> count
	mu      sync.Mutex
	answers map[string]map[string]any
	fail    atomic.Pointer[func(w http.ResponseWriter, r *http.Request)]
	hold    atomic.Pointer[func()] // runs before each answer
}

func startEndpoint(t *testing.T) *endpoint {
	t.Helper()
	e := &endpoint{answers: map[string]map[string]any{}}
	ts := httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(ts.Close)
	e.url = ts.URL + "/introspect"
	return e
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.calls.Add(1)
	if f := e.hold.Load(); f != nil {
		(*f)()
	}
	if f := e.fail.Load(); f != nil {
		(*f)(w, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/introspect" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	method := "post"
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		method = "basic"
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	if id != introClient || secret != introSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	n, _ := e.methods.LoadOrStore(method, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	if r.PostForm.Get("token_type_hint") != "access_token" {
		http.Error(w, "no hint", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	a, ok := e.answers[r.PostForm.Get("token")]
	e.mu.Unlock()
	if !ok {
		a = map[string]any{"active": false}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a)
}

// set makes the endpoint answer for token: active, with claims on top of
// the defaults (iss, sub alice, client_id cli, exp in an hour, iat now);
// a nil value removes a default. Times are of the introspection clock, as
// a test may have skewed it.
func (e *endpoint) set(token string, claims map[string]any) {
	now := mcpauth.IntrospectionNow()
	a := map[string]any{"active": true, "iss": introIssuer, "sub": "alice", "client_id": "cli",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "token_type": "Bearer"}
	for k, v := range claims {
		if v == nil {
			delete(a, k)
		} else {
			a[k] = v
		}
	}
	e.mu.Lock()
	e.answers[token] = a
	e.mu.Unlock()
}

func (e *endpoint) failWith(f func(w http.ResponseWriter, r *http.Request)) {
	if f == nil {
		e.fail.Store(nil)
		return
	}
	e.fail.Store(&f)
}

func (e *endpoint) used(method string) int64 {
	n, ok := e.methods.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// introSite is a Caddyfile with mcp_auth in front of respond on /respond
// (scopes read:all) and on /mcp (plus a per-tool rule), both introspecting
// at ep; extra goes into both mcp_auth blocks.
func introSite(ep, extra string) string {
	block := func(path, more string) string {
		return `
	route ` + path + ` {
		mcp_auth {
			issuer ` + introIssuer + `
			audience http://127.0.0.1:{{PORT}}` + path + `
			scopes read:all
			introspection_url ` + ep + `
			introspection_client_id ` + introClient + `
			introspection_client_secret ` + introSecretCF + `
` + extra + more + `
		}
		respond "hello {http.auth.user.id} [{http.auth.user.scope}] via {http.auth.user.client_id} iss={http.auth.user.iss} auth={header.Authorization}"
	}`
	}
	return `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	metrics /metrics` + block("/respond", "") + block("/mcp", "\t\t\ttool write_* scopes write:all\n") + block("/post", "\t\t\tintrospection_auth_method client_secret_post\n") + `
}
`
}

type reply struct {
	status    int
	challenge string
	body      string
	header    http.Header
}

func get(t *testing.T, c *caddyrun.Caddy, path, token string) reply {
	t.Helper()
	resp := c.Do("GET", path, http.Header{"Authorization": {"Bearer " + token}})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return reply{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body), resp.Header}
}

func callTool(t *testing.T, c *caddyrun.Caddy, token, tool string) reply {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`","arguments":{}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return reply{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body), resp.Header}
}

// metric reads one sample of Caddy's /metrics, 0 if absent.
func metric(t *testing.T, c *caddyrun.Caddy, sample string) float64 {
	t.Helper()
	resp := c.Do("GET", "/metrics", nil)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// Opaque tokens through a real Caddy: the endpoint's answer is checked as
// a JWT's claims are, with the same statuses, challenges and descriptions.
func TestIntrospection(t *testing.T) {
	ep := startEndpoint(t)
	c := caddyrun.StartCaddyfile(t, "", introSite(ep.url, "\t\t\tintrospection_cache off\n"))
	aud := func(path string) []any { return []any{"https://other.example", c.URL + path} }
	now := time.Now()
	ep.set("ok", map[string]any{"aud": aud("/respond"), "scope": "read:all write:all"})
	ep.set("aud-string", map[string]any{"aud": c.URL + "/respond", "scope": "read:all"})
	ep.set("no-iss", map[string]any{"aud": aud("/respond"), "scope": "read:all", "iss": nil})
	ep.set("no-exp", map[string]any{"aud": aud("/respond"), "scope": "read:all", "exp": nil})
	ep.set("wrong-aud", map[string]any{"aud": []any{"https://other.example/mcp"}, "scope": "read:all"})
	ep.set("no-aud", map[string]any{"scope": "read:all"})
	ep.set("expired", map[string]any{"aud": aud("/respond"), "scope": "read:all", "exp": now.Add(-time.Hour).Unix()})
	ep.set("not-yet", map[string]any{"aud": aud("/respond"), "scope": "read:all", "nbf": now.Add(time.Hour).Unix()})
	ep.set("other-iss", map[string]any{"aud": aud("/respond"), "scope": "read:all", "iss": "https://evil.example"})
	ep.set("no-sub", map[string]any{"aud": aud("/respond"), "scope": "read:all", "sub": nil})
	ep.set("refresh", map[string]any{"aud": aud("/respond"), "scope": "read:all", "token_use": "refresh_token"})
	ep.set("no-scope", map[string]any{"aud": aud("/respond"), "scope": "profile"})
	ep.set("exp-string", map[string]any{"aud": aud("/respond"), "scope": "read:all", "exp": "tomorrow"})
	md := `resource_metadata="` + c.URL + `/.well-known/oauth-protected-resource/respond"`
	invalid := func(desc string) string {
		return `Bearer ` + md + `, error="invalid_token", error_description="` + desc + `", scope="read:all"`
	}
	for _, tc := range []struct {
		token, challenge, body string
		status                 int
	}{
		{"ok", "", "hello alice [read:all write:all] via cli iss=" + introIssuer + " auth=", 200},
		{"aud-string", "", "hello alice [read:all] via cli iss=" + introIssuer + " auth=", 200},
		{"no-iss", "", "hello alice [read:all] via cli iss=" + introIssuer + " auth=", 200},
		{"no-exp", "", "hello alice [read:all] via cli iss=" + introIssuer + " auth=", 200},
		{"unknown", invalid("token is not active"), `{"error":"invalid_token","error_description":"token is not active"}`, 401},
		{"wrong-aud", invalid("token audience (aud) does not include this resource"), "", 401},
		{"no-aud", invalid("token has no audience (aud)"), "", 401},
		{"expired", invalid("token is expired"), "", 401},
		{"not-yet", invalid("token is not valid yet (nbf)"), "", 401},
		{"other-iss", invalid("token issuer is not accepted"), "", 401},
		{"no-sub", invalid("token has no subject (sub)"), "", 401},
		{"refresh", invalid("token is not an access token"), "", 401},
		{"exp-string", invalid("token has a claim of the wrong type"), "", 401},
		{"no-scope", `Bearer error="insufficient_scope", scope="read:all", ` + md + `, error_description="token lacks required scope: read:all"`,
			`{"error":"insufficient_scope","error_description":"token lacks required scope: read:all"}`, 403},
	} {
		t.Run(tc.token, func(t *testing.T) {
			r := get(t, c, "/respond", tc.token)
			if r.status != tc.status || r.challenge != tc.challenge || (tc.body != "" && r.body != tc.body) {
				t.Fatalf("got %d %q %s\nwant %d %q %s", r.status, r.challenge, r.body, tc.status, tc.challenge, tc.body)
			}
		})
	}
	t.Run("per-tool rule", func(t *testing.T) {
		ep.set("reader", map[string]any{"aud": []any{c.URL + "/mcp"}, "scope": "read:all"})
		ep.set("writer", map[string]any{"aud": []any{c.URL + "/mcp"}, "scope": "read:all write:all"})
		r := callTool(t, c, "reader", "write_file")
		want := `Bearer error="insufficient_scope", scope="read:all write:all", resource_metadata="` + c.URL + `/.well-known/oauth-protected-resource/mcp", error_description="token lacks scope write:all for tools/call write_file"`
		if r.status != 403 || r.challenge != want {
			t.Fatalf("write_file with read:all: %d %q, want 403 %q", r.status, r.challenge, want)
		}
		if r := callTool(t, c, "reader", "read_file"); r.status != 200 {
			t.Fatalf("read_file with read:all: %d %s", r.status, r.body)
		}
		if r := callTool(t, c, "writer", "write_file"); r.status != 200 {
			t.Fatalf("write_file with write:all: %d %s", r.status, r.body)
		}
	})
	t.Run("client authentication", func(t *testing.T) {
		// every call above authenticated with Basic (the default); /post
		// sends the credentials in the form
		basic := ep.used("basic")
		ep.set("post", map[string]any{"aud": []any{c.URL + "/post"}, "scope": "read:all"})
		if r := get(t, c, "/post", "post"); r.status != 200 {
			t.Fatalf("client_secret_post: %d %s", r.status, r.body)
		}
		if ep.used("post") != 1 || ep.used("basic") != basic || basic == 0 {
			t.Fatalf("calls by method: basic %d (then %d), post %d", basic, ep.used("basic"), ep.used("post"))
		}
	})
}

// An endpoint that gives no usable answer is no answer: 503 with
// Retry-After and no challenge (the token may be good), logged with why,
// never cached: the next request asks again, and once the endpoint answers
// the token is accepted.
func TestIntrospectionEndpointFailure(t *testing.T) {
	ep := startEndpoint(t)
	logPath := filepath.Join(t.TempDir(), "introspection.log")
	global := "\tlog introspection {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_auth.introspection\n\t}\n"
	// /slow gives up on a call after 300ms; the other routes wait the
	// default 5s, so that a loaded machine does not turn their failures
	// into timeouts
	site := strings.Replace(introSite(ep.url, ""), "\tmetrics /metrics", `	metrics /metrics
	route /slow {
		mcp_auth {
			issuer `+introIssuer+`
			audience http://127.0.0.1:{{PORT}}/slow
			introspection_url `+ep.url+`
			introspection_client_id `+introClient+`
			introspection_client_secret `+introSecretCF+`
			introspection_timeout 300ms
		}
		respond "hello"
	}
	route /badsecret {
		mcp_auth {
			issuer `+introIssuer+`
			audience http://127.0.0.1:{{PORT}}/badsecret
			introspection_url `+ep.url+`
			introspection_client_id `+introClient+`
			introspection_client_secret not-the-secret-4711
		}
		respond "hello"
	}`, 1)
	c := caddyrun.StartCaddyfile(t, global, site)
	const token = "opaque-token-under-test"
	ep.set(token, map[string]any{"aud": []any{c.URL + "/respond", c.URL + "/slow"}, "scope": "read:all"})
	errorsBefore := metric(t, c, `mcp_auth_introspections_total{result="error"}`)
	huge := `{"active":true,"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	for _, tc := range []struct {
		name, why string
		fail      func(w http.ResponseWriter, r *http.Request)
		path      string
	}{
		{"HTTP 500", "HTTP 500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) }, ""},
		{"connection closed", "EOF", func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		}, ""},
		{"not JSON", "not a JSON object", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }, ""},
		{"JSON array", "not a JSON object", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `[{"active":true}]`) }, ""},
		{"null", "not a JSON object: null", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `null`) }, ""},
		{"active not boolean", `no boolean \"active\"`, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"active":"true","sub":"alice"}`) }, ""},
		{"no active", `no boolean \"active\"`, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"sub":"alice"}`) }, ""},
		{"huge", "larger than 65536 bytes", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, huge) }, ""},
		{"redirect", "HTTP 302", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/introspect", http.StatusFound)
		}, ""},
		{"timeout", "context deadline exceeded", func(w http.ResponseWriter, r *http.Request) {
			// with the body read, the server notices the client leave
			io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second): // a guard
				t.Error("mcp_auth did not give up on a call past introspection_timeout")
			}
		}, "/slow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep.failWith(tc.fail)
			defer ep.failWith(nil)
			before := ep.calls.Load()
			for i := range 2 {
				path := tc.path
				if path == "" {
					path = "/respond"
				}
				r := get(t, c, path, token)
				if r.status != 503 || r.challenge != "" || r.header.Get("Retry-After") != "5" ||
					r.body != `{"error":"temporarily_unavailable","error_description":"the token could not be checked: the token introspection endpoint did not answer"}` {
					t.Fatalf("request %d: %d %q %q %s", i, r.status, r.challenge, r.header.Get("Retry-After"), r.body)
				}
			}
			if n := ep.calls.Load() - before; n != 2 {
				t.Fatalf("%d calls for 2 requests: a failure was cached", n)
			}
			logged, _ := os.ReadFile(logPath)
			if !strings.Contains(string(logged), "token introspection failed") || !strings.Contains(string(logged), tc.why) {
				t.Fatalf("log does not say %q:\n%s", tc.why, logged)
			}
		})
	}
	if r := get(t, c, "/respond", token); r.status != 200 {
		t.Fatalf("once the endpoint answers: %d %s", r.status, r.body)
	}
	if got := metric(t, c, `mcp_auth_introspections_total{result="error"}`) - errorsBefore; got != 20 {
		t.Errorf("mcp_auth_introspections_total{result=\"error\"} grew by %v, want 20", got)
	}
	t.Run("client refused", func(t *testing.T) {
		ep.set(token, map[string]any{"aud": []any{c.URL + "/badsecret"}})
		if r := get(t, c, "/badsecret", token); r.status != 503 {
			t.Fatalf("wrong client secret: %d %s", r.status, r.body)
		}
		logged, _ := os.ReadFile(logPath)
		if !strings.Contains(string(logged), "HTTP 401: the endpoint refused mcp_auth as its client") {
			t.Fatalf("log does not say the client was refused:\n%s", logged)
		}
	})
	logged, _ := os.ReadFile(logPath)
	if strings.Contains(string(logged), token) || strings.Contains(string(logged), "4711") || strings.Contains(string(logged), introSecret) {
		t.Fatalf("the log holds the token or a secret:\n%s", logged)
	}
}

// The cache, measured in calls to the endpoint per 1 000 requests of one
// token: 1 while the cache bound outlasts the requests; 100 at 10 requests
// a minute (of the introspection clock) with introspection_cache_ttl 1m; an
// entry never outlives the token's exp (plus leeway); an inactive answer is
// remembered for introspection_negative_ttl, then asked again.
func TestIntrospectionCache(t *testing.T) {
	ep := startEndpoint(t)
	advance := mcpauth.SkewIntrospectionClock(t)
	c := caddyrun.StartCaddyfile(t, "", introSite(ep.url, "\t\t\tintrospection_cache_ttl 1m\n"))
	aud := []any{c.URL + "/respond"}
	sample := func(s string) float64 { return metric(t, c, s) }

	t.Run("1000 requests within the bound: 1 call", func(t *testing.T) {
		ep.set("steady", map[string]any{"aud": aud, "scope": "read:all"})
		before, active, hits := ep.calls.Load(), sample(`mcp_auth_introspections_total{result="active"}`), sample(`mcp_auth_introspection_cache_hits_total{answer="active"}`)
		for i := range 1000 {
			if r := get(t, c, "/respond", "steady"); r.status != 200 {
				t.Fatalf("request %d: %d %s", i, r.status, r.body)
			}
		}
		if n := ep.calls.Load() - before; n != 1 {
			t.Fatalf("%d calls for 1000 requests of one token, want 1", n)
		}
		if d := sample(`mcp_auth_introspections_total{result="active"}`) - active; d != 1 {
			t.Errorf("introspections{active} grew by %v, want 1", d)
		}
		if d := sample(`mcp_auth_introspection_cache_hits_total{answer="active"}`) - hits; d != 999 {
			t.Errorf("cache hits{active} grew by %v, want 999", d)
		}
		t.Logf("1000 requests of one token within introspection_cache_ttl: %d introspection call(s)", ep.calls.Load()-before)
	})
	t.Run("1000 requests at 10 a minute, cache_ttl 1m: 100 calls", func(t *testing.T) {
		ep.set("paced", map[string]any{"aud": aud, "scope": "read:all", "exp": mcpauth.IntrospectionNow().Add(24 * time.Hour).Unix()})
		before := ep.calls.Load()
		for i := range 1000 {
			if r := get(t, c, "/respond", "paced"); r.status != 200 {
				t.Fatalf("request %d: %d %s", i, r.status, r.body)
			}
			advance(6 * time.Second)
		}
		if n := ep.calls.Load() - before; n != 100 {
			t.Fatalf("%d calls, want 100 (one per introspection_cache_ttl)", n)
		}
		t.Logf("1000 requests of one token over 100 min with introspection_cache_ttl 1m: %d introspection calls", ep.calls.Load()-before)
	})
	t.Run("an entry ends with the token's exp", func(t *testing.T) {
		// exp in 20s, leeway 30s: the cache_ttl of 1m is cut to ~50s
		ep.set("short", map[string]any{"aud": aud, "scope": "read:all", "exp": mcpauth.IntrospectionNow().Add(20 * time.Second).Unix()})
		before := ep.calls.Load()
		if r := get(t, c, "/respond", "short"); r.status != 200 {
			t.Fatalf("fresh: %d %s", r.status, r.body)
		}
		advance(35 * time.Second)
		if r := get(t, c, "/respond", "short"); r.status != 200 || ep.calls.Load()-before != 1 {
			t.Fatalf("after 35s: %d, %d calls", r.status, ep.calls.Load()-before)
		}
		advance(25 * time.Second)
		if r := get(t, c, "/respond", "short"); r.status != 401 || !strings.Contains(r.challenge, "token is expired") || ep.calls.Load()-before != 2 {
			t.Fatalf("after 60s: %d %q, %d calls", r.status, r.challenge, ep.calls.Load()-before)
		}
	})
	t.Run("negative answers expire", func(t *testing.T) {
		before, hits := ep.calls.Load(), sample(`mcp_auth_introspection_cache_hits_total{answer="inactive"}`)
		if r := get(t, c, "/respond", "later"); r.status != 401 || !strings.Contains(r.challenge, "token is not active") {
			t.Fatalf("unknown token: %d %q", r.status, r.challenge)
		}
		ep.set("later", map[string]any{"aud": aud, "scope": "read:all"})
		advance(9 * time.Second)
		if r := get(t, c, "/respond", "later"); r.status != 401 || ep.calls.Load()-before != 1 {
			t.Fatalf("within introspection_negative_ttl: %d, %d calls", r.status, ep.calls.Load()-before)
		}
		if d := sample(`mcp_auth_introspection_cache_hits_total{answer="inactive"}`) - hits; d != 1 {
			t.Errorf("cache hits{inactive} grew by %v, want 1", d)
		}
		advance(2 * time.Second)
		if r := get(t, c, "/respond", "later"); r.status != 200 || ep.calls.Load()-before != 2 {
			t.Fatalf("after introspection_negative_ttl: %d, %d calls", r.status, ep.calls.Load()-before)
		}
	})
}

// A burst of 50 concurrent requests with one fresh token makes one call:
// the endpoint answers only once all 50 have joined the call in flight.
func TestIntrospectionCoalescing(t *testing.T) {
	ep := startEndpoint(t)
	c := caddyrun.StartCaddyfile(t, "", introSite(ep.url, "\t\t\tintrospection_timeout 1m\n"))
	ep.set("burst", map[string]any{"aud": []any{c.URL + "/respond"}, "scope": "read:all"})
	const n = 50
	var joined atomic.Int64
	all := make(chan struct{})
	mcpauth.OnIntrospectionJoin(t, func() {
		if joined.Add(1) == n {
			close(all)
		}
	})
	hold := func() {
		select {
		case <-all:
		case <-time.After(30 * time.Second): // a guard, not a synchronisation
			t.Errorf("after 30s only %d requests joined the call", joined.Load())
		}
	}
	ep.hold.Store(&hold)
	before := ep.calls.Load()
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", c.URL+"/respond", nil)
			req.Header.Set("Authorization", "Bearer burst")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Fatalf("request %d: %d", i, s)
		}
	}
	if calls := ep.calls.Load() - before; calls != 1 || joined.Load() != n {
		t.Fatalf("%d endpoint calls for %d joined requests, want 1 for %d", calls, joined.Load(), n)
	}
	t.Logf("%d concurrent requests of one fresh token: 1 introspection call", n)
}

// One route serves JWTs and opaque tokens: a JWT is verified locally (the
// endpoint is never asked, even when the JWT is bad); anything else,
// three-segment strings that are no JWS included, is introspected.
func TestIntrospectionBesideJWT(t *testing.T) {
	as := startAuthServer(t)
	issuer := srvURL[as]
	ep := startEndpoint(t)
	c := caddyrun.StartCaddyfile(t, "", `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	route /respond {
		mcp_auth {
			issuer `+issuer+`
			audience http://127.0.0.1:{{PORT}}/respond
			introspection_url `+ep.url+`
			introspection_client_id `+introClient+`
			introspection_client_secret `+introSecretCF+`
		}
		respond "hello {http.auth.user.id} via {http.auth.user.client_id}"
	}
}
`)
	jwt, err := as.Mint("bob", "jwt-client", c.URL+"/respond", "read:all")
	if err != nil {
		t.Fatal(err)
	}
	ep.set("opaque", map[string]any{"iss": issuer, "aud": []any{c.URL + "/respond"}, "scope": "read:all"})
	for _, tc := range []struct {
		name, token string
		status      int
		body        string
		calls       int64
	}{
		{"JWT", jwt, 200, "hello bob via jwt-client", 0},
		{"JWT with a bad signature", jwt[:len(jwt)-4] + "AAAA", 401, "", 0},
		{"opaque", "opaque", 200, "hello alice via cli", 1},
		{"three segments, no JWS", "a.b.c", 401, `{"error":"invalid_token","error_description":"token is not active"}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ep.calls.Load()
			r := get(t, c, "/respond", tc.token)
			if r.status != tc.status || (tc.body != "" && r.body != tc.body) || ep.calls.Load()-before != tc.calls {
				t.Fatalf("%d %s (%q), %d calls; want %d %s, %d calls", r.status, r.body, r.challenge, ep.calls.Load()-before, tc.status, tc.body, tc.calls)
			}
		})
	}
}

// Configuration errors name the field.
func TestIntrospectionConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"introspection_client_id x", "introspection_client_id: needs introspection_url"},
		{"introspection_cache_ttl 1m", "introspection_cache_ttl: needs introspection_url"},
		{"introspection_url ftp://x\n\t\tintrospection_client_id a", `introspection_url: "ftp://x" is not an absolute http(s) URL`},
		{"introspection_url https://as.example/i\n\t\tintrospection_client_secret s", "introspection_client_secret: needs introspection_client_id"},
		{"introspection_url https://as.example/i\n\t\tintrospection_auth_method private_key_jwt", `introspection_auth_method: "private_key_jwt" is not client_secret_basic or client_secret_post`},
		{"introspection_url https://as.example/i\n\t\tintrospection_auth_method client_secret_post", "introspection_auth_method: client_secret_post needs introspection_client_id"},
		{"introspection_url https://as.example/i\n\t\tintrospection_timeout -1s", "must not be negative"},
	} {
		t.Run(tc.err, func(t *testing.T) {
			h := &mcpauth.Handler{}
			cf := "mcp_auth {\n\t\tissuer https://as.example\n\t\taudience https://mcp.example/mcp\n\t\t" + tc.in + "\n}"
			if err := unmarshal(h, cf); err != nil {
				t.Fatalf("parse: %v", err)
			}
			if err := h.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate: %v, want %q", err, tc.err)
			}
		})
	}
	if err := unmarshal(&mcpauth.Handler{}, "mcp_auth {\n\tintrospection_cache none\n}"); err == nil ||
		!strings.Contains(err.Error(), `introspection_cache: "none" is not off or a number of entries between 1 and 1000000`) {
		t.Fatalf("introspection_cache none: %v", err)
	}
}

func unmarshal(h *mcpauth.Handler, src string) error {
	return h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
}
