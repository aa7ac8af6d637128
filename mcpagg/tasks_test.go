package mcpagg_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

const tasksMeta = `{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
	`"io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}`

// post26 sends one 2026-07-28 request declaring the tasks extension, with
// Mcp-Name name, and returns the status and the JSON-RPC answer.
func post26(t *testing.T, url, method, name string, params map[string]any) (int, map[string]any) {
	t.Helper()
	params["_meta"] = json.RawMessage(tasksMeta)
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", method)
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for _, l := range strings.Split(s, "\n") {
			if d, ok := strings.CutPrefix(l, "data: "); ok {
				s = d
			}
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: %d %q", method, resp.StatusCode, s)
	}
	return resp.StatusCode, m
}

func result(m map[string]any) map[string]any { r, _ := m["result"].(map[string]any); return r }

// Tasks through mcp_aggregate: a task id names its backend, tasks/* reach
// the backend that runs the task, and an id that names another backend (or
// none) is not found. server/discover offers the extension.
func TestAggregateTasks(t *testing.T) {
	backend := func(name string) string {
		return `
			backend ` + name + ` {
				mcp_stdio {
					command ` + mcpserver.Self(t) + `
					env ` + mcpserver.FakeEnv + ` tasks
					child_era legacy
					task_after 0
					shutdown_timeout 500ms
				}
			}`
	}
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			prefix always`+backend("a")+backend("b")+`
		}
	}
}
`)
	url := c.URL + "/mcp"
	_, disc := post26(t, url, "server/discover", "", map[string]any{})
	if ext, _ := result(disc)["capabilities"].(map[string]any)["extensions"].(map[string]any); ext["io.modelcontextprotocol/tasks"] == nil {
		t.Fatalf("server/discover: %v", disc)
	}
	ids := map[string]string{}
	for _, b := range []string{"a", "b"} {
		_, r := post26(t, url, "tools/call", b+"_greet", map[string]any{"name": b + "_greet", "arguments": map[string]any{"name": b}})
		id, _ := result(r)["taskId"].(string)
		if result(r)["resultType"] != "task" || !strings.HasPrefix(id, b+"/") {
			t.Fatalf("%s_greet: %v", b, r)
		}
		ids[b] = id
	}
	for b, id := range ids {
		var done map[string]any
		caddyrun.WaitFor(t, 30*time.Second, func() bool {
			_, g := post26(t, url, "tasks/get", id, map[string]any{"taskId": id})
			done = result(g)
			return done["status"] == "completed"
		}, "task "+id+" completes")
		if done["taskId"] != id || !strings.Contains(done["result"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"].(string), "Hello, "+b+"!") {
			t.Fatalf("task of %s: %v", b, done)
		}
	}
	// b's task id under a's name, and a backend that is not there
	_, inner, _ := strings.Cut(ids["b"], "/")
	for _, id := range []string{"a/" + inner, "zz/" + inner, inner} {
		status, g := post26(t, url, "tasks/get", id, map[string]any{"taskId": id})
		if e, _ := g["error"].(map[string]any); status != 400 || e["code"] != float64(-32602) {
			t.Fatalf("tasks/get %q: %d %v, want 400 -32602", id, status, g)
		}
	}
	status, g := post26(t, url, "tasks/get", "wrong", map[string]any{"taskId": ids["a"]})
	if e, _ := g["error"].(map[string]any); status != 400 || e["code"] != float64(-32020) {
		t.Fatalf("Mcp-Name that is not the task id: %d %v", status, g)
	}
	// cancel reaches the task's backend
	_, r := post26(t, url, "tools/call", "a_slow_compute", map[string]any{"name": "a_slow_compute", "arguments": map[string]any{"seconds": 60, "label": "agg"}})
	id, _ := result(r)["taskId"].(string)
	if _, x := post26(t, url, "tasks/cancel", id, map[string]any{"taskId": id}); result(x)["resultType"] != "complete" {
		t.Fatalf("tasks/cancel: %v", x)
	}
	if _, x := post26(t, url, "tasks/get", id, map[string]any{"taskId": id}); result(x)["status"] != "cancelled" {
		t.Fatalf("a cancelled task: %v", x)
	}
}
