package mcpreq

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
)

func request(body string, header map[string]string) *http.Request {
	r := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
	for k, v := range header {
		r.Header.Set(k, v)
	}
	ctx := r.Context()
	ctx = contextWithVars(ctx)
	return r.WithContext(ctx)
}

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"write_*", "write_file", true}, {"write_*", "read_file", false}, {"*", "", true},
		{"file:///srv/*", "file:///srv/a/b.txt", true}, {"file:///srv/*", "file:///etc/passwd", false},
		{"*_file", "delete_file", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false},
		{"tools/call", "tools/call", true}, {"tools/*", "tools/list", true}, {"", "x", false},
	} {
		if Glob(c.p, c.s) != c.ok {
			t.Errorf("Glob(%q, %q) = %v", c.p, c.s, !c.ok)
		}
	}
}

func TestParse(t *testing.T) {
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	for _, c := range []struct {
		name, body string
		header     map[string]string
		method     string
		nameOf     string
		era        string
		batch, bad bool
	}{
		{"2025 call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x"}}`, map[string]string{"Mcp-Session-Id": "s"}, "tools/call", "write_x", "2025", false, false},
		{"2026 call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",` + meta + `}}`, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "t"}, "tools/call", "t", "2026", false, false},
		{"2026 base64 name", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///ä",` + meta + `}}`, map[string]string{"Mcp-Method": "resources/read", "Mcp-Name": "=?base64?ZmlsZTovLy/DpA==?="}, "resources/read", "file:///ä", "2026", false, false},
		{"2026 header lies", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all",` + meta + `}}`, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "read_file"}, "", "", "2026", false, true},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}]`, map[string]string{"Mcp-Session-Id": "s"}, "ping", "", "2025", true, false},
		// no signal of the 2026 era (no _meta version, no header naming a
		// version the 2025 era does not know): 2025's, as mcp_stdio serves it
		{"not JSON", `{"jsonrpc":`, nil, "", "", "2025", false, true},
		{"not JSON, 2026 header", `{"jsonrpc":`, map[string]string{"Mcp-Protocol-Version": "2026-07-28"}, "", "", "2026", false, true},
		{"_meta wins over a 2025 header", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",` + meta + `}}`, map[string]string{"Mcp-Protocol-Version": "2025-11-25"}, "tools/call", "t", "2026", false, false},
		{"sessionless, 2025 header", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`, map[string]string{"Mcp-Protocol-Version": "2025-06-18"}, "tools/call", "t", "2025", false, false},
		{"initialize with _meta", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{` + meta + `}}`, nil, "initialize", "", "2026", false, false},
		{"initialize", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, nil, "initialize", "", "2025", false, false},
	} {
		r := request(c.body, c.header)
		q := Get(r, 1<<20)
		if (q.Err != nil) != c.bad || q.First().Method != c.method || q.First().Name != c.nameOf || q.Era != c.era || q.Batch != c.batch {
			t.Errorf("%s: %+v", c.name, q)
		}
		if q2 := Get(r, 1<<20); q2 != q {
			t.Errorf("%s: parsed twice", c.name)
		}
		if b, _ := io.ReadAll(r.Body); string(b) != c.body {
			t.Errorf("%s: the body was not put back: %q", c.name, b)
		}
	}
}

func TestBodyBeyondTheBound(t *testing.T) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + strings.Repeat("x", 5000) + `"}}`
	r := request(body, nil)
	if q := Get(r, 1000); q.Err == nil || len(q.Messages) != 0 {
		t.Fatalf("a body beyond the bound was parsed: %+v", q)
	}
	if b, _ := io.ReadAll(r.Body); string(b) != body {
		t.Fatal("the body beyond the bound was not put back whole")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}`, "tools/call", "a")
	f.Add(`[{"method":"x"},{"method":"resources/read","params":{"uri":"u"}}]`, "", "")
	f.Add(`{"params":[1,2]}`, "", "=?base64?!!?=")
	f.Fuzz(func(t *testing.T, body, method, name string) {
		r := request(body, map[string]string{"Mcp-Method": method, "Mcp-Name": name})
		q := Get(r, 4096)
		if q.Err == nil && q.Era == "2026" && len(q.Messages) > 0 && method != "" && q.First().Method != method {
			t.Fatalf("a request whose Mcp-Method contradicts its body was accepted: %+v", q)
		}
		if b, _ := io.ReadAll(r.Body); string(b) != body {
			t.Fatal("the body was not put back")
		}
	})
}

var _ = caddyhttp.VarsCtxKey

// TestServedReading: a module that serves the message (mcp_stdio) reads
// the members where the rules' scan found them, and gets the messages of a
// request whose headers contradict them, to say which header was wrong.
func TestServedReading(t *testing.T) {
	body := ` {"id":7, "jsonrpc":"2.0","method":"tools/call","params":{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}} `
	q := Get(request(body, map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "other"}), 1<<20)
	if q.Err != ErrMismatch || len(q.Messages) != 0 || len(q.Parsed()) != 1 {
		t.Fatalf("mismatch: Err %v, %d messages, %d parsed", q.Err, len(q.Messages), len(q.Parsed()))
	}
	m := q.Parsed()[0]
	at := func(s jsonscan.Span) string { return string(m.Raw[s.Start:s.End]) }
	if at(m.Top.ID) != "7" || at(m.Top.JSONRPC) != `"2.0"` || at(m.Top.Method) != `"tools/call"` ||
		!strings.HasPrefix(at(m.Top.Params), `{"name":"t"`) || m.Top.Result.End != 0 || m.Top.Error.End != 0 {
		t.Fatalf("spans: %+v in %s", m.Top, m.Raw)
	}
	batch := Get(request(`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}]`, map[string]string{"Mcp-Session-Id": "s"}), 1<<20)
	if p := batch.Parsed(); len(p) != 2 || string(p[0].Raw[p[0].Top.Result.Start:p[0].Top.Result.End]) != "{}" ||
		!strings.HasPrefix(string(p[1].Raw[p[1].Top.Error.Start:]), `{"code":1`) {
		t.Fatalf("batch: %+v", batch.Parsed())
	}
	if q := Get(request(`{"jsonrpc":`, nil), 1<<20); q.Parsed() != nil {
		t.Fatal("a body that is not JSON has parsed messages")
	}
}
