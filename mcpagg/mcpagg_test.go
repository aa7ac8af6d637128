package mcpagg_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	_ "github.com/caddymcp/caddymcp"
	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

func TestMain(m *testing.M) {
	mcpserver.RunFakeIfRequested()
	os.Exit(m.Run())
}

// aggSite aggregates go-sdk's everything-server over stdio ("every"), the
// same server over Streamable HTTP behind reverse_proxy ("remote") and the
// fake over stdio ("fake").
func aggSite(t *testing.T, fakeLog string) string {
	remote := mcpserver.StartHTTP(t, false)
	return `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			backend every {
				mcp_stdio {
					command ` + mcpserver.Binary(t) + `
					shutdown_timeout 2s
				}
			}
			backend remote {
				reverse_proxy ` + strings.TrimPrefix(remote, "http://") + ` {
					rewrite /
				}
			}
			backend fake {
				mcp_stdio {
					command ` + mcpserver.Self(t) + `
					env ` + mcpserver.FakeEnv + ` mrtr
					env CADDYMCP_FAKE_LOG ` + fakeLog + `
					shutdown_timeout 500ms
				}
			}
		}
	}
}
`
}

// Three backends on one endpoint, through a real Caddy, with go-sdk's
// client in both eras: lists merged with prefixed names, calls routed to
// the owning backend (progress and, in 2025, an elicitation round of the
// backend reach the client), a cancelled call reaches its backend.
func TestAggregateThroughCaddy(t *testing.T) {
	fakeLog := filepath.Join(t.TempDir(), "fake.log")
	c := caddyrun.StartCaddyfile(t, "", aggSite(t, fakeLog))
	for _, version := range []string{"2025-11-25", ""} {
		name := version
		if name == "" {
			name = "2026-07-28"
		}
		t.Run(name, func(t *testing.T) { aggregated(t, c.URL+"/mcp", version) })
	}
	// the cancelled call reached the fake (its log records the cancellation)
	caddyrun.WaitFor(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(fakeLog)
		return strings.Contains(string(b), "cancelled")
	}, "the fake backend seeing notifications/cancelled: "+func() string { b, _ := os.ReadFile(fakeLog); return string(b) }())
}

func aggregated(t *testing.T, url, version string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var asked []string
	var progress int
	client := mcp.NewClient(&mcp.Implementation{Name: "agg-test", Version: "1"}, &mcp.ClientOptions{
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			mu.Lock()
			asked = append(asked, req.Params.Message)
			mu.Unlock()
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "alice"}}, nil
		},
		ProgressNotificationHandler: func(ctx context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress++
			mu.Unlock()
		},
	})
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url}, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"every_test_simple_text", "remote_test_simple_text", "fake_echo", "fake_read_file", "every_test_tool_with_progress"} {
		if !slices.Contains(names, want) {
			t.Errorf("the merged list lacks %s: %v", want, names)
		}
	}
	if slices.Contains(names, "test_simple_text") {
		t.Errorf("an unprefixed name: %v", names)
	}
	text := func(res *mcp.CallToolResult) string {
		if res == nil || len(res.Content) == 0 {
			return ""
		}
		if tc, ok := res.Content[0].(*mcp.TextContent); ok {
			return tc.Text
		}
		return ""
	}
	for _, name := range []string{"every_test_simple_text", "remote_test_simple_text"} {
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: name})
		if err != nil || res.IsError || !strings.Contains(text(res), "simple text") {
			t.Errorf("%s: %v %+v", name, err, res)
		}
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "fake_echo", Arguments: map[string]any{"x": "through the aggregate"}})
	if err != nil || !strings.Contains(text(res), "through the aggregate") {
		t.Errorf("fake_echo: %v %+v", err, res)
	}
	if _, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "nobody_echo"}); err == nil || !strings.Contains(err.Error(), "Unknown tool") {
		t.Errorf("a name no backend has: %v", err)
	}
	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "every_test_tool_with_progress", Meta: mcp.Meta{"progressToken": "p1"}})
	if err != nil || res.IsError {
		t.Errorf("progress tool: %v %+v", err, res)
	}
	if version != "" {
		res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "every_test_elicitation", Arguments: map[string]any{"message": "Who are you?"}})
		if err != nil || res.IsError {
			t.Errorf("elicitation through the aggregate: %v %+v", err, res)
		}
		mu.Lock()
		if !slices.Equal(asked, []string{"Who are you?"}) {
			t.Errorf("the backend's question reached the client as %q", asked)
		}
		if progress == 0 {
			t.Errorf("no progress notification reached the client")
		}
		mu.Unlock()
		// a cancelled call: the fake's hold answers only when cancelled
		cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err = session.CallTool(cctx, &mcp.CallToolParams{Name: "fake_hold"})
		ccancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "cancel") {
			t.Errorf("the cancelled call: %v", err)
		}
	}
	prompts, err := session.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatalf("prompts/list: %v", err)
	}
	var pnames []string
	for _, p := range prompts.Prompts {
		pnames = append(pnames, p.Name)
	}
	if !slices.Contains(pnames, "every_test_simple_prompt") || !slices.Contains(pnames, "remote_test_simple_prompt") {
		t.Errorf("prompts: %v", pnames)
	}
	if _, err := session.GetPrompt(ctx, &mcp.GetPromptParams{Name: "remote_test_simple_prompt"}); err != nil {
		t.Errorf("prompts/get: %v", err)
	}
}

// A backend killed mid-session: the others keep serving, the client is
// told the lists changed and the dead one's tools are gone from the next
// list; when it is back, the client is told again, and its tools return
// and answer (the aggregate opened a new session on it).
func TestAggregateBackendKilled(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	stop := mcpserver.StartHTTPAt(t, addr, false)
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			timeout 3s
			backend local {
				mcp_stdio {
					command `+mcpserver.Binary(t)+`
					shutdown_timeout 2s
				}
			}
			backend remote {
				reverse_proxy `+addr+` {
					rewrite /
				}
			}
		}
	}
}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	changed := make(chan struct{}, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "agg-kill", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: c.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	has := func(prefix string) bool {
		t.Helper()
		tools, err := session.ListTools(ctx, nil)
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		for _, tool := range tools.Tools {
			if strings.HasPrefix(tool.Name, prefix) {
				return true
			}
		}
		return false
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no tools/list_changed: %s", what)
		}
	}
	if !has("remote_") || !has("local_") {
		t.Fatal("the first list lacks a backend")
	}
	for len(changed) > 0 { // the streams' start may have said so once
		<-changed
	}
	stop()
	wait("the remote backend was killed")
	if has("remote_") {
		t.Errorf("the killed backend's tools are still listed")
	}
	if !has("local_") {
		t.Errorf("the live backend's tools are gone")
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "local_test_simple_text"})
	if err != nil || res.IsError {
		t.Errorf("the live backend, after the other died: %v %+v", err, res)
	}
	if _, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "remote_test_simple_text"}); err == nil {
		t.Errorf("a call to the dead backend succeeded")
	}
	for len(changed) > 0 {
		<-changed
	}
	mcpserver.StartHTTPAt(t, addr, false)
	wait("the remote backend came back")
	if !has("remote_") {
		t.Fatalf("the backend that came back is not listed")
	}
	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "remote_test_simple_text"})
	if err != nil || res.IsError {
		t.Errorf("the backend that came back: %v %+v", err, res)
	}
}

// mcp_tools composes with the aggregate: in front of it (on the prefixed
// names the client sees) and inside a backend (on the server's own names).
func TestAggregateWithCuration(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_tools {
			deny tools fake_write_*
			tool every_hello {
				description "Says hello, through two curations"
			}
		}
		mcp_aggregate {
			backend every {
				mcp_tools {
					allow tools test_simple_text test_elicitation
					tool test_simple_text {
						rename hello
					}
				}
				mcp_stdio {
					command `+mcpserver.Binary(t)+`
					shutdown_timeout 2s
				}
			}
			backend fake {
				mcp_stdio {
					command `+mcpserver.Self(t)+`
					env `+mcpserver.FakeEnv+` mrtr
					shutdown_timeout 500ms
				}
			}
		}
	}
}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, version := range []string{"2025-11-25", ""} {
		client := mcp.NewClient(&mcp.Implementation{Name: "agg-curation", Version: "1"}, nil)
		session, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: c.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: version})
		if err != nil {
			t.Fatal(err)
		}
		tools, err := session.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, tool := range tools.Tools {
			got[tool.Name] = tool.Description
		}
		for _, absent := range []string{"fake_write_file", "every_test_audio_content", "every_test_simple_text"} {
			if _, ok := got[absent]; ok {
				t.Errorf("%q: %s is listed", version, absent)
			}
		}
		if got["every_hello"] != "Says hello, through two curations" || got["fake_read_file"] == "" && !slices.Contains(keys(got), "fake_read_file") {
			t.Errorf("%q: tools %v", version, got)
		}
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "every_hello"})
		if err != nil || res.IsError {
			t.Errorf("%q: every_hello: %v %+v", version, err, res)
		}
		if _, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "fake_write_file"}); err == nil || !strings.Contains(err.Error(), "Unknown tool") {
			t.Errorf("%q: the tool denied in front was called: %v", version, err)
		}
		if _, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "every_test_audio_content"}); err == nil || !strings.Contains(err.Error(), "Unknown tool") {
			t.Errorf("%q: the tool the backend's curation hides was called: %v", version, err)
		}
		session.Close()
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The client's credentials are the aggregate's: a remote backend never
// gets its Authorization or Cookie header (no token passthrough), while
// what the backend's block sets reaches it.
func TestAggregateNoTokenPassthrough(t *testing.T) {
	seen := make(chan http.Header, 16)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Clone():
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":"agg-1","result":{"tools":[]}}`)
	}))
	defer backend.Close()
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			backend remote {
				reverse_proxy `+strings.TrimPrefix(backend.URL, "http://")+` {
					header_up X-Backend-Token backend-secret
				}
			}
		}
	}
}
`)
	req, _ := http.NewRequest("POST", c.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/list")
	req.Header.Set("Authorization", "Bearer the-clients-token")
	req.Header.Set("Cookie", "session=the-clients-cookie")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case h := <-seen:
		if h.Get("Authorization") != "" || h.Get("Cookie") != "" {
			t.Errorf("the backend got the client's credentials: Authorization %q, Cookie %q", h.Get("Authorization"), h.Get("Cookie"))
		}
		if h.Get("X-Backend-Token") != "backend-secret" {
			t.Errorf("the backend's own header did not arrive: %v", h)
		}
	default:
		t.Fatal("the backend was not asked")
	}
}

// initialize without params (or with params that are not an object) is
// answered, never a panic.
func TestAggregateInitializeWithoutParams(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_aggregate /mcp {
		backend fake {
			mcp_stdio {
				command `+mcpserver.Self(t)+`
				env `+mcpserver.FakeEnv+` plain
				shutdown_timeout 500ms
			}
		}
	}
}
`)
	for body, want := range map[string]int{
		`{"jsonrpc":"2.0","id":1,"method":"initialize"}`:               200,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":null}`: 200,
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":[]}`:   400,
	} {
		req, _ := http.NewRequest("POST", c.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", body, resp.StatusCode, want)
		}
	}
}
