package caddymcp_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// caddyBin returns the Caddy binary built with this plugin (`make build`);
// `make test` sets CADDYMCP_CADDY_BIN.
func caddyBin(t *testing.T) string {
	bin := os.Getenv("CADDYMCP_CADDY_BIN")
	if bin == "" {
		t.Skip("CADDYMCP_CADDY_BIN not set; `make test` builds Caddy and sets it")
	}
	return bin
}

func TestBinaryListsModules(t *testing.T) {
	out, err := exec.Command(caddyBin(t), "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy list-modules: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for _, m := range []string{"http.handlers.oauth_protected_resource", "http.handlers.mcp_auth", "http.handlers.mcp_stdio",
		"http.handlers.mcp_tools", "admin.api.mcp_tools", "http.handlers.mcp_aggregate"} {
		found := false
		for _, l := range lines {
			if strings.TrimSpace(l) == m {
				found = true
			}
		}
		if !found {
			t.Errorf("caddy list-modules does not list %s", m)
		}
	}
}

func TestBinaryValidatesExample(t *testing.T) {
	bin := caddyBin(t)
	for _, sub := range []string{"adapt", "validate"} {
		out, err := exec.Command(bin, sub, "--config", "Caddyfile.example", "--adapter", "caddyfile").CombinedOutput()
		if err != nil {
			t.Fatalf("caddy %s Caddyfile.example: %v\n%s", sub, err, out)
		}
		if strings.Contains(string(out), "not formatted") {
			t.Errorf("caddy %s warns that Caddyfile.example is not formatted (run caddy fmt --overwrite)", sub)
		}
	}
}
