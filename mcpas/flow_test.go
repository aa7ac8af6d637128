package mcpas_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"

	_ "github.com/caddymcp/caddymcp"
	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// upstream runs zitadel/oidc's example OpenID provider (an OpenID
// Connect provider that is not ours, with a login form and two users) on a
// free port, with a client for the authorization server's callback.
func upstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	st := storage.NewStorage(storage.NewUserStore(issuer))
	srv := &http.Server{Handler: exampleop.SetupServer(issuer, st, nil, false)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return issuer
}

// jar is a browser's cookie store for one loopback host: like browsers,
// it keeps Secure cookies of http://127.0.0.1 (a secure context).
type jar struct {
	mu sync.Mutex
	c  map[string]*http.Cookie
}

func (j *jar) SetCookies(_ *url.URL, cs []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range cs {
		if c.MaxAge < 0 {
			delete(j.c, c.Name)
			continue
		}
		j.c[c.Name] = c
	}
}

func (j *jar) Cookies(u *url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []*http.Cookie
	for _, c := range j.c {
		out = append(out, &http.Cookie{Name: c.Name, Value: c.Value})
	}
	return out
}

// browser follows redirects until the client's redirect URI.
type browser struct {
	t        *testing.T
	http     *http.Client
	jar      *jar
	redirect string
	stopAt   []string // more URL prefixes not to follow
	// clientName is what the consent page must show (default: the
	// registered test client's name)
	clientName string
}

// newBrowserNamed is newBrowser for a client whose consent page shows
// name (not the registered test client's).
func newBrowserNamed(t *testing.T, redirect, name string) *browser {
	b := newBrowser(t, redirect)
	b.clientName = name
	return b
}

func newBrowser(t *testing.T, redirect string) *browser {
	b := &browser{t: t, jar: &jar{c: map[string]*http.Cookie{}}, redirect: redirect}
	b.http = &http.Client{Jar: b.jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		for _, p := range append([]string{b.redirect}, b.stopAt...) {
			if strings.HasPrefix(req.URL.String(), p) {
				return http.ErrUseLastResponse
			}
		}
		return nil
	}}
	return b
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func (b *browser) get(u string) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var hidden = regexp.MustCompile(`type="hidden" name="(\w+)" value="([^"]*)"`)

func formValues(html string) url.Values {
	v := url.Values{}
	for _, m := range hidden.FindAllStringSubmatch(html, -1) {
		v.Set(m[1], strings.ReplaceAll(m[2], "&amp;", "&"))
	}
	return v
}

type site struct {
	c        *caddyrun.Caddy
	issuer   string
	resource string
	up       string
}

func startSite(t *testing.T, extra string) *site {
	t.Helper()
	return startSiteWith(t, "storage file_system "+t.TempDir(), "allow email_domain zitadel.ch", extra)
}

// startSiteAllow is startSite with another allow rule.
func startSiteAllow(t *testing.T, allow string) *site {
	t.Helper()
	return startSiteWith(t, "storage file_system "+t.TempDir(), allow, "")
}

// startSiteStorage is startSite on another storage.
func startSiteStorage(t *testing.T, storage string) *site {
	t.Helper()
	return startSiteWith(t, storage, "allow email_domain zitadel.ch", "")
}

func startSiteWith(t *testing.T, global, allow, extra string) *site {
	t.Helper()
	s := &site{issuer: "http://127.0.0.1:{{PORT}}", up: upstream(t)}
	s.resource = s.issuer + "/mcp"
	s.c = caddyrun.StartCaddyfile(t, global, siteConfig("{{PORT}}", s.issuer, s.resource, s.up, allow, extra))
	port := strconv.Itoa(s.c.Port)
	s.issuer = strings.ReplaceAll(s.issuer, "{{PORT}}", port)
	s.resource = strings.ReplaceAll(s.resource, "{{PORT}}", port)
	// the upstream's client for this server's callback
	storage.RegisterClients(storage.WebClient("caddymcp-as", "upstream-secret", s.issuer+"/callback/corp"))
	return s
}

// siteConfig is a site with mcp_authorization_server and, at /mcp,
// mcp_auth in front of a respond handler that echoes the principal.
func siteConfig(port, issuer, resource, up, allow, extra string) string {
	return fmt.Sprintf(`http://127.0.0.1:%[1]s {
	route /mcp* {
		mcp_auth {
			issuer %[2]s
			audience %[3]s
			scopes tools:read
		}
		respond "hello {http.auth.user.id} {http.auth.user.scope}"
	}
	mcp_authorization_server {
		issuer %[2]s
		resource %[3]s
		scopes tools:read tools:write
		upstream corp oidc %[4]s {
			client_id caddymcp-as
			client_secret upstream-secret
			label "Example Corp"
		}
		%[6]s
		grant tools:read
		grant tools:write if email test-user@zitadel.ch
		%[5]s
	}
}`, port, issuer, resource, up, extra, allow)
}

func (s *site) register(t *testing.T, redirect string) string {
	t.Helper()
	body := `{"redirect_uris":["` + redirect + `"],"client_name":"Test MCP client","token_endpoint_auth_method":"none"}`
	resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusCreated || out["client_id"] == nil {
		t.Fatalf("registration: %d %v", resp.StatusCode, out)
	}
	return out["client_id"].(string)
}

func pkce() (verifier, challenge string) {
	verifier = strings.Repeat("v", 20) + strconv.FormatInt(time.Now().UnixNano(), 36) + strings.Repeat("x", 30)
	d := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(d[:])
}

// login runs the whole browser flow for user and returns the redirect to
// the client (its query: code, state, iss, or error).
func (s *site) login(t *testing.T, b *browser, clientID, scope, user, challenge string) url.Values {
	t.Helper()
	resp, page := s.loginUntil(t, b, s.authorizeQuery(clientID, b.redirect, scope, challenge), user)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode/100 != 3 || err != nil || !strings.HasPrefix(loc.String(), b.redirect) {
		t.Fatalf("the flow did not end at the client: %d %v\n%s", resp.StatusCode, resp.Header, page)
	}
	return loc.Query()
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query()
}

func (s *site) authorizeQuery(clientID, redirect, scope, challenge string) url.Values {
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "state": {"client-state-123"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "resource": {s.resource}}
	if scope != "" {
		q.Set("scope", scope)
	}
	return q
}

// loginUntil runs the browser flow from an authorization request until
// the browser stops (at the client's redirect URI, or one of stopAt).
func (s *site) loginUntil(t *testing.T, b *browser, q url.Values, user string) (*http.Response, string) {
	t.Helper()
	resp, page := b.get(s.issuer + "/authorize?" + q.Encode())
	if resp.StatusCode == http.StatusOK && strings.Contains(page, "Allow access?") {
		if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("the consent page may be framed: %v", resp.Header)
		}
		name := "Test MCP client"
		if b.clientName != "" {
			name = b.clientName
		}
		for _, want := range []string{name, q.Get("client_id"), q.Get("redirect_uri"), s.resource} {
			if !strings.Contains(page, want) {
				t.Fatalf("the consent page does not name %q:\n%s", want, page)
			}
		}
		form := formValues(page)
		form.Set("upstream", "corp")
		resp, page = b.post(s.issuer+"/consent", form)
	}
	if resp.StatusCode == http.StatusOK && strings.Contains(page, "password") {
		// the upstream's own login form
		form := formValues(page)
		form.Set("username", user)
		form.Set("password", "verysecure")
		resp, page = b.post(s.up+"/login/username", form)
	}
	return resp, page
}

func tokenRequest(t *testing.T, issuer string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(issuer+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode == http.StatusOK && !strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		t.Fatalf("token response without Cache-Control no-store: %v", resp.Header)
	}
	return resp.StatusCode, out
}

func claims(t *testing.T, token string) (map[string]any, jose.Header) {
	t.Helper()
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("access token is not an ES256 JWS: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &c); err != nil {
		t.Fatal(err)
	}
	return c, jws.Signatures[0].Header
}

func callMCP(t *testing.T, resource, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, resource, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLoginUpstreamTokenAndRefresh: a registered client, the consent page,
// the upstream's login, the code with iss, the token (at+jwt, aud the
// resource, scope as granted by the rules), mcp_auth accepting it, refresh
// rotation, and reuse of a rotated refresh token revoking the family.
func TestLoginUpstreamTokenAndRefresh(t *testing.T) {
	s := startSite(t, "")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	b := newBrowser(t, redirect)
	verifier, challenge := pkce()
	got := s.login(t, b, clientID, "tools:read tools:write", "test-user@127.0.0.1", challenge)
	if got.Get("error") != "" || got.Get("code") == "" || got.Get("state") != "client-state-123" || got.Get("iss") != s.issuer {
		t.Fatalf("authorization response: %v", got)
	}
	status, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}, "resource": {s.resource}})
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	at := tok["access_token"].(string)
	c, hdr := claims(t, at)
	if typ, _ := hdr.ExtraHeaders["typ"].(string); typ != "at+jwt" {
		t.Errorf("typ = %q, want at+jwt", typ)
	}
	aud := fmt.Sprint(c["aud"])
	if !strings.Contains(aud, s.resource) || strings.Contains(aud, clientID) || c["iss"] != s.issuer || c["client_id"] != clientID ||
		c["scope"] != "tools:read tools:write" || !strings.HasPrefix(fmt.Sprint(c["sub"]), "corp:") {
		t.Errorf("access token claims: %v", c)
	}
	if tok["id_token"] != nil || tok["scope"] != "tools:read tools:write" {
		t.Errorf("token response: %v", tok)
	}
	if code, body := callMCP(t, s.resource, at); code != http.StatusOK || !strings.Contains(body, "corp:") {
		t.Fatalf("mcp_auth refused the token: %d %s", code, body)
	}
	rt1 := tok["refresh_token"].(string)
	status, tok2 := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}, "client_id": {clientID}})
	if status != http.StatusOK || tok2["refresh_token"] == rt1 || tok2["refresh_token"] == nil {
		t.Fatalf("refresh: %d %v", status, tok2)
	}
	if c2, _ := claims(t, tok2["access_token"].(string)); c2["scope"] != "tools:read tools:write" || c2["jti"] == c["jti"] {
		t.Errorf("refreshed token claims: %v", c2)
	}
	// reuse of the rotated token: refused, and the family is revoked
	if status, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt1}, "client_id": {clientID}}); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %v", status, out)
	}
	if status, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2["refresh_token"].(string)}, "client_id": {clientID}}); status != http.StatusBadRequest {
		t.Fatalf("the family's newest refresh token still works after reuse: %d %v", status, out)
	}

	// a second user of the allowed domain gets only tools:read; the same
	// browser's session makes the consent page be shown again (another
	// user may be at this browser only after logging in upstream)
	b2 := newBrowser(t, redirect)
	verifier2, challenge2 := pkce()
	got = s.login(t, b2, clientID, "tools:read tools:write", "test-user2", challenge2)
	_, tok = tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier2}})
	if c, _ := claims(t, tok["access_token"].(string)); c["scope"] != "tools:read" {
		t.Errorf("second user's scopes: %v", c["scope"])
	}
	// a code is single-use; its replay revokes what it gave
	if status, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier2}}); status != http.StatusBadRequest || out["error"] != "invalid_grant" {
		t.Fatalf("a replayed code: %d %v", status, out)
	}
	if status, out := tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {clientID}}); status != http.StatusBadRequest {
		t.Fatalf("a replayed code's refresh token still works: %d %v", status, out)
	}
}

// TestMCPAuthNeedsNoHopToItself: mcp_auth in the same Caddy verifies the
// server's tokens with the keys the server holds, even where its metadata
// and keys cannot be fetched (here answered 404 before the module).
func TestMCPAuthNeedsNoHopToItself(t *testing.T) {
	up := upstream(t)
	cfg := strings.Replace(siteConfig("{{PORT}}", "http://127.0.0.1:{{PORT}}", "http://127.0.0.1:{{PORT}}/mcp", up, "allow email_domain zitadel.ch", ""),
		"\troute /mcp* {", "\t@keys path /keys /.well-known/*\n\trespond @keys 404\n\troute /mcp* {", 1)
	c := caddyrun.StartCaddyfile(t, "storage file_system "+t.TempDir()+"\n\torder respond first", cfg)
	port := strconv.Itoa(c.Port)
	s := &site{c: c, issuer: "http://127.0.0.1:" + port, resource: "http://127.0.0.1:" + port + "/mcp", up: up}
	storage.RegisterClients(storage.WebClient("caddymcp-as", "upstream-secret", s.issuer+"/callback/corp"))
	if code := fetchStatus(t, s.issuer+"/keys"); code != http.StatusNotFound {
		t.Fatalf("/keys is reachable (%d): the test would prove nothing", code)
	}
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	verifier, challenge := pkce()
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	status, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	if code, body := callMCP(t, s.resource, tok["access_token"].(string)); code != http.StatusOK {
		t.Fatalf("mcp_auth needed the keys over the network: %d %s", code, body)
	}
}

func fetchStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func scrape(t *testing.T, u string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// TestMetrics: registrations, logins and tokens are counted in Caddy's
// metrics registry.
func TestMetrics(t *testing.T) {
	up := upstream(t)
	cfg := strings.Replace(siteConfig("{{PORT}}", "http://127.0.0.1:{{PORT}}", "http://127.0.0.1:{{PORT}}/mcp", up, "allow email_domain zitadel.ch", ""),
		"\troute /mcp* {", "\tmetrics /metrics\n\troute /mcp* {", 1)
	c := caddyrun.StartCaddyfile(t, "storage file_system "+t.TempDir(), cfg)
	port := strconv.Itoa(c.Port)
	s := &site{c: c, issuer: "http://127.0.0.1:" + port, resource: "http://127.0.0.1:" + port + "/mcp", up: up}
	storage.RegisterClients(storage.WebClient("caddymcp-as", "upstream-secret", s.issuer+"/callback/corp"))
	before := scrape(t, s.issuer+"/metrics")
	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	resp, err := http.Post(s.issuer+"/register", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	verifier, challenge := pkce()
	got := s.login(t, newBrowser(t, redirect), clientID, "tools:read", "test-user2", challenge)
	_, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
	tokenRequest(t, s.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {clientID}})
	after := scrape(t, s.issuer+"/metrics")
	for series, want := range map[string]float64{
		`mcp_authorization_server_registrations_total{result="ok"}`:          1,
		`mcp_authorization_server_registrations_total{result="invalid"}`:     1,
		`mcp_authorization_server_logins_total{result="ok",upstream="corp"}`: 1,
		`mcp_authorization_server_tokens_total{grant="authorization_code"}`:  1,
		`mcp_authorization_server_tokens_total{grant="refresh_token"}`:       1,
	} {
		if d := after[series] - before[series]; d != want {
			t.Errorf("%s went up by %v, want %v", series, d, want)
		}
	}
}
