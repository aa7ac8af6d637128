package stdiobridge_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// TestClientFaultsNotLoggedPerRequest: refusals a client causes on every
// request must not flood the operator's log at warn: DNS-rebinding
// refusals go to debug, max_sessions_per_user refusals are at warn at most
// once a minute.
func TestClientFaultsNotLoggedPerRequest(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	c := caddyrun.StartCaddyfile(t, "log {\n\t\toutput file "+logFile+"\n\t\tlevel INFO\n\t}", fakeSite(t, "mrtr", `
		max_sessions 4
		max_sessions_per_user 1
		initialize_rate 100`))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	for range 10 {
		st, _ := newClient(t, url).status("POST", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, func(r *http.Request) { r.Host = "evil.example" })
		if st != 403 {
			t.Fatalf("DNS rebinding: %d", st)
		}
	}
	holder := newClient(t, url)
	holder.initialize()
	resp := holder.do("GET", "", nil) // an open stream: not evictable
	defer resp.Body.Close()
	for range 5 {
		if st, body := newClient(t, url).status("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`, nil); st != 429 {
			t.Fatalf("at max_sessions_per_user: %d %s", st, body)
		}
	}
	b, _ := os.ReadFile(logFile)
	logs := string(b)
	if n := strings.Count(logs, "DNS rebinding protection"); n != 0 {
		t.Errorf("%d DNS-rebinding refusals logged at info or above", n)
	}
	if n := strings.Count(logs, "max_sessions_per_user reached; refused"); n != 1 {
		t.Errorf("%d max_sessions_per_user refusals logged at info or above, want 1", n)
	}
}
