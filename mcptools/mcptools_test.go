package mcptools_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
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

// curation is the mcp_tools block the tests put in front of go-sdk's
// everything-server.
const curation = `
		mcp_tools {
			allow tools test_simple_text test_elicitation test_image_* test_error_handling
			deny tools test_image_content
			tool test_simple_text {
				rename hello
				description "Says hello"
				annotation readOnlyHint true
				annotation destructiveHint false
			}
			tool test_elicitation {
				fixed message "Fixed question"
			}
			deny prompts test_prompt_with_image
			prompt test_prompt_with_arguments {
				rename with_args
				fixed arg1 one
			}
			deny resources test://static-text
		}`

// Through a real Caddy, mcp_tools in front of mcp_stdio (go-sdk's
// everything-server over stdio) and in front of reverse_proxy (the same
// server over Streamable HTTP), with go-sdk's client in both eras: lists
// show what the block allows, renamed and overridden; hidden names and a
// renamed tool's old name are unknown tools; fixed arguments are set and
// may not be set by the client.
func TestCurationThroughCaddy(t *testing.T) {
	remote := mcpserver.StartHTTP(t, false)
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /stdio {`+curation+`
		mcp_stdio {
			command `+mcpserver.Binary(t)+`
			shutdown_timeout 2s
		}
	}
	route /legacy {`+curation+`
		mcp_stdio {
			command `+mcpserver.Binary(t)+`
			child_era legacy
			shutdown_timeout 2s
		}
	}
	route /remote {`+curation+`
		reverse_proxy `+strings.TrimPrefix(remote, "http://")+` {
			rewrite /
		}
	}
}
`)
	for _, tc := range []struct{ route, version string }{
		{"/stdio", "2025-11-25"},
		{"/stdio", ""},  // 2026-07-28, passed through to the server
		{"/legacy", ""}, // 2026-07-28, the server's questions turned into input_required rounds
		{"/remote", "2025-11-25"},
		{"/remote", ""},
	} {
		era := tc.version
		if era == "" {
			era = "2026-07-28"
		}
		// everything-server's test_elicitation asks with elicitation/create,
		// which 2026-07-28 has no place for unless the bridge translates it
		elicits := tc.version != "" || tc.route == "/legacy"
		t.Run(tc.route+" "+era, func(t *testing.T) { curated(t, c.URL+tc.route, tc.version, elicits) })
	}
}

func curated(t *testing.T, url, version string, elicits bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var asked []string
	client := mcp.NewClient(&mcp.Implementation{Name: "mcp-tools-test", Version: "1"}, &mcp.ClientOptions{
		ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			mu.Lock()
			asked = append(asked, req.Params.Message)
			mu.Unlock()
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"username": "alice"}}, nil
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
	byName := map[string]*mcp.Tool{}
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		byName[tool.Name] = tool
	}
	slices.Sort(names)
	if want := []string{"hello", "test_elicitation", "test_error_handling"}; !slices.Equal(names, want) {
		t.Fatalf("tools: %v, want %v", names, want)
	}
	hello := byName["hello"]
	if hello.Description != "Says hello" || hello.Annotations == nil || !hello.Annotations.ReadOnlyHint ||
		hello.Annotations.DestructiveHint == nil || *hello.Annotations.DestructiveHint {
		t.Errorf("hello: description %q, annotations %+v", hello.Description, hello.Annotations)
	}
	schema, _ := json.Marshal(byName["test_elicitation"].InputSchema)
	if strings.Contains(string(schema), `"message"`) {
		t.Errorf("the fixed argument is still in the schema: %s", schema)
	}

	// calls
	text := func(res *mcp.CallToolResult) string {
		if len(res.Content) == 0 {
			return ""
		}
		if tc, ok := res.Content[0].(*mcp.TextContent); ok {
			return tc.Text
		}
		return ""
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "hello"})
	if err != nil || res.IsError || !strings.Contains(text(res), "simple text") {
		t.Errorf("hello: %v %+v", err, res)
	}
	for _, hidden := range []string{"test_simple_text", "test_image_content", "test_audio_content"} {
		_, err := session.CallTool(ctx, &mcp.CallToolParams{Name: hidden})
		if err == nil || !strings.Contains(err.Error(), "Unknown tool: "+hidden) {
			t.Errorf("%s (hidden): %v", hidden, err)
		}
	}
	if elicits {
		res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "test_elicitation"})
		if err != nil || res.IsError {
			b, _ := json.Marshal(res)
			t.Fatalf("test_elicitation: %v %s", err, b)
		}
		mu.Lock()
		if !slices.Equal(asked, []string{"Fixed question"}) {
			t.Errorf("the elicitation asked %q; want the fixed message", asked)
		}
		mu.Unlock()
	}
	for _, spelling := range []string{"message", "Message", "MESSAGE"} {
		_, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "test_elicitation", Arguments: map[string]any{spelling: "mine"}})
		if err == nil || !strings.Contains(err.Error(), "is fixed by the gateway") {
			t.Errorf("test_elicitation with %s set: %v", spelling, err)
		}
	}

	// prompts
	prompts, err := session.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatalf("prompts/list: %v", err)
	}
	var pnames []string
	for _, p := range prompts.Prompts {
		pnames = append(pnames, p.Name)
		if p.Name == "with_args" && (len(p.Arguments) != 1 || p.Arguments[0].Name != "arg2") {
			t.Errorf("with_args arguments: %+v", p.Arguments)
		}
	}
	if slices.Contains(pnames, "test_prompt_with_image") || slices.Contains(pnames, "test_prompt_with_arguments") || !slices.Contains(pnames, "with_args") {
		t.Errorf("prompts: %v", pnames)
	}
	got, err := session.GetPrompt(ctx, &mcp.GetPromptParams{Name: "with_args", Arguments: map[string]string{"arg2": "two"}})
	if err != nil {
		t.Fatalf("prompts/get with_args: %v", err)
	}
	b, _ := json.Marshal(got)
	if !strings.Contains(string(b), "one") || !strings.Contains(string(b), "two") {
		t.Errorf("with_args: %s", b)
	}
	if _, err := session.GetPrompt(ctx, &mcp.GetPromptParams{Name: "test_prompt_with_image"}); err == nil || !strings.Contains(err.Error(), "Unknown prompt") {
		t.Errorf("hidden prompt: %v", err)
	}

	// resources
	resources, err := session.ListResources(ctx, nil)
	if err != nil {
		t.Fatalf("resources/list: %v", err)
	}
	for _, r := range resources.Resources {
		if r.URI == "test://static-text" {
			t.Errorf("the denied resource is listed")
		}
	}
	if _, err := session.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static-text"}); err == nil {
		t.Errorf("the denied resource was read")
	}
}

// A message whose name servers could read two ways ("name" and "Name") is
// refused, not curated: a case-insensitive server would otherwise run the
// hidden tool.
func TestAmbiguousNamesRefused(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /stdio {`+curation+`
		mcp_stdio {
			command `+mcpserver.Binary(t)+`
		}
	}
}
`)
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","Name":"test_image_content","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","n\u0061me":"test_image_content","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
	} {
		req, _ := http.NewRequest("POST", c.URL+"/stdio", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2026-07-28")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(out), "ambiguous") {
			t.Errorf("%s: %d %s", body, resp.StatusCode, out)
		}
	}
}
