package mcpauth_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// toolServer is an MCP server over HTTP that lists the given tools (as SSE
// when the request asks with X-SSE, else JSON) and answers any call.
func toolServer(t *testing.T, tools []string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.Unmarshal(b, &msg)
		var result any = map[string]any{"content": []any{map[string]any{"type": "text", "text": "called"}}}
		switch msg.Method {
		case "prompts/list":
			result = map[string]any{"prompts": []any{map[string]any{"name": "secret_plan"}, map[string]any{"name": "hello"}}}
		case "resources/list":
			result = map[string]any{"resources": []any{map[string]any{"uri": "file:///srv/a", "name": "a"}, map[string]any{"uri": "file:///pub/b", "name": "b"}}}
		case "resources/templates/list":
			result = map[string]any{"resourceTemplates": []any{map[string]any{"uriTemplate": "file:///srv/{x}", "name": "s"}, map[string]any{"uriTemplate": "file:///pub/{x}", "name": "p"}}, "cacheScope": "public"}
		}
		if msg.Method == "tools/list" {
			list := make([]any, len(tools))
			for i, n := range tools {
				list[i] = map[string]any{"name": n, "inputSchema": map[string]any{"type": "object"}}
			}
			result = map[string]any{"tools": list}
		}
		out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": result})
		if r.Header.Get("X-SSE") != "" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n")
			w.(http.Flusher).Flush()
			fmt.Fprintf(w, "id: 2\ndata: %s\n\n", out)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type ruleEnv struct {
	t    *testing.T
	url  string
	k    *jwkstest.Key
	is   *jwkstest.Issuer
	meta string
}

func (e *ruleEnv) token(scope string) string {
	return jwkstest.Mint(e.t, e.k, e.is.Claims("sam", e.url, scope), nil)
}

// post sends a JSON-RPC body; it returns the status, the WWW-Authenticate
// header and the last JSON-RPC message of the answer.
func (e *ruleEnv) post(token, body string, header map[string]string) (int, string, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var last string
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && d != "" {
				last = d
			}
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		last = string(b)
	}
	var m map[string]any
	_ = json.Unmarshal([]byte(last), &m)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), m
}

func listed(m map[string]any) []string {
	res, _ := m["result"].(map[string]any)
	tools, _ := res["tools"].([]any)
	var names []string
	for _, x := range tools {
		names = append(names, x.(map[string]any)["name"].(string))
	}
	slices.Sort(names)
	return names
}

// startRuleEnv starts a real Caddy whose /mcp route has mcp_auth (a fresh
// issuer, scopes read:all, and rules) in front of upstream (a directive).
func startRuleEnv(t *testing.T, upstream, rules string) *ruleEnv {
	t.Helper()
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", ruleSite(is, upstream, rules))
	return &ruleEnv{t: t, url: "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp", k: k, is: is}
}

// proxyTo is the reverse_proxy directive to an httptest server's URL.
func proxyTo(url string) string { return "reverse_proxy " + strings.TrimPrefix(url, "http://") }

func ruleSite(is *jwkstest.Issuer, upstream string, rules string) string {
	return `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_auth {
			issuer ` + is.URL() + `
			jwks_url ` + is.JWKSURL() + `
			audience http://127.0.0.1:{{PORT}}/mcp
			scopes read:all
` + rules + `
		}
		` + upstream + `
	}
}
`
}

// Each rule kind on a reverse_proxy route (JSON and SSE answers) and on an
// mcp_stdio route (both eras): a call the token's scopes do not cover gets
// 403 insufficient_scope naming every scope it needs, lists show only what
// the token may call, marked private.
func TestScopeRules(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	backend := toolServer(t, []string{"read_file", "write_file", "delete_file", "t"})
	rules := "\t\t\ttool write_* delete_* scopes write:all\n\t\t\ttool delete_* scopes admin\n\t\t\tprompt secret_* scopes secrets\n\t\t\tresource file:///srv/* scopes files\n"
	for _, up := range []struct{ name, directive string }{
		{"reverse_proxy", "reverse_proxy " + strings.TrimPrefix(backend, "http://")},
		{"mcp_stdio", "mcp_stdio {\n\t\t\tcommand " + mcpserver.Self(t) + "\n\t\t\tenv " + mcpserver.FakeEnv + " mrtr\n\t\t\tchild_era legacy\n\t\t}"},
	} {
		t.Run(up.name, func(t *testing.T) {
			c := caddyrun.StartCaddyfile(t, "", ruleSite(is, up.directive, rules))
			e := &ruleEnv{t: t, url: "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp", k: k, is: is}
			meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
			h26 := func(method, name string) map[string]string {
				return map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Mcp-Name": name}
			}
			read := e.token("read:all")
			// the call refused, with every scope the operation needs
			status, chal, _ := e.post(read, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file",`+meta+`}}`, h26("tools/call", "delete_file"))
			if status != 403 || !strings.Contains(chal, `error="insufficient_scope"`) || !strings.Contains(chal, `scope="read:all write:all admin"`) {
				t.Fatalf("delete_file with read:all: %d %s", status, chal)
			}
			status, chal, _ = e.post(read, `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///srv/x",`+meta+`}}`, h26("resources/read", "file:///srv/x"))
			if status != 403 || !strings.Contains(chal, `scope="read:all files"`) {
				t.Fatalf("resource with read:all: %d %s", status, chal)
			}
			status, chal, _ = e.post(read, `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"secret_plan",`+meta+`}}`, h26("prompts/get", "secret_plan"))
			if status != 403 || !strings.Contains(chal, `scope="read:all secrets"`) {
				t.Fatalf("prompt with read:all: %d %s", status, chal)
			}
			// the list shows only what the token may call, in JSON and SSE
			for _, sse := range []string{"", "1"} {
				hdr := h26("tools/list", "")
				delete(hdr, "Mcp-Name")
				hdr["X-SSE"] = sse
				status, _, m := e.post(read, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{`+meta+`}}`, hdr)
				res, _ := m["result"].(map[string]any)
				if got := listed(m); status != 200 || slices.Contains(got, "write_file") || slices.Contains(got, "delete_file") ||
					!slices.Contains(got, "read_file") || res["cacheScope"] != "private" {
					t.Fatalf("tools/list for read:all (sse=%q): %d %v %v", sse, status, got, m)
				}
			}
			if up.name == "mcp_stdio" {
				// a 2025 session: the list comes as an SSE stream, with event ids
				req, _ := http.NewRequest("POST", e.url, strings.NewReader(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("Authorization", "Bearer "+read)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sess := map[string]string{"Mcp-Session-Id": resp.Header.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-11-25"}
				e.post(read, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, sess)
				status, _, m := e.post(read, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, sess)
				if got := listed(m); status != 200 || slices.Contains(got, "write_file") || !slices.Contains(got, "read_file") {
					t.Fatalf("2025 session tools/list for read:all: %d %v", status, m)
				}
				if status, chal, _ := e.post(read, `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"write_file"}}`, sess); status != 403 || !strings.Contains(chal, "write:all") {
					t.Fatalf("2025 session write_file for read:all: %d %s", status, chal)
				}
			}
			write := e.token("read:all write:all")
			if got := func() []string {
				_, _, m := e.post(write, `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{`+meta+`}}`, map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"})
				return listed(m)
			}(); !slices.Contains(got, "write_file") || slices.Contains(got, "delete_file") {
				t.Fatalf("tools/list for write:all: %v", got)
			}
			if status, _, m := e.post(write, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"write_file","arguments":{},`+meta+`}}`, h26("tools/call", "write_file")); status != 200 || m["result"] == nil {
				t.Fatalf("write_file with write:all: %d %v", status, m)
			}
		})
	}
}

// Prompt and resource lists are filtered by their rules too, URIs and URI
// templates alike, and a list the server called public becomes private.
func TestScopeRulesFilterPromptsAndResources(t *testing.T) {
	backend := toolServer(t, nil)
	e := startRuleEnv(t, proxyTo(backend),
		"\t\t\tprompt secret_* scopes secrets\n\t\t\tresource file:///srv/* scopes files\n")
	sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
	names := func(m map[string]any, member, key string) []string {
		res, _ := m["result"].(map[string]any)
		list, _ := res[member].([]any)
		var out []string
		for _, x := range list {
			out = append(out, x.(map[string]any)[key].(string))
		}
		return out
	}
	for _, sse := range []string{"", "1"} {
		sess["X-SSE"] = sse
		read := e.token("read:all")
		_, _, m := e.post(read, `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`, sess)
		if got := names(m, "prompts", "name"); !slices.Equal(got, []string{"hello"}) {
			t.Fatalf("prompts for read:all (sse=%q): %v", sse, got)
		}
		_, _, m = e.post(read, `{"jsonrpc":"2.0","id":2,"method":"resources/list"}`, sess)
		if got := names(m, "resources", "uri"); !slices.Equal(got, []string{"file:///pub/b"}) {
			t.Fatalf("resources for read:all: %v", got)
		}
		_, _, m = e.post(read, `{"jsonrpc":"2.0","id":3,"method":"resources/templates/list"}`, sess)
		if got := names(m, "resourceTemplates", "uriTemplate"); !slices.Equal(got, []string{"file:///pub/{x}"}) || m["result"].(map[string]any)["cacheScope"] != "private" {
			t.Fatalf("templates for read:all: %v %v", got, m)
		}
		all := e.token("read:all secrets files")
		_, _, m = e.post(all, `{"jsonrpc":"2.0","id":4,"method":"resources/list"}`, sess)
		if got := names(m, "resources", "uri"); len(got) != 2 {
			t.Fatalf("resources for a token with every scope: %v", got)
		}
	}
}

// A 2025-03-26 batch: the calls the token may not make are taken out and
// answered with a JSON-RPC error naming the scopes they need, the rest are
// served; a batch of nothing but such calls gets the 403 challenge.
func TestScopeRulesBatch(t *testing.T) {
	e := startRuleEnv(t, "mcp_stdio {\n\t\t\tcommand "+mcpserver.Self(t)+"\n\t\t\tenv "+mcpserver.FakeEnv+" mrtr\n\t\t}",
		"\t\t\ttool write_* scopes write:all\n")
	tok := e.token("read:all")
	req, _ := http.NewRequest("POST", e.url, strings.NewReader(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	sess := map[string]string{"Mcp-Session-Id": resp.Header.Get("Mcp-Session-Id"), "Mcp-Protocol-Version": "2025-03-26"}
	// all the answers of a batch, from its SSE stream
	answers := func(body string) (int, string, map[string]map[string]any) {
		req, _ := http.NewRequest("POST", e.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range sess {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		byID := map[string]map[string]any{}
		add := func(raw []byte) {
			var list []map[string]any
			if json.Unmarshal(raw, &list) != nil {
				var one map[string]any
				if json.Unmarshal(raw, &one) == nil {
					list = append(list, one)
				}
			}
			for _, m := range list {
				byID[fmt.Sprint(m["id"])] = m
			}
		}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok && d != "" {
					add([]byte(d))
				}
			}
		} else {
			b, _ := io.ReadAll(resp.Body)
			add(b)
		}
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), byID
	}
	status, _, got := answers(`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}},` +
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"write_file"}},{"jsonrpc":"2.0","id":3,"method":"tools/list"}]`)
	if status != 200 || got["1"]["result"] == nil || got["3"]["result"] == nil {
		t.Fatalf("the allowed messages of the batch: %d %v", status, got)
	}
	errObj, _ := got["2"]["error"].(map[string]any)
	data, _ := errObj["data"].(map[string]any)
	if errObj == nil || data["error"] != "insufficient_scope" || data["scope"] != "read:all write:all" {
		t.Fatalf("the forbidden call's answer: %v", got["2"])
	}
	if names := listed(got["3"]); slices.Contains(names, "write_file") || !slices.Contains(names, "read_file") {
		t.Fatalf("the batch's tools/list was not filtered: %v", names)
	}
	// nothing but forbidden calls: the challenge
	status, chal, _ := answers(`[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"write_file"}}]`)
	if status != 403 || !strings.Contains(chal, `scope="read:all write:all"`) {
		t.Fatalf("a batch of forbidden calls: %d %s", status, chal)
	}
	// a forbidden call beside notifications only: its error is the answer
	status, _, got = answers(`[{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"x","progress":1}},{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"write_file"}}]`)
	if status != 200 || got["5"]["error"] == nil {
		t.Fatalf("a forbidden call beside a notification: %d %v", status, got)
	}
}

// Unlisted means uncallable: for random rules, tools and tokens, every tool
// a filtered list shows can be called, and none it leaves out can.
func TestScopeRulesProperty(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"read", "write", "delete", "admin", "list", "get", "put"}
	scopes := []string{"a", "b", "c", "d"}
	pick := func(from []string, n int) []string {
		out := slices.Clone(from)
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out[:n]
	}
	var tools []string
	for _, a := range words {
		for _, b := range []string{"file", "user", "doc"} {
			tools = append(tools, a+"_"+b)
		}
	}
	backend := toolServer(t, tools)
	// one config, a route per round (a reload per round would race the old
	// server's closing connections)
	const rounds = 25
	ruleSets := make([]string, rounds)
	var site strings.Builder
	site.WriteString("http://127.0.0.1:{{PORT}} {\n\tbind 127.0.0.1\n")
	for round := range rounds {
		var rules strings.Builder
		for i := 0; i < 1+rng.IntN(4); i++ {
			globs := []string{pick(words, 1)[0] + "_*"}
			if rng.IntN(2) == 0 {
				globs = append(globs, "*_"+[]string{"file", "user", "doc"}[rng.IntN(3)])
			}
			fmt.Fprintf(&rules, "\t\t\ttool %s scopes %s\n", strings.Join(globs, " "), strings.Join(pick(scopes, 1+rng.IntN(2)), " "))
		}
		ruleSets[round] = rules.String()
		fmt.Fprintf(&site, "\troute /mcp%d {\n\t\tmcp_auth {\n\t\t\tissuer %s\n\t\t\tjwks_url %s\n\t\t\taudience http://127.0.0.1:{{PORT}}/mcp%d\n%s\t\t}\n\t\treverse_proxy %s\n\t}\n",
			round, is.URL(), is.JWKSURL(), round, rules.String(), strings.TrimPrefix(backend, "http://"))
	}
	site.WriteString("}\n")
	c := caddyrun.StartCaddyfile(t, "", site.String())
	checked := 0
	for round := range rounds {
		e := &ruleEnv{t: t, url: "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp" + strconv.Itoa(round), k: k, is: is}
		granted := append([]string{"read:all"}, pick(scopes, rng.IntN(len(scopes)+1))...)
		tok := e.token(strings.Join(granted, " "))
		sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
		_, _, m := e.post(tok, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, sess)
		shown := listed(m)
		for _, name := range tools {
			status, _, _ := e.post(tok, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"`+name+`"}}`, sess)
			callable := status == 200
			if callable != slices.Contains(shown, name) {
				t.Fatalf("rules:\n%sscopes %v: %s listed=%v callable=%v (%d)", ruleSets[round], granted, name, slices.Contains(shown, name), callable, status)
			}
			checked++
		}
	}
	t.Logf("%d (rules, token, tool) cases: listed exactly when callable", checked)
}

// Rate limits through Caddy: per principal, and per principal and tool,
// exact counts, 429 with Retry-After and a JSON-RPC error.
func TestRateLimits(t *testing.T) {
	backend := toolServer(t, []string{"read_file", "write_a", "write_b"})
	e := startRuleEnv(t, proxyTo(backend),
		"\t\t\trate 6/1h\n\t\t\trate 2/1h tool write_*\n")
	sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
	call := func(tok, name string) int {
		status, _, _ := e.post(tok, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"`+name+`"}}`, sess)
		return status
	}
	ann := e.token("read:all")
	got := []int{call(ann, "write_a"), call(ann, "write_a"), call(ann, "write_a"), call(ann, "write_b"), call(ann, "write_b"), call(ann, "read_file")}
	want := []int{200, 200, 429, 200, 200, 200}
	if !slices.Equal(got, want) {
		t.Fatalf("per tool: %v, want %v", got, want)
	}
	// five requests counted against ann's route-wide 6/1h (not the one
	// refused): one more passes, the next is refused
	if call(ann, "read_file") != 200 {
		t.Fatal("the request the per-tool limit refused was counted against the route-wide limit")
	}
	req, _ := http.NewRequest("POST", e.url, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_file"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+ann)
	req.Header.Set("Mcp-Session-Id", "s")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rpc struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &rpc)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "600" || rpc.ID != 9 || rpc.Error.Code != -32010 || !strings.Contains(rpc.Error.Message, "6 requests per 1h") {
		t.Fatalf("7th request: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	bob := jwkstest.Mint(t, e.k, e.is.Claims("bob", e.url, "read:all"), nil)
	if call(bob, "write_a") != 200 {
		t.Fatal("bob was counted against ann's limits")
	}
}

// With rules, a body they cannot read is refused, never passed on: too
// large for the bound, not JSON, or ambiguous (a member twice: parsers
// differ on which one counts).
func TestScopeRulesRefuseWhatTheyCannotRead(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	var reached atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	}))
	t.Cleanup(backend.Close)
	c := caddyrun.StartCaddyfile(t, "", ruleSite(is, "reverse_proxy "+strings.TrimPrefix(backend.URL, "http://"), "\t\t\ttool write_* scopes write:all\n"))
	e := &ruleEnv{t: t, url: "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp", k: k, is: is}
	tok := e.token("read:all")
	sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
	for name, body := range map[string]string{
		"too large":      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x","pad":"` + strings.Repeat("x", 5<<20) + `"}}`,
		"not JSON":       `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_x"}} trailing`,
		"name twice":     `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_x","name":"write_x"}}`,
		"method twice":   `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"write_x"}}`,
		"escaped member": `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na\u006de":"write_x"}}`,
	} {
		if status, _, _ := e.post(tok, body, sess); status != 400 {
			t.Errorf("%s: %d, want 400", name, status)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d unreadable requests reached the upstream", n)
	}
	if status, _, _ := e.post(tok, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_x"}}`, sess); status != 200 || reached.Load() != 1 {
		t.Fatalf("a readable request: %d", status)
	}
}

// The audit log: every tools/call of a 200-call run, served or refused,
// appears exactly once, on the audit loggers (routed to a file of their
// own); no token and no argument text unless asked, then their hash.
func TestAuditLog(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	for _, mode := range []string{"", "hash"} {
		t.Run("arguments="+mode, func(t *testing.T) {
			logPath := t.TempDir() + "/audit.log"
			global := "\tlog audit {\n\t\toutput file " + logPath + "\n\t\tinclude http.handlers.mcp_stdio.audit http.handlers.mcp_auth.audit\n\t}\n"
			extra := ""
			if mode != "" {
				extra = "\n\t\t\taudit_arguments " + mode
			}
			c := caddyrun.StartCaddyfile(t, global, ruleSite(is, "mcp_stdio {\n\t\t\tcommand "+mcpserver.Self(t)+"\n\t\t\tenv "+mcpserver.FakeEnv+" mrtr\n\t\t\tchild_era legacy"+extra+"\n\t\t}",
				"\t\t\ttool write_* scopes write:all\n"))
			e := &ruleEnv{t: t, url: "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp", k: k, is: is}
			tok := e.token("read:all")
			meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
			want := map[string]string{}
			for i := 0; i < 200; i++ {
				id := "call-" + strconv.Itoa(i)
				name, decision := "echo", "allowed"
				if i%4 == 0 {
					name, decision = "write_file", "refused"
				}
				body := `{"jsonrpc":"2.0","id":"` + id + `","method":"tools/call","params":{"name":"` + name + `","arguments":{"note":"ARGTEXT-` + strconv.Itoa(i) + `"},` + meta + `}}`
				status, _, _ := e.post(tok, body, map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": name})
				if (status == 200) != (decision == "allowed") {
					t.Fatalf("%s: %d", id, status)
				}
				want[`"`+id+`"`] = decision
			}
			var entries []map[string]any
			deadline := time.Now().Add(30 * time.Second)
			for {
				raw, _ := os.ReadFile(logPath)
				entries = entries[:0]
				for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
					var m map[string]any
					if json.Unmarshal([]byte(line), &m) == nil {
						entries = append(entries, m)
					}
				}
				if len(entries) >= 200 || time.Now().After(deadline) {
					if strings.Contains(string(raw), tok) || strings.Contains(string(raw), "eyJ") {
						t.Fatal("a token in the audit log")
					}
					if strings.Contains(string(raw), "ARGTEXT") {
						t.Fatal("argument text in the audit log")
					}
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			seen := map[string]int{}
			for _, m := range entries {
				id, _ := m["request_id"].(string)
				seen[id]++
				if m["decision"] != want[id] {
					t.Fatalf("entry %v: decision %v, want %s", id, m["decision"], want[id])
				}
				if m["sub"] != "sam" || m["method"] != "tools/call" {
					t.Fatalf("entry %v: %v", id, m)
				}
				if m["decision"] == "allowed" {
					if m["outcome"] != "result" || m["pid"] == nil || m["era"] != "2026" {
						t.Fatalf("allowed entry %v: %v", id, m)
					}
					args, _ := m["arguments"].(string)
					if (mode == "hash") != strings.HasPrefix(args, "sha256:") {
						t.Fatalf("entry %v arguments %q with audit_arguments %q", id, args, mode)
					}
				}
			}
			for id := range want {
				if seen[id] != 1 {
					t.Fatalf("%s appears %d times in the audit log", id, seen[id])
				}
			}
			if len(entries) != 200 {
				t.Fatalf("%d audit entries for 200 calls", len(entries))
			}
		})
	}
}
