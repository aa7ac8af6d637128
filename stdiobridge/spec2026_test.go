package stdiobridge_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// specSite is the fake in modes mrtr,spec behind mcp_stdio, a 2025 child.
func specSite(t *testing.T) string {
	return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env CADDYMCP_FAKE_SERVER mrtr,spec
		child_era legacy
		shutdown_timeout 500ms
	}
}
`
}

// withCaps is params with _meta declaring the client capabilities caps.
func withCaps(params, caps string) string {
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":` + caps +
		`,"io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"}}`
	return strings.TrimSuffix(params, "}") + "," + meta + "}"
}

// MCP 2026-07-28 on a translated 2025 server: what the 2026 schema does not
// have, or forbids, never reaches a 2026 client.
func TestSpec2026Translation(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", specSite(t))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ctx := context.Background()

	// 11: a URL-mode question never reaches a client that declared form
	// only ({} means form); it is told what it lacks (-32021)
	for _, caps := range []string{`{"elicitation":{}}`, `{"elicitation":{"form":{}}}`} {
		st, r := modernPost(ctx, t, url, "", 1, "tools/call", withCaps(`{"name":"urlask","arguments":{}}`, caps))
		if st != 400 || !strings.Contains(fmt.Sprint(r), "code:-32021 data:map[requiredCapabilities:map[elicitation:map[url:map[]]]]") {
			t.Errorf("11: a URL elicitation to a client declaring %s: %d %v", caps, st, r)
		}
	}
	if _, r := modernPost(ctx, t, url, "", 2, "tools/call", withCaps(`{"name":"urlask","arguments":{}}`, `{"elicitation":{"url":{}}}`)); resultOf(r)["resultType"] != "input_required" {
		t.Errorf("11: a client declaring url mode: %v", r)
	}

	// 12: -32042 becomes a round with the URL elicitation; -32002 outside
	// resources/read becomes -32602
	_, r := modernPost(ctx, t, url, "", 3, "tools/call", withCaps(`{"name":"urlerr","arguments":{}}`, `{"elicitation":{"url":{}}}`))
	if res := resultOf(r); res["resultType"] != "input_required" || !strings.Contains(fmt.Sprint(res["inputRequests"]), "https://example.com/auth") {
		t.Errorf("12: -32042: %v", r)
	}
	if st, r := modernPost(ctx, t, url, "", 4, "tools/call", `{"name":"notfound","arguments":{}}`); st == 200 || !strings.Contains(fmt.Sprint(r), "code:-32602") {
		t.Errorf("12: -32002 on tools/call: %d %v", st, r)
	}

	// 13: sampling for a client without it: -32021 naming sampling
	if st, r := modernPost(ctx, t, url, "", 5, "tools/call", withCaps(`{"name":"sample","arguments":{}}`, `{}`)); st != 400 ||
		!strings.Contains(fmt.Sprint(r), "code:-32021 data:map[requiredCapabilities:map[sampling:map[]]]") {
		t.Errorf("13: sampling without the capability: %d %v", st, r)
	}

	// 14: no 2025 task fields (the bridge's tasks extension instead); a
	// tool that requires a task is listed (the bridge runs it as one)
	_, r = modernPost(ctx, t, url, "", 6, "server/discover", "")
	caps, _ := resultOf(r)["capabilities"].(map[string]any)
	if ext, _ := caps["extensions"].(map[string]any); caps["tasks"] != nil || ext["io.modelcontextprotocol/tasks"] == nil {
		t.Errorf("14: server/discover capabilities: %v", caps)
	}
	_, r = modernPost(ctx, t, url, "", 7, "tools/list", "")
	tools := fmt.Sprint(resultOf(r)["tools"])
	if strings.Contains(tools, "taskSupport") || !strings.Contains(tools, "task_required") || !strings.Contains(tools, "task_optional") {
		t.Errorf("14: tools/list: %s", tools)
	}

	// 15: an interim answer to resources/read has no caching hints
	_, r = modernPost(ctx, t, url, "", 8, "resources/read", `{"uri":"ask://x"}`)
	if res := resultOf(r); res["resultType"] != "input_required" || res["ttlMs"] != nil || res["cacheScope"] != nil {
		t.Errorf("15: input_required to resources/read: %v", r)
	}
	// and the server's own round to resources/read loses the hints it gave
	_, r = modernPost(ctx, t, url, "", 9, "resources/read", `{"uri":"round://x"}`)
	if res := resultOf(r); res["resultType"] != "input_required" || res["ttlMs"] != nil || res["cacheScope"] != nil {
		t.Errorf("15: the server's own input_required to resources/read: %v", r)
	}
}

// 10c: a 2026-native child's cacheScope "public" reaches an authenticated
// client as "private".
func TestModernChildCacheScopePrivateWhenAuthenticated(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", poolSite(t, is, "modern,mrtr,spec", ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	tok := jwkstest.Mint(t, k, is.Claims("alice", url, ""), nil)
	_, r := modernPost(context.Background(), t, url, tok, 1, "tools/list", "")
	if cs := resultOf(r)["cacheScope"]; cs != "private" {
		t.Fatalf("cacheScope %v on an authenticated route (%v)", cs, r)
	}
}
