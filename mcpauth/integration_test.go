package mcpauth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	_ "github.com/caddymcp/caddymcp"
	"github.com/caddymcp/caddymcp/internal/authserver"
	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// startAuthServer runs the example authorization server on a free port.
func startAuthServer(t *testing.T) *authserver.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String()
	srv, err := authserver.New(authserver.Options{
		Issuer: issuer, Scopes: []string{"read:all", "write:all"},
		Clients: map[string]string{"demo": "demo-secret"}, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = srv
	ts.Start()
	t.Cleanup(ts.Close)
	srvURL[srv] = issuer
	return srv
}

var srvURL = map[*authserver.Server]string{}

const gateway = `
http://127.0.0.1:{{PORT}} {
	oauth_protected_resource {
		authorization_servers ISSUER
	}
	route /respond {
		mcp_auth {
			issuer ISSUER
			audience http://127.0.0.1:{{PORT}}/respond
		}
		respond "hello {http.auth.user.id} [{http.auth.user.scope}] via {http.auth.user.client_id} auth={header.Authorization}"
	}
	route /mcp {
		mcp_auth {
			issuer ISSUER
			audience http://127.0.0.1:{{PORT}}/mcp
			scopes read:all
		}
		reverse_proxy UPSTREAM
	}
	route /stepup/mcp {
		mcp_auth {
			issuer ISSUER
			audience http://127.0.0.1:{{PORT}}/stepup/mcp
			scopes read:all write:all
		}
		reverse_proxy UPSTREAM
	}
}
`

type env struct {
	caddy  *caddyrun.Caddy
	as     *authserver.Server
	issuer string
}

func setup(t *testing.T) *env {
	as := startAuthServer(t)
	upstream := strings.TrimPrefix(mcpserver.StartHTTP(t, false), "http://")
	cf := strings.NewReplacer("ISSUER", srvURL[as], "UPSTREAM", upstream).Replace(gateway)
	c := caddyrun.StartCaddyfile(t, "", cf)
	return &env{caddy: c, as: as, issuer: srvURL[as]}
}

func TestRespondThroughCaddy(t *testing.T) {
	e := setup(t)
	resp := e.caddy.Do("GET", "/respond", nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantChallenge := `Bearer resource_metadata="` + e.caddy.URL + `/.well-known/oauth-protected-resource/respond"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != wantChallenge ||
		string(body) != `{"error":"unauthorized","error_description":"JWT token required"}` {
		t.Fatalf("no token: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	// the challenge's metadata URL serves the metadata of this resource
	md := e.caddy.Do("GET", "/.well-known/oauth-protected-resource/respond", nil)
	mdBody, _ := io.ReadAll(md.Body)
	md.Body.Close()
	if want := `{"resource":"` + e.caddy.URL + `/respond","authorization_servers":["` + e.issuer + `"]}`; string(mdBody) != want {
		t.Fatalf("metadata %s, want %s", mdBody, want)
	}

	tok, err := e.as.Mint("alice", "cli", e.caddy.URL+"/respond", "read:all write:all")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.caddy.Do("GET", "/respond", http.Header{"Authorization": {"Bearer " + tok}})
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "hello alice [read:all write:all] via cli auth="; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("valid token: %d %q, want %q", resp.StatusCode, body, want)
	}
	// a token for another resource is refused (RFC 8707 audience)
	other, _ := e.as.Mint("alice", "cli", e.caddy.URL+"/mcp", "read:all")
	resp = e.caddy.Do("GET", "/respond", http.Header{"Authorization": {"Bearer " + other}})
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("foreign audience: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// staticToken is an OAuthHandler that only ever presents one token.
type staticToken struct{ tok string }

func (s staticToken) TokenSource(context.Context) (oauth2.TokenSource, error) {
	if s.tok == "" {
		return nil, nil
	}
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: s.tok, TokenType: "Bearer"}), nil
}

func (s staticToken) Authorize(_ context.Context, _ *http.Request, resp *http.Response) error {
	resp.Body.Close()
	return fmt.Errorf("unauthorized: %d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
}

func listAndCall(t *testing.T, ctx context.Context, endpoint string, h auth.OAuthHandler) error {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "caddymcp-test", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, OAuthHandler: h}, nil)
	if err != nil {
		return err
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	found := false
	for _, tool := range tools.Tools {
		found = found || tool.Name == "test_simple_text"
	}
	if !found {
		return fmt.Errorf("tools/list lacks test_simple_text (%d tools)", len(tools.Tools))
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "test_simple_text"})
	if err != nil {
		return fmt.Errorf("tools/call: %w", err)
	}
	if len(res.Content) == 0 || res.IsError {
		return fmt.Errorf("tools/call result: %+v", res)
	}
	if txt, ok := res.Content[0].(*mcp.TextContent); !ok || txt.Text == "" {
		return fmt.Errorf("tools/call content: %#v", res.Content[0])
	}
	return nil
}

func TestGoSDKClientThroughReverseProxy(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	endpoint := e.caddy.URL + "/mcp"

	tok, _ := e.as.Mint("alice", "cli", endpoint, "read:all")
	if err := listAndCall(t, ctx, endpoint, staticToken{tok}); err != nil {
		t.Fatalf("with a valid token: %v", err)
	}
	err := listAndCall(t, ctx, endpoint, staticToken{})
	if err == nil || !strings.Contains(err.Error(), `401 Bearer resource_metadata="`+e.caddy.URL+`/.well-known/oauth-protected-resource/mcp", scope="read:all"`) {
		t.Fatalf("without a token: %v", err)
	}
	noScope, _ := e.as.Mint("alice", "cli", endpoint, "write:all")
	err = listAndCall(t, ctx, endpoint, staticToken{noScope})
	if err == nil || !strings.Contains(err.Error(), `403 Bearer error="insufficient_scope", scope="read:all"`) {
		t.Fatalf("without the scope: %v", err)
	}
}

// oauthClient is go-sdk's authorization code handler with dynamic client
// registration; the "browser" follows the auto-approving /authorize.
func oauthClient(t *testing.T, scopeFilter func([]string) []string) *auth.AuthorizationCodeHandler {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				ClientName:              "caddymcp e2e",
				RedirectURIs:            []string{"http://127.0.0.1:1/callback"},
				TokenEndpointAuthMethod: "none",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
			},
		},
		ScopeFilter: scopeFilter,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			req, _ := http.NewRequestWithContext(ctx, "GET", args.URL, nil)
			resp, err := noRedirect.Do(req)
			if err != nil {
				return nil, err
			}
			resp.Body.Close()
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusFound {
				return nil, fmt.Errorf("authorize: %d %v", resp.StatusCode, err)
			}
			q := loc.Query()
			if q.Get("error") != "" {
				return nil, errors.New("authorize: " + q.Get("error") + ": " + q.Get("error_description"))
			}
			return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestGoSDKOAuthFlowFromChallenge(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := listAndCall(t, ctx, e.caddy.URL+"/mcp", oauthClient(t, nil)); err != nil {
		t.Fatalf("OAuth flow: %v", err)
	}
}

func TestGoSDKStepUp(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The first authorization asks for read:all only, as a client that
	// starts small would; the 403 insufficient_scope makes it ask again.
	var rounds atomic.Int32
	filter := func(discovered []string) []string {
		if rounds.Add(1) == 1 {
			return []string{"read:all"}
		}
		return discovered
	}
	if err := listAndCall(t, ctx, e.caddy.URL+"/stepup/mcp", oauthClient(t, filter)); err != nil {
		t.Fatalf("step-up: %v", err)
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("authorization rounds = %d, want 2 (initial + step-up)", n)
	}
}

func TestAccessLogUserAndHugeHeader(t *testing.T) {
	as := startAuthServer(t)
	logFile := t.TempDir() + "/access.log"
	c := caddyrun.StartCaddyfile(t, "", `
http://127.0.0.1:{{PORT}} {
	log {
		output file `+logFile+`
	}
	mcp_auth {
		issuer `+srvURL[as]+`
		audience http://127.0.0.1:{{PORT}}/mcp
	}
	respond "ok"
}
`)
	tok, _ := as.Mint("log-user", "cli", c.URL+"/mcp", "")
	resp := c.Do("GET", "/mcp", http.Header{"Authorization": {"Bearer " + tok}})
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// a 1 MiB Authorization header never reaches the handler
	resp = c.Do("GET", "/mcp", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 1<<20)}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("1 MiB header: %d", resp.StatusCode)
	}
	c.Stop()
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := string(raw)
	if !strings.Contains(log, `"user_id":"log-user"`) {
		t.Fatalf("access log lacks the user id:\n%s", log)
	}
	if strings.Contains(log, tok) || strings.Contains(log, tok[:20]) {
		t.Fatal("access log contains the token")
	}
}
