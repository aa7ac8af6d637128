package mcpserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// TasksCancelLogEnv names the file the "tasks" fixture appends a line to
// for every notifications/cancelled that stops a call in flight:
// "cancelled <tool> <requestId JSON> <label, filename or ->".
const TasksCancelLogEnv = "CADDYMCP_FAKE_CANCEL_LOG"

// tasksProtocolVersions are the versions the fixture agrees to; the first
// is its own.
var tasksProtocolVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26"}

// tasksServer is the "tasks" fixture: a 2025-11-25 stdio server (without
// the tasks capability) whose tools are slow, fail, report progress and ask
// their client elicitation/create, each tools/call in a goroutine of its own.
type tasksServer struct {
	outMu sync.Mutex
	out   *bufio.Writer

	mu      sync.Mutex                  // guards what follows
	calls   map[string]*tasksCall       // in flight, by the tools/call id (compact JSON)
	pending map[string]chan tasksAnswer // our requests to the client, by id (compact JSON)
	nextQ   int
}

// tasksCall is one tools/call in flight.
type tasksCall struct {
	id     json.RawMessage
	key    string // id, compact
	name   string
	label  string // for the cancellation log
	cancel context.CancelFunc
}

// tasksAnswer is the client's answer to one of our requests.
type tasksAnswer struct {
	Result json.RawMessage
	Error  *tasksRPCError
}

type tasksRPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// tasksToolError is what a tool goroutine returns to answer a JSON-RPC error.
type tasksToolError struct{ tasksRPCError }

func (e *tasksToolError) Error() string { return e.Message }

// runTasks serves the "tasks" mode on stdin/stdout until stdin ends.
func runTasks() {
	s := &tasksServer{
		out:     bufio.NewWriter(os.Stdout),
		calls:   map[string]*tasksCall{},
		pending: map[string]chan tasksAnswer{},
	}
	fmt.Fprintln(os.Stderr, "tasks fixture: started")
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		s.handle(in.Bytes())
	}
	fmt.Fprintln(os.Stderr, "tasks fixture: end of input")
}

// tasksCompactID is id's compact JSON (the key of the maps), "" when absent.
func tasksCompactID(id json.RawMessage) string {
	if len(id) == 0 || string(id) == "null" {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, id) != nil {
		return string(id)
	}
	return b.String()
}

// send writes one message, a line of its own.
func (s *tasksServer) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tasks fixture: marshal:", err)
		return
	}
	s.outMu.Lock()
	defer s.outMu.Unlock()
	s.out.Write(b)
	s.out.WriteByte('\n')
	s.out.Flush()
}

func (s *tasksServer) sendResult(id json.RawMessage, r any) {
	s.send(map[string]any{"jsonrpc": "2.0", "id": id, "result": r})
}

func (s *tasksServer) sendError(id json.RawMessage, code int, message string) {
	s.send(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": message}})
}

func (s *tasksServer) handle(line []byte) {
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
		Result json.RawMessage `json:"result"`
		Error  *tasksRPCError  `json:"error"`
	}
	if err := json.Unmarshal(line, &msg); err != nil {
		s.send(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": -32700, "message": "parse error"}})
		return
	}
	key := tasksCompactID(msg.ID)
	if msg.Method == "" { // an answer to one of our requests
		if key == "" {
			return
		}
		s.mu.Lock()
		ch, ok := s.pending[key]
		delete(s.pending, key)
		s.mu.Unlock()
		if !ok { // unknown, or its call was cancelled
			fmt.Fprintln(os.Stderr, "tasks fixture: answer to no pending request", key)
			return
		}
		ch <- tasksAnswer{Result: msg.Result, Error: msg.Error} // buffered
		return
	}
	if key == "" { // a notification
		if msg.Method == "notifications/cancelled" {
			s.cancelled(msg.Params)
		}
		return
	}
	switch msg.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		_ = json.Unmarshal(msg.Params, &p)
		version := tasksProtocolVersions[0]
		for _, v := range tasksProtocolVersions {
			if p.ProtocolVersion == v {
				version = v
			}
		}
		s.sendResult(msg.ID, map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "caddymcp-tasks-fixture", "version": "1.0.0"},
		})
	case "ping":
		s.sendResult(msg.ID, map[string]any{})
	case "tools/list":
		s.sendResult(msg.ID, map[string]any{"tools": tasksTools()})
	case "tools/call":
		s.call(msg.ID, key, msg.Params)
	default:
		s.sendError(msg.ID, -32601, "method not found")
	}
}

// tasksTools is what tools/list answers.
func tasksTools() []any {
	obj := func(props map[string]any, required ...string) map[string]any {
		m := map[string]any{"type": "object", "properties": props}
		if len(required) > 0 {
			m["required"] = required
		}
		return m
	}
	tool := func(name, description string, schema map[string]any, taskSupport string) map[string]any {
		t := map[string]any{"name": name, "description": description, "inputSchema": schema}
		if taskSupport != "" {
			t["execution"] = map[string]any{"taskSupport": taskSupport}
		}
		return t
	}
	return []any{
		tool("greet", "Greets someone at once.", obj(map[string]any{
			"name": map[string]any{"type": "string", "description": "Who to greet"}}, "name"), ""),
		tool("slow_compute", "Computes for some seconds, reporting progress each second.", obj(map[string]any{
			"seconds": map[string]any{"type": "integer", "default": 3, "description": "How long to compute"},
			"label":   map[string]any{"type": "string", "default": "default", "description": "A name for the computation"}}), "optional"),
		tool("failing_job", "Fails with a tool error after 1 second.", obj(map[string]any{}), "required"),
		tool("protocol_error_job", "Fails with a JSON-RPC error after 1 second.", obj(map[string]any{}), "required"),
		tool("confirm_delete", "Asks its client to confirm a deletion.", obj(map[string]any{
			"filename": map[string]any{"type": "string", "default": "important.txt"}}), "required"),
		tool("multi_input", "Asks its client two questions at the same time.", obj(map[string]any{}), "required"),
		tool("test_tool_with_task", "Asks its client a name at once, then computes for 1 second.", obj(map[string]any{}), "required"),
	}
}

// tasksArgs are the arguments of every tool (each reads its own).
type tasksArgs struct {
	Name     string   `json:"name"`
	Seconds  *float64 `json:"seconds"`
	Label    *string  `json:"label"`
	Filename *string  `json:"filename"`
}

// call starts a tools/call in a goroutine of its own.
func (s *tasksServer) call(id json.RawMessage, key string, params json.RawMessage) {
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
		Meta      struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal(params, &p); err != nil {
		s.sendError(id, -32602, "invalid params: "+err.Error())
		return
	}
	var run func(context.Context, *tasksCall, tasksArgs, json.RawMessage) (any, error)
	switch p.Name {
	case "greet":
		run = s.greet
	case "slow_compute":
		run = s.slowCompute
	case "failing_job":
		run = s.failingJob
	case "protocol_error_job":
		run = s.protocolErrorJob
	case "confirm_delete":
		run = s.confirmDelete
	case "multi_input":
		run = s.multiInput
	case "test_tool_with_task":
		run = s.testToolWithTask
	default:
		s.sendError(id, -32602, "unknown tool")
		return
	}
	var args tasksArgs
	if len(p.Arguments) > 0 && string(p.Arguments) != "null" {
		if err := json.Unmarshal(p.Arguments, &args); err != nil {
			s.sendError(id, -32602, "invalid arguments: "+err.Error())
			return
		}
	}
	if args.Label == nil {
		args.Label = tasksPtr("default")
	}
	if args.Filename == nil {
		args.Filename = tasksPtr("important.txt")
	}
	if args.Seconds == nil {
		args.Seconds = tasksPtr(3.0)
	}
	label := "-"
	switch p.Name {
	case "slow_compute":
		label = *args.Label
	case "confirm_delete":
		label = *args.Filename
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &tasksCall{id: id, key: key, name: p.Name, label: label, cancel: cancel}
	s.mu.Lock()
	if _, dup := s.calls[key]; dup {
		s.mu.Unlock()
		cancel()
		s.sendError(id, -32600, "request id already in flight")
		return
	}
	s.calls[key] = c
	s.mu.Unlock()
	fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s started\n", key, p.Name)
	token := p.Meta.ProgressToken
	if string(token) == "null" {
		token = nil
	}
	go func() {
		defer cancel()
		r, err := run(ctx, c, args, token)
		s.finish(c, r, err)
	}()
}

func tasksPtr[T any](v T) *T { return &v }

// finish answers c unless it was cancelled: the check and the answer are
// one step under s.mu, so that a call cancelled is never answered.
func (s *tasksServer) finish(c *tasksCall, r any, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls[c.key] != c {
		fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s ended: cancelled, not answered\n", c.key, c.name)
		return
	}
	delete(s.calls, c.key)
	if te, ok := err.(*tasksToolError); ok {
		fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s ended: JSON-RPC error %d\n", c.key, c.name, te.Code)
		s.send(map[string]any{"jsonrpc": "2.0", "id": c.id, "error": te.tasksRPCError})
		return
	}
	if err != nil { // its context ended, yet it is still in s.calls: cannot be
		fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s ended: %v\n", c.key, c.name, err)
		s.sendError(c.id, -32603, err.Error())
		return
	}
	fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s ended: answered\n", c.key, c.name)
	s.sendResult(c.id, r)
}

// cancelled stops the call notifications/cancelled names, if in flight.
func (s *tasksServer) cancelled(params json.RawMessage) {
	var p struct {
		RequestID json.RawMessage `json:"requestId"`
		Reason    string          `json:"reason"`
	}
	_ = json.Unmarshal(params, &p)
	key := tasksCompactID(p.RequestID)
	s.mu.Lock()
	c, ok := s.calls[key]
	if ok {
		delete(s.calls, key)
	}
	s.mu.Unlock()
	if !ok {
		fmt.Fprintf(os.Stderr, "tasks fixture: cancelled %s: not in flight\n", key)
		return
	}
	c.cancel()
	fmt.Fprintf(os.Stderr, "tasks fixture: call %s %s cancelled (%s)\n", key, c.name, p.Reason)
	if path := os.Getenv(TasksCancelLogEnv); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tasks fixture: cancel log:", err)
			return
		}
		if _, err := f.WriteString(fmt.Sprintf("cancelled %s %s %s\n", c.name, key, c.label)); err != nil {
			fmt.Fprintln(os.Stderr, "tasks fixture: cancel log:", err)
		}
		f.Close()
	}
}

// ask sends the client a request and waits for its answer, or for ctx.
func (s *tasksServer) ask(ctx context.Context, method string, params any) (tasksAnswer, error) {
	s.mu.Lock()
	s.nextQ++
	id := strconv.Quote("tasks-q" + strconv.Itoa(s.nextQ))
	ch := make(chan tasksAnswer, 1)
	s.pending[id] = ch
	s.mu.Unlock()
	s.send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(id), "method": method, "params": params})
	select {
	case a := <-ch:
		return a, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, id) // its answer, if it comes, is ignored
		s.mu.Unlock()
		return tasksAnswer{}, ctx.Err()
	}
}

// elicit asks a form elicitation/create whose schema has the one property
// name of type typ, required.
func (s *tasksServer) elicit(ctx context.Context, message, name, typ string) (tasksAnswer, error) {
	return s.ask(ctx, "elicitation/create", map[string]any{
		"mode":    "form",
		"message": message,
		"requestedSchema": map[string]any{
			"type":       "object",
			"properties": map[string]any{name: map[string]any{"type": typ}},
			"required":   []string{name},
		},
	})
}

// tasksElicitResult is an elicitation/create result.
type tasksElicitResult struct {
	Action  string `json:"action"`
	Content struct {
		Name    *string `json:"name"`
		Confirm *bool   `json:"confirm"`
	} `json:"content"`
}

func (a tasksAnswer) elicited() tasksElicitResult {
	var r tasksElicitResult
	_ = json.Unmarshal(a.Result, &r)
	return r
}

// tasksSleep waits d, or for ctx.
func tasksSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func tasksText(text string) map[string]any {
	return map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}}
}

func tasksToolErrorText(text string) map[string]any {
	r := tasksText(text)
	r["isError"] = true
	return r
}

func (s *tasksServer) greet(ctx context.Context, c *tasksCall, a tasksArgs, _ json.RawMessage) (any, error) {
	return tasksText("Hello, " + a.Name + "!"), nil
}

func (s *tasksServer) slowCompute(ctx context.Context, c *tasksCall, a tasksArgs, token json.RawMessage) (any, error) {
	n := int(*a.Seconds)
	if n <= 0 {
		return tasksText("Computation \"" + *a.Label + "\" completed after 0 seconds. Result: 42."), nil
	}
	for i := 1; i <= n; i++ {
		if err := tasksSleep(ctx, time.Second); err != nil {
			return nil, err
		}
		if token != nil {
			s.send(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": map[string]any{
				"progressToken": token, "progress": i, "total": n, "message": fmt.Sprintf("step %d/%d", i, n)}})
		}
	}
	return tasksText(fmt.Sprintf("Computation \"%s\" completed after %d seconds. Result: 42.", *a.Label, n)), nil
}

func (s *tasksServer) failingJob(ctx context.Context, c *tasksCall, _ tasksArgs, _ json.RawMessage) (any, error) {
	if err := tasksSleep(ctx, time.Second); err != nil {
		return nil, err
	}
	return tasksToolErrorText("simulated failure: job crashed"), nil
}

func (s *tasksServer) protocolErrorJob(ctx context.Context, c *tasksCall, _ tasksArgs, _ json.RawMessage) (any, error) {
	if err := tasksSleep(ctx, time.Second); err != nil {
		return nil, err
	}
	return nil, &tasksToolError{tasksRPCError{Code: -32603, Message: "simulated protocol error: server internal failure"}}
}

func (s *tasksServer) confirmDelete(ctx context.Context, c *tasksCall, a tasksArgs, _ json.RawMessage) (any, error) {
	if err := tasksSleep(ctx, time.Second); err != nil {
		return nil, err
	}
	name := *a.Filename
	ans, err := s.elicit(ctx, "Delete '"+name+"'?", "confirm", "boolean")
	if err != nil {
		return nil, err
	}
	if ans.Error != nil {
		return tasksToolErrorText(ans.Error.Message), nil
	}
	r := ans.elicited()
	if r.Action == "accept" && r.Content.Confirm != nil && *r.Content.Confirm {
		return tasksText("deleted '" + name + "'"), nil
	}
	return tasksText("kept '" + name + "'"), nil
}

func (s *tasksServer) multiInput(ctx context.Context, c *tasksCall, _ tasksArgs, _ json.RawMessage) (any, error) {
	if err := tasksSleep(ctx, time.Second); err != nil {
		return nil, err
	}
	// both asked before either is answered
	questions := []struct{ message, name, typ string }{
		{"Enter your name:", "name", "string"},
		{"Confirm action?", "confirm", "boolean"},
	}
	answers := make([]tasksAnswer, len(questions))
	errs := make([]error, len(questions))
	var wg sync.WaitGroup
	for i, q := range questions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], errs[i] = s.elicit(ctx, q.message, q.name, q.typ)
		}()
	}
	wg.Wait()
	for i := range answers {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if answers[i].Error != nil {
			return tasksToolErrorText(answers[i].Error.Message), nil
		}
	}
	first, second := answers[0].elicited(), answers[1].elicited()
	name := first.Content.Name
	if name == nil {
		name = second.Content.Name
	}
	confirm := second.Content.Confirm
	if confirm == nil {
		confirm = first.Content.Confirm
	}
	return tasksText(fmt.Sprintf("name=\"%s\" confirmed=%t", tasksDeref(name), tasksDeref(confirm))), nil
}

func (s *tasksServer) testToolWithTask(ctx context.Context, c *tasksCall, _ tasksArgs, _ json.RawMessage) (any, error) {
	ans, err := s.elicit(ctx, "What is your name?", "name", "string")
	if err != nil {
		return nil, err
	}
	if ans.Error != nil {
		return tasksToolErrorText(ans.Error.Message), nil
	}
	name := tasksDeref(ans.elicited().Content.Name)
	if err := tasksSleep(ctx, time.Second); err != nil {
		return nil, err
	}
	return tasksText("Hello, " + name + "! (computed in task)"), nil
}

func tasksDeref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
