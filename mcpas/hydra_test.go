package mcpas_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/hydratest"
)

// hydraUpstream runs Ory Hydra v2.3.0 (CADDYMCP_HYDRA_BIN, in memory) as
// the upstream OpenID provider, with a login and consent app that logs in
// user and grants what was asked, putting claims in the ID token. It
// returns Hydra's issuer (with its trailing slash) and its admin URL.
func hydraUpstream(t *testing.T, user string, claims map[string]any) (issuer, admin string) {
	t.Helper()
	// the login and consent app Hydra sends the browser to
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := "http://" + ln.Addr().String()
	accept := func(w http.ResponseWriter, kind, challenge string, body any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPut, admin+"/admin/oauth2/auth/requests/"+kind+"/accept?"+kind+"_challenge="+url.QueryEscape(challenge), bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		var out struct {
			RedirectTo string `json:"redirect_to"`
		}
		if json.NewDecoder(resp.Body).Decode(&out) != nil || out.RedirectTo == "" {
			http.Error(w, "hydra did not accept", 502)
			return
		}
		http.Redirect(w, &http.Request{}, out.RedirectTo, http.StatusFound)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/login", func(w http.ResponseWriter, r *http.Request) {
		accept(w, "login", r.URL.Query().Get("login_challenge"), map[string]any{"subject": user})
	})
	mux.HandleFunc("/consent", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("consent_challenge")
		resp, err := http.Get(admin + "/admin/oauth2/auth/requests/consent?consent_challenge=" + url.QueryEscape(ch))
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		var cr struct {
			RequestedScope []string `json:"requested_scope"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&cr)
		resp.Body.Close()
		accept(w, "consent", ch, map[string]any{"grant_scope": cr.RequestedScope, "session": map[string]any{"id_token": claims}})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	issuer, admin = hydratest.Start(t, "this test logs in through Hydra", "URLS_LOGIN="+app+"/login", "URLS_CONSENT="+app+"/consent")
	return issuer, admin
}

// TestHydraUpstream: the whole flow with Ory Hydra as the upstream
// provider (discovery, PKCE and nonce to Hydra, its ID token verified),
// rules over the ID token's groups claim, and the scopes they grant.
func TestHydraUpstream(t *testing.T) {
	hissuer, admin := hydraUpstream(t, "alice", map[string]any{"email": "alice@example.com", "email_verified": true, "groups": []string{"mcp-users", "admins"}})
	// the site's port is known only once it runs: Hydra's client for its
	// callback is registered then, and the upstream block names it by a
	// client id chosen here (Hydra accepts a given client_id)
	cfg := func(port string) string {
		return fmt.Sprintf(`http://127.0.0.1:%[1]s {
	route /mcp* {
		mcp_auth {
			issuer http://127.0.0.1:%[1]s
			audience http://127.0.0.1:%[1]s/mcp
			scopes tools:read
		}
		respond "hello {http.auth.user.id}"
	}
	mcp_authorization_server {
		issuer http://127.0.0.1:%[1]s
		resource http://127.0.0.1:%[1]s/mcp
		scopes tools:read tools:write
		upstream hydra oidc %[2]s {
			client_id caddymcp-as-{{PORT}}
			client_secret hydra-client-secret-0123456789
		}
		allow upstream hydra claim groups mcp-users
		grant tools:read
		grant tools:write if claim groups admins
	}
}`, port, hissuer)
	}
	c := caddyrun.StartCaddyfile(t, "storage file_system "+t.TempDir(), cfg("{{PORT}}"))
	port := strconv.Itoa(c.Port)
	s := &site{c: c, issuer: "http://127.0.0.1:" + port, resource: "http://127.0.0.1:" + port + "/mcp"}
	body := fmt.Sprintf(`{"client_id":"caddymcp-as-%s","client_secret":"hydra-client-secret-0123456789","grant_types":["authorization_code"],
		"response_types":["code"],"scope":"openid email profile","redirect_uris":[%q],"token_endpoint_auth_method":"client_secret_basic"}`, port, s.issuer+"/callback/hydra")
	resp, err := http.Post(admin+"/admin/clients", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("hydra client: %v %v", err, resp)
	}
	resp.Body.Close()

	redirect := "http://127.0.0.1:1/callback"
	clientID := s.register(t, redirect)
	b := newBrowser(t, redirect)
	verifier, challenge := pkce()
	q := s.authorizeQuery(clientID, redirect, "tools:read tools:write", challenge)
	resp, page := b.get(s.issuer + "/authorize?" + q.Encode())
	form := formValues(page)
	form.Set("upstream", "hydra")
	resp, page = b.post(s.issuer+"/consent", form)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(resp.Header.Get("Location"), redirect) || loc.Query().Get("code") == "" {
		t.Fatalf("the flow through Hydra did not end at the client with a code: %d %v\n%s", resp.StatusCode, resp.Header, page)
	}
	status, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}, "resource": {s.resource}})
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	cl, _ := claims(t, tok["access_token"].(string))
	if cl["sub"] != "hydra:alice" || cl["scope"] != "tools:read tools:write" || cl["email"] != "alice@example.com" {
		t.Errorf("claims from Hydra's identity: %v", cl)
	}
	if code, body := callMCP(t, s.resource, tok["access_token"].(string)); code != http.StatusOK || !strings.Contains(body, "hydra:alice") {
		t.Errorf("mcp_auth: %d %s", code, body)
	}
}
