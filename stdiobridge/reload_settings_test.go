package stdiobridge_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// A reload that raises max_message_size reaches the children already
// running, a 2025 session's and the 2026 pool's, and the 2026 error names
// the bound.
func TestReloadRaisesMaxMessageSize(t *testing.T) {
	site := func(size string) string {
		return fakeSite(t, "huge", "\n\t\tmax_message_size "+size+"\n\t\tchild_era legacy")
	}
	c := caddyrun.StartCaddyfile(t, "", site("1MiB"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	s := newClient(t, url)
	s.initialize()
	if msgs := s.call("2", "tools/call", `{"name":"t","arguments":{}}`); len(msgs) != 1 || !strings.Contains(msgs[0], "exceeded max_message_size (1048576 bytes)") {
		t.Fatalf("2025 before the reload: %.300v", msgs)
	}
	_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"t","arguments":{}}`)
	if e, _ := r["error"].(map[string]any); e == nil || !strings.Contains(e["message"].(string), "exceeded max_message_size (1048576 bytes)") {
		t.Fatalf("2026 before the reload: %.300v", r)
	}
	c.LoadCaddyfile("", site("8MiB"))
	// a connection the old server accepted may still be reset: ask until the new one answers
	for i := 0; i < 5; i++ {
		http.DefaultClient.CloseIdleConnections()
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			break
		}
	}
	if msgs := s.call("3", "tools/call", `{"name":"t","arguments":{}}`); len(msgs) != 1 || !strings.Contains(msgs[0], `"result"`) || len(msgs[0]) < 5<<20 {
		t.Fatalf("2025 session after raising max_message_size: %.300v", msgs)
	}
	_, r = modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"t","arguments":{}}`)
	if len(textOf(r)) != 5<<20 {
		t.Fatalf("2026 after raising max_message_size: %.300v", r)
	}
}
