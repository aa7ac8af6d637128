package stdiobridge

import (
	"context"

	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/keyring"
	"github.com/caddyserver/certmagic"

	"go.uber.org/zap"
)

// The fast translation (splicing) must say what the slow one (decode,
// re-encode) says, member for member, and step aside where it cannot.
func TestTranslateFastMatchesSlow(t *testing.T) {
	cfg := &settings{cacheTTL: 1500 * time.Millisecond}
	known := newTable(zap.NewNop(), 1, cfg, nil)
	known.discovered(json.RawMessage(`{"serverInfo":{"name":"s","version":"1"}}`))
	for _, h := range []*Handler{
		{cfg: cfg, table: newTable(zap.NewNop(), 1, cfg, nil)},
		{cfg: cfg, table: known},
		{cfg: cfg, table: known, perRequest: true},
	} {
		translateCases(t, h)
	}
}

func translateCases(t *testing.T, h *Handler) {
	for _, tc := range []struct {
		method, result string
		fast           bool
	}{
		{"tools/call", `{"content":[{"type":"text","text":"hi"}]}`, true},
		{"tools/call", `{ }`, true},
		{"tools/call", ` {"content":[],"resultType":"complete"} `, true},
		{"resources/read", `{"contents":[]}`, true},
		{"resources/read", `{"contents":[],"ttlMs":5,"cacheScope":"public"}`, true},
		{"prompts/get", `{"messages":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"own"}}}`, true},
		{"tools/call", `{"content":[],"inputRequests":{"a":{}}}`, false},
		{"tools/call", `{"resultType":"input_required","requestState":"s"}`, false},
		{"tools/call", `{"con\u0074ent":[]}`, false},
		{"tools/call", `{"a":1,"a":2}`, false},
		{"tools/list", `{"tools":[]}`, false},
		{"prompts/get", `{"messages":[],"_meta":{"x":1}}`, h.table.serverInfo() == nil},
	} {
		if h.perRequest && strings.Contains(tc.result, "cacheScope") {
			tc.fast = false
		}
		m := &modernReq{e: &envelope{ID: json.RawMessage(`7`), Method: tc.method}, name: "n"}
		fast, ok := poolServer{h}.translateFast(json.RawMessage(tc.result), m)
		if ok != tc.fast {
			t.Fatalf("%s %s: fast path taken %v, want %v", tc.method, tc.result, ok, tc.fast)
		}
		if !ok {
			continue
		}
		line := []byte(`{"jsonrpc":"2.0","id":1,"result":` + tc.result + `}`)
		fastTranslate = false
		_, slow := poolServer{h}.translate(line, m, &call{child: &poolChild{}})
		fastTranslate = true
		var a, b any
		if err := json.Unmarshal(fast, &a); err != nil {
			t.Fatalf("%s: fast output is not JSON: %s", tc.result, fast)
		}
		_ = json.Unmarshal(slow, &b)
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%s %s:\nfast %s\nslow %s", tc.method, tc.result, ja, jb)
		}
	}
}

// FuzzTranslateFast: for any result a child may send, the fast path either
// steps aside or says exactly what the slow path says.
func FuzzTranslateFast(f *testing.F) {
	for _, s := range []string{`{}`, `{"content":[]}`, `{"a":{"b":[1,2,{"c":"}"}]},"resultType":"complete"}`,
		`{"_meta":{"io.modelcontextprotocol/serverInfo":{}},"x":"\"}"}`, ` { "ttlMs" : 3 } `, `{"x":1,}`, `[]`} {
		f.Add(s, "resources/read")
	}
	cfg := &settings{cacheTTL: time.Second}
	tb := newTable(zap.NewNop(), 1, cfg, nil)
	tb.discovered(json.RawMessage(`{"serverInfo":{"name":"s","version":"1"}}`))
	h := &Handler{cfg: cfg, table: tb}
	f.Fuzz(func(t *testing.T, result, method string) {
		if !json.Valid([]byte(result)) {
			return
		}
		m := &modernReq{e: &envelope{ID: json.RawMessage(`"x"`), Method: method}}
		fast, ok := poolServer{h}.translateFast(json.RawMessage(result), m)
		if !ok {
			return
		}
		if !json.Valid(fast) {
			t.Fatalf("fast path made invalid JSON of %s: %s", result, fast)
		}
		fastTranslate = false
		_, slow := poolServer{h}.translate([]byte(`{"jsonrpc":"2.0","id":1,"result":`+result+`}`), m, &call{child: &poolChild{}})
		fastTranslate = true
		var a, b any
		_ = json.Unmarshal(fast, &a)
		_ = json.Unmarshal(slow, &b)
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%s:\nfast %s\nslow %s", result, ja, jb)
		}
	})
}

// testSealer is a sealer of instance with a key ring of its own (a file
// storage in a temporary directory).
func testSealer(tb testing.TB, instance string) *stateSealer {
	ring, err := keyring.For(context.Background(), &certmagic.FileStorage{Path: tb.TempDir()}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &stateSealer{ring: ring, instance: instance}
}

// FuzzRequestState: nothing but a state the sealer made opens, and opening
// never panics, whatever a client sends.
func FuzzRequestState(f *testing.F) {
	s := testSealer(f, "a")
	good := s.seal(&sealedState{Round: "r", Principal: principalDigest("p"), Method: "tools/call", Name: "n", Expires: time.Now().Add(time.Hour).Unix()})
	f.Add(good)
	f.Add(good + "-TAMPERED")
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, v string) {
		st, err := s.open(context.Background(), v, "p", "tools/call", "n", time.Now())
		if err == nil && v != good {
			t.Fatalf("a state the sealer did not make opened: %q -> %+v", v, st)
		}
	})
}

// serverInfo comes from the first InitializeResult (kept, not decoded per
// call), else from a modern child's discover result.
func TestServerInfoSources(t *testing.T) {
	tb := newTable(zap.NewNop(), 1, &settings{}, nil)
	if si := tb.serverInfo(); si != nil {
		t.Fatalf("no child yet: %s", si)
	}
	tb.discoveredModern(json.RawMessage(`{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"modern"}}}`))
	if si := string(tb.serverInfo()); si != `{"name":"modern"}` {
		t.Fatalf("from discover: %s", si)
	}
	tb.discovered(json.RawMessage(`{"serverInfo":{"name":"first"}}`))
	tb.discovered(json.RawMessage(`{"serverInfo":{"name":"second"}}`))
	for range 2 {
		if si := string(tb.serverInfo()); si != `{"name":"first"}` {
			t.Fatalf("from the first initialize result: %s", si)
		}
	}
	bare := newTable(zap.NewNop(), 1, &settings{}, nil)
	bare.discovered(json.RawMessage(`{"capabilities":{}}`))
	bare.discoveredModern(json.RawMessage(`{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"modern"}}}`))
	for range 2 {
		if si := bare.serverInfo(); si != nil {
			t.Fatalf("an initialize result without serverInfo: %s", si)
		}
	}
}
