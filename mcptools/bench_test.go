package mcptools_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/caddymcp/caddymcp/mcptools"
)

// benchHandler is a curated, pinned route in front of a handler that
// answers a tools/list of n tools and a tools/call.
func benchHandler(b *testing.B, n int) (*mcptools.Handler, caddyhttp.Handler) {
	storage := &certmagic.FileStorage{Path: b.TempDir()}
	h := &mcptools.Handler{
		Tools: &mcptools.Set{Deny: []string{"admin_*"}, Entries: map[string]*mcptools.Entry{
			"tool_1": {Rename: "first", Description: new(string)},
		}},
		Pin: &mcptools.Pin{Name: "bench"},
	}
	if err := mcptools.ProvisionForTest(h, storage); err != nil {
		b.Fatal(err)
	}
	var list strings.Builder
	for i := range n {
		if i > 0 {
			list.WriteByte(',')
		}
		fmt.Fprintf(&list, `{"name":"tool_%d","description":"Does thing %d with care.","inputSchema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]},"annotations":{"readOnlyHint":true}}`, i, i)
	}
	listBody := `{"jsonrpc":"2.0","id":1,"result":{"tools":[` + list.String() + `]}}`
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), "tools/list") {
			_, err := io.WriteString(w, listBody)
			return err
		}
		_, err := io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"ok"}]}}`)
		return err
	})
	return h, next
}

func serve(b *testing.B, h *mcptools.Handler, next caddyhttp.Handler, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req, next); err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkCurateList: a tools/list of 50 tools curated (deny, rename,
// description) and pinned (a digest per tool), per request.
func BenchmarkCurateList(b *testing.B) {
	h, next := benchHandler(b, 50)
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	serve(b, h, next, list) // seeds the pin set
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve(b, h, next, list)
	}
}

// BenchmarkCall: a tools/call of a renamed, pinned tool: decided,
// rewritten for the server, answered untouched.
func BenchmarkCall(b *testing.B) {
	h, next := benchHandler(b, 50)
	serve(b, h, next, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"first","arguments":{"path":"/srv/a"}}}`
	if w := serve(b, h, next, call); !strings.Contains(w.Body.String(), `"ok"`) {
		b.Fatalf("call: %s", w.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve(b, h, next, call)
	}
}

// BenchmarkNoCuration: the same call with no mcp_tools, for comparison.
func BenchmarkNoCuration(b *testing.B) {
	_, next := benchHandler(b, 50)
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tool_1","arguments":{"path":"/srv/a"}}}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("POST", "/mcp", strings.NewReader(call))
		w := httptest.NewRecorder()
		if err := next.ServeHTTP(w, req); err != nil {
			b.Fatal(err)
		}
	}
}
