package stdiobridge_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// A round is bound to the arguments of the request that started it: a
// retry with other arguments is refused (400 -32602) and the round stays
// answerable by the retry that matches.
func TestRoundBoundToArguments(t *testing.T) {
	log, _ := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	retry := askRound(t, url, 1) // arguments {}
	other := strings.Replace(retry, `"arguments":{}`, `"arguments":{"path":"/etc/shadow"}`, 1)
	if status, r := modernPost(context.Background(), t, url, "", 2, "tools/call", other); status != 400 || !strings.Contains(fmt.Sprint(r), "code:-32602") {
		t.Fatalf("a retry with other arguments: %d %v", status, r)
	}
	if _, r := modernPost(context.Background(), t, url, "", 3, "tools/call", retry); !strings.Contains(textOf(r), `"name":"Ann"`) {
		t.Fatalf("the matching retry after a refused one: %v", r)
	}
}
