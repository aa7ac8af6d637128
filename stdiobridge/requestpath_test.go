package stdiobridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/stdiobridge"
)

// TestRequestPath makes one 2025 tools/call (in a session) and one
// 2026-07-28 tools/call (on the pool, translated for a 2025 server), each
// between two stdiobridge.PathMark calls, after a warm-up of each so that
// nothing is started or learned on the way. `.ci/request-path.sh` runs it
// under `dlv trace` and lists the functions and files each call visits;
// alone it checks that both calls are answered.
func TestRequestPath(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr", "\n\t\tchild_era legacy"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	cl := newClient(t, url)
	cl.initialize()
	call2025 := func() []string { return cl.call("2", "tools/call", `{"name":"echo","arguments":{"x":1}}`) }
	call2026 := func() map[string]any {
		_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"echo","arguments":{"x":1}}`)
		return r
	}
	call2025()
	call2026()

	stdiobridge.PathMark("2025 begin")
	msgs := call2025()
	stdiobridge.PathMark("2025 end")
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"result"`) {
		t.Fatalf("2025 tools/call: %v", msgs)
	}
	stdiobridge.PathMark("2026 begin")
	r := call2026()
	stdiobridge.PathMark("2026 end")
	if resultOf(r)["resultType"] != "complete" {
		t.Fatalf("2026 tools/call: %v", r)
	}
}
