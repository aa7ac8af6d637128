package authserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

func start(t *testing.T) (*Server, string) {
	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String()
	s, err := New(Options{Issuer: issuer, Scopes: []string{"read:all", "write:all"}, Clients: map[string]string{"demo": "demo-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	ts.Start()
	t.Cleanup(ts.Close)
	return s, issuer
}

func postForm(t *testing.T, u string, v url.Values) (int, map[string]any) {
	resp, err := http.PostForm(u, v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func verify(t *testing.T, issuer, tok string) jwt.MapClaims {
	kf, err := keyfunc.NewDefault([]string{issuer + "/jwks.json"})
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(tok, claims, kf.Keyfunc, jwt.WithIssuer(issuer), jwt.WithValidMethods([]string{"RS256"})); err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
	return claims
}

func TestClientCredentials(t *testing.T) {
	_, issuer := start(t)
	status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo"},
		"client_secret": {"demo-secret"}, "scope": {"read:all"}, "resource": {"http://localhost:3000/stdio/mcp"}})
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	c := verify(t, issuer, m["access_token"].(string))
	if c["sub"] != "demo" || c["aud"] != "http://localhost:3000/stdio/mcp" || c["scope"] != "read:all" || c["client_id"] != "demo" || c["jti"] == nil {
		t.Fatalf("claims %v", c)
	}
	if status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo"}, "client_secret": {"wrong"}}); status != 401 || m["error"] != "invalid_client" {
		t.Fatalf("wrong secret: %d %v", status, m)
	}
	if status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo"}, "client_secret": {"demo-secret"}, "scope": {"admin"}}); status != 400 || m["error"] != "invalid_scope" {
		t.Fatalf("unknown scope: %d %v", status, m)
	}
}

func TestAuthorizationCodePKCEAndRefresh(t *testing.T) {
	_, issuer := start(t)
	reg, _ := json.Marshal(map[string]any{"redirect_uris": []string{"http://127.0.0.1:1/cb"}, "token_endpoint_auth_method": "none"})
	resp, err := http.Post(issuer+"/register", "application/json", strings.NewReader(string(reg)))
	if err != nil {
		t.Fatal(err)
	}
	var client map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&client)
	resp.Body.Close()
	if resp.StatusCode != 201 || client["client_id"] == "" || client["client_secret"] != nil {
		t.Fatalf("register: %d %v", resp.StatusCode, client)
	}
	id := client["client_id"].(string)
	verifier := "a-verifier-that-is-long-enough-for-pkce-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authorize := func(extra url.Values) url.Values {
		q := url.Values{"response_type": {"code"}, "client_id": {id}, "redirect_uri": {"http://127.0.0.1:1/cb"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "state": {"st"},
			"scope": {"read:all"}, "resource": {"http://localhost:3000/stdio/mcp"}}
		for k, v := range extra {
			q[k] = v
		}
		resp, err := noRedirect.Get(issuer + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc.Query()
	}
	if q := authorize(url.Values{"code_challenge_method": {"plain"}}); q.Get("error") != "invalid_request" {
		t.Fatalf("plain PKCE accepted: %v", q)
	}
	q := authorize(nil)
	if q.Get("state") != "st" || q.Get("iss") != issuer || q.Get("code") == "" {
		t.Fatalf("authorize redirect: %v", q)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "client_id": {id},
		"redirect_uri": {"http://127.0.0.1:1/cb"}, "code_verifier": {"wrong-verifier"}}
	if status, m := postForm(t, issuer+"/token", form); status != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %v", status, m)
	}
	q = authorize(nil)
	form.Set("code", q.Get("code"))
	form.Set("code_verifier", verifier)
	status, m := postForm(t, issuer+"/token", form)
	if status != 200 {
		t.Fatalf("token: %d %v", status, m)
	}
	c := verify(t, issuer, m["access_token"].(string))
	if c["aud"] != "http://localhost:3000/stdio/mcp" || c["sub"] != "dev-user" || c["scope"] != "read:all" {
		t.Fatalf("claims %v", c)
	}
	if status, _ := postForm(t, issuer+"/token", form); status != 400 {
		t.Fatalf("code reused: %d", status)
	}
	status, m2 := postForm(t, issuer+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {m["refresh_token"].(string)}, "client_id": {id}})
	if status != 200 || verify(t, issuer, m2["access_token"].(string))["aud"] != "http://localhost:3000/stdio/mcp" {
		t.Fatalf("refresh: %d %v", status, m2)
	}
	if status, _ := postForm(t, issuer+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {m["refresh_token"].(string)}, "client_id": {id}}); status != 400 {
		t.Fatalf("refresh token reused: %d", status)
	}
}

func TestStateFileKeepsKeyAndClients(t *testing.T) {
	path := t.TempDir() + "/state.json"
	a, err := New(Options{Issuer: "http://localhost:9000", StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a)
	defer ts.Close()
	resp, err := http.Post(ts.URL+"/register", "application/json", strings.NewReader(`{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}`))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&c)
	resp.Body.Close()
	tok, _ := a.Mint("u", "c", "aud", "")

	b, err := New(Options{Issuer: "http://localhost:9000", StateFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if b.kid != a.kid || !b.key.Equal(a.key) {
		t.Fatal("signing key not kept")
	}
	if b.clients[c["client_id"].(string)] == nil {
		t.Fatal("registered client not kept")
	}
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return b.key.Public(), nil }); err != nil {
		t.Fatalf("old token does not verify with the kept key: %v", err)
	}
}

// register registers a client by DCR and returns the status and answer.
func register(t *testing.T, issuer string, meta map[string]any) (int, map[string]any) {
	t.Helper()
	reg, _ := json.Marshal(meta)
	resp, err := http.Post(issuer+"/register", "application/json", strings.NewReader(string(reg)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// The example authorization server is a good example, not an
// open door: CORS for the Inspector only, registered grant types, redirect
// URIs, resources, PKCE verifiers, refresh token reuse, a private state file.
func TestExampleServerIsNotAnOpenDoor(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String()
	state := t.TempDir() + "/state.json"
	// a state file (and a leftover temporary) readable by everyone
	if err := os.WriteFile(state+".tmp", []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Issuer: issuer, Scopes: []string{"read:all"}, Clients: map[string]string{"demo": "demo-secret"},
		StateFile: state, Resources: []string{"http://localhost:3000/stdio/mcp"}, CORSOrigins: []string{"http://localhost:6274"}})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = s
	ts.Start()
	t.Cleanup(ts.Close)
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi.Mode(), err)
	}

	for origin, want := range map[string]string{"http://localhost:6274": "http://localhost:6274", "https://evil.example": ""} {
		req, _ := http.NewRequest("OPTIONS", issuer+"/token", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("Origin %s: Access-Control-Allow-Origin %q, want %q", origin, got, want)
		}
	}

	for _, uri := range []string{"javascript:alert(1)", "data:text/html,x", "http://evil.example/cb", "ftp://x/cb", "https://x/cb#f", "https://user@x/cb"} {
		if status, m := register(t, issuer, map[string]any{"redirect_uris": []string{uri}, "token_endpoint_auth_method": "none"}); status != 400 {
			t.Errorf("redirect URI %s registered: %d %v", uri, status, m)
		}
	}
	if status, m := register(t, issuer, map[string]any{"redirect_uris": []string{"https://app.example/cb"}, "grant_types": []string{"client_credentials"}}); status != 400 {
		t.Errorf("client_credentials registered by DCR: %d %v", status, m)
	}
	status, cl := register(t, issuer, map[string]any{"redirect_uris": []string{"http://localhost:1/cb"}})
	if status != 201 {
		t.Fatalf("register: %d %v", status, cl)
	}
	id, secret := cl["client_id"].(string), cl["client_secret"].(string)
	// a self-registered client cannot get tokens of its own
	if status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret},
		"resource": {"http://localhost:3000/stdio/mcp"}}); status != 400 || m["error"] != "unauthorized_client" {
		t.Errorf("client_credentials for a DCR client: %d %v", status, m)
	}
	// nor the demo client a token for a resource this server does not serve
	if status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo"}, "client_secret": {"demo-secret"},
		"resource": {"https://bank.example/api"}}); status != 400 || m["error"] != "invalid_target" {
		t.Errorf("client_credentials for a foreign resource: %d %v", status, m)
	}
	// the demo client is not registered for the code flow
	if status, m := postForm(t, issuer+"/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {"demo"}, "client_secret": {"demo-secret"},
		"refresh_token": {"x"}}); status != 400 || m["error"] != "unauthorized_client" {
		t.Errorf("refresh_token for the demo client: %d %v", status, m)
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	code := func(verifier, resource string) string {
		sum := sha256.Sum256([]byte(verifier))
		q := url.Values{"response_type": {"code"}, "client_id": {id}, "redirect_uri": {"http://localhost:1/cb"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
			"resource": {resource}}
		resp, err := noRedirect.Get(issuer + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		return loc.Query().Get("code")
	}
	exchange := func(c, verifier, resource string) (int, map[string]any) {
		return postForm(t, issuer+"/token", url.Values{"grant_type": {"authorization_code"}, "code": {c}, "client_id": {id},
			"client_secret": {secret}, "code_verifier": {verifier}, "resource": {resource}})
	}
	if c := code("x", "https://bank.example/api"); c != "" {
		t.Errorf("authorize for a foreign resource issued a code")
	}
	short := "short-verifier"
	if status, m := exchange(code(short, "http://localhost:3000/stdio/mcp"), short, ""); status != 400 || m["error"] != "invalid_grant" {
		t.Errorf("a %d-character verifier: %d %v", len(short), status, m)
	}
	long := strings.Repeat("v", 50)
	// the audience is fixed at /authorize
	if status, m := exchange(code(long, ""), long, "http://localhost:3000/stdio/mcp"); status != 400 || m["error"] != "invalid_target" {
		t.Errorf("resource added at /token: %d %v", status, m)
	}
	status, tok := exchange(code(long, "http://localhost:3000/stdio/mcp"), long, "")
	if status != 200 {
		t.Fatalf("code exchange: %d %v", status, tok)
	}
	refresh := func(rt string) (int, map[string]any) {
		return postForm(t, issuer+"/token", url.Values{"grant_type": {"refresh_token"}, "client_id": {id}, "client_secret": {secret}, "refresh_token": {rt}})
	}
	first := tok["refresh_token"].(string)
	status, next := refresh(first)
	if status != 200 {
		t.Fatalf("refresh: %d %v", status, next)
	}
	// the rotated token comes back (stolen): the whole family is revoked
	if status, _ := refresh(first); status != 400 {
		t.Fatalf("reused refresh token: %d", status)
	}
	if status, m := refresh(next["refresh_token"].(string)); status != 400 {
		t.Fatalf("the family's newer refresh token still works after reuse: %d %v", status, m)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file after registrations: %v %v", fi.Mode(), err)
	}
}
