package mcpserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunFakeIfRequested()
	os.Exit(m.Run())
}

// tasksMsg is one message from the fixture.
type tasksMsg struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	line string
}

// idIs reports whether m is an answer (or a request) with the id want
// (JSON, e.g. `7` or `"c-1"`).
func (m tasksMsg) idIs(want string) bool { return tasksCompactID(m.ID) == want }

// text is the text of an answer's first content item.
func (m tasksMsg) text(t *testing.T) string {
	t.Helper()
	var r struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(m.Result, &r); err != nil || len(r.Content) != 1 || r.Content[0].Type != "text" {
		t.Fatalf("not one text content: %s", m.line)
	}
	return r.Content[0].Text
}

func (m tasksMsg) isError() bool {
	var r struct {
		IsError bool `json:"isError"`
	}
	_ = json.Unmarshal(m.Result, &r)
	return r.IsError
}

// tasksClient talks to the fixture run as a child process.
type tasksClient struct {
	t         *testing.T
	stdin     io.WriteCloser
	msgs      chan tasksMsg
	cancelLog string
}

// startTasks starts the fixture (FakeEnv=tasks) and initializes it.
func startTasks(t *testing.T) *tasksClient {
	t.Helper()
	c := &tasksClient{t: t, msgs: make(chan tasksMsg, 256), cancelLog: filepath.Join(t.TempDir(), "cancel.log")}
	cmd := exec.Command(Self(t))
	cmd.Env = append(os.Environ(), FakeEnv+"=tasks", TasksCancelLogEnv+"="+c.cancelLog)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		defer close(c.msgs)
		in := bufio.NewScanner(stdout)
		in.Buffer(make([]byte, 1<<20), 16<<20)
		for in.Scan() {
			m := tasksMsg{line: in.Text()}
			if err := json.Unmarshal(in.Bytes(), &m); err != nil {
				t.Errorf("not JSON from the fixture: %q", in.Text())
				continue
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(func() {
		c.stdin.Close() // the end of stdin ends it
		done := make(chan error, 1)
		go func() {
			for range c.msgs { // drain what is left
			}
			reading.Wait()
			done <- cmd.Wait()
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fixture exited: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("fixture did not exit at the end of its input")
		}
		if t.Failed() {
			t.Logf("fixture stderr:\n%s", stderr.String())
		}
	})
	c.send(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"form":{}}},"clientInfo":{"name":"test","version":"1"}}}`)
	if m := c.answer(`0`, 5*time.Second); m.Error != nil {
		t.Fatalf("initialize: %s", m.line)
	}
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return c
}

func (c *tasksClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("write to fixture: %v", err)
	}
}

// sendJSON sends v, marshalled.
func (c *tasksClient) sendJSON(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(string(b))
}

// next is the next message, failing the test if none comes within d.
func (c *tasksClient) next(d time.Duration) tasksMsg {
	c.t.Helper()
	m, ok := c.within(d)
	if !ok {
		c.t.Fatalf("no message from the fixture within %v", d)
	}
	return m
}

// within is the next message if one comes within d.
func (c *tasksClient) within(d time.Duration) (tasksMsg, bool) {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatal("the fixture closed its stdout")
		}
		return m, true
	case <-timer.C:
		return tasksMsg{}, false
	}
}

// answer waits (d at most) for the answer to id, failing on any other
// message first.
func (c *tasksClient) answer(id string, d time.Duration) tasksMsg {
	c.t.Helper()
	m := c.next(d)
	if m.Method != "" || !m.idIs(id) {
		c.t.Fatalf("want the answer to %s, got %s", id, m.line)
	}
	return m
}

// call sends tools/call name(args) with id.
func (c *tasksClient) call(id any, name string, args map[string]any, meta map[string]any) {
	c.t.Helper()
	params := map[string]any{"name": name, "arguments": args}
	if meta != nil {
		params["_meta"] = meta
	}
	c.sendJSON(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

// elicitation waits (d at most) for an elicitation/create request.
func (c *tasksClient) elicitation(d time.Duration) (id json.RawMessage, message string, schema map[string]any) {
	c.t.Helper()
	m := c.next(d)
	if m.Method != "elicitation/create" || m.ID == nil {
		c.t.Fatalf("want an elicitation/create request, got %s", m.line)
	}
	var p struct {
		Mode            string         `json:"mode"`
		Message         string         `json:"message"`
		RequestedSchema map[string]any `json:"requestedSchema"`
	}
	if err := json.Unmarshal(m.Params, &p); err != nil || p.Mode != "form" {
		c.t.Fatalf("elicitation/create params: %s", m.line)
	}
	return m.ID, p.Message, p.RequestedSchema
}

// reply answers the fixture's request id with result.
func (c *tasksClient) reply(id json.RawMessage, result any) {
	c.t.Helper()
	c.sendJSON(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
}

// ping sends ping with id and waits for its answer: every message sent
// before it has then been handled.
func (c *tasksClient) ping(id string, d time.Duration) {
	c.t.Helper()
	c.send(`{"jsonrpc":"2.0","id":` + id + `,"method":"ping"}`)
	c.answer(id, d)
}

// quiet checks that no answer to id comes within d.
func (c *tasksClient) quiet(id string, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, ok := c.within(time.Until(deadline))
		if !ok {
			return
		}
		if m.Method == "" && m.idIs(id) {
			c.t.Fatalf("a cancelled call was answered: %s", m.line)
		}
	}
}

// cancelLogHas checks the cancellation log has line.
func (c *tasksClient) cancelLogHas(line string) {
	c.t.Helper()
	b, err := os.ReadFile(c.cancelLog)
	if err != nil {
		c.t.Fatalf("cancel log: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == line {
			return
		}
	}
	c.t.Fatalf("cancel log has no line %q:\n%s", line, b)
}

func TestTasksFixture(t *testing.T) {
	t.Run("initialize", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		for i, tc := range []struct{ asked, want string }{
			{"2025-06-18", "2025-06-18"},
			{"2025-03-26", "2025-03-26"},
			{"2024-11-05", "2025-11-25"},
			{"2026-07-28", "2025-11-25"},
		} {
			id := string(rune('1' + i))
			c.sendJSON(map[string]any{"jsonrpc": "2.0", "id": i + 1, "method": "initialize",
				"params": map[string]any{"protocolVersion": tc.asked, "capabilities": map[string]any{}}})
			m := c.answer(id, 5*time.Second)
			var r struct {
				ProtocolVersion string          `json:"protocolVersion"`
				Capabilities    json.RawMessage `json:"capabilities"`
				ServerInfo      struct {
					Name, Version string
				} `json:"serverInfo"`
			}
			if err := json.Unmarshal(m.Result, &r); err != nil {
				t.Fatal(err)
			}
			if r.ProtocolVersion != tc.want {
				t.Errorf("asked %s: got version %s, want %s", tc.asked, r.ProtocolVersion, tc.want)
			}
			if string(r.Capabilities) != `{"tools":{}}` {
				t.Errorf("capabilities %s, want only tools", r.Capabilities)
			}
			if r.ServerInfo.Name != "caddymcp-tasks-fixture" || r.ServerInfo.Version != "1.0.0" {
				t.Errorf("serverInfo %+v", r.ServerInfo)
			}
		}
		c.ping(`"p"`, 5*time.Second)
		c.send(`{"jsonrpc":"2.0","id":9,"method":"resources/list"}`)
		if m := c.answer(`9`, 5*time.Second); m.Error == nil || m.Error.Code != -32601 {
			t.Errorf("unknown method: %s", m.line)
		}
		c.call(10, "no_such_tool", nil, nil)
		if m := c.answer(`10`, 5*time.Second); m.Error == nil || m.Error.Code != -32602 || m.Error.Message != "unknown tool" {
			t.Errorf("unknown tool: %s", m.line)
		}
	})

	t.Run("tools/list", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.send(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
		m := c.answer(`1`, 5*time.Second)
		var r struct {
			Tools []struct {
				Name        string         `json:"name"`
				InputSchema map[string]any `json:"inputSchema"`
				Execution   *struct {
					TaskSupport string `json:"taskSupport"`
				} `json:"execution"`
			} `json:"tools"`
		}
		if err := json.Unmarshal(m.Result, &r); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"greet": "", "slow_compute": "optional", "failing_job": "required",
			"protocol_error_job": "required", "confirm_delete": "required", "multi_input": "required",
			"test_tool_with_task": "required"}
		if len(r.Tools) != len(want) {
			t.Fatalf("%d tools, want %d: %s", len(r.Tools), len(want), m.Result)
		}
		for _, tool := range r.Tools {
			hint, ok := want[tool.Name]
			if !ok {
				t.Errorf("unexpected tool %q", tool.Name)
				continue
			}
			delete(want, tool.Name)
			if tool.InputSchema["type"] != "object" {
				t.Errorf("%s: inputSchema %v", tool.Name, tool.InputSchema)
			}
			got := ""
			if tool.Execution != nil {
				got = tool.Execution.TaskSupport
				if got == "" {
					t.Errorf("%s: an execution without taskSupport", tool.Name)
				}
			}
			if got != hint {
				t.Errorf("%s: taskSupport %q, want %q", tool.Name, got, hint)
			}
		}
		if len(want) > 0 {
			t.Errorf("missing tools: %v", want)
		}
	})

	t.Run("greet", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(1, "greet", map[string]any{"name": "World"}, nil)
		m := c.answer(`1`, 5*time.Second)
		if got := m.text(t); got != "Hello, World!" || m.isError() {
			t.Errorf("greet: %s", m.line)
		}
	})

	t.Run("slow_compute progress", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(1, "slow_compute", map[string]any{"seconds": 1, "label": "one"}, map[string]any{"progressToken": "tok-1"})
		m := c.next(5 * time.Second)
		if m.Method != "notifications/progress" {
			t.Fatalf("want a progress notification first, got %s", m.line)
		}
		var p struct {
			ProgressToken json.RawMessage `json:"progressToken"`
			Progress      float64         `json:"progress"`
			Total         float64         `json:"total"`
			Message       string          `json:"message"`
		}
		if err := json.Unmarshal(m.Params, &p); err != nil {
			t.Fatal(err)
		}
		if string(p.ProgressToken) != `"tok-1"` || p.Progress != 1 || p.Total != 1 || p.Message != "step 1/1" {
			t.Errorf("progress: %s", m.line)
		}
		m = c.answer(`1`, 5*time.Second)
		if got, want := m.text(t), `Computation "one" completed after 1 seconds. Result: 42.`; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		// seconds 0: at once, and without a token no progress
		c.call(2, "slow_compute", map[string]any{"seconds": 0}, nil)
		m = c.answer(`2`, 5*time.Second)
		if got, want := m.text(t), `Computation "default" completed after 0 seconds. Result: 42.`; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("cancel slow_compute", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(7, "slow_compute", map[string]any{"seconds": 60, "label": "cx"}, nil)
		c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"test"}}`)
		c.ping(`8`, 5*time.Second) // the cancellation has been handled
		c.cancelLogHas("cancelled slow_compute 7 cx")
		c.quiet(`7`, 2*time.Second)
		c.ping(`9`, 5*time.Second) // still serving
	})

	t.Run("cancel during elicitation", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call("c-1", "confirm_delete", nil, nil)
		q, message, _ := c.elicitation(5 * time.Second)
		if message != "Delete 'important.txt'?" {
			t.Errorf("message %q", message)
		}
		c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c-1"}}`)
		c.reply(q, map[string]any{"action": "accept", "content": map[string]any{"confirm": true}}) // ignored
		c.ping(`"p"`, 5*time.Second)
		c.cancelLogHas(`cancelled confirm_delete "c-1" important.txt`)
		c.quiet(`"c-1"`, 2*time.Second)
	})

	t.Run("confirm_delete", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		// three at the same time, told apart by their file names
		c.call(1, "confirm_delete", map[string]any{"filename": "a.txt"}, nil)
		c.call(2, "confirm_delete", map[string]any{"filename": "b.txt"}, nil)
		c.call(3, "confirm_delete", map[string]any{"filename": "c.txt"}, nil)
		want := map[string]string{`1`: "deleted 'a.txt'", `2`: "kept 'b.txt'", `3`: "no terminal here"}
		asked := 0
		deadline := time.Now().Add(10 * time.Second)
		for len(want) > 0 {
			m := c.next(time.Until(deadline))
			switch {
			case m.Method == "elicitation/create":
				asked++
				var p struct {
					Message         string          `json:"message"`
					RequestedSchema json.RawMessage `json:"requestedSchema"`
				}
				_ = json.Unmarshal(m.Params, &p)
				if string(p.RequestedSchema) != `{"properties":{"confirm":{"type":"boolean"}},"required":["confirm"],"type":"object"}` {
					t.Errorf("requestedSchema %s", p.RequestedSchema)
				}
				switch p.Message {
				case "Delete 'a.txt'?":
					c.reply(m.ID, map[string]any{"action": "accept", "content": map[string]any{"confirm": true}})
				case "Delete 'b.txt'?":
					c.reply(m.ID, map[string]any{"action": "decline"})
				case "Delete 'c.txt'?":
					c.sendJSON(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": map[string]any{"code": -32603, "message": "no terminal here"}})
				default:
					t.Fatalf("unexpected question: %s", m.line)
				}
			case m.Method == "":
				id := tasksCompactID(m.ID)
				w, ok := want[id]
				if !ok {
					t.Fatalf("unexpected answer: %s", m.line)
				}
				delete(want, id)
				if got := m.text(t); got != w || m.isError() != (id == `3`) {
					t.Errorf("call %s: %s, want %q", id, m.line, w)
				}
			default:
				t.Fatalf("unexpected message: %s", m.line)
			}
		}
		if asked != 3 {
			t.Errorf("%d questions, want 3", asked)
		}
	})

	t.Run("multi_input", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(1, "multi_input", nil, nil)
		// both asked before either is answered
		q1, m1, s1 := c.elicitation(5 * time.Second)
		q2, m2, s2 := c.elicitation(5 * time.Second)
		if m1 == "Confirm action?" { // sent in either order
			q1, m1, s1, q2, m2, s2 = q2, m2, s2, q1, m1, s1
		}
		if m1 != "Enter your name:" || m2 != "Confirm action?" {
			t.Fatalf("questions %q, %q", m1, m2)
		}
		if p, _ := s1["properties"].(map[string]any); p["name"] == nil {
			t.Errorf("name schema %v", s1)
		}
		if p, _ := s2["properties"].(map[string]any); p["confirm"] == nil {
			t.Errorf("confirm schema %v", s2)
		}
		if string(q1) == string(q2) {
			t.Fatalf("two questions with the id %s", q1)
		}
		// answered in the other order
		c.reply(q2, map[string]any{"action": "accept", "content": map[string]any{"confirm": true}})
		c.reply(q1, map[string]any{"action": "accept", "content": map[string]any{"name": "Ada"}})
		m := c.answer(`1`, 5*time.Second)
		if got, want := m.text(t), `name="Ada" confirmed=true`; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("test_tool_with_task", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(1, "test_tool_with_task", nil, nil)
		q, message, _ := c.elicitation(5 * time.Second)
		if message != "What is your name?" {
			t.Errorf("message %q", message)
		}
		c.reply(q, map[string]any{"action": "accept", "content": map[string]any{"name": "Bob"}})
		m := c.answer(`1`, 5*time.Second)
		if got, want := m.text(t), "Hello, Bob! (computed in task)"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})

	t.Run("failures", func(t *testing.T) {
		t.Parallel()
		c := startTasks(t)
		c.call(1, "protocol_error_job", nil, nil)
		c.call(2, "failing_job", nil, nil)
		deadline := time.Now().Add(10 * time.Second)
		for seen := 0; seen < 2; seen++ {
			m := c.next(time.Until(deadline))
			switch {
			case m.idIs(`1`):
				if m.Error == nil || m.Error.Code != -32603 || m.Error.Message != "simulated protocol error: server internal failure" || m.Result != nil {
					t.Errorf("protocol_error_job: %s", m.line)
				}
			case m.idIs(`2`):
				if m.text(t) != "simulated failure: job crashed" || !m.isError() {
					t.Errorf("failing_job: %s", m.line)
				}
			default:
				t.Fatalf("unexpected message: %s", m.line)
			}
		}
	})
}
