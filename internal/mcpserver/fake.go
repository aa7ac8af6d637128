package mcpserver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FakeEnv names the variable that turns a test binary into a fake stdio
// MCP server (see RunFakeIfRequested).
const FakeEnv = "CADDYMCP_FAKE_SERVER"

// readFileDescription is the description of the plain fake's read_file.
var readFileDescription = "Reads a file."

// RunFakeIfRequested runs a minimal, deliberately misbehaving stdio MCP
// server and exits when FakeEnv is set; call it first in TestMain so the
// test binary can be its own child. Modes (comma-separated):
//
//	crash    tools/call makes the process exit with status 3
//	garbage  every answer is preceded by a line that is not JSON
//	huge     tools/call answers with a 5 MiB text
//	fork     starts a grandchild (sleep 600) in its process group
//	silent   tools/call is never answered
//	env      tools/call answers with the environment, one NAME=value per line
//	slow     tools/call is answered after 500ms
//	flood    tools/call first writes 20000 notifications of 1 KiB
//	stderr   writes a 1 MiB line and 5000 short lines to stderr at start
//	ignore-term  SIGTERM is ignored (only SIGKILL ends it)
//	linger   the end of stdin does not end it
//	fds      tools/call answers with the targets of its descriptors above 2
//	setsid   starts a grandchild (sleep 6124.<its parent's pid, 7 digits>) in a session of its own
//	hugelast tools/call answers with a 5 MiB text and the id last
//	giant    tools/call answers with a 32 MiB text
//	mrtr     tools by name: "echo" (the arguments and $CADDYMCP_FAKE_USER),
//	         "whoami" (pid and $CADDYMCP_FAKE_USER), "meta" (the _meta it got), "ask" (asks its client
//	         elicitation/create, then answers with what it got), "askhold"
//	         (asks, then holds), "touch" (sends resources/updated for its
//	         "uri" argument and tools/list_changed), "hold"
//	         (answered only when cancelled), "remember" (keeps its "note"
//	         argument in memory and answers with every note kept so far),
//	         "recall" (answers with the notes), "log" (sends
//	         arguments.n (at least one) notifications/message of level
//	         info, then answers; in mode
//	         modern only when the request's _meta set a logLevel), "roots"
//	         (asks its client roots/list, then answers with what it got),
//	         "caps" (the capabilities its initialize got); it declares
//	         listChanged and resource subscriptions; every answer, cancellation,
//	         client notification
//	         and error it sees is appended to $CADDYMCP_FAKE_LOG
//	spec     (with mrtr) tools "urlask" (asks a URL-mode elicitation),
//	         "urlerr" (answers -32042 with a URL elicitation), "notfound"
//	         (answers -32002), "sample" (asks sampling/createMessage); a
//	         2025-11-25 tasks capability and tools with execution.taskSupport
//	         ("task_optional", "task_required"); resources/read of
//	         "ask://x" asks an elicitation, of "round://x" answers a round of
//	         its own (input_required with ttlMs and cacheScope public); in mode modern, tools/list says
//	         cacheScope public
//	modern   a 2026-07-28 server: answers server/discover; tools/call
//	         "ask" answers input_required with a requestState of its own
//	         ("child-state-<n>"), and its retry with the requestState and
//	         inputResponses it got (each retry's state is appended to
//	         $CADDYMCP_FAKE_LOG)
//	exttasks (with modern) implements the tasks extension itself: server/discover
//	         lists it; tools/call "longjob" from a declaring client answers a
//	         task "child-task-<n>" that completes a second later; tasks/get,
//	         tasks/update, tasks/cancel (each logged to $CADDYMCP_FAKE_LOG)
//	v32022   answers server/discover with -32022 (a modern server that does
//	         not speak 2026-07-28), everything else as the plain fake
//	escape   a server whose tools try to get out of a sandbox (escape.go)
//	orphan   a grandchild that ignores SIGTERM and sleeps (escape.go)
//	exit     exits at once
//	cold     (with modern) a 2026-only server slow to start: the first
//	         process started (counted in the file $CADDYMCP_FAKE_COUNT)
//	         never answers server/discover, and initialize is refused with
//	         -32601 by every process
//	tasks    (alone) a 2025-11-25 server (tasks.go) with no tasks capability
//	         whose tools hint execution.taskSupport: greet, slow_compute
//	         (progress each second), failing_job, protocol_error_job,
//	         confirm_delete (asks elicitation/create), multi_input (asks two
//	         at once), test_tool_with_task; each tools/call runs on its own
//	         and notifications/cancelled stops it unanswered, appending a line
//	         to $CADDYMCP_FAKE_CANCEL_LOG
//
// On notifications/cancelled it reports the cancelled id with a
// notifications/message, so tests can see that the bridge sent it.
func RunFakeIfRequested() {
	mode := os.Getenv(FakeEnv)
	// read_file's description: the file $CADDYMCP_FAKE_DESCRIPTION names,
	// read at start (a server updated between two starts)
	if path := os.Getenv("CADDYMCP_FAKE_DESCRIPTION"); path != "" {
		b, _ := os.ReadFile(path)
		readFileDescription = strings.TrimSpace(string(b))
	}
	if mode == "" {
		return
	}
	has := func(m string) bool { return strings.Contains(","+mode+",", ","+m+",") }
	switch mode {
	case "escape":
		runEscape()
		os.Exit(0)
	case "orphan":
		runOrphan()
	case "exit":
		os.Exit(0)
	case "tasks":
		runTasks()
		os.Exit(0)
	}
	if has("ignore-term") {
		ignoreTerm()
	}
	if has("setsid") {
		cmd := exec.Command("setsid", "sleep", fmt.Sprintf("6124.%07d", os.Getppid()))
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "setsid:", err)
		}
	}
	if has("fork") {
		cmd := exec.Command("sleep", "600")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "fork:", err)
		}
	}
	fmt.Fprintln(os.Stderr, "fake server started in mode", mode)
	if has("stderr") {
		os.Stderr.WriteString(strings.Repeat("E", 1<<20) + "\n")
		for i := 0; i < 5000; i++ {
			fmt.Fprintln(os.Stderr, "noise line", i)
		}
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	send := func(v any) {
		outMu.Lock()
		defer outMu.Unlock()
		if has("garbage") {
			out.WriteString("this is not JSON\n")
		}
		b, _ := json.Marshal(v)
		out.Write(b)
		out.WriteByte('\n')
		out.Flush()
	}
	logf := func(format string, args ...any) {
		if path := os.Getenv("CADDYMCP_FAKE_LOG"); path != "" {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err == nil {
				fmt.Fprintf(f, "%d "+format+"\n", append([]any{os.Getpid()}, args...)...)
				f.Close()
			}
		}
	}
	// coldFirst: this is the first process started of those sharing
	// $CADDYMCP_FAKE_COUNT (each start appends a byte)
	coldFirst := false
	if has("cold") {
		path := os.Getenv("CADDYMCP_FAKE_COUNT")
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			f.WriteString("x")
			f.Close()
			b, _ := os.ReadFile(path)
			coldFirst = len(b) == 1
		}
	}
	asked := map[string]json.RawMessage{} // our question id -> the tools/call id
	holdAfter := map[string]bool{}        // tools/call ids of "askhold": held once answered
	held := map[string]bool{}             // tools/call ids of "hold"
	nextQ := 0
	nextState := 0
	var notes []string              // what "remember" was told
	subscribed := map[string]bool{} // resources/subscribe'd URIs (mode mrtr: "touch" notifies only these)
	listens := map[string]bool{}    // ids of open subscriptions/listen requests (mode modern)
	var initCaps json.RawMessage    // the capabilities initialize declared
	type ownTask struct {
		started time.Time
		status  string
	}
	ownTasks := map[string]*ownTask{} // mode exttasks: the tasks of its own
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if json.Unmarshal(in.Bytes(), &msg) != nil {
			continue
		}
		if msg.Method == "" && msg.ID != nil { // an answer to our question
			callID, ok := asked[string(msg.ID)]
			if !ok {
				continue
			}
			delete(asked, string(msg.ID))
			if msg.Error != nil {
				logf("answer %s error %s", msg.ID, msg.Error)
				send(map[string]any{"jsonrpc": "2.0", "id": callID, "result": map[string]any{"isError": true,
					"content": []any{map[string]any{"type": "text", "text": "asked, got error " + string(msg.Error)}}}})
				continue
			}
			logf("answer %s result %s", msg.ID, msg.Result)
			if holdAfter[string(callID)] {
				delete(holdAfter, string(callID))
				held[string(callID)] = true
				logf("holding %s", callID)
				continue
			}
			send(map[string]any{"jsonrpc": "2.0", "id": callID, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": "answer=" + string(msg.Result)}}}})
			continue
		}
		if msg.Method == "notifications/cancelled" {
			var p struct {
				RequestID json.RawMessage `json:"requestId"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			logf("cancelled %s", p.RequestID)
			if held[string(p.RequestID)] {
				delete(held, string(p.RequestID))
				send(map[string]any{"jsonrpc": "2.0", "id": p.RequestID, "error": map[string]any{"code": -32800, "message": "cancelled"}})
			}
			send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message",
				"params": map[string]any{"level": "info", "data": "cancelled " + string(p.RequestID)}})
			continue
		}
		if msg.ID == nil {
			if msg.Method != "" {
				logf("notification %s", msg.Method)
			}
			continue
		}
		result := func(r any) { send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "result": r}) }
		text := func(s string) { result(map[string]any{"content": []any{map[string]any{"type": "text", "text": s}}}) }
		switch msg.Method {
		case "initialize":
			if has("cold") {
				logf("initialize refused")
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601,
					"message": "initialize is not supported: this server speaks 2026-07-28 only"}})
				continue
			}
			var p struct {
				ProtocolVersion string `json:"protocolVersion"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			caps := map[string]any{"tools": map[string]any{}}
			if has("mrtr") {
				caps = map[string]any{"tools": map[string]any{"listChanged": true},
					"resources": map[string]any{"subscribe": true, "listChanged": true}}
			}
			if has("spec") {
				caps["tasks"] = map[string]any{"requests": map[string]any{"tools": map[string]any{"call": map[string]any{}}}}
			}
			var c struct {
				Capabilities json.RawMessage `json:"capabilities"`
			}
			_ = json.Unmarshal(msg.Params, &c)
			initCaps = c.Capabilities
			result(map[string]any{
				"protocolVersion": p.ProtocolVersion,
				"capabilities":    caps,
				"serverInfo":      map[string]any{"name": "fake", "version": "1"},
			})
		case "server/discover":
			if has("v32022") {
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32022,
					"message": "unsupported protocol version", "data": map[string]any{"supported": []string{"2027-01-01"}}}})
				continue
			}
			if !has("modern") {
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601, "message": "method not found"}})
				continue
			}
			if coldFirst {
				logf("discover unanswered")
				continue // still fetching its package
			}
			caps := map[string]any{"tools": map[string]any{}}
			if has("exttasks") {
				caps["extensions"] = map[string]any{"io.modelcontextprotocol/tasks": map[string]any{}}
			}
			result(map[string]any{"resultType": "complete", "supportedVersions": []string{"2026-07-28"},
				"capabilities": caps, "serverInfo": map[string]any{"name": "fake-modern", "version": "1"}})
		case "tasks/get", "tasks/update", "tasks/cancel":
			var p struct {
				TaskID string `json:"taskId"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			logf("%s %s", msg.Method, p.TaskID)
			tk, ok := ownTasks[p.TaskID]
			if !has("exttasks") || !ok {
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32602, "message": "Task not found"}})
				continue
			}
			if msg.Method == "tasks/cancel" && tk.status == "working" {
				tk.status = "cancelled"
			}
			if msg.Method != "tasks/get" {
				result(map[string]any{"resultType": "complete"})
				continue
			}
			if tk.status == "working" && time.Since(tk.started) >= time.Second {
				tk.status = "completed"
			}
			r := map[string]any{"resultType": "complete", "taskId": p.TaskID, "status": tk.status,
				"createdAt": tk.started.UTC().Format(time.RFC3339), "lastUpdatedAt": time.Now().UTC().Format(time.RFC3339), "ttlMs": 60000}
			if tk.status == "completed" {
				r["result"] = map[string]any{"resultType": "complete", "content": []any{map[string]any{"type": "text",
					"text": "longjob done " + p.TaskID + " pid=" + strconv.Itoa(os.Getpid())}}}
			}
			result(r)
		case "tools/list":
			if has("spec") {
				r := map[string]any{"tools": []any{map[string]any{"name": "t", "inputSchema": map[string]any{"type": "object"}},
					map[string]any{"name": "task_optional", "inputSchema": map[string]any{"type": "object"}, "execution": map[string]any{"taskSupport": "optional"}},
					map[string]any{"name": "task_required", "inputSchema": map[string]any{"type": "object"}, "execution": map[string]any{"taskSupport": "required"}}}}
				if has("modern") {
					r["resultType"], r["cacheScope"], r["ttlMs"] = "complete", "public", 60000
				}
				result(r)
				continue
			}
			result(map[string]any{"tools": []any{map[string]any{"name": "t", "inputSchema": map[string]any{"type": "object"}},
				map[string]any{"name": "read_file", "description": readFileDescription, "inputSchema": map[string]any{"type": "object"}},
				map[string]any{"name": "write_file", "inputSchema": map[string]any{"type": "object"}},
				map[string]any{"name": "echo", "inputSchema": map[string]any{"type": "object", "properties": map[string]any{
					"region": map[string]any{"type": "string", "x-mcp-header": "Region"}}}}}})
		case "tools/call":
			var call struct {
				Name      string          `json:"name"`
				Arguments json.RawMessage `json:"arguments"`
			}
			_ = json.Unmarshal(msg.Params, &call)
			switch {
			case has("exttasks") && call.Name == "longjob":
				if !strings.Contains(string(msg.Params), `"io.modelcontextprotocol/tasks"`) {
					text("longjob done at once (no tasks extension declared)")
					continue
				}
				nextState++
				id := "child-task-" + strconv.Itoa(nextState)
				ownTasks[id] = &ownTask{started: time.Now(), status: "working"}
				logf("task %s created", id)
				result(map[string]any{"resultType": "task", "taskId": id, "status": "working",
					"createdAt": time.Now().UTC().Format(time.RFC3339), "lastUpdatedAt": time.Now().UTC().Format(time.RFC3339), "ttlMs": 60000})
			case has("modern") && call.Name == "ask":
				var p struct {
					RequestState   *string         `json:"requestState"`
					InputResponses json.RawMessage `json:"inputResponses"`
				}
				_ = json.Unmarshal(msg.Params, &p)
				if p.RequestState != nil {
					logf("state %s", *p.RequestState)
					text("state=" + *p.RequestState + " responses=" + string(p.InputResponses))
					break
				}
				nextState++
				result(map[string]any{"resultType": "input_required", "requestState": "child-state-" + strconv.Itoa(nextState),
					"inputRequests": map[string]any{"name": map[string]any{"method": "elicitation/create", "params": map[string]any{
						"mode": "form", "message": "Your name?", "requestedSchema": map[string]any{"type": "object",
							"properties": map[string]any{"name": map[string]any{"type": "string"}}}}}}})
			case has("mrtr") && call.Name == "echo":
				text("echo=" + string(call.Arguments) + " user=" + os.Getenv("CADDYMCP_FAKE_USER"))
			case has("mrtr") && call.Name == "meta":
				var p struct {
					Meta json.RawMessage `json:"_meta"`
				}
				_ = json.Unmarshal(msg.Params, &p)
				text("meta=" + string(p.Meta))
			case has("mrtr") && call.Name == "remember":
				var a struct {
					Note string `json:"note"`
				}
				_ = json.Unmarshal(call.Arguments, &a)
				notes = append(notes, a.Note)
				text("notes=" + strings.Join(notes, ","))
			case has("mrtr") && call.Name == "recall":
				text("notes=" + strings.Join(notes, ","))
			case has("mrtr") && call.Name == "log":
				var p struct {
					Meta map[string]json.RawMessage `json:"_meta"`
				}
				_ = json.Unmarshal(msg.Params, &p)
				var a struct {
					N int `json:"n"`
				}
				_ = json.Unmarshal(call.Arguments, &a)
				for i := 0; i < max(a.N, 1) && (!has("modern") || p.Meta["io.modelcontextprotocol/logLevel"] != nil); i++ {
					send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message",
						"params": map[string]any{"level": "info", "data": "log of " + string(call.Arguments)}})
				}
				text("logged")
			case has("mrtr") && call.Name == "whoami":
				text("pid=" + strconv.Itoa(os.Getpid()) + " user=" + os.Getenv("CADDYMCP_FAKE_USER"))
			case has("mrtr") && (call.Name == "ask" || call.Name == "askhold"):
				holdAfter[string(msg.ID)] = call.Name == "askhold"
				nextQ++
				q := fmt.Sprintf(`"q%d"`, nextQ)
				asked[q] = msg.ID
				logf("asking %s", q)
				send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(q), "method": "elicitation/create",
					"params": map[string]any{"mode": "form", "message": "Your name?", "requestedSchema": map[string]any{
						"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}}})
			case has("spec") && call.Name == "urlask":
				nextQ++
				q := fmt.Sprintf(`"q%d"`, nextQ)
				asked[q] = msg.ID
				send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(q), "method": "elicitation/create",
					"params": map[string]any{"mode": "url", "message": "Sign in", "url": "https://example.com/signin", "elicitationId": "e1"}})
			case has("spec") && call.Name == "sample":
				nextQ++
				q := fmt.Sprintf(`"q%d"`, nextQ)
				asked[q] = msg.ID
				send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(q), "method": "sampling/createMessage",
					"params": map[string]any{"messages": []any{}, "maxTokens": 10}})
			case has("spec") && call.Name == "urlerr":
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32042, "message": "URL elicitation required",
					"data": map[string]any{"elicitations": []any{map[string]any{"mode": "url", "message": "Authorize", "url": "https://example.com/auth", "elicitationId": "e2"}}}}})
			case has("spec") && call.Name == "notfound":
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32002, "message": "not found"}})
			case has("mrtr") && call.Name == "caps":
				text("caps=" + string(initCaps))
			case has("mrtr") && call.Name == "roots":
				nextQ++
				q := fmt.Sprintf(`"q%d"`, nextQ)
				asked[q] = msg.ID
				logf("asking %s roots/list", q)
				send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(q), "method": "roots/list"})
			case has("mrtr") && call.Name == "touch":
				var a struct {
					URI string `json:"uri"`
				}
				_ = json.Unmarshal(call.Arguments, &a)
				if subscribed[a.URI] {
					send(map[string]any{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": map[string]any{"uri": a.URI}})
				}
				send(map[string]any{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
				text("touched " + a.URI)
			case has("mrtr") && call.Name == "hold":
				held[string(msg.ID)] = true
				logf("holding %s", msg.ID)
			case has("crash"):
				os.Exit(3)
			case has("hugelast"):
				outMu.Lock()
				fmt.Fprintf(out, `{"jsonrpc":"2.0","result":{"content":[{"type":"text","text":"%s"}]},"id":%s}`+"\n",
					strings.Repeat("x", 5<<20), msg.ID)
				out.Flush()
				outMu.Unlock()
			case has("huge"):
				text(strings.Repeat("x", 5<<20))
			case has("giant"):
				text(strings.Repeat("x", 32<<20))
			case has("fds"):
				text(strings.Join(openDescriptors(), "\n"))
			case has("flood"):
				pad := strings.Repeat("f", 1024)
				for i := 0; i < 20000; i++ {
					send(map[string]any{"jsonrpc": "2.0", "method": "notifications/message",
						"params": map[string]any{"level": "info", "data": pad}})
				}
				text("flooded")
			case has("silent"):
			case has("slow"):
				go func(id json.RawMessage) {
					time.Sleep(500 * time.Millisecond)
					send(map[string]any{"jsonrpc": "2.0", "id": id, "result": map[string]any{
						"content": []any{map[string]any{"type": "text", "text": "slow ok"}}}})
				}(msg.ID)
			case has("env"):
				text(strings.Join(os.Environ(), "\n"))
			default:
				text("ok")
			}
		case "resources/read":
			var p struct {
				URI string `json:"uri"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			if has("spec") && p.URI == "ask://x" {
				nextQ++
				q := fmt.Sprintf(`"q%d"`, nextQ)
				asked[q] = msg.ID
				send(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(q), "method": "elicitation/create",
					"params": map[string]any{"mode": "form", "message": "Which?", "requestedSchema": map[string]any{"type": "object"}}})
				continue
			}
			if has("spec") && p.URI == "round://x" {
				// a server's own round (go-sdk's later rounds), with
				// caching hints it should not have given
				result(map[string]any{"resultType": "input_required", "requestState": "child-round",
					"inputRequests": map[string]any{"q": map[string]any{"method": "elicitation/create",
						"params": map[string]any{"mode": "form", "message": "Which?", "requestedSchema": map[string]any{"type": "object"}}}},
					"ttlMs": 60000, "cacheScope": "public"})
				continue
			}
			code := -32601 // as before this case existed
			if has("spec") {
				code = -32002
			}
			send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": code, "message": "not found"}})
		case "ping":
			result(map[string]any{})
		case "resources/subscribe", "resources/unsubscribe":
			var p struct {
				URI string `json:"uri"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			logf("%s %s", msg.Method, p.URI)
			if strings.Contains(p.URI, "refused") {
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32602, "message": "no such resource"}})
				continue
			}
			subscribed[p.URI] = msg.Method == "resources/subscribe"
			result(map[string]any{})
		case "subscriptions/listen":
			if !has("modern") {
				send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601, "message": "method not found"}})
				continue
			}
			// acknowledged, then held open until cancelled
			listens[string(msg.ID)] = true
			var p struct {
				Notifications json.RawMessage `json:"notifications"`
			}
			_ = json.Unmarshal(msg.Params, &p)
			send(map[string]any{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": map[string]any{
				"_meta": map[string]any{"io.modelcontextprotocol/subscriptionId": msg.ID}, "notifications": p.Notifications}})
			logf("listening %s", msg.ID)
		default:
			send(map[string]any{"jsonrpc": "2.0", "id": msg.ID, "error": map[string]any{"code": -32601, "message": "method not found"}})
		}
	}
	if has("linger") {
		time.Sleep(24 * time.Hour)
	}
	os.Exit(0)
}

// openDescriptors lists "fd -> target" for this process's descriptors above
// stderr (Linux: /proc/self/fd), leaving out the directory being read.
func openDescriptors() []string {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	defer dir.Close()
	names, _ := dir.Readdirnames(-1)
	var out []string
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 || uintptr(fd) == dir.Fd() {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + n)
		out = append(out, n+" -> "+target)
	}
	return out
}
