package mcpas_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// githubAPI is a local server that speaks the parts of GitHub's OAuth and
// REST API the github upstream uses (github.com cannot be reached from the
// test machines): the authorize page (which logs in login at once), the
// token endpoint (checking the client, the code and PKCE's presence), and
// /user, /user/emails, /user/orgs, /user/teams with its bearer token.
type githubAPI struct {
	url   string
	mu    sync.Mutex
	codes map[string]string // code -> redirect_uri
	seen  map[string]bool   // API paths asked
}

func startGitHub(t *testing.T, login string, orgs, teams []string, verified bool) *githubAPI {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &githubAPI{url: "http://" + ln.Addr().String(), codes: map[string]string{}, seen: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/login/oauth/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("client_id") != "gh-client" || q.Get("code_challenge_method") != "S256" || q.Get("state") == "" {
			http.Error(w, "bad authorize request", 400)
			return
		}
		g.mu.Lock()
		g.codes["gh-code"] = q.Get("redirect_uri")
		g.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code=gh-code&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("/login/oauth/access_token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		g.mu.Lock()
		_, ok := g.codes[r.PostForm.Get("code")]
		g.mu.Unlock()
		if !ok || r.PostForm.Get("client_id") != "gh-client" || r.PostForm.Get("client_secret") != "gh-secret" || r.PostForm.Get("code_verifier") == "" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"error":"bad_verification_code"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"gho_test","token_type":"bearer","scope":"read:user,user:email,read:org"}`)
	})
	api := func(path string, v any) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer gho_test" {
				http.Error(w, `{"message":"Bad credentials"}`, 401)
				return
			}
			g.mu.Lock()
			g.seen[path] = true
			g.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	api("/user", map[string]any{"id": 583231, "login": login, "name": "The Octocat"})
	api("/user/emails", []map[string]any{{"email": login + "@users.noreply.github.com", "primary": true, "verified": verified}})
	var o []map[string]any
	for _, org := range orgs {
		o = append(o, map[string]any{"login": org})
	}
	api("/user/orgs", o)
	var tm []map[string]any
	for _, team := range teams {
		org, slug, _ := strings.Cut(team, "/")
		tm = append(tm, map[string]any{"slug": slug, "organization": map[string]any{"login": org}})
	}
	api("/user/teams", tm)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return g
}

// TestGitHubUpstream: users of a GitHub organisation may log in, a team
// gets more scopes, anyone else is refused; sub is the GitHub user id. The
// site offers a second upstream beside GitHub (the consent page has a
// button for each).
func TestGitHubUpstream(t *testing.T) {
	for _, c := range []struct {
		name        string
		orgs, teams []string
		wantScope   string
		wantRefusal bool
	}{
		{"team member", []string{"acme"}, []string{"acme/platform"}, "tools:read tools:write", false},
		{"org member", []string{"acme"}, nil, "tools:read", false},
		{"outsider", []string{"other"}, nil, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGitHub(t, "octocat", c.orgs, c.teams, true)
			up := upstream(t)
			cfg := fmt.Sprintf(`http://127.0.0.1:{{PORT}} {
	mcp_authorization_server {
		issuer http://127.0.0.1:{{PORT}}
		resource http://127.0.0.1:{{PORT}}/mcp
		scopes tools:read tools:write
		upstream gh github {
			client_id gh-client
			client_secret gh-secret
			auth_url %[1]s/login/oauth/authorize
			token_url %[1]s/login/oauth/access_token
			api_url %[1]s
		}
		upstream corp oidc %[2]s {
			client_id caddymcp-as
			client_secret upstream-secret
			label "Example Corp"
		}
		allow github_org acme
		grant tools:read
		grant tools:write if github_team acme/platform
	}
}`, g.url, up)
			cd := caddyrun.StartCaddyfile(t, "storage file_system "+t.TempDir(), cfg)
			port := strconv.Itoa(cd.Port)
			s := &site{c: cd, issuer: "http://127.0.0.1:" + port, resource: "http://127.0.0.1:" + port + "/mcp"}
			redirect := "http://127.0.0.1:1/callback"
			clientID := s.register(t, redirect)
			b := newBrowser(t, redirect)
			verifier, challenge := pkce()
			q := s.authorizeQuery(clientID, redirect, "tools:read tools:write", challenge)
			_, page := b.get(s.issuer + "/authorize?" + q.Encode())
			// both upstreams are offered; the user picks GitHub
			if !strings.Contains(page, `value="gh">Allow and log in with gh`) || !strings.Contains(page, "Allow and log in with Example Corp") {
				t.Fatalf("the consent page does not offer both upstreams:\n%s", page)
			}
			form := formValues(page)
			form.Set("upstream", "gh")
			resp, page := b.post(s.issuer+"/consent", form)
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc.String(), redirect) {
				t.Fatalf("flow: %d %v %s", resp.StatusCode, resp.Header, page)
			}
			if c.wantRefusal {
				if loc.Query().Get("error") != "access_denied" {
					t.Fatalf("an outsider: %v", loc.Query())
				}
				return
			}
			status, tok := tokenRequest(t, s.issuer, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
				"redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}})
			if status != http.StatusOK {
				t.Fatalf("token: %d %v", status, tok)
			}
			cl, _ := claims(t, tok["access_token"].(string))
			if cl["sub"] != "gh:583231" || cl["scope"] != c.wantScope || cl["preferred_username"] != "octocat" {
				t.Errorf("claims: %v", cl)
			}
		})
	}
}
