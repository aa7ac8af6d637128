package mcptools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"

	"github.com/caddymcp/caddymcp/mcptools"
)

// serverTools are what the server behind the property test offers.
var serverTools = []string{"read_file", "write_file", "delete_file", "secret_admin", "echo", "new_tool"}

// For many random requests, spelled every way a client could (names in
// other cases, escaped, twice, with other members' cases, in batches, with
// Mcp-Name headers), a hidden tool (denied, not allowed, a renamed one's
// old name) or one the pin set has not approved is never run by the
// server however it reads the body (Go's case-insensitive struct decoding,
// a map's last member, a first-wins reader), and never listed.
func TestPropertyHiddenNeverListedNorCalled(t *testing.T) {
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	h := &mcptools.Handler{
		Tools: &mcptools.Set{Allow: []string{"*_file", "echo", "new_tool"}, Deny: []string{"delete_*"},
			Entries: map[string]*mcptools.Entry{"write_file": {Rename: "save"}}},
		Pin: &mcptools.Pin{Name: "prop", Mode: "approved"},
	}
	if err := mcptools.ProvisionForTest(h, storage); err != nil {
		t.Fatal(err)
	}
	// approved: read_file and write_file as the server lists them; echo
	// approved with another definition (changed); new_tool never
	def := func(name string) string {
		return `{"name":"` + name + `","description":"` + name + ` does things","inputSchema":{"type":"object"}}`
	}
	approve(t, storage, "prop", map[string]string{
		"tool:read_file":  def("read_file"),
		"tool:write_file": def("write_file"),
		"tool:echo":       `{"name":"echo","description":"the old echo","inputSchema":{"type":"object"}}`,
	})
	// mayRun: what the server may run (server names)
	mayRun := map[string]bool{"read_file": true, "write_file": true}
	mayList := map[string]bool{"read_file": true, "save": true}

	var ran []string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		body, _ := io.ReadAll(r.Body)
		ran = append(ran, readers(body)...)
		var list []string
		for _, n := range serverTools {
			list = append(list, def(n))
		}
		w.Header().Set("Content-Type", "application/json")
		if !strings.Contains(string(body), `"tools/list"`) {
			// a call's answer (a list is asked for by tools/list only; a
			// GET stream, which could replay one, is curated as a whole)
			_, err := fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
			return err
		}
		_, err := fmt.Fprintf(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[%s]}}`, strings.Join(list, ","))
		return err
	})
	rng := rand.New(rand.NewPCG(1, 2))
	names := append(slices.Clone(serverTools), "save", "Save", "READ_FILE", "Write_File", "Delete_File", "rea\\u0064_file", "save\\u0000")
	served, refused := 0, 0
	for i := range 3000 {
		body, header := randomRequest(rng, names)
		ran = ran[:0]
		req := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if header != "" {
			req.Header.Set("Mcp-Name", header)
			req.Header.Set("MCP-Protocol-Version", "2026-07-28")
		}
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, req, next); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if len(ran) > 0 {
			served++
		} else {
			refused++
		}
		for _, n := range ran {
			if !mayRun[n] {
				t.Fatalf("request %d ran %q on the server:\n%s\n(Mcp-Name %q) -> %d %s", i, n, body, header, w.Code, w.Body)
			}
		}
		// lists: whatever answered, it lists nothing else
		var msg struct {
			Result struct {
				Tools []map[string]any `json:"tools"`
			} `json:"result"`
		}
		if json.Unmarshal(w.Body.Bytes(), &msg) == nil {
			for _, tool := range msg.Result.Tools {
				for k, v := range tool {
					if strings.EqualFold(k, "name") && !mayList[fmt.Sprint(v)] {
						t.Fatalf("request %d listed %q: %s", i, v, w.Body)
					}
				}
			}
		}
	}
	if served < 100 || refused < 100 {
		t.Fatalf("%d requests reached the server and %d did not: the spellings do not exercise both sides", served, refused)
	}
	t.Logf("%d random requests reached the server (allowed names only), %d were refused or answered by mcp_tools", served, refused)
}

// approve writes a pin set with these definitions approved, as the
// admin API leaves it.
func approve(t *testing.T, storage certmagic.Storage, name string, defs map[string]string) {
	t.Helper()
	approved := map[string]any{}
	for k, d := range defs {
		var m map[string]json.RawMessage
		_ = json.Unmarshal([]byte(d), &m)
		def, digest := mcptools.DefinitionForTest("tool", m)
		approved[k] = map[string]any{"digest": digest, "definition": def}
	}
	b, _ := json.Marshal(map[string]any{"approved": approved, "seeded": map[string]bool{"tool": true}})
	if err := storage.Store(context.Background(), "mcp_tools/pins/"+name+".json", b); err != nil {
		t.Fatal(err)
	}
}

// readers are the tool names servers would run for a body: per message,
// Go's struct decoding (case-insensitive, the last match wins), a map's
// exact member (the last), and the first exact member.
func readers(body []byte) []string {
	var msgs []json.RawMessage
	if err := json.Unmarshal(body, &msgs); err != nil {
		msgs = []json.RawMessage{body}
	}
	var out []string
	for _, m := range msgs {
		var s struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if json.Unmarshal(m, &s) == nil && strings.EqualFold(s.Method, "tools/call") {
			out = append(out, s.Params.Name)
		}
		var mm map[string]any
		if json.Unmarshal(m, &mm) == nil {
			if p, ok := mm["params"].(map[string]any); ok {
				if n, ok := p["name"].(string); ok {
					out = append(out, n)
				}
			}
		}
		if i := strings.Index(string(m), `"name":"`); i >= 0 {
			rest := string(m)[i+8:]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				var n string
				_ = json.Unmarshal([]byte(`"`+rest[:j]+`"`), &n)
				out = append(out, n)
			}
		}
	}
	return out
}

// randomRequest is a tools/call or tools/list (or a batch of them),
// spelled at random, and a Mcp-Name header for it ("" none).
func randomRequest(rng *rand.Rand, names []string) (string, string) {
	one := func(id int) (string, string) {
		if rng.IntN(6) == 0 {
			return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id), ""
		}
		key := []string{"name", "name", "name", "name", "name", "name", "Name", "NAME", "n\\u0061me", "nam\\u0065"}
		name := names[rng.IntN(len(names))]
		params := `"` + key[rng.IntN(len(key))] + `":"` + name + `"`
		if rng.IntN(6) == 0 { // a second name member
			params += `,"` + key[rng.IntN(len(key))] + `":"` + names[rng.IntN(len(names))] + `"`
		}
		if rng.IntN(2) == 0 {
			params += `,"arguments":{"path":"/etc/passwd"}`
		}
		method := []string{"tools/call", "tools/call", "tools/call", "tools/call", "tools/call", "tools/call", "tools/call", "Tools/Call"}[rng.IntN(8)]
		meta := ""
		if rng.IntN(2) == 0 {
			meta = `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
		}
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"%s","params":{%s%s}}`, id, method, params, meta), name
	}
	if rng.IntN(5) == 0 {
		a, _ := one(1)
		b, _ := one(2)
		return "[" + a + "," + b + "]", ""
	}
	body, name := one(1)
	header := ""
	switch rng.IntN(3) {
	case 0:
		header = name
	case 1:
		header = names[rng.IntN(len(names))]
	}
	return body, header
}

// A resource deny holds for every spelling of the URI that a server could
// read as a denied one: another case, another form, dot segments, percent
// encodings, no "//" after the scheme. None reaches the server.
func TestResourceDenyEverySpelling(t *testing.T) {
	h := &mcptools.Handler{Resources: &mcptools.Set{Deny: []string{"file:///secret/*"}}}
	if err := mcptools.ProvisionForTest(h, &certmagic.FileStorage{Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var reached []string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		b, _ := io.ReadAll(r.Body)
		reached = append(reached, string(b))
		w.Header().Set("Content-Type", "application/json")
		_, err := fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"contents":[]}}`)
		return err
	})
	for _, uri := range []string{"file:///secret/key", "FILE:///secret/key", "file://localhost/secret/key", "file:///public/../secret/key",
		"file:///%73ecret/key", "file:/secret/key", "file:///secret/key#x", "file:///public/%2E%2E/secret/key"} {
		for _, method := range []string{"resources/read", "resources/subscribe"} {
			reached = reached[:0]
			body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{"uri":"` + uri + `"}}`
			req := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, req, next); err != nil {
				t.Fatal(err)
			}
			if len(reached) > 0 {
				t.Errorf("%s %s reached the server: %s", method, uri, w.Body)
			}
		}
	}
	// and an allowed one does
	reached = reached[:0]
	req := httptest.NewRequest("POST", "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/key"}}`))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil || len(reached) != 1 {
		t.Errorf("an allowed URI did not reach the server: %v %d", err, len(reached))
	}
}
