package mcpauth_test

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// pass_token loads, with a warning at provision that names the MCP rule it
// goes against; without it nothing is warned.
func TestPassTokenWarns(t *testing.T) {
	const warning = "pass_token keeps the client's access token for the next handler: the MCP authorization spec forbids token passthrough " +
		"(an MCP server MUST NOT pass through the token it received from the MCP client; the security best practices call it an anti-pattern); " +
		"use it only where the next handler is the token's own audience, never to forward the token to another service"
	as := startAuthServer(t)
	for _, tt := range []struct {
		name, option string
		want         []string
	}{
		{"pass_token", "\n\t\tpass_token", []string{warning}},
		{"default", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logFile := t.TempDir() + "/caddy.log"
			c := caddyrun.StartCaddyfile(t, "log {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t}", `
http://127.0.0.1:{{PORT}} {
	mcp_auth {
		issuer `+srvURL[as]+`
		audience http://127.0.0.1:{{PORT}}/mcp`+tt.option+`
	}
	respond "ok"
}
`)
			tok, _ := as.Mint("user", "cli", c.URL+"/mcp", "")
			resp := c.Do("GET", "/mcp", http.Header{"Authorization": {"Bearer " + tok}})
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			c.Stop()
			raw, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				var e struct{ Level, Logger, Msg string }
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if e.Level == "warn" && e.Logger == "http.handlers.mcp_auth" {
					got = append(got, e.Msg)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("warnings = %q\nwant %q", got, tt.want)
			}
			if strings.Contains(string(raw), tok) {
				t.Error("the log holds the token")
			}
		})
	}
}
