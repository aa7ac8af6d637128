package mcpauth_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// foldingServer is an MCP server over HTTP that reads requests as Go
// servers built on encoding/json structs do (mark3labs/mcp-go among them):
// member names case-insensitively, the last of a repeated member winning,
// escapes in names decoded. It records what it served: method, then the
// tool or prompt name or the URIs.
func foldingServer(t *testing.T) (string, func() []string) {
	var mu sync.Mutex
	var served []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var msg struct {
			ID     json.RawMessage
			Method string
			Params struct {
				Name, URI     string
				Ref           struct{ Type, Name, URI string }
				Notifications struct{ ResourceSubscriptions []string }
			}
		}
		_ = json.Unmarshal(b, &msg)
		p := msg.Params
		what := msg.Method + " " + p.Name + p.URI + p.Ref.Name + p.Ref.URI + strings.Join(p.Notifications.ResourceSubscriptions, ",")
		mu.Lock()
		served = append(served, what)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": map[string]any{
			"content": []any{map[string]any{"type": "text", "text": "served " + what}}}})
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := served
		served = nil
		return out
	}
}

// Rules decide on the reading every server makes, or refuse: with
// `tool secret_*`, `prompt secret_*` and `resource file:///secret/*` needing
// admin, a read:all token's requests that a case-insensitive server (or one
// that normalizes URIs) would serve as a secret operation get 400 and never
// reach it, in either era; the secret operations themselves get 403, the
// public ones are served. Covers completion/complete and
// subscriptions/listen, which name prompts and resources too.
func TestRulesAgreeWithEveryServer(t *testing.T) {
	upstream, served := foldingServer(t)
	rules := "\t\t\ttool secret_* scopes admin\n\t\t\tprompt secret_* scopes admin\n\t\t\tresource file:///secret/* scopes admin\n"
	e := startRuleEnv(t, proxyTo(upstream), rules)
	read, admin := e.token("read:all"), e.token("read:all admin")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
	h26 := func(method, name string) map[string]string {
		return map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Mcp-Name": name}
	}
	msg := func(method, params string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{` + params + `}}`
	}
	for _, tc := range []struct {
		name, body string
		header     map[string]string
		status     int
	}{
		{"public tool", msg("tools/call", `"name":"public_tool"`), sess, 200},
		{"secret tool", msg("tools/call", `"name":"secret_tool"`), sess, 403},
		{"Name", msg("tools/call", `"Name":"secret_tool"`), sess, 400},
		{"NAME of a prompt", msg("prompts/get", `"NAME":"secret_plan"`), sess, 400},
		{"URI", msg("resources/read", `"URI":"file:///secret/key"`), sess, 400},
		{"2026 name and Name", msg("tools/call", `"name":"public_tool","Name":"secret_tool",`+meta), h26("tools/call", "public_tool"), 400},
		{"Method", `{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"secret_tool"}}`, sess, 400},
		{"escaped name", msg("tools/call", `"na\u006de":"secret_tool"`), sess, 400},
		{"name twice", msg("tools/call", `"name":"public_tool","name":"secret_tool"`), sess, 400},
		{"secret resource", msg("resources/read", `"uri":"file:///secret/key"`), sess, 403},
		{"public resource", msg("resources/read", `"uri":"file:///public/a"`), sess, 200},
		{"dot segments", msg("resources/read", `"uri":"file:///public/../secret/key"`), sess, 400},
		{"scheme case", msg("resources/read", `"uri":"FILE:///secret/key"`), sess, 400},
		{"localhost", msg("resources/read", `"uri":"file://localhost/secret/key"`), sess, 400},
		{"encoded dots", msg("resources/read", `"uri":"file:///public/%2E%2E/secret/key"`), sess, 400},
		{"encoded letter", msg("resources/read", `"uri":"file:///%73ecret/key"`), sess, 400},
		{"2026 dot segments", msg("resources/read", `"uri":"file:///public/../secret/key",`+meta), h26("resources/read", "file:///public/../secret/key"), 400},
		{"file: without //", msg("resources/read", `"uri":"file:/secret/key"`), sess, 400},
		{"file: opaque", msg("resources/read", `"uri":"file:secret/key"`), sess, 400},
		{"backslashes", msg("resources/read", `"uri":"file:\\\\\\secret\\key"`), sess, 400},
		{"fullwidth localhost", msg("resources/read", `"uri":"file://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/secret/key"`), sess, 400},
		{"listen, resource_subscriptions", msg("subscriptions/listen", `"notifications":{"resource_subscriptions":["file:///secret/key"]},`+meta), h26("subscriptions/listen", ""), 400},
		{"batch with a non-message", `[` + msg("tools/call", `"name":"secret_tool"`) + `,1]`, sess, 400},
		{"completion of a secret prompt", msg("completion/complete", `"ref":{"type":"ref/prompt","name":"secret_plan"},"argument":{"name":"a","value":""}`), sess, 403},
		{"completion of a secret template", msg("completion/complete", `"ref":{"type":"ref/resource","uri":"file:///secret/{x}"},"argument":{"name":"x","value":""}`), sess, 403},
		{"completion of a public prompt", msg("completion/complete", `"ref":{"type":"ref/prompt","name":"hello"},"argument":{"name":"a","value":""}`), sess, 200},
		{"listen to a secret resource", msg("subscriptions/listen", `"notifications":{"resourceSubscriptions":["file:///public/a","file:///secret/key"]},`+meta), h26("subscriptions/listen", ""), 403},
		{"listen, ResourceSubscriptions", msg("subscriptions/listen", `"notifications":{"ResourceSubscriptions":["file:///secret/key"]},`+meta), h26("subscriptions/listen", ""), 400},
		{"subscribe to a secret resource", msg("resources/subscribe", `"uri":"file:///secret/key"`), sess, 403},
		{"batch with a Name", `[` + msg("ping", ``) + `,` + msg("tools/call", `"Name":"secret_tool"`) + `]`, sess, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range tc.header {
				if v != "" {
					h[k] = v
				}
			}
			status, _, _ := e.post(read, tc.body, h)
			if status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			got := served()
			for _, s := range got {
				if strings.Contains(s, "secret") {
					t.Errorf("the server served %q to a token without admin", s)
				}
			}
			if (tc.status == 200) != (len(got) == 1) {
				t.Errorf("served %q", got)
			}
		})
	}
	// the same secret operations, spelled plainly, with admin: served
	for _, body := range []string{msg("tools/call", `"name":"secret_tool"`), msg("resources/read", `"uri":"file:///secret/key"`),
		msg("completion/complete", `"ref":{"type":"ref/prompt","name":"secret_plan"},"argument":{"name":"a","value":""}`)} {
		if status, _, _ := e.post(admin, body, sess); status != 200 || len(served()) != 1 {
			t.Errorf("admin: %d for %s", status, body)
		}
	}
}

// Through mcp_stdio to a stdio server that reads JSON case-insensitively
// (the fake server decodes into encoding/json structs): the rule's
// forbidden tool is not run through a case-variant member, in either era.
func TestRulesAgreeWithAStdioServer(t *testing.T) {
	e := startRuleEnv(t, "mcp_stdio {\n\t\t\tcommand "+mcpserver.Self(t)+"\n\t\t\tenv "+mcpserver.FakeEnv+" mrtr\n\t\t\tchild_era legacy\n\t\t}",
		"\t\t\ttool echo scopes admin\n")
	read := e.token("read:all")
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	h26 := map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "t"}
	for name, body := range map[string]string{
		"Name":          `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"echo","arguments":{},` + meta + `}}`,
		"name and Name": `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Name":"echo","arguments":{},` + meta + `}}`,
	} {
		status, _, m := e.post(read, body, h26)
		if status != 400 || strings.Contains(string(mustJSON(m)), "echo=") {
			t.Errorf("%s: %d %v: the forbidden tool ran", name, status, m)
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
