package authserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
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
