package mcpas_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"

	"github.com/caddymcp/caddymcp/mcpas"
)

// faultyStorage is Caddy's file storage, made to fail or to stall on
// demand (a storage module the tests configure).
type faultyStorage struct {
	Root string `json:"root"`
}

var (
	storageFails  atomic.Bool
	storageStalls atomic.Bool
)

func init() { caddy.RegisterModule(faultyStorage{}) }

func (faultyStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.mcpas_test_faulty", New: func() caddy.Module { return new(faultyStorage) }}
}

func (f *faultyStorage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.NextArg() {
		return d.ArgErr()
	}
	f.Root = d.Val()
	return nil
}

func (f *faultyStorage) CertMagicStorage() (certmagic.Storage, error) {
	return &faulty{FileStorage: &certmagic.FileStorage{Path: f.Root}}, nil
}

type faulty struct{ *certmagic.FileStorage }

func (f *faulty) check(ctx context.Context) error {
	if storageStalls.Load() {
		<-ctx.Done() // until the caller's bound
		return ctx.Err()
	}
	if storageFails.Load() {
		return errStorageDown
	}
	return nil
}

var errStorageDown = &net503{}

type net503 struct{}

func (*net503) Error() string { return "storage is down (test)" }

func (f *faulty) Store(ctx context.Context, k string, v []byte) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.FileStorage.Store(ctx, k, v)
}

func (f *faulty) Load(ctx context.Context, k string) ([]byte, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return f.FileStorage.Load(ctx, k)
}

func (f *faulty) Lock(ctx context.Context, name string) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.FileStorage.Lock(ctx, name)
}

// noRedirects is a client that shows each redirect instead of following it.
var noRedirects = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func getNR(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	return status(t, resp, err)
}

func status(t *testing.T, resp *http.Response, err error) (int, string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// TestConsentCannotBeSkipped: no code without the consent page having
// been answered by this browser (CSRF token and cookie), and no login
// callback without the state made at consent.
func TestConsentCannotBeSkipped(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	_, challenge := pkce()
	q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)

	// the provider sends the browser to the login (consent) page
	code, loc := getNR(t, s.issuer+"/authorize?"+q.Encode())
	if code/100 != 3 || !strings.Contains(loc, "/login?id=") {
		t.Fatalf("authorize: %d %s", code, loc)
	}
	lu, _ := url.Parse(loc)
	id := lu.Query().Get("id")
	// the provider's own callback before consent and login issues no code
	code, loc = getNR(t, s.issuer+"/authorize/callback?id="+url.QueryEscape(id))
	if strings.Contains(loc, "code=") {
		t.Fatalf("a code without consent: %d %s", code, loc)
	}
	// the consent form posted by another browser (no CSRF cookie), or with
	// another token, is refused
	b := newBrowser(t, redirect)
	_, page := b.get(s.issuer + "/authorize?" + q.Encode())
	form := formValues(page)
	form.Set("upstream", "corp")
	other := newBrowser(t, redirect)
	if resp, _ := other.post(s.issuer+"/consent", form); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("consent from a browser that was not shown the page: %d", resp.StatusCode)
	}
	forged := url.Values{"id": {form.Get("id")}, "csrf": {"forged"}, "upstream": {"corp"}}
	if resp, _ := b.post(s.issuer+"/consent", forged); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("consent with a forged CSRF token: %d", resp.StatusCode)
	}
	// a callback with a state nobody was given
	if code, _ := getNR(t, s.issuer+"/callback/corp?state="+strings.Repeat("A", 43)+"&code=x"); code != http.StatusBadRequest {
		t.Fatalf("callback with an unknown state: %d", code)
	}
	if code, _ := getNR(t, s.issuer+"/callback/corp?code=x"); code != http.StatusBadRequest {
		t.Fatalf("callback without state: %d", code)
	}
}

// TestStateSingleUseAndBoundToConsent: the login callback works once,
// only in the browser that consented, for the client it consented to.
func TestStateSingleUseAndBoundToConsent(t *testing.T) {
	s := startSite(t, "")
	redirectA, redirectB := "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"
	a, bc := s.register(t, redirectA), s.register(t, redirectB)
	_, challenge := pkce()

	// browser 1 consents to A and logs in upstream; it stops at the
	// server's callback
	b := newBrowser(t, redirectA)
	b.stopAt = []string{s.issuer + "/callback/"}
	resp, _ := s.loginUntil(t, b, s.authorizeQuery(a, redirectA, "tools:read", challenge), "test-user2")
	callbackA := resp.Header.Get("Location")
	if !strings.Contains(callbackA, "/callback/corp?") || !strings.Contains(callbackA, "state=") {
		t.Fatalf("no callback: %d %v", resp.StatusCode, resp.Header)
	}
	// another browser (a victim lured to the attacker's callback URL: login
	// CSRF) has no consent cookie for it
	victim := newBrowser(t, redirectA)
	if resp, _ := victim.get(callbackA); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("callback in a browser that did not consent: %d", resp.StatusCode)
	}
	// the state is consumed by that refusal too: a state is single-use
	if resp, _ := b.get(callbackA); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a used state: %d", resp.StatusCode)
	}

	// browser 1 consents to A again, then to B: its consent cookie is now
	// B's, and A's callback is refused
	resp, _ = s.loginUntil(t, b, s.authorizeQuery(a, redirectA, "tools:read", challenge), "test-user2")
	callbackA = resp.Header.Get("Location")
	b.redirect = redirectB
	resp, _ = s.loginUntil(t, b, s.authorizeQuery(bc, redirectB, "tools:read", challenge), "test-user2")
	callbackB := resp.Header.Get("Location")
	if resp, _ := b.get(callbackA); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a callback under another client's consent cookie: %d", resp.StatusCode)
	}
	// B's own callback works, once
	if resp, _ := b.get(callbackB); resp.StatusCode/100 != 3 || !strings.Contains(resp.Header.Get("Location"), "code=") {
		t.Fatalf("B's callback: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := b.get(callbackB); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a replayed callback: %d", resp.StatusCode)
	}
}

// TestRedirectURIExactMatch: a redirect URI that is not exactly one the
// client registered gets no redirect at all (port, path, host changed).
func TestRedirectURIExactMatch(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	_, challenge := pkce()
	for _, bad := range []string{"http://127.0.0.1:2/callback", "http://127.0.0.1:1/callback/x", "http://localhost:1/callback", "https://evil.example/callback"} {
		q := s.authorizeQuery(clientID, bad, "tools:read", challenge)
		code, loc := getNR(t, s.issuer+"/authorize?"+q.Encode())
		if strings.HasPrefix(loc, bad) || strings.Contains(loc, "/login?") || code/100 == 3 && !strings.HasPrefix(loc, "/") {
			t.Errorf("redirect_uri %s: %d %s", bad, code, loc)
		}
	}
	// the registered one beside another: the two readers could pick either
	q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)
	q.Add("redirect_uri", "http://127.0.0.1:2/callback")
	if code, loc := getNR(t, s.issuer+"/authorize?"+q.Encode()); code != http.StatusBadRequest || loc != "" {
		t.Errorf("redirect_uri twice: %d %s", code, loc)
	}
}

// TestCodeRedemption: PKCE mismatch, another client's code, an expired
// code, plain PKCE and no PKCE are refused.
func TestCodeRedemption(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID, other := s.register(t, redirect), s.register(t, redirect)
	verifier, challenge := pkce()
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier + "x"}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("PKCE mismatch: %d %v", code, out)
	}
	got = s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	form = url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {other}, "code_verifier": {verifier}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("another client's code: %d %v", code, out)
	}
	restore := mcpas.SetCodeLifetime(time.Nanosecond)
	got = s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	restore()
	form = url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Errorf("an expired code: %d %v", code, out)
	}
	for name, mod := range map[string]func(url.Values){
		"plain PKCE": func(q url.Values) { q.Set("code_challenge_method", "plain") },
		"no PKCE":    func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") },
	} {
		q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)
		mod(q)
		_, loc := getNR(t, s.issuer+"/authorize?"+q.Encode())
		if !strings.HasPrefix(loc, redirect) || !strings.Contains(loc, "error=invalid_request") || !strings.Contains(loc, "iss=") {
			t.Errorf("%s: %s", name, loc)
		}
	}
}

// TestResourceOutsideTheList: a resource this server does not issue
// tokens for is refused at both endpoints (invalid_target).
func TestResourceOutsideTheList(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	verifier, challenge := pkce()
	q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)
	q.Set("resource", "https://other.example/mcp")
	_, loc := getNR(t, s.issuer+"/authorize?"+q.Encode())
	if !strings.HasPrefix(loc, redirect) || !strings.Contains(loc, "error=invalid_target") {
		t.Errorf("authorize with a foreign resource: %s", loc)
	}
	// the scheme and host of a resource compare without case
	q.Set("resource", strings.Replace(s.resource, "http://", "HTTP://", 1))
	if _, loc := getNR(t, s.issuer+"/authorize?"+q.Encode()); !strings.Contains(loc, "/login?id=") {
		t.Errorf("authorize with the resource in upper case: %s", loc)
	}
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID},
		"code_verifier": {verifier}, "resource": {"https://other.example/mcp"}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusBadRequest || out["error"] != "invalid_target" {
		t.Errorf("token with a foreign resource: %d %v", code, out)
	}
}

// TestUpstreamIdentityRules: a user no allow rule matches is refused
// (access_denied to the client), and gets no code.
func TestUpstreamIdentityRules(t *testing.T) {
	redirect := "http://127.0.0.1:1/callback"
	_, challenge := pkce()
	// both users of the example provider are @zitadel.ch; a site that
	// allows only example.com refuses them
	s2 := startSiteAllow(t, "allow email_domain example.com")
	clientID := s2.register(t, redirect)
	got := s2.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	if got.Get("error") != "access_denied" || got.Get("code") != "" || got.Get("iss") != s2.issuer {
		t.Fatalf("a user outside the rules: %v", got)
	}
}

// TestStorageFaults: a storage that fails or stalls makes requests fail
// with 503 temporarily_unavailable within the storage bound, never a
// hang; once it is back, the server works.
func TestStorageFaults(t *testing.T) {
	defer mcpas.SetStorageTimeout(300 * time.Millisecond)()
	s := startSiteStorage(t, "storage mcpas_test_faulty "+t.TempDir())
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	verifier, challenge := pkce()
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	for name, flag := range map[string]*atomic.Bool{"down": &storageFails, "stalled": &storageStalls} {
		flag.Store(true)
		resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(`{"redirect_uris":["`+redirect+`"]}`))
		if code, _ := status(t, resp, err); code != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("register with storage %s: %d", name, code)
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}}
		if code, out := tokenRequest(t, s.issuer, form); code != http.StatusServiceUnavailable || out["error"] != "temporarily_unavailable" {
			t.Errorf("token with storage %s: %d %v", name, code, out)
		}
		flag.Store(false)
	}
	// the code was not consumed by the failed attempts
	form := url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusOK {
		t.Errorf("token once storage is back: %d %v", code, out)
	}
}

// TestRateLimitsAndBounds: registrations and token requests per client
// IP are limited (429 slow_down with Retry-After), and registered clients
// are bounded (503 once max_clients are kept).
func TestRateLimitsAndBounds(t *testing.T) {
	s := startSite(t, "register_rate 2/1h\n\t\ttoken_rate 3/1h")
	redirect := "http://127.0.0.1:1/callback"
	s.register(t, redirect)
	s.register(t, redirect)
	resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(`{"redirect_uris":["`+redirect+`"]}`))
	if code, _ := status(t, resp, err); code != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a third registration within the window: %d", code)
	}
	for i := 0; i < 3; i++ {
		if code, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {"y"}}); code == http.StatusTooManyRequests {
			t.Fatalf("request %d of 3 refused: %v", i+1, out)
		}
	}
	if code, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "client_id": {"y"}}); code != http.StatusTooManyRequests || out["error"] != "slow_down" {
		t.Errorf("a fourth token request within the window: %d %v", code, out)
	}
}

// TestMaxClients: a site that keeps two clients refuses a third.
func TestMaxClients(t *testing.T) {
	redirect := "http://127.0.0.1:1/callback"
	s2 := startSite(t, "max_clients 2")
	s2.register(t, redirect)
	s2.register(t, redirect)
	resp, err := http.Post(s2.issuer+"/register", "application/json", strings.NewReader(`{"redirect_uris":["`+redirect+`"]}`))
	if code, _ := status(t, resp, err); code != http.StatusServiceUnavailable {
		t.Errorf("a third client beyond max_clients 2: %d", code)
	}
}

// TestRegistrationChecks: what a client may register.
func TestRegistrationChecks(t *testing.T) {
	s := startSite(t, "register_rate 100/1m")
	for name, body := range map[string]string{
		"no redirect_uris":       `{}`,
		"http redirect off host": `{"redirect_uris":["http://evil.example/cb"]}`,
		"fragment":               `{"redirect_uris":["https://app.example/cb#x"]}`,
		"javascript scheme":      `{"redirect_uris":["javascript:alert(1)"]}`,
		"implicit grant":         `{"redirect_uris":["https://app.example/cb"],"grant_types":["implicit"]}`,
		"password grant":         `{"redirect_uris":["https://app.example/cb"],"grant_types":["password"]}`,
		"token response type":    `{"redirect_uris":["https://app.example/cb"],"response_types":["token"]}`,
		"unknown scope":          `{"redirect_uris":["https://app.example/cb"],"scope":"admin"}`,
		"private_key_jwt":        `{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}`,
		"not JSON":               `redirect_uris=x`,
	} {
		resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(body))
		if code, _ := status(t, resp, err); code != http.StatusBadRequest {
			t.Errorf("%s: %d", name, code)
		}
	}
	// a confidential client gets a secret and authenticates with it
	resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(`{"redirect_uris":["https://app.example/cb","com.example.app:/cb"],"token_endpoint_auth_method":"client_secret_basic"}`))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || c["client_secret"] == nil || c["client_secret_expires_at"] == nil {
		t.Fatalf("confidential client: %d %v", resp.StatusCode, c)
	}
	// metadata names the endpoints and what the server supports
	var md map[string]any
	resp, _ = http.Get(s.issuer + "/.well-known/oauth-authorization-server")
	_ = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if md["issuer"] != s.issuer || md["registration_endpoint"] != s.issuer+"/register" || md["authorization_response_iss_parameter_supported"] != true ||
		md["client_id_metadata_document_supported"] != true || fmt.Sprint(md["code_challenge_methods_supported"]) != "[S256]" ||
		fmt.Sprint(md["response_types_supported"]) != "[code]" || fmt.Sprint(md["grant_types_supported"]) != "[authorization_code refresh_token]" {
		t.Errorf("metadata: %v", md)
	}
	resp, _ = http.Get(s.issuer + "/.well-known/openid-configuration")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("OpenID discovery: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

// TestClientMetadataDocument: a client_id that is an https URL names its
// metadata document; the server fetches it (here from a loopback server,
// which only allow_private_metadata permits), shows its name, and issues
// tokens to it; a document that is not its URL's is refused, and without
// allow_private_metadata a loopback document is never fetched.
func TestClientMetadataDocument(t *testing.T) {
	redirect := "http://127.0.0.1:1/callback"
	var docURL string
	fetched := 0
	doc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched++
		id := docURL
		if r.URL.Path == "/liar.json" {
			id = "https://other.example/client.json"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"client_id":%q,"client_name":"CIMD client","redirect_uris":[%q]}`, id, redirect)
	}))
	defer doc.Close()
	docURL = doc.URL + "/client.json"
	defer mcpas.TrustForMetadata(doc.Client().Transport.(*http.Transport).TLSClientConfig)()
	t.Run("allowed", func(t *testing.T) {
		s := startSite(t, "allow_private_metadata")
		verifier, challenge := pkce()
		got := s.login(t, newBrowserNamed(t, redirect, "CIMD client"), docURL, "tools:read", "test-user2", challenge)
		status, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
			"redirect_uri": {redirect}, "client_id": {docURL}, "code_verifier": {verifier}})
		if status != http.StatusOK {
			t.Fatalf("token for a metadata-document client: %d %v", status, tok)
		}
		q := s.authorizeQuery(doc.URL+"/liar.json", redirect, "tools:read", challenge)
		if code, loc := getNR(t, s.issuer+"/authorize?"+q.Encode()); code != http.StatusBadRequest || loc != "" {
			t.Errorf("a document naming another client_id: %d %s", code, loc)
		}
	})
	t.Run("guarded", func(t *testing.T) {
		s := startSite(t, "")
		before := fetched
		_, challenge := pkce()
		q := s.authorizeQuery(docURL, redirect, "tools:read", challenge)
		if code, loc := getNR(t, s.issuer+"/authorize?"+q.Encode()); code != http.StatusBadRequest || loc != "" {
			t.Errorf("a loopback document without allow_private_metadata: %d %s", code, loc)
		}
		if fetched != before {
			t.Errorf("the loopback document was fetched")
		}
	})
}

// TestTwoResources: a server for two MCP servers needs the resource at
// the authorization request; the token requests may leave it out (the
// code and the refresh token name theirs) but may not name the other.
func TestTwoResources(t *testing.T) {
	s := startSite(t, "resource http://127.0.0.1:{{PORT}}/other")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	verifier, challenge := pkce()
	q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)
	q.Del("resource")
	if _, loc := getNR(t, s.issuer+"/authorize?"+q.Encode()); !strings.Contains(loc, "error=invalid_target") {
		t.Errorf("no resource with two configured: %s", loc)
	}
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")}, "redirect_uri": {redirect}, "client_id": {clientID},
		"code_verifier": {verifier}, "resource": {s.issuer + "/other"}}
	if code, out := tokenRequest(t, s.issuer, form); code != http.StatusBadRequest {
		t.Errorf("a code redeemed for the other resource: %d %v", code, out)
	}
	got = s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	form.Set("code", got.Get("code"))
	form.Del("resource")
	code, tok := tokenRequest(t, s.issuer, form)
	if code != http.StatusOK {
		t.Fatalf("a code redeemed without resource: %d %v", code, tok)
	}
	if c, _ := claims(t, tok["access_token"].(string)); fmt.Sprint(c["aud"]) != "["+s.resource+"]" && c["aud"] != s.resource {
		t.Errorf("aud: %v", c["aud"])
	}
	if code, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {clientID}}); code != http.StatusOK {
		t.Errorf("a refresh without resource: %d %v", code, out)
	}
}

// TestRememberedConsentIsTheUsers: a browser whose user consented before
// skips the consent page, but if someone else logs in upstream, they are
// shown the consent page; the user who consented goes straight through.
func TestRememberedConsentIsTheUsers(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	_, challenge := pkce()
	b := newBrowser(t, redirect)
	if got := s.login(t, b, clientID, "tools:read", "test-user2", challenge); got.Get("code") == "" {
		t.Fatalf("first login: %v", got)
	}
	q := s.authorizeQuery(clientID, redirect, "tools:read", challenge)
	// the same user again: no consent page, a code after the upstream login
	resp, page := b.get(s.issuer + "/authorize?" + q.Encode())
	if strings.Contains(page, "Allow access?") || !strings.Contains(page, "password") {
		t.Fatalf("a remembered consent still showed the consent page: %d", resp.StatusCode)
	}
	form := formValues(page)
	form.Set("username", "test-user2")
	form.Set("password", "verysecure")
	if resp, _ := b.post(s.up+"/login/username", form); !strings.Contains(resp.Header.Get("Location"), "code=") {
		t.Fatalf("the consenting user did not get a code: %d %v", resp.StatusCode, resp.Header)
	}
	// another user at this browser logs in upstream: asked for consent
	_, page = b.get(s.issuer + "/authorize?" + q.Encode())
	form = formValues(page)
	form.Set("username", "test-user@127.0.0.1")
	form.Set("password", "verysecure")
	resp, page = b.post(s.up+"/login/username", form)
	if strings.Contains(resp.Header.Get("Location"), "code=") || !strings.Contains(page, "Allow access?") {
		t.Fatalf("another user got through on a remembered consent: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestBrowserClientsCORS: a browser-based client may register and redeem
// codes from its own origin (CORS preflights answered; no cookies are
// involved at these endpoints).
func TestBrowserClientsCORS(t *testing.T) {
	s := startSite(t, "")
	for _, path := range []string{"/register", "/oauth/token"} {
		req, _ := http.NewRequest(http.MethodOptions, s.issuer+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") == "" {
			t.Errorf("preflight of %s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
}
