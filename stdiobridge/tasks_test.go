package stdiobridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
	"github.com/caddymcp/caddymcp/stdiobridge"
)

// tasksMeta is the _meta of a 2026-07-28 request that declares the tasks
// extension (and form elicitation).
const tasksMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
	`"io.modelcontextprotocol/clientCapabilities":{"elicitation":{},"extensions":{"io.modelcontextprotocol/tasks":{}}},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"}}`

// taskPost sends a 2026-07-28 request declaring the tasks extension; a
// tasks/* request carries Mcp-Name: its taskId (modernPost sends name/uri).
func taskPost(t *testing.T, url, token string, id any, method, params string) (int, map[string]any) {
	t.Helper()
	params = strings.TrimSuffix(params, "}") + "," + tasksMeta + "}"
	params = strings.Replace(params, "{,", "{", 1)
	var p struct {
		TaskID string `json:"taskId"`
	}
	_ = json.Unmarshal([]byte(params), &p)
	if p.TaskID == "" {
		return modernPost(context.Background(), t, url, token, id, method, params)
	}
	return modernPostHeader(t, url, token, id, method, params, p.TaskID)
}

// taskOf is the task handle of a tools/call answer ("" if it is none).
func taskOf(t *testing.T, m map[string]any) string {
	t.Helper()
	r := resultOf(m)
	if r["resultType"] != "task" {
		return ""
	}
	id, _ := r["taskId"].(string)
	return id
}

// awaitTask polls tasks/get until the task is no longer working (bounded).
func awaitTask(t *testing.T, url, token, id string, until ...string) map[string]any {
	t.Helper()
	if len(until) == 0 {
		until = []string{"completed", "failed", "cancelled"}
	}
	var last map[string]any
	caddyrun.WaitFor(t, 60*time.Second, func() bool {
		_, last = taskPost(t, url, token, "get", "tasks/get", `{"taskId":"`+id+`"}`)
		s, _ := resultOf(last)["status"].(string)
		for _, u := range until {
			if s == u {
				return true
			}
		}
		return false
	}, "task "+id+" reaches "+strings.Join(until, " or "))
	return resultOf(last)
}

func errCode(m map[string]any) int {
	e, _ := m["error"].(map[string]any)
	c, _ := e["code"].(float64)
	return int(c)
}

func tasksSite(t *testing.T, cancelLog, extra string) string {
	return fakeSite(t, "tasks", "\n\t\tchild_era legacy\n\t\tenv "+mcpserver.TasksCancelLogEnv+" "+cancelLog+extra)
}

// Another principal's tasks/get, tasks/update and tasks/cancel on a task id
// find nothing: the answer is the one for an id that never was (-32602 "not
// found"), the task runs on untouched, and its owner cancels it (the child
// is sent notifications/cancelled).
func TestTaskStolenIDIsNotFound(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	cancelLog := filepath.Join(t.TempDir(), "cancel.log")
	c := caddyrun.StartCaddyfile(t, "", authSiteWith(t, is, authOpts{Mode: "tasks", Era: "legacy",
		Stdio: "\n\t\t\ttask_after 0\n\t\t\tenv " + mcpserver.TasksCancelLogEnv + " " + cancelLog}))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ann := jwkstest.Mint(t, k, is.Claims("ann", url, ""), nil)
	bob := jwkstest.Mint(t, k, is.Claims("bob", url, ""), nil)

	_, r := taskPost(t, url, ann, 1, "tools/call", `{"name":"slow_compute","arguments":{"seconds":60,"label":"stolen"}}`)
	id := taskOf(t, r)
	if id == "" {
		t.Fatalf("no task: %v", r)
	}
	if len(id) < 40 {
		t.Fatalf("task id %q is too short to be unguessable", id)
	}
	_, never := taskPost(t, url, bob, 2, "tasks/get", `{"taskId":"`+id[:len(id)-4]+`AAAA"}`)
	for _, method := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
		params := `{"taskId":"` + id + `"}`
		if method == "tasks/update" {
			params = `{"taskId":"` + id + `","inputResponses":{}}`
		}
		status, got := taskPost(t, url, bob, 3, method, params)
		if status != 400 || errCode(got) != -32602 {
			t.Fatalf("bob's %s on ann's task: %d %v, want 400 -32602", method, status, got)
		}
		if got["error"].(map[string]any)["message"] != never["error"].(map[string]any)["message"] {
			t.Fatalf("bob's %s tells a stolen id from one that never was: %v vs %v", method, got, never)
		}
	}
	_, own := taskPost(t, url, ann, 4, "tasks/get", `{"taskId":"`+id+`"}`)
	if s := resultOf(own)["status"]; s != "working" {
		t.Fatalf("ann's task after bob's attempts: %v", own)
	}
	// without the extension, tasks/* is refused before any lookup (-32021)
	status, noExt := modernPostHeader(t, url, ann, 5, "tasks/get", `{"taskId":"`+id+`",`+modernMeta+`}`, id)
	if status != 400 || errCode(noExt) != -32021 {
		t.Fatalf("tasks/get without the extension: %d %v", status, noExt)
	}
	if _, r := taskPost(t, url, ann, 6, "tasks/cancel", `{"taskId":"`+id+`"}`); resultOf(r)["resultType"] != "complete" {
		t.Fatalf("ann's cancel: %v", r)
	}
	if s := awaitTask(t, url, ann, id)["status"]; s != "cancelled" {
		t.Fatalf("cancelled task: %v", s)
	}
	caddyrun.WaitFor(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(cancelLog)
		return strings.Contains(string(b), "slow_compute") && strings.Contains(string(b), "stolen")
	}, "the child is sent notifications/cancelled")
}

// A reload that keeps the route keeps its tasks (running and finished); one
// that changes the server's process config ends them: "not found".
func TestTaskSurvivesReload(t *testing.T) {
	cancelLog := filepath.Join(t.TempDir(), "cancel.log")
	c := caddyrun.StartCaddyfile(t, "", tasksSite(t, cancelLog, "\n\t\ttask_after 0"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, r := taskPost(t, url, "", 1, "tools/call", `{"name":"slow_compute","arguments":{"seconds":2,"label":"reload"}}`)
	id := taskOf(t, r)
	if id == "" {
		t.Fatalf("no task: %v", r)
	}
	// a reload that changes a setting of the route, not its process
	c.LoadCaddyfile("", tasksSite(t, cancelLog, "\n\t\ttask_after 0\n\t\ttask_poll_interval 3s\n\t\tcache_ttl 1s"))
	done := awaitTask(t, url, "", id)
	if done["status"] != "completed" || !strings.Contains(textOf(map[string]any{"result": done["result"]}), `"reload" completed after 2 seconds`) {
		t.Fatalf("task across a reload: %v", done)
	}
	if done["pollIntervalMs"] != float64(1000) {
		t.Fatalf("a task keeps the poll interval it was created with: %v", done["pollIntervalMs"])
	}
	_, r = taskPost(t, url, "", 2, "tools/call", `{"name":"slow_compute","arguments":{"seconds":60,"label":"gone"}}`)
	id2 := taskOf(t, r)
	// another process config (an argument more): the route's table, and its tasks, end
	c.LoadCaddyfile("", tasksSite(t, cancelLog, "\n\t\ttask_after 0\n\t\tenv CHANGED 1"))
	caddyrun.WaitFor(t, 30*time.Second, func() bool {
		_, g := taskPost(t, url, "", 3, "tasks/get", `{"taskId":"`+id2+`"}`)
		return errCode(g) == -32602
	}, "a task of a route whose process config changed is not found")
	caddyrun.WaitFor(t, 30*time.Second, func() bool {
		b, _ := os.ReadFile(cancelLog)
		return strings.Contains(string(b), "gone")
	}, "the ended route's running task is cancelled in its child")
}

// 1 000 tasks from 50 principals, 64 at a time, each polled to its end:
// every result is its own call's, computed by its principal's child, and no
// principal can read another's task.
func TestSoakTasks1000From50Principals(t *testing.T) {
	caddyrun.Soak(t, "1000 tasks from 50 principals: none lost, none crossed")
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSite(t, is, true, "\n\t\t\tmax_sessions 200\n\t\t\tinitialize_rate 1000\n\t\t\ttask_after 0"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	tokens := make([]string, 50)
	for i := range tokens {
		tokens[i] = jwkstest.Mint(t, k, is.Claims("user"+strconv.Itoa(i), url, ""), nil)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if bad++; bad < 5 {
			t.Errorf(format, args...)
		}
	}
	sem := make(chan struct{}, 64)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u := i % 50
			_, r := taskPost(t, url, tokens[u], i, "tools/call", `{"name":"echo","arguments":{"n":`+strconv.Itoa(i)+`}}`)
			id := taskOf(t, r)
			if id == "" {
				fail("call %d: no task: %v", i, r)
				return
			}
			other := tokens[(u+1)%50]
			if _, g := taskPost(t, url, other, "x", "tasks/get", `{"taskId":"`+id+`"}`); errCode(g) != -32602 {
				fail("task %d read by another principal: %v", i, g)
			}
			done := awaitTask(t, url, tokens[u], id)
			want := `echo={"n":` + strconv.Itoa(i) + `} user=user` + strconv.Itoa(u)
			if got := textOf(map[string]any{"result": done["result"]}); done["status"] != "completed" || got != want {
				fail("task %d: %v, want %q", i, done, want)
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of 1000 tasks lost or crossed", bad)
	}
}

// Under a flood of tasks nobody fetches, what the route keeps is bounded by
// count (task_max_per_user, task_route_max), bytes (task_max_bytes) and
// time (task_ttl): the oldest finished tasks make room, a result larger than
// the byte bound fails its task, and an expired task is not found.
func TestTaskRetentionBounded(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", tasksSite(t, os.DevNull,
		"\n\t\ttask_after 0\n\t\ttask_max_per_user 10\n\t\ttask_route_max 12\n\t\ttask_max_bytes 4KiB\n\t\ttask_ttl 30s"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	var ids []string
	for i := 0; i < 40; i++ {
		_, r := taskPost(t, url, "", i, "tools/call", `{"name":"greet","arguments":{"name":"n`+strconv.Itoa(i)+`"}}`)
		id := taskOf(t, r)
		if id == "" {
			t.Fatalf("call %d: no task: %v", i, r)
		}
		ids = append(ids, id)
		// finished before the next (not fetched: no tasks/get)
		caddyrun.WaitFor(t, 30*time.Second, func() bool { held, fin, _ := stdiobridge.TaskTotals(); return held == fin },
			"every task of the route finished")
		if held, _, _ := stdiobridge.TaskTotals(); held > 10 {
			t.Fatalf("after %d tasks the route holds %d, more than task_max_per_user 10", i+1, held)
		}
	}
	kept := 0
	for i, id := range ids {
		_, g := taskPost(t, url, "", "g", "tasks/get", `{"taskId":"`+id+`"}`)
		if errCode(g) == 0 {
			kept++
			if i < 30 {
				t.Fatalf("task %d of 40 is still kept; the oldest go first", i)
			}
		}
	}
	if kept == 0 || kept > 10 {
		t.Fatalf("%d of 40 tasks kept, want 1 to 10", kept)
	}
	// bytes: results of ~1.2 KiB each, 4 KiB per principal
	long := strings.Repeat("x", 1200)
	for i := 0; i < 10; i++ {
		_, r := taskPost(t, url, "", i, "tools/call", `{"name":"greet","arguments":{"name":"`+long+`"}}`)
		if taskOf(t, r) == "" {
			t.Fatalf("no task: %v", r)
		}
		caddyrun.WaitFor(t, 30*time.Second, func() bool { held, fin, _ := stdiobridge.TaskTotals(); return held == fin },
			"every task of the route finished")
		if _, _, b := stdiobridge.TaskTotals(); b > 4096 {
			t.Fatalf("kept results hold %d bytes, more than task_max_bytes 4KiB", b)
		}
	}
	// a result larger than the bound fails its task, saying why
	_, r := taskPost(t, url, "", 1, "tools/call", `{"name":"greet","arguments":{"name":"`+strings.Repeat("y", 5000)+`"}}`)
	big := awaitTask(t, url, "", taskOf(t, r))
	if big["status"] != "failed" || !strings.Contains(big["error"].(map[string]any)["message"].(string), "task_max_bytes") {
		t.Fatalf("an oversized result: %v", big)
	}
}

// A task is forgotten at its TTL: tasks/get then finds nothing.
func TestTaskExpiresAtTTL(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", tasksSite(t, os.DevNull, "\n\t\ttask_after 0\n\t\ttask_ttl 1s"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, r := taskPost(t, url, "", 1, "tools/call", `{"name":"greet","arguments":{"name":"ttl"}}`)
	id := taskOf(t, r)
	if ttl := resultOf(r)["ttlMs"]; ttl != float64(1000) {
		t.Fatalf("ttlMs %v, want 1000", ttl)
	}
	caddyrun.WaitFor(t, 30*time.Second, func() bool {
		_, g := taskPost(t, url, "", 2, "tasks/get", `{"taskId":"`+id+`"}`)
		return errCode(g) == -32602
	}, "the task is forgotten after its TTL")
	if n, _, _ := stdiobridge.TaskTotals(); n != 0 {
		t.Fatalf("%d tasks held after their TTL", n)
	}
}

// A client that did not declare the extension never gets a task, and a
// tool the server requires to run as a task is refused to it (-32021).
func TestTaskNeedsTheExtension(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", tasksSite(t, os.DevNull, "\n\t\ttask_after 0"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"slow_compute","arguments":{"seconds":1,"label":"plain"}}`)
	if resultOf(r)["resultType"] != "complete" || !strings.Contains(textOf(r), "after 1 seconds") {
		t.Fatalf("a client without the extension: %v", r)
	}
	status, r := modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"failing_job","arguments":{}}`)
	d, _ := r["error"].(map[string]any)["data"].(map[string]any)
	if status != 400 || errCode(r) != -32021 || d["requiredCapabilities"] == nil {
		t.Fatalf("a task-only tool without the extension: %d %v", status, r)
	}
	_, disc := taskPost(t, url, "", 3, "server/discover", `{}`)
	ext, _ := resultOf(disc)["capabilities"].(map[string]any)["extensions"].(map[string]any)
	if ext["io.modelcontextprotocol/tasks"] == nil {
		t.Fatalf("server/discover does not offer the extension: %v", disc)
	}
}

// A 2026 server's own input_required round within a task: the task shows
// its questions (keys of the task's own), tasks/update answers them, and
// the bridge sends the call again with the answers (under the server's
// keys) and the server's requestState. The server is never asked to make
// a task of its own: the extension is not declared to it.
func TestTaskModernChildRound(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr,modern", "\n\t\tchild_era modern\n\t\ttask_after 0"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, r := taskPost(t, url, "", 1, "tools/call", `{"name":"meta","arguments":{}}`)
	meta := awaitTask(t, url, "", taskOf(t, r))
	if got := textOf(map[string]any{"result": meta["result"]}); !strings.Contains(got, "clientCapabilities") || strings.Contains(got, "io.modelcontextprotocol/tasks") {
		t.Fatalf("the server saw the tasks extension (or no capabilities): %q", got)
	}
	_, r = taskPost(t, url, "", 2, "tools/call", `{"name":"ask","arguments":{}}`)
	id := taskOf(t, r)
	asked := awaitTask(t, url, "", id, "input_required")
	reqs, _ := asked["inputRequests"].(map[string]any)
	if len(reqs) != 1 {
		t.Fatalf("input_required task: %v", asked)
	}
	var key string
	for k := range reqs {
		key = k
	}
	if _, u := taskPost(t, url, "", 3, "tasks/update", `{"taskId":"`+id+`","inputResponses":{"`+key+`":{"action":"accept","content":{"name":"Ada"}}}}`); resultOf(u)["resultType"] != "complete" {
		t.Fatalf("tasks/update: %v", u)
	}
	done := awaitTask(t, url, "", id)
	got := textOf(map[string]any{"result": done["result"]})
	if done["status"] != "completed" || !strings.Contains(got, "state=child-state-") || !strings.Contains(got, `"name":{"action":"accept","content":{"name":"Ada"}}`) {
		t.Fatalf("the retry the server got: %v (%q)", done, got)
	}
}

// task_after off: no tasks, the extension is not offered, tasks/* are
// unknown methods, and a tool that requires a task is not listed.
func TestTasksOff(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", tasksSite(t, os.DevNull, "\n\t\ttask_after off"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, r := taskPost(t, url, "", 1, "tools/call", `{"name":"slow_compute","arguments":{"seconds":1,"label":"off"}}`)
	if resultOf(r)["resultType"] != "complete" || !strings.Contains(textOf(r), "after 1 seconds") {
		t.Fatalf("with task_after off: %v", r)
	}
	if status, g := taskPost(t, url, "", 2, "tasks/get", `{"taskId":"x"}`); status != 404 || errCode(g) != -32601 {
		t.Fatalf("tasks/get with task_after off: %d %v", status, g)
	}
	_, disc := taskPost(t, url, "", 3, "server/discover", `{}`)
	if strings.Contains(fmt.Sprint(resultOf(disc)["capabilities"]), "tasks") {
		t.Fatalf("server/discover offers tasks: %v", disc)
	}
	_, l := taskPost(t, url, "", 4, "tools/list", `{}`)
	if tools := fmt.Sprint(resultOf(l)["tools"]); strings.Contains(tools, "failing_job") || !strings.Contains(tools, "slow_compute") {
		t.Fatalf("tools/list with task_after off: %s", tools)
	}
}

// A 2026 server that offers the extension itself: its tasks pass through
// under ids of the bridge's (bound to the principal like the bridge's own),
// tasks/* reach the child that holds the task, and the child is kept past
// session_idle_timeout while it holds one.
func TestTaskOfTheServersOwn(t *testing.T) {
	log := filepath.Join(t.TempDir(), "fake.log")
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "mrtr,modern,exttasks",
		"\n\t\tchild_era modern\n\t\tenv CADDYMCP_FAKE_LOG "+log+"\n\t\tsession_idle_timeout 200ms"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	_, disc := taskPost(t, url, "", 1, "server/discover", `{}`)
	if !strings.Contains(fmt.Sprint(resultOf(disc)["capabilities"]), "io.modelcontextprotocol/tasks") {
		t.Fatalf("server/discover: %v", disc)
	}
	_, r := taskPost(t, url, "", 2, "tools/call", `{"name":"longjob","arguments":{}}`)
	id := taskOf(t, r)
	if id == "" || strings.HasPrefix(id, "child-task-") {
		t.Fatalf("the server's task handle, not under an id of the bridge's: %v", r)
	}
	done := awaitTask(t, url, "", id)
	got := textOf(map[string]any{"result": done["result"]})
	if done["status"] != "completed" || done["taskId"] != id || !strings.HasPrefix(got, "longjob done child-task-") {
		t.Fatalf("the server's task through the bridge: %v", done)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), "tasks/get child-task-") {
		t.Fatalf("the child was not asked tasks/get with its own id: %s", b)
	}
	if _, g := modernPostHeader(t, url, "", 3, "tasks/get", `{"taskId":"child-task-1",`+tasksMeta+`}`, "child-task-1"); errCode(g) != -32602 {
		t.Fatalf("the server's own id, unwrapped: %v", g)
	}
	// without the extension the server makes no task
	_, r = modernPost(context.Background(), t, url, "", 4, "tools/call", `{"name":"longjob","arguments":{}}`)
	if !strings.Contains(textOf(r), "at once") {
		t.Fatalf("without the extension: %v", r)
	}
}

// BenchmarkTask is what a task costs a client over a plain call, through a
// real Caddy and child (the fixture's greet): "plain" is one tools/call
// without the extension; "task" is the tools/call that makes a task
// (task_after 0) and the tasks/get that fetches its result (polled until
// it is there, usually once).
func BenchmarkTask(b *testing.B) {
	c := caddyrun.StartCaddyfile(b, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+mcpserver.Self(b)+`
		env `+mcpserver.FakeEnv+` tasks
		child_era legacy
		task_after 0
		task_max_per_user 100000
		task_route_max 100000
		shutdown_timeout 500ms
	}
}
`)
	url := c.URL + "/mcp"
	post := func(method, name, params string) map[string]any {
		body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":` + params + `}`
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header = resp0Header(method, name, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			b.Fatal(err)
		}
		return m
	}
	plainMeta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if m := post("tools/call", "greet", `{"name":"greet","arguments":{"name":"b"},`+plainMeta+`}`); textOf(m) != "Hello, b!" {
				b.Fatalf("%v", m)
			}
		}
	})
	b.Run("task", func(b *testing.B) {
		for b.Loop() {
			m := post("tools/call", "greet", `{"name":"greet","arguments":{"name":"b"},`+tasksMeta+`}`)
			id, _ := resultOf(m)["taskId"].(string)
			for {
				g := post("tasks/get", id, `{"taskId":"`+id+`",`+tasksMeta+`}`)
				if resultOf(g)["status"] == "completed" {
					break
				}
			}
		}
	})
}
