package stdiobridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// TestRootsSetting: a remote client's roots name its own machine's
// directories; by default they never reach the server (it would take them
// as its file-system boundary on Caddy's machine). In 2025 sessions the
// child does not see the client's roots capability nor its
// roots/list_changed, and its roots/list is answered by the bridge; in the
// 2026 pool likewise, never as an input_required round to the client.
func TestRootsSetting(t *testing.T) {
	for _, tc := range []struct {
		name, extra  string
		caps, noCaps string // in the capabilities the child got
		answer       string // in the roots tool's result
	}{
		{"default", "", "", `"roots"`, "asked, got error"},
		{"none", "\n\t\troots none", "", `"roots"`, "asked, got error"},
		{"configured", "\n\t\troots file:///srv/data file:///srv/other", `"roots":{}`, "listChanged", `file:///srv/data`},
		{"forward", "\n\t\troots forward", `"roots":{"listChanged":true}`, "", ""},
	} {
		t.Run("2025/"+tc.name, func(t *testing.T) {
			log, read := fakeLog(t)
			c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", "\n\t\tenv CADDYMCP_FAKE_LOG "+log+tc.extra))
			cl := newClient(t, "http://127.0.0.1:"+strconv.Itoa(c.Port)+"/mcp")
			resp := cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{"listChanged":true}},"clientInfo":{"name":"raw","version":"1"}}}`, nil)
			cl.session = resp.Header.Get("Mcp-Session-Id")
			readEvents(t, resp)
			if st, _ := cl.status("POST", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil); st != 202 {
				t.Fatalf("initialized: %d", st)
			}
			caps := strings.ReplaceAll(strings.Join(cl.call("2", "tools/call", `{"name":"caps","arguments":{}}`), "\n"), `\"`, `"`)
			if !strings.Contains(caps, tc.caps) || (tc.noCaps != "" && strings.Contains(caps, tc.noCaps)) {
				t.Fatalf("the child was told %s", caps)
			}
			if tc.name == "forward" {
				return
			}
			if st, _ := cl.status("POST", `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`, nil); st != 202 {
				t.Fatalf("roots/list_changed: %d", st)
			}
			msgs := cl.call("3", "tools/call", `{"name":"roots","arguments":{}}`)
			all := strings.Join(msgs, "\n")
			if strings.Contains(all, `"method":"roots/list"`) || !strings.Contains(all, tc.answer) {
				t.Fatalf("roots tool: %s", all)
			}
			if strings.Contains(read(), "notifications/roots/list_changed") {
				t.Fatalf("the client's roots/list_changed reached the child: %s", read())
			}
		})
	}
	for _, tc := range []struct{ name, extra, noCaps, answer string }{
		{"default", "", `"roots"`, "asked, got error"},
		{"configured", "\n\t\troots file:///srv/data", "listChanged", `file:///srv/data`},
	} {
		t.Run("2026/"+tc.name, func(t *testing.T) {
			log, _ := fakeLog(t)
			c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, tc.extra))
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
				`"io.modelcontextprotocol/clientCapabilities":{"roots":{"listChanged":true}},"io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"}}`
			_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"caps","arguments":{},`+meta+`}`)
			if caps := textOf(r); strings.Contains(caps, tc.noCaps) {
				t.Fatalf("the pool child was told %s", caps)
			}
			status, r := modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"roots","arguments":{},`+meta+`}`)
			if res := resultOf(r); status != 200 || res["resultType"] == "input_required" || !strings.Contains(textOf(r), tc.answer) {
				t.Fatalf("roots tool: %d %v", status, r)
			}
		})
	}
}

// A 2026 server, passed through, learns of the client's roots capability
// only with `roots forward`.
func TestRootsSettingModernChild(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{{"default", ""}, {"forward", "\n\t\troots forward"}} {
		t.Run(tc.name, func(t *testing.T) {
			c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER modern,mrtr
		child_era modern
		shutdown_timeout 500ms`+tc.extra+`
	}
}
`)
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
				`"io.modelcontextprotocol/clientCapabilities":{"roots":{"listChanged":true}},"io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"}}`
			_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"meta","arguments":{},`+meta+`}`)
			got := textOf(r)
			if !strings.Contains(got, "clientCapabilities") || strings.Contains(got, `"roots"`) != (tc.name == "forward") {
				t.Fatalf("the child got %s", got)
			}
		})
	}
}
