package mcpreq

import (
	"encoding/json"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
)

// Every body that a server reading JSON case-insensitively (Go's
// encoding/json into structs: mark3labs/mcp-go, most Go servers), or
// unescaping member names, or keeping the last of a repeated member, could
// read as another method, name or URI than mcpreq does, is refused as
// ambiguous; JSON that no server reads as JSON-RPC is not (it is some other
// API's).
func TestAmbiguousMessages(t *testing.T) {
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	for _, c := range []struct{ name, body string }{
		{"Name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"secret_tool"}}`},
		{"NAME", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"NAME":"secret_plan"}}`},
		{"URI", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"URI":"file:///secret/key"}}`},
		{"name and Name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"public_tool","Name":"secret_tool",` + meta + `}}`},
		{"Method", `{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"secret_tool"}}`},
		{"method and METHOD", `{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"tools/call","params":{"name":"secret_tool"}}`},
		{"Params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"secret_tool"}}`},
		{"ID", `{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"x"}}`},
		{"escaped member", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na\u006de":"secret_tool"}}`},
		{"escaped method member", `{"jsonrpc":"2.0","id":1,"\u006dethod":"tools/call","params":{"name":"secret_tool"}}`},
		{"name twice", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"public_tool","name":"secret_tool"}}`},
		{"long s folds to s", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notification\u017f":{}}}`},
		{"long s, raw", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\",\"requeſtState\":\"s\"}}"},
		{"name not a string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["secret_tool"]}}`},
		{"method not a string", `{"jsonrpc":"2.0","id":1,"method":["tools/call"],"params":{"name":"x"}}`},
		{"lone surrogate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_\ud800tool"}}`},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"secret_\xfftool\"}}"},
		{"ref Name", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","Name":"secret_plan"},"argument":{"name":"a","value":""}}}`},
		{"ref Type", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"Type":"ref/prompt","name":"secret_plan"}}}`},
		{"ResourceSubscriptions", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"ResourceSubscriptions":["file:///secret/key"]},` + meta + `}}`},
		{"a subscription not a string", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":[1]}}}`},
		{"_META", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_META":{}}}`},
		{"protocol version in another case", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/ProtocolVersion":"2025-11-25","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`},
		{"snake case alias", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resource_subscriptions":["file:///secret/key"]}}}`},
		{"request_state", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","request_state":"s"}}`},
		{"meta for _meta", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","meta":{}}}`},
		{"a batch element that is no message", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_x"}},1]`},
		{"in a batch", `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"Name":"secret_tool"}}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := Get(request(c.body, map[string]string{"Mcp-Session-Id": "s"}), 1<<20)
			if !IsAmbiguous(q.Err) || len(q.Messages) != 0 {
				t.Fatalf("not refused as ambiguous: err %v, messages %+v", q.Err, q.Messages)
			}
			if !q.FailsClosed(request(c.body, nil)) {
				t.Fatal("an ambiguous message does not fail closed")
			}
		})
	}
	for _, c := range []struct {
		name, body, kind string
		names            []string
	}{
		{"a real U+FFFD", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\ufffdb"}}`, "tool", []string{"a\ufffdb"}},
		{"an escaped value", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret\u005ftool"}}`, "tool", []string{"secret_tool"}},
		{"other params members", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Other":1,"arguments":{"Name":"y"}}}`, "tool", []string{"x"}},
		{"completion of a prompt", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":""}}}`, "prompt", []string{"p"}},
		{"completion of a template", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{x}"}}}`, "resource", []string{"file:///{x}"}},
		{"listen", `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://1","a://2"]}}}`, "resource", []string{"a://1", "a://2"}},
		{"unsubscribe", `{"jsonrpc":"2.0","id":1,"method":"resources/unsubscribe","params":{"uri":"a://1"}}`, "resource", []string{"a://1"}},
		{"no name", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := Get(request(c.body, map[string]string{"Mcp-Session-Id": "s"}), 1<<20)
			if q.Err != nil || q.First().Kind != c.kind || !slices.Equal(q.First().Names, c.names) {
				t.Fatalf("err %v, %+v; want %s %q", q.Err, q.First(), c.kind, c.names)
			}
		})
	}
	// a compressed body: servers that inflate it would read what the rules cannot
	r := request(`{"jsonrpc":"2.0","id":1,"method":"ping"}`, map[string]string{"Content-Encoding": "gzip"})
	if q := Get(r, 1<<20); q.Err != errEncoded || !q.FailsClosed(r) {
		t.Fatalf("Content-Encoding: %v", q.Err)
	}
	// JSON that is some other API's: no member that a server could read as
	// jsonrpc or method
	q := Get(request(`{"ID":5,"Name":"x"}`, nil), 1<<20)
	if q.Err != errNotJSON || q.FailsClosed(request(`{}`, map[string]string{"Content-Type": "application/json"})) {
		t.Fatalf("some other API's JSON: %v", q.Err)
	}
}

// Readings: the spellings a server resolves to the same resource as the
// normal form.
func TestReadings(t *testing.T) {
	for _, c := range []struct{ uri, want string }{
		{"file:///secret/key", "file:///secret/key"},
		{"file:///public/../secret/key", "file:///secret/key"},
		{"FILE:///secret/key", "file:///secret/key"},
		{"file://localhost/secret/key", "file:///secret/key"},
		{"file://LOCALHOST/secret/key", "file:///secret/key"},
		{"file:///public/%2E%2E/secret/key", "file:///secret/key"},
		{"file:///public/%2e%2e/secret/key", "file:///secret/key"},
		{"file:///%73ecret/key", "file:///secret/key"},
		{"file:///public/..%2Fsecret/key", "file:///secret/key"},
		{"file:///public\\..\\secret\\key", "file:///secret/key"},
		{"file:///public/./../secret/./key", "file:///secret/key"},
		{"file:////secret/key", "file:///secret/key"},
		{"file:///public//../secret/key", "file:///secret/key"},
		{"file:///sec\tret/key", "file:///secret/key"},
		{"HTTP://Example.COM:80/secret/key", "http://example.com/secret/key"},
		{"http://example.com", "http://example.com/"},
	} {
		if rs := Readings(c.uri); !slices.Contains(rs, c.want) {
			t.Errorf("Readings(%q) = %q, want %q among them", c.uri, rs, c.want)
		}
	}
	if rs := Readings("file:///public/a.txt"); len(rs) != 1 {
		t.Errorf("a normal URI has readings %q", rs)
	}
	for _, u := range []string{"file:secret/key", "file:/secret/key", "FILE:/public/../secret/key", "file:\\secret\\key",
		"file://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/secret/key", "file://%6Cocalhost/secret/key", "https:api.example.com/secret/x",
		"https://api\u3002example\u3002com/secret/x"} {
		if !Unsettled(u) {
			t.Errorf("Unsettled(%q) = false", u)
		}
	}
	for _, u := range []string{"file:///secret/key", "https://api.example.com/x", "urn:x:y", "mem:secret/key", "a://1"} {
		if Unsettled(u) {
			t.Errorf("Unsettled(%q) = true", u)
		}
	}
	secret := func(u string) bool { return Glob("file:///secret/*", u) }
	if Disagreement("resource", []string{"file:///public/../secret/key"}, secret) == "" || Disagreement("resource", []string{"file:///public/./a"}, secret) != "" ||
		Disagreement("tool", []string{"../secret"}, secret) != "" {
		t.Error("Disagreement")
	}
}

// differential: the same body through mcpreq, through a case-insensitive
// struct decoder (encoding/json, as Go servers read it), through a
// last-member-wins map decoder (as JavaScript's JSON.parse and Python's
// json.loads read it) and, for resource URIs, through net/url's parser with
// the path cleaned (as a file server resolves it). Wherever mcpreq accepts
// a message, each of them must read the same method and name; wherever
// mcpreq's readings of a URI agree on a rule, the net/url reading must be
// decided the same way.
func FuzzDifferential(f *testing.F) {
	for _, b := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_tool"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Name":"secret_tool"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"secret_tool"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/../secret/key"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"FILE://localhost/%73ecret/key"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"na\u006de":"secret_plan"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"secret_plan"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///secret/a"]}}}`,
		`{"jsonrpc":"2.0","id":1,"Method":"tools/call","method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_\ud800"}}`,
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body string) {
		q := Get(request(body, map[string]string{"Mcp-Session-Id": "s"}), 1<<16)
		if q.Err != nil || q.Batch || len(q.Messages) != 1 {
			return
		}
		m := q.First()
		type ref struct{ Type, Name, URI string }
		var folded struct {
			Method string
			Params struct {
				Name, URI     string
				Ref           ref
				Notifications struct{ ResourceSubscriptions []string }
			}
		}
		if json.Unmarshal([]byte(body), &folded) != nil {
			return // a value of another type than the struct's: the server refuses it
		}
		var exact struct {
			Method string                     `json:"method"`
			Params map[string]json.RawMessage `json:"params"`
		}
		_ = json.Unmarshal([]byte(body), &exact)
		if folded.Method != m.Method || exact.Method != m.Method {
			t.Fatalf("method: mcpreq %q, case-insensitive %q, last-wins %q", m.Method, folded.Method, exact.Method)
		}
		var want []string
		switch m.Method {
		case "tools/call", "prompts/get":
			want = nonEmpty(folded.Params.Name)
		case "resources/read", "resources/subscribe", "resources/unsubscribe":
			want = nonEmpty(folded.Params.URI)
		case "completion/complete":
			switch folded.Params.Ref.Type {
			case "ref/prompt":
				want = nonEmpty(folded.Params.Ref.Name)
			case "ref/resource":
				want = nonEmpty(folded.Params.Ref.URI)
			}
		case "subscriptions/listen":
			want = folded.Params.Notifications.ResourceSubscriptions
		default:
			return
		}
		// an empty name and none are decided alike
		if !slices.Equal(nonEmpty(want...), nonEmpty(m.Names...)) {
			t.Fatalf("names: mcpreq %q, case-insensitive %q", m.Names, want)
		}
		if m.Kind != "resource" {
			return
		}
		secret := func(u string) bool { return Glob("file:///secret/*", u) || Glob("*://*/secret/*", u) }
		for _, name := range m.Names {
			if Disagreement(m.Kind, []string{name}, secret) != "" {
				continue // refused by the rules as ambiguous
			}
			if other, ok := netURLReading(name); ok && secret(other) != secret(name) {
				t.Fatalf("URI %q: mcpreq's readings %q agree (%v), net/url reads %q (%v)", name, Readings(name), secret(name), other, secret(other))
			}
		}
	})
}

func nonEmpty(names ...string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == "" })
}

// netURLReading is how a Go server resolves a URI to a resource: net/url's
// parse (the path percent-decoded), scheme and host in lower case,
// file://localhost as file:///, the path cleaned.
func netURLReading(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.Scheme == "" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if strings.EqualFold(u.Scheme, "file") && host == "localhost" {
		host = ""
	}
	p := u.Path
	if p != "" {
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		p = clean
	}
	return strings.ToLower(u.Scheme) + "://" + host + p, true
}

// A compressed upload of another content type is some other API's.
func TestCompressedOtherContent(t *testing.T) {
	r := request("x", map[string]string{"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"})
	if q := Get(r, 1<<20); q.Err != errEncoded || q.FailsClosed(r) {
		t.Fatalf("%v, fails closed %v", q.Err, q.FailsClosed(r))
	}
}
