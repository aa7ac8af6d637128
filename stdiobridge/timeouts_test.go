package stdiobridge_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// A child answering server/discover with -32022 (unsupported protocol
// version) is a modern server: the bridge does not fall back to the 2025
// handshake (basic/transports/stdio, Backward Compatibility), so a 2026
// call gets an error rather than a translated answer.
func TestProbeUnsupportedVersionIsModern(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "v32022", ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	status, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"t","arguments":{}}`)
	if r["error"] == nil || r["result"] != nil {
		t.Fatalf("a -32022 server was treated as 2025-era (translated): %d %v", status, r)
	}
}
