package mcpauth_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// rawRequest sends a request line exactly as given (no path cleaning, as
// curl --path-as-is does) and returns the status and body.
func rawRequest(t *testing.T, addr, host, method, target string, header http.Header) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n")
	for k, vs := range header {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n{}")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// No path walks past mcp_auth: dot segments (plain and encoded), the OAuth
// well-known paths on a site without matchers, and well-known paths inside
// handle_path, for every method. The protected handlers answer "REACHED".
func TestNoPathBypassesAuth(t *testing.T) {
	as := startAuthServer(t)
	issuer := srvURL[as]
	c := caddyrun.StartCaddyfile(t, "", strings.ReplaceAll(`
http://127.0.0.1:{{PORT}} {
	oauth_protected_resource {
		authorization_servers ISSUER
	}
	route /stdio/mcp {
		mcp_auth {
			issuer ISSUER
			audience http://127.0.0.1:{{PORT}}/stdio/mcp
		}
		respond "REACHED stdio auth={header.Authorization}"
	}
	handle_path /tools/* {
		mcp_auth {
			issuer ISSUER
			audience http://127.0.0.1:{{PORT}}/tools
		}
		respond "REACHED tools"
	}
	respond "unmatched" 404
}
http://localhost:{{PORT}} {
	mcp_auth {
		issuer ISSUER
		audience http://localhost:{{PORT}}/
	}
	respond "REACHED site"
}
`, "ISSUER", issuer))
	addr := strings.TrimPrefix(c.URL, "http://")
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND"}
	type target struct{ host, path string }
	var targets []target
	for _, p := range []string{
		"/.well-known/oauth-protected-resource/../../stdio/mcp",
		"/.well-known/oauth-protected-resource/../stdio/mcp",
		"/.well-known/oauth-protected-resource/%2e%2e/stdio/mcp",
		"/.well-known/oauth-protected-resource/%2E%2E/%2E%2E/stdio/mcp",
		"/.well-known/oauth-protected-resource/..%2f..%2fstdio/mcp",
		"/.well-known/oauth-protected-resource/..%2Fstdio/mcp",
		"/.well-known/oauth-authorization-server/../../stdio/mcp",
		"/.well-known/oauth-authorization-server/%2e%2e/stdio/mcp",
		"/stdio/mcp",
		"/stdio/./mcp",
		"/x/../stdio/mcp",
		"/tools/.well-known/oauth-protected-resource",
		"/tools/.well-known/oauth-authorization-server",
		"/tools/.well-known/oauth-protected-resource/../x",
		"/tools/x",
	} {
		targets = append(targets, target{"127.0.0.1", p})
	}
	for _, p := range []string{
		"/.well-known/oauth-authorization-server",
		"/.well-known/oauth-protected-resource",
		"/.well-known/oauth-protected-resource/x",
		"/.well-known/openid-configuration",
		"/.well-known/oauth-protected-resource/../../x",
		"/",
	} {
		targets = append(targets, target{"localhost", p})
	}
	checked := 0
	for _, tg := range targets {
		for _, m := range methods {
			status, body := rawRequest(t, addr, tg.host, m, tg.path, nil)
			if strings.Contains(body, "REACHED") || (status >= 200 && status < 300 && !strings.HasPrefix(tg.path, "/.well-known/oauth-protected-resource")) {
				t.Errorf("%s http://%s%s without a token: %d %q (walked past mcp_auth)", m, tg.host, tg.path, status, body)
			}
			// the same with a token that is not accepted
			status, body = rawRequest(t, addr, tg.host, m, tg.path, http.Header{"Authorization": {"Bearer abc.def.ghi"}})
			if strings.Contains(body, "REACHED") {
				t.Errorf("%s http://%s%s with a bad token: %d %q (walked past mcp_auth)", m, tg.host, tg.path, status, body)
			}
			checked++
		}
	}
	// the metadata document itself is still served, before mcp_auth
	if status, body := rawRequest(t, addr, "127.0.0.1", "GET", "/.well-known/oauth-protected-resource/stdio/mcp", nil); status != 200 || !strings.Contains(body, `"resource":"http://127.0.0.1`) {
		t.Errorf("metadata: %d %s", status, body)
	}
	// and a real token still works
	tok, _ := as.Mint("alice", "cli", c.URL+"/stdio/mcp", "")
	if status, body := rawRequest(t, addr, "127.0.0.1", "POST", "/stdio/mcp", http.Header{"Authorization": {"Bearer " + tok}}); status != 200 || body != "REACHED stdio auth=" {
		t.Errorf("valid token: %d %q", status, body)
	}
	t.Logf("%d requests checked", 2*checked)
}
