package mcpas_test

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// TestTwoInstancesShareStorage: two Caddy processes on the same storage,
// for the same issuer (as behind a balancer), are one authorization
// server: a client registered at A logs in through B, the upstream's
// callback lands at A, B redeems the code, A refreshes, and both publish
// the same keys, so mcp_auth on either verifies the other's tokens.
func TestTwoInstancesShareStorage(t *testing.T) {
	bin := os.Getenv("CADDYMCP_CADDY_BIN")
	if bin == "" {
		t.Skip("CADDYMCP_CADDY_BIN not set; `make test` builds Caddy and sets it")
	}
	dir := t.TempDir()
	a := startSiteWith(t, "storage file_system "+dir, "allow email_domain zitadel.ch", "")
	// B: the same site (same issuer, resource and upstream) on another port
	pb := caddyrun.FreePort(t)
	b := "http://127.0.0.1:" + strconv.Itoa(pb)
	cfg := "{\n\tadmin off\n\tstorage file_system " + dir + "\n}\n" +
		strings.Replace(siteConfig(strconv.Itoa(a.c.Port), a.issuer, a.resource, a.up, "allow email_domain zitadel.ch", ""),
			"http://127.0.0.1:"+strconv.Itoa(a.c.Port)+" {", b+" {", 1)
	caddyrun.RunProcess(t, bin, cfg, pb)

	redirect := "http://127.0.0.1:1/callback"
	clientID := a.register(t, redirect)
	// the browser talks to B; the upstream sends it back to the issuer's
	// callback, which A serves
	viaB := &site{c: a.c, issuer: b, resource: a.resource, up: a.up}
	br := newBrowser(t, redirect)
	verifier, challenge := pkce()
	got := viaB.login(t, br, clientID, "tools:read", "test-user2", challenge)
	if got.Get("code") == "" || got.Get("iss") != a.issuer {
		t.Fatalf("login through B: %v", got)
	}
	status, tok := tokenRequest(t, b, url.Values{"grant_type": {"authorization_code"}, "code": {got.Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
	if status != http.StatusOK {
		t.Fatalf("B redeems the code: %d %v", status, tok)
	}
	for _, resource := range []string{a.resource, b + "/mcp"} {
		if code, body := callMCP(t, resource, tok["access_token"].(string)); code != http.StatusOK {
			t.Errorf("%s refused B's token: %d %s", resource, code, body)
		}
	}
	status, tok2 := tokenRequest(t, a.issuer, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {clientID}})
	if status != http.StatusOK {
		t.Fatalf("A refreshes B's refresh token: %d %v", status, tok2)
	}
	if code, _ := callMCP(t, b+"/mcp", tok2["access_token"].(string)); code != http.StatusOK {
		t.Errorf("B refused A's token: %d", code)
	}
	keysA, keysB := fetch(t, a.issuer+"/keys"), fetch(t, b+"/keys")
	if keysA != keysB || !strings.Contains(keysA, `"kid"`) {
		t.Errorf("the instances publish different keys:\nA %s\nB %s", keysA, keysB)
	}
}

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
