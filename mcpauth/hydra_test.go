package mcpauth_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/hydratest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
	"github.com/caddymcp/caddymcp/mcpauth"
)

// hydra is a running Ory Hydra (`hydra serve all --dev`, in memory) with
// its default access token strategy: opaque tokens.
type hydra struct {
	t      *testing.T
	public string // the issuer, as Hydra names itself: with a trailing slash
	admin  string
}

// startHydra runs Hydra (internal/hydratest) with its default access
// token strategy: opaque tokens.
func startHydra(t *testing.T) *hydra {
	t.Helper()
	public, admin := hydratest.Start(t, "this test runs mcp_auth")
	return &hydra{t: t, public: public, admin: admin}
}

// client registers a client_credentials client through the admin API,
// allowed scope and the audiences, and returns its id and secret. extra
// members go into the registration (e.g. access_token_strategy).
func (h *hydra) client(scope string, audiences []string, extra map[string]any) (id, secret string) {
	h.t.Helper()
	reg := map[string]any{"grant_types": []string{"client_credentials"}, "scope": scope, "audience": audiences,
		"token_endpoint_auth_method": "client_secret_post"}
	for k, v := range extra {
		reg[k] = v
	}
	body, _ := json.Marshal(reg)
	resp, err := http.Post(h.admin+"/admin/clients", "application/json", strings.NewReader(string(body)))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != 201 || c.ID == "" {
		h.t.Fatalf("registering a client: %d %v", resp.StatusCode, err)
	}
	return c.ID, c.Secret
}

// token gets an access token by the client credentials grant; audience ""
// asks for none (Hydra takes `audience`, not RFC 8707's `resource`).
func (h *hydra) token(id, secret, scope, audience string) string {
	h.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {scope}}
	if audience != "" {
		form.Set("audience", audience)
	}
	resp, err := http.PostForm(h.public+"oauth2/token", form)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 || tok.AccessToken == "" {
		h.t.Fatalf("token for %s: %d %v", id, resp.StatusCode, err)
	}
	return tok.AccessToken
}

// revoke revokes a token at Hydra's RFC 7009 endpoint, as its client.
func (h *hydra) revoke(id, secret, token string) {
	h.t.Helper()
	resp, err := http.PostForm(h.public+"oauth2/revoke", url.Values{"client_id": {id}, "client_secret": {secret}, "token": {token}})
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		h.t.Fatalf("revoking: HTTP %d", resp.StatusCode)
	}
}

// mcpCall posts a 2026-07-28 tools/call to path.
func mcpCall(t *testing.T, c *caddyrun.Caddy, path, token, tool string) reply {
	t.Helper()
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	req, _ := http.NewRequest("POST", c.URL+path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`","arguments":{},`+meta+`}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", tool)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return reply{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body), resp.Header}
}

// mcp_auth against Ory Hydra v2.3.0's own opaque tokens and its real
// introspection endpoint (admin port, no client authentication), in front
// of mcp_stdio: accepted with the right audience and scopes (each client
// its own principal and child), refused without them, a per-tool rule, a
// Hydra JWT on the same route verified locally, and revocation: at once
// with introspection_cache off, within introspection_cache_ttl with it.
func TestHydraOpaqueTokens(t *testing.T) {
	h := startHydra(t)
	introspect := h.admin + "/admin/oauth2/introspect"
	route := func(path, extra string) string {
		return `
	route ` + path + ` {
		mcp_auth {
			issuer ` + h.public + `
			audience http://127.0.0.1:{{PORT}}` + path + `
			scopes read:all
			tool echo scopes write:all
			introspection_url ` + introspect + `
` + extra + `
		}
		mcp_stdio {
			command ` + mcpserver.Self(t) + `
			env ` + mcpserver.FakeEnv + ` mrtr
			env CADDYMCP_FAKE_USER {http.auth.user.id}
			child_era legacy
		}
	}`
	}
	c := caddyrun.StartCaddyfile(t, "", `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	metrics /metrics`+route("/mcp", "\t\t\tintrospection_cache_ttl 1m\n")+route("/nocache/mcp", "\t\t\tintrospection_cache off\n")+`
}
`)
	resource, nocache := c.URL+"/mcp", c.URL+"/nocache/mcp"
	calls := func() float64 {
		return metric(t, c, `mcp_auth_introspections_total{result="active"}`) + metric(t, c, `mcp_auth_introspections_total{result="inactive"}`)
	}

	readID, readSecret := h.client("read:all", []string{resource, nocache}, nil)
	writeID, writeSecret := h.client("read:all write:all", []string{resource}, nil)
	otherID, otherSecret := h.client("profile", []string{resource}, nil)
	read := h.token(readID, readSecret, "read:all", resource)
	write := h.token(writeID, writeSecret, "read:all write:all", resource)
	if !strings.HasPrefix(read, "ory_at_") || strings.Count(read, ".") != 1 {
		t.Fatalf("Hydra's default access token is not its opaque kind: %.12s…", read)
	}

	if r := mcpCall(t, c, "/mcp", "", "whoami"); r.status != 401 || !strings.HasPrefix(r.challenge, `Bearer resource_metadata="`) {
		t.Fatalf("no token: %d %q", r.status, r.challenge)
	}
	t.Run("accepted", func(t *testing.T) {
		r := mcpCall(t, c, "/mcp", read, "whoami")
		if r.status != 200 || !strings.Contains(r.body, "user="+readID) {
			t.Fatalf("read:all token, whoami: %d %s", r.status, r.body)
		}
		r = mcpCall(t, c, "/mcp", write, "whoami")
		if r.status != 200 || !strings.Contains(r.body, "user="+writeID) {
			t.Fatalf("write:all token, whoami (its own principal): %d %s", r.status, r.body)
		}
	})
	t.Run("per-tool rule", func(t *testing.T) {
		r := mcpCall(t, c, "/mcp", read, "echo")
		if r.status != 403 || !strings.Contains(r.challenge, `error="insufficient_scope", scope="read:all write:all"`) {
			t.Fatalf("read:all token, echo: %d %q", r.status, r.challenge)
		}
		if r := mcpCall(t, c, "/mcp", write, "echo"); r.status != 200 || !strings.Contains(r.body, "user="+writeID) {
			t.Fatalf("write:all token, echo: %d %s", r.status, r.body)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, token, challenge string
			status                 int
		}{
			{"no audience asked for", h.token(readID, readSecret, "read:all", ""), `error_description="token has no audience (aud)"`, 401},
			{"another resource's audience", h.token(readID, readSecret, "read:all", nocache), `error_description="token audience (aud) does not include this resource"`, 401},
			{"without the route's scope", h.token(otherID, otherSecret, "profile", resource), `error="insufficient_scope", scope="read:all"`, 403},
			{"not Hydra's", "ory_at_" + strings.Repeat("A", 43) + "." + strings.Repeat("B", 43), `error_description="token is not active"`, 401},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if r := mcpCall(t, c, "/mcp", tc.token, "whoami"); r.status != tc.status || !strings.Contains(r.challenge, tc.challenge) {
					t.Fatalf("%d %q, want %d with %s", r.status, r.challenge, tc.status, tc.challenge)
				}
			})
		}
	})
	t.Run("a Hydra JWT on the same route", func(t *testing.T) {
		jwtID, jwtSecret := h.client("read:all", []string{resource}, map[string]any{"access_token_strategy": "jwt"})
		jwt := h.token(jwtID, jwtSecret, "read:all", resource)
		if strings.Count(jwt, ".") != 2 {
			t.Fatalf("not a JWT: %.12s…", jwt)
		}
		// Hydra makes its ID-token key pair on the first request for its
		// JWKS (an RSA key: seconds on a busy machine, past mcp_auth's 2 s
		// wait for a fetch in flight): the test asks for it first, as any
		// client of Hydra would have long before
		resp, err := http.Get(h.public + ".well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		before := calls()
		if r := mcpCall(t, c, "/mcp", jwt, "whoami"); r.status != 200 || !strings.Contains(r.body, "user="+jwtID) {
			t.Fatalf("JWT: %d %s", r.status, r.body)
		}
		if d := calls() - before; d != 0 {
			t.Fatalf("the JWT was introspected (%v calls): it is verified locally", d)
		}
	})
	t.Run("revoked, no cache: refused at once", func(t *testing.T) {
		tok := h.token(readID, readSecret, "read:all", nocache)
		if r := mcpCall(t, c, "/nocache/mcp", tok, "whoami"); r.status != 200 {
			t.Fatalf("before revocation: %d %s", r.status, r.body)
		}
		h.revoke(readID, readSecret, tok)
		if r := mcpCall(t, c, "/nocache/mcp", tok, "whoami"); r.status != 401 || !strings.Contains(r.challenge, `error_description="token is not active"`) {
			t.Fatalf("after revocation: %d %q", r.status, r.challenge)
		}
	})
	t.Run("revoked, cached: refused within introspection_cache_ttl", func(t *testing.T) {
		advance := mcpauth.SkewIntrospectionClock(t)
		tok := h.token(readID, readSecret, "read:all", resource)
		if r := mcpCall(t, c, "/mcp", tok, "whoami"); r.status != 200 {
			t.Fatalf("before revocation: %d %s", r.status, r.body)
		}
		h.revoke(readID, readSecret, tok)
		before := calls()
		advance(59 * time.Second)
		if r := mcpCall(t, c, "/mcp", tok, "whoami"); r.status != 200 || calls() != before {
			t.Fatalf("revoked, 59s later (the answer cached for 1m): %d, %v calls", r.status, calls()-before)
		}
		advance(2 * time.Second)
		if r := mcpCall(t, c, "/mcp", tok, "whoami"); r.status != 401 || !strings.Contains(r.challenge, `error_description="token is not active"`) || calls() != before+1 {
			t.Fatalf("revoked, 61s later: %d %q, %v calls", r.status, r.challenge, calls()-before)
		}
	})
}
