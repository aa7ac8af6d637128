package stdiobridge_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// Each refusal of the bridge's own has its own JSON-RPC code (README,
// "Error codes"), none the reserved -32000 that SDKs use for any server
// error: a client can tell a rate limit from a full route, a refused
// Origin or a wrong HTTP method.
func TestRefusalsHaveTheirOwnCodes(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tmax_sessions 2\n\t\tmax_sessions_per_user 2\n\t\tinitialize_rate 1"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	code := func(what string, status int, body string, want int) {
		t.Helper()
		if !strings.Contains(body, `"code":`+strconv.Itoa(want)+`,`) {
			t.Errorf("%s: %d %s; want code %d", what, status, body, want)
		}
	}
	cl := newClient(t, url)
	st, b := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") })
	code("foreign Origin", st, b, -32012)
	st, b = cl.status("PUT", `{}`, nil)
	code("PUT", st, b, -32013)
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	newClient(t, url).initialize() // the burst of initialize_rate 1 is 2
	newClient(t, url).initialize()
	st, b = cl.status("POST", init, nil) // max_sessions is checked first
	code("max_sessions", st, b, -32011)
	c.LoadCaddyfile("", fakeSite(t, "plain", "\n\t\tmax_sessions 50\n\t\tmax_sessions_per_user 50\n\t\tinitialize_rate 1"))
	http.DefaultClient.CloseIdleConnections()
	for i := 0; i < 5; i++ { // a connection of the old server may be reset
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			break
		}
	}
	// the rate's burst was spent above; a loaded machine may take over a
	// second per initialize (a token comes back each second), so the
	// refusal must come within 40 tries, not at the first
	// (a 503 -32011 is the old config's max_sessions 2, met by a request
	// that reached the route before the reload's limits took over: retried)
	for i := 0; ; i++ {
		st, b = cl.status("POST", init, nil)
		if (st != http.StatusOK && !strings.Contains(b, `"code":-32011,`)) || i == 39 {
			break
		}
	}
	code("initialize_rate", st, b, -32010)
}
