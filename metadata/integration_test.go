package metadata

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func expect(t *testing.T, resp *http.Response, status int, headers map[string]string, wantBody string) {
	t.Helper()
	got := body(t, resp)
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %q)", resp.StatusCode, status, got)
	}
	for k, v := range headers {
		if g := resp.Header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	if wantBody != "-" && got != wantBody {
		t.Errorf("body =\n%s\nwant\n%s", got, wantBody)
	}
}

// referenceSite serves the reference's document, but for
// bearer_methods_supported: the reference advertises header, body and query
// and reads only the header; body and query are refused here (MCP clients
// send the token in the Authorization header, the only place mcp_auth reads it).
const referenceSite = `
http://localhost:{{PORT}}, http://127.0.0.1:{{PORT}} {
	oauth_protected_resource /.well-known/oauth-protected-resource/stdio/mcp {
		resource http://localhost:3000/stdio/mcp
		authorization_servers http://localhost:9000
		bearer_methods_supported header
		resource_documentation http://localhost:3000/stdio/docs
		resource_policy_uri http://localhost:3000/stdio/policies
	}
	oauth_protected_resource {
		authorization_servers http://localhost:9000
		scopes_supported read:all
		cors https://app.example.com https://inspector.example.com
		max_age 10m
	}
	respond "next handler" 200
}
`

const referenceDoc = `{"resource":"http://localhost:3000/stdio/mcp","authorization_servers":["http://localhost:9000"],` +
	`"bearer_methods_supported":["header"],"resource_documentation":"http://localhost:3000/stdio/docs",` +
	`"resource_policy_uri":"http://localhost:3000/stdio/policies"}`

func TestThroughCaddy(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", referenceSite)
	origin := "http://127.0.0.1:" + itoa(c.Port)

	t.Run("reference GET", func(t *testing.T) {
		resp := c.Do("GET", "/.well-known/oauth-protected-resource/stdio/mcp", nil)
		expect(t, resp, 200, map[string]string{
			"Content-Type":                "application/json",
			"Cache-Control":               "public, max-age=3600",
			"Access-Control-Allow-Origin": "*",
		}, referenceDoc)
	})
	t.Run("reference HEAD", func(t *testing.T) {
		resp := c.Do("HEAD", "/.well-known/oauth-protected-resource/stdio/mcp", nil)
		expect(t, resp, 200, map[string]string{
			"Content-Type":   "application/json",
			"Content-Length": itoa(len(referenceDoc)),
		}, "")
	})
	t.Run("preflight", func(t *testing.T) {
		resp := c.Do("OPTIONS", "/.well-known/oauth-protected-resource/stdio/mcp", http.Header{
			"Origin":                         {"https://anywhere.example"},
			"Access-Control-Request-Method":  {"GET"},
			"Access-Control-Request-Headers": {"mcp-protocol-version"},
		})
		expect(t, resp, 204, map[string]string{
			"Access-Control-Allow-Origin":  "*",
			"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
			"Access-Control-Allow-Headers": "mcp-protocol-version",
			"Content-Type":                 "",
		}, "")
	})
	t.Run("POST is 405 with Allow", func(t *testing.T) {
		resp := c.Do("POST", "/.well-known/oauth-protected-resource/stdio/mcp", nil)
		expect(t, resp, 405, map[string]string{"Allow": "GET, HEAD, OPTIONS"}, "-")
	})
	t.Run("DELETE is 405", func(t *testing.T) {
		resp := c.Do("DELETE", "/.well-known/oauth-protected-resource/x", nil)
		expect(t, resp, 405, map[string]string{"Allow": "GET, HEAD, OPTIONS"}, "-")
	})
	t.Run("other paths reach the next handler", func(t *testing.T) {
		for _, p := range []string{"/stdio/mcp", "/.well-known/oauth-protected-resourcex", "/"} {
			expect(t, c.Do("GET", p, nil), 200, nil, "next handler")
		}
	})

	derived := []struct{ path, resource string }{
		{"/.well-known/oauth-protected-resource", origin},
		{"/.well-known/oauth-protected-resource/", origin + "/"},
		{"/.well-known/oauth-protected-resource/mcp", origin + "/mcp"},
		{"/.well-known/oauth-protected-resource/remote/mcp", origin + "/remote/mcp"},
		{"/.well-known/oauth-protected-resource/remote/mcp/", origin + "/remote/mcp/"},
	}
	for _, d := range derived {
		t.Run("derived "+d.path, func(t *testing.T) {
			resp := c.Do("GET", d.path, nil)
			expect(t, resp, 200, map[string]string{"Cache-Control": "public, max-age=600", "Vary": "Origin"},
				`{"resource":"`+d.resource+`","authorization_servers":["http://localhost:9000"],"scopes_supported":["read:all"]}`)
		})
	}
	t.Run("derived host follows Host header", func(t *testing.T) {
		req, _ := http.NewRequest("GET", c.URL+"/.well-known/oauth-protected-resource/mcp", nil)
		req.Host = "localhost:" + itoa(c.Port)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		expect(t, resp, 200, nil, `{"resource":"http://localhost:`+itoa(c.Port)+`/mcp","authorization_servers":["http://localhost:9000"],"scopes_supported":["read:all"]}`)
	})
	t.Run("forwarded headers ignored from untrusted peers", func(t *testing.T) {
		resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{
			"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"evil.example"},
		})
		expect(t, resp, 200, nil, `{"resource":"`+origin+`/mcp","authorization_servers":["http://localhost:9000"],"scopes_supported":["read:all"]}`)
	})
	t.Run("CORS echoes a listed origin", func(t *testing.T) {
		resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{"Origin": {"https://inspector.example.com"}})
		expect(t, resp, 200, map[string]string{"Access-Control-Allow-Origin": "https://inspector.example.com", "Vary": "Origin"}, "-")
	})
	t.Run("CORS refuses an unlisted origin", func(t *testing.T) {
		resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{"Origin": {"https://evil.example"}})
		expect(t, resp, 200, map[string]string{"Access-Control-Allow-Origin": ""}, "-")
	})
	t.Run("preflight from a listed origin", func(t *testing.T) {
		resp := c.Do("OPTIONS", "/.well-known/oauth-protected-resource/mcp", http.Header{
			"Origin": {"https://app.example.com"}, "Access-Control-Request-Method": {"GET"},
		})
		expect(t, resp, 204, map[string]string{"Access-Control-Allow-Origin": "https://app.example.com"}, "")
	})
}

func TestTrustedProxyForwardedHeaders(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, `servers {
		trusted_proxies static 127.0.0.1/32
	}`, `
http://127.0.0.1:{{PORT}} {
	oauth_protected_resource {
		authorization_servers https://auth.example.com
	}
}
`)
	resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{
		"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"mcp.example.com"},
	})
	expect(t, resp, 200, nil, `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"]}`)
	// the value the trusted proxy added is the last one; a client's comes first
	resp = c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{
		"X-Forwarded-Proto": {"http, https"}, "X-Forwarded-Host": {"evil.example, mcp.example.com"},
	})
	expect(t, resp, 200, nil, `{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"]}`)
	resp = c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{
		"X-Forwarded-Host": {"evil.example", "mcp.example.com"},
	})
	expect(t, resp, 200, nil, `{"resource":"http://mcp.example.com/mcp","authorization_servers":["https://auth.example.com"]}`)
	// a forwarded host that is not one is ignored
	resp = c.Do("GET", "/.well-known/oauth-protected-resource/mcp", http.Header{
		"X-Forwarded-Host": {"evil.example/x#"},
	})
	expect(t, resp, 200, nil, `{"resource":"http://127.0.0.1:`+itoa(c.Port)+`/mcp","authorization_servers":["https://auth.example.com"]}`)
}

// A derived resource never holds dot segments or a fragment, and
// the response says what it varies on.
func TestDerivedResourceIsClean(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `
http://127.0.0.1:{{PORT}} {
	oauth_protected_resource {
		authorization_servers https://auth.example.com
	}
	respond "not metadata" 404
}
`)
	addr := "127.0.0.1:" + itoa(c.Port)
	for _, path := range []string{
		"/.well-known/oauth-protected-resource/../../stdio/mcp",
		"/.well-known/oauth-protected-resource/a/./b",
		"/.well-known/oauth-protected-resource/%2e%2e/x",
		"/.well-known/oauth-protected-resource/mcp%23frag",
		"/.well-known/oauth-protected-resource/mcp%3Fq=1",
	} {
		status, body := rawGet(t, addr, "127.0.0.1", path)
		if status != 404 || strings.Contains(body, `"resource"`) {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
	resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", nil)
	resp.Body.Close()
	if v := strings.Join(resp.Header.Values("Vary"), ", "); !strings.Contains(v, "Host") || !strings.Contains(v, "X-Forwarded-Host") {
		t.Errorf("Vary %q", v)
	}
}

// rawGet sends a GET with the path exactly as given.
func rawGet(t *testing.T, addr, host, path string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestJSONConfig(t *testing.T) {
	c := caddyrun.StartJSON(t, `{
	"apps": {"http": {"servers": {"srv0": {
		"listen": ["127.0.0.1:{{PORT}}"],
		"automatic_https": {"disable": true},
		"routes": [{"handle": [{
			"handler": "oauth_protected_resource",
			"resource": "{http.request.scheme}://{http.request.host}/api/mcp",
			"authorization_servers": ["https://auth.example.com"],
			"resource_name": "Example",
			"field": {"resource_name#de": "Beispiel", "x_extra": {"b": 1, "a": [true]}},
			"tls_client_certificate_bound_access_tokens": true,
			"max_age": -1
		}]}]
	}}}}
}`)
	resp := c.Do("GET", "/.well-known/oauth-protected-resource/anything", nil)
	expect(t, resp, 200, map[string]string{"Cache-Control": "no-store"},
		`{"resource":"http://127.0.0.1/api/mcp","authorization_servers":["https://auth.example.com"],"resource_name":"Example",`+
			`"tls_client_certificate_bound_access_tokens":true,"resource_name#de":"Beispiel","x_extra":{"a":[true],"b":1}}`)
}

func TestProvisionErrorThroughCaddy(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `http://127.0.0.1:{{PORT}} {
	respond ok
}`)
	err := c.TryLoadCaddyfile("", `http://127.0.0.1:{{PORT}} {
	oauth_protected_resource {
		authorization_servers not-a-url
	}
}`)
	if err == nil || !contains(err.Error(), "authorization_servers[0]") {
		t.Fatalf("load error = %v, want it to name authorization_servers[0]", err)
	}
}

// Metadata that no MCP client could use, or that claims what mcp_auth
// does not do, is refused at load, with an error naming the field, from a
// Caddyfile and from JSON; `field` is no way around it.
func TestRefusesWhatTheGatewayCannotHonour(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `http://127.0.0.1:{{PORT}} {
	respond ok
}`)
	const (
		noServer = "authorization_servers: at least one authorization server is required (RFC 9728 section 2; MCP clients find the authorization server only here)"
		query    = `bearer_methods_supported: "query": MCP forbids access tokens in the query string, and mcp_auth reads only the Authorization header`
		bodyTok  = `bearer_methods_supported: "body": MCP clients must send the token in the Authorization header, the only place mcp_auth reads it`
		dpop     = "dpop_bound_access_tokens_required: nothing in caddymcp verifies DPoP proofs (mcp_auth accepts Bearer tokens only)"
	)
	for _, tt := range []struct {
		name, options string
		want          string // the end of the load error
	}{
		{"no authorization_servers", "resource_name x", noServer},
		{"authorization_servers only through field", "field authorization_servers `[\"https://auth.example.com\"]`",
			`field authorization_servers: duplicates the named member "authorization_servers"; set it with its own option`},
		{"query", "authorization_servers https://auth.example.com\n\t\tbearer_methods_supported header query", query},
		{"body", "authorization_servers https://auth.example.com\n\t\tbearer_methods_supported body", bodyTok},
		{"the reference's three", "authorization_servers https://auth.example.com\n\t\tbearer_methods_supported header body query", bodyTok},
		{"bearer methods through field", "authorization_servers https://auth.example.com\n\t\tfield bearer_methods_supported `[\"query\"]`",
			`field bearer_methods_supported: duplicates the named member "bearer_methods_supported"; set it with its own option`},
		{"dpop required", "authorization_servers https://auth.example.com\n\t\tdpop_bound_access_tokens_required", dpop},
		{"dpop required through field", "authorization_servers https://auth.example.com\n\t\tfield dpop_bound_access_tokens_required true",
			`field dpop_bound_access_tokens_required: duplicates the named member "dpop_bound_access_tokens_required"; set it with its own option`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := c.TryLoadCaddyfile("", "http://127.0.0.1:{{PORT}} {\n\toauth_protected_resource {\n\t\t"+tt.options+"\n\t}\n}")
			if err == nil || !strings.HasSuffix(err.Error(), ": "+tt.want) {
				t.Fatalf("load error = %v\nwant it to end with %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, members, want string }{
		{"JSON empty authorization_servers", `"authorization_servers": []`, noServer},
		{"JSON query", `"authorization_servers": ["https://auth.example.com"], "bearer_methods_supported": ["query"]`, query},
		{"JSON dpop required", `"authorization_servers": ["https://auth.example.com"], "dpop_bound_access_tokens_required": true`, dpop},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := `{"admin": {"disabled": true}, "apps": {"http": {"servers": {"srv0": {
				"listen": ["127.0.0.1:` + itoa(c.Port) + `"],
				"routes": [{"handle": [{"handler": "oauth_protected_resource", ` + tt.members + `}]}]}}}}}`
			err := caddy.Load([]byte(cfg), true)
			if err == nil || !strings.HasSuffix(err.Error(), ": "+tt.want) {
				t.Fatalf("load error = %v\nwant it to end with %q", err, tt.want)
			}
		})
	}
}

// Options that advertise what mcp_auth does not verify load, with a
// warning at provision naming the option (the resource behind may verify
// it); the configs that ship (Caddyfile.example's blocks) warn nothing.
func TestWarnsWhatMCPAuthDoesNotVerify(t *testing.T) {
	const (
		dpopAlgs = "dpop_signing_alg_values_supported advertises DPoP, but mcp_auth accepts Bearer tokens only and verifies no DPoP proof; keep it only if the resource behind verifies DPoP"
		mtls     = "tls_client_certificate_bound_access_tokens advertises certificate-bound tokens, but mcp_auth does not check a token's binding (cnf x5t#S256) to the client certificate; keep it only if the resource behind checks it"
	)
	for _, tt := range []struct {
		name, options string
		want          []string // messages of the handler's Warn entries
	}{
		{"Caddyfile.example", "authorization_servers http://localhost:9000\n\t\tscopes_supported read:all\n\t\tbearer_methods_supported header", nil},
		{"dpop algorithms", "authorization_servers https://auth.example.com\n\t\tdpop_signing_alg_values_supported ES256", []string{dpopAlgs}},
		{"certificate-bound tokens", "authorization_servers https://auth.example.com\n\t\ttls_client_certificate_bound_access_tokens", []string{mtls}},
		{"both", "authorization_servers https://auth.example.com\n\t\ttls_client_certificate_bound_access_tokens\n\t\tdpop_signing_alg_values_supported ES256 EdDSA",
			[]string{mtls, dpopAlgs}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logFile := t.TempDir() + "/caddy.log"
			c := caddyrun.StartCaddyfile(t, "log {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t}",
				"http://127.0.0.1:{{PORT}} {\n\toauth_protected_resource {\n\t\t"+tt.options+"\n\t}\n}")
			resp := c.Do("GET", "/.well-known/oauth-protected-resource/mcp", nil)
			expect(t, resp, 200, nil, "-")
			c.Stop()
			if got := warnEntries(t, logFile, "http.handlers.oauth_protected_resource"); !slices.Equal(got, tt.want) {
				t.Errorf("warnings = %q\nwant %q", got, tt.want)
			}
		})
	}
}

// warnEntries are the messages of a logger's Warn entries in a JSON log.
func warnEntries(t *testing.T, file, logger string) []string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e struct{ Level, Logger, Msg string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if e.Level == "warn" && e.Logger == logger {
			out = append(out, e.Msg)
		}
	}
	return out
}
