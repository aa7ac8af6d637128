package stdiobridge

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

func TestScanTop(t *testing.T) {
	msg := []byte(` { "params" : {"a":"}\"{","b":[1,{"id":9}]}, "id": "x\"y" ,"jsonrpc":"2.0","method":"tools/call"} `)
	top, ok := scanTop(msg)
	if !ok {
		t.Fatal("not scanned")
	}
	get := func(s span) string { return string(msg[s.start:s.end]) }
	if get(top.id) != `"x\"y"` || get(top.method) != `"tools/call"` || get(top.jsonrpc) != `"2.0"` ||
		get(top.params) != `{"a":"}\"{","b":[1,{"id":9}]}` || top.result.present() || top.err.present() {
		t.Fatalf("spans: id %s method %s params %s", get(top.id), get(top.method), get(top.params))
	}
	out := splice(msg, top.id, []byte("7"))
	if !bytes.Contains(out, []byte(`"id": 7 ,`)) || !json.Valid(out) {
		t.Fatalf("splice: %s", out)
	}
	for _, in := range []string{`[1]`, `"s"`, `{"\u0069d":1}`, `{"a" 1}`} {
		if _, ok := scanTop([]byte(in)); ok {
			t.Errorf("%s: scanned, want the slow path", in)
		}
	}
}

// FuzzScanTop checks the scanner against encoding/json on valid objects.
func FuzzScanTop(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	f.Add(`{"id":"a\"b","result":{"x":[1,2,{"y":"}"}]},"jsonrpc":"2.0"}`)
	f.Add(` {"error": {"code":-1}, "id" : -1.5e3 } `)
	f.Add(`{"params":[{"}":"{"}],"method":"a\\b"}`)
	f.Fuzz(func(t *testing.T, in string) {
		b := []byte(in)
		var want map[string]json.RawMessage
		if !json.Valid(b) || json.Unmarshal(b, &want) != nil {
			return
		}
		top, ok := scanTop(b)
		if !ok {
			return // the slow path handles it
		}
		check := func(name string, s span) {
			w, has := want[name]
			if !has {
				if s.present() {
					t.Fatalf("%s found by the scanner, not by encoding/json", name)
				}
				return
			}
			// a repeated member: encoding/json keeps the last, so does the scanner
			var a, c bytes.Buffer
			_ = json.Compact(&a, w)
			_ = json.Compact(&c, b[s.start:s.end])
			if !s.present() || a.String() != c.String() {
				t.Fatalf("%s: scanner %q, encoding/json %q", name, c.String(), a.String())
			}
		}
		check("jsonrpc", top.jsonrpc)
		check("id", top.id)
		check("method", top.method)
		check("params", top.params)
		check("result", top.result)
		check("error", top.err)
	})
}

// encodeRequest writes what encoding/json would, as one line, without a map.
func TestEncodeRequest(t *testing.T) {
	params := map[string]json.RawMessage{
		"name":           json.RawMessage(`"echo"`),
		"arguments":      json.RawMessage("{\n  \"text\": \"a\\nb <&>\",\r\n  \"n\": [1, 2]\n}"),
		"_meta":          json.RawMessage(`{"progressToken":"caddymcp-3"}`),
		"we\"ird\n<key>": json.RawMessage(`null`),
	}
	for _, tc := range []struct {
		method string
		params map[string]json.RawMessage
	}{{"tools/call", params}, {"ping", nil}, {"x\"\u2028y", map[string]json.RawMessage{}}} {
		got := encodeRequest(42, tc.method, tc.params)
		if bytes.ContainsAny(got, "\r\n") {
			t.Fatalf("line break in %s", got)
		}
		msg := map[string]any{"jsonrpc": "2.0", "id": 42, "method": tc.method}
		if tc.params != nil {
			msg["params"] = tc.params
		}
		want, _ := json.Marshal(msg)
		var a, b any
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		json.Unmarshal(want, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("encodeRequest = %s\nencoding/json = %s", got, want)
		}
	}
}

// BenchmarkScanTop: the top level of a typical answer from a child.
func BenchmarkScanTop(b *testing.B) {
	msg := []byte(`{"jsonrpc":"2.0","id":"caddymcp-17","result":{"content":[{"type":"text","text":"hello, world"}],"isError":false}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := scanTop(msg); !ok {
			b.Fatal("not scanned")
		}
	}
}
