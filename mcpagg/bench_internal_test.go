package mcpagg

import (
	"encoding/json"
	"fmt"
	"testing"

	"go.uber.org/zap"
)

// benchLists is three backends' tools/list, 30 tools each.
func benchLists() (*Handler, func() []backendList) {
	h := &Handler{Prefix: "always", Separator: "_", logger: zap.NewNop()}
	for _, n := range []string{"github", "docs", "db"} {
		h.Backends = append(h.Backends, &Backend{Name: n})
	}
	raw := make([][]byte, len(h.Backends))
	for i := range h.Backends {
		var tools []map[string]any
		for j := range 30 {
			tools = append(tools, map[string]any{"name": fmt.Sprintf("tool_%d", j), "description": "Does a thing with care.",
				"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"q": map[string]any{"type": "string"}}}})
		}
		raw[i], _ = json.Marshal(tools)
	}
	return h, func() []backendList {
		out := make([]backendList, len(h.Backends))
		for i, b := range h.Backends {
			var entries []map[string]json.RawMessage
			_ = json.Unmarshal(raw[i], &entries)
			out[i] = backendList{backend: b, entries: entries}
		}
		return out
	}
}

// BenchmarkMerge: three backends' lists (30 tools each) merged, prefixed
// and routed, and the result encoded (the decoding of the backends'
// answers included, as a list request does it).
func BenchmarkMerge(b *testing.B) {
	h, lists := benchLists()
	b.ReportAllocs()
	for b.Loop() {
		l := lists()
		merged := h.merge("tools/list", l, newCatalog())
		if len(merged) != 90 {
			b.Fatal(len(merged))
		}
		_, _ = json.Marshal(listResult("tools/list", merged, l))
	}
}

// BenchmarkRoute: a call's name to its backend (prefix always: by prefix;
// collision: through the catalog of the last list).
func BenchmarkRoute(b *testing.B) {
	for _, prefix := range []string{"always", "collision"} {
		b.Run(prefix, func(b *testing.B) {
			h, lists := benchLists()
			h.Prefix = prefix
			c := newCatalog()
			h.merge("tools/list", lists(), c)
			name := "db_tool_17"
			b.ReportAllocs()
			for b.Loop() {
				rt, ok := h.resolve("tool", name, func() *catalog { return c })
				if !ok || rt.backend.Name != "db" {
					b.Fatal(rt, ok)
				}
			}
		})
	}
}
