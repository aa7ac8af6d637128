package stdiobridge

// Tasks (the MCP tasks extension, io.modelcontextprotocol/tasks, SEP-2663)
// for every stdio server, owned by the bridge.
//
// A 2026-07-28 client that declares the extension on a tools/call may get a
// task instead of the result: when the call has not finished after
// task_after (and the child asked nothing that makes an input_required round
// first), the bridge answers with a CreateTaskResult and the call goes on in
// its child, served by a goroutine of the task (runTask) instead of the HTTP
// request. The client polls tasks/get, answers the child's questions (the
// task's inputRequests) with tasks/update and stops it with tasks/cancel,
// which sends notifications/cancelled to the child. A child's progress
// notifications become the task's statusMessage.
//
// Tasks live in the route's table (taskTable), so that a reload that keeps
// the route keeps them; a task id (instanceid.NewTaskID) names this
// instance for reverse_proxy's `mcp` policy, is authenticated with the
// shared key ring, and is bound to the principal that created it: another
// principal's tasks/get finds nothing ("not found", -32602), as for an id
// that never was. A task and its result are kept until its TTL (task_ttl,
// counted from creation), and a fetched result one minute more at most
// (fetchedGrace); per principal (task_max_per_user, task_max_bytes) and per
// route (task_route_max, task_route_max_bytes) the oldest finished tasks
// make room for new ones, and a call that finds every slot taken by running
// tasks is served without a task.
//
// A 2026 server that offers the extension itself (table.ownTasks) keeps its
// tasks: the bridge makes none, records each handle the server answers
// under an id of its own (proxyTask), sends tasks/* for it to the child that
// holds it (forwardTask), and holds that child (poolChild.taskHolds) until
// the task is forgotten.
//
// Locks: taskTable.tasksMu guards the table's maps and the finished list;
// task.mu guards one task's state. tasksMu is never held while task.mu is
// taken, nor the reverse (see doc.go), and neither across I/O: answers to the
// child are sent after the lock is released.

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/jsonscan"
)

// tasksExtension is the extension's identifier in capabilities.extensions.
const tasksExtension = "io.modelcontextprotocol/tasks"

// fetchedGrace is how long a finished task stays readable once tasks/get
// has returned its result (within its TTL): for a client whose answer was
// lost on the way.
const fetchedGrace = time.Minute

// Task statuses.
const (
	taskWorking       = "working"
	taskInputRequired = "input_required"
	taskCompleted     = "completed"
	taskFailed        = "failed"
	taskCancelled     = "cancelled"
)

// taskTable holds a route's tasks; tasksMu guards the maps and finished.
type taskTable struct {
	tasksMu   sync.Mutex
	tasks     map[string]*task
	taskCount map[string]int   // tasks held (running or kept) by limit key
	taskBytes map[string]int64 // bytes of kept results by limit key
	bytesAll  int64            // bytes of kept results, all principals
	finished  []*task          // finished tasks still held, oldest first (eviction order)

	hints      atomic.Pointer[map[string]string] // tool name -> execution.taskSupport the server gave
	hintsAsked atomic.Bool                       // a child was asked tools/list for the hints
}

// task is one task of the bridge.
type task struct {
	id      string
	owner   []byte // principalDigest of its creator
	limit   string // whom it counts against (the creator's limit key)
	tool    string
	created time.Time
	ttl     time.Duration
	poll    time.Duration
	audit   *auditRecord // the creating call's record (nil: not audited)

	reissue chan map[string]json.RawMessage // a modern child's round, answered (runTask)
	stop    chan struct{}                   // closed when the task is cancelled or removed

	mu       sync.Mutex
	status   string
	message  string
	updated  time.Time
	cl       *call                // the call in the child while it runs
	inputs   map[string]taskInput // open questions by key
	keys     int                  // keys issued (unique over the task's life)
	round    map[string]string    // a modern child's round: task key -> the child's key
	answers  map[string]json.RawMessage
	result   json.RawMessage // completed: the CallToolResult
	rpcErr   json.RawMessage // failed: the JSON-RPC error
	sizeKept atomic.Int64    // bytes of result or rpcErr, counted in taskBytes once finished
	fetched  bool
	removed  bool
	stopOnce sync.Once
	expiry   *time.Timer

	// a task of the server's own (a 2026 server with the extension), set
	// at creation: the child that holds it and its id there
	child *poolChild
	inner string
}

// taskInput is a question of the child that the client answers through
// tasks/update.
type taskInput struct {
	id     json.RawMessage // the child's request id (nil: a modern child's round)
	method string
	params json.RawMessage
}

// ownTasks reports whether the route's server is a 2026 one that offers the
// tasks extension itself: its tasks pass through (proxied), the bridge
// makes none of its own.
func (t *table) ownTasks() bool {
	d := t.discover.Load()
	if d == nil {
		return false
	}
	ext, _ := objectMembers(member(member(*d, "capabilities"), "extensions"))
	return ext[tasksExtension] != nil
}

// proxyTask takes a task handle of the server's own, answered to a call of
// a declaring client: the task is recorded under an id of the bridge's
// (bound like the bridge's own tasks), its child held until it is
// forgotten, and the client gets the handle with that id (ok false: b is
// no task handle).
func (h poolServer) proxyTask(b []byte, m *modernReq, cl *call) ([]byte, bool) {
	res := member(b, "result")
	if rt, _ := jsonscan.String(member(res, "resultType")); rt != "task" {
		return nil, false
	}
	inner, _ := jsonscan.String(member(res, "taskId"))
	if inner == "" {
		return nil, false
	}
	t := h.table
	cfg := t.settings.Load()
	ttl := cfg.taskTTL
	if v, err := strconv.ParseInt(string(member(res, "ttlMs")), 10, 64); err == nil && v > 0 && time.Duration(v)*time.Millisecond < ttl {
		ttl = time.Duration(v) * time.Millisecond
	}
	now := time.Now()
	tk := &task{id: instanceid.NewTaskID(h.sealer.ring, h.sealer.instance), owner: principalDigest(m.principal),
		limit: m.limit, tool: m.name, created: now, updated: now, ttl: ttl, status: taskWorking,
		stop: make(chan struct{}), child: cl.child, inner: inner}
	t.admit(tk, cfg, false)
	cl.child.mu.Lock()
	cl.child.taskHolds++
	cl.child.mu.Unlock()
	tk.mu.Lock()
	tk.expiry = time.AfterFunc(ttl, func() { t.removeTask(tk, "expired") })
	tk.mu.Unlock()
	bridgeMetrics.tasks.WithLabelValues(h.cmdLabel, "created").Inc()
	out := rewriteTask(b, m.e.ID, tk.id, ttl)
	return out, true
}

// rewriteTask is a server's answer about one of its tasks with the
// bridge's id for it (and the client's request id).
func rewriteTask(b []byte, id json.RawMessage, taskID string, ttl time.Duration) []byte {
	res, _ := objectMembers(member(b, "result"))
	if res == nil {
		return b
	}
	res["taskId"], _ = json.Marshal(taskID)
	if ttl > 0 {
		if v, err := strconv.ParseInt(string(res["ttlMs"]), 10, 64); err != nil || time.Duration(v)*time.Millisecond > ttl {
			res["ttlMs"] = json.RawMessage(strconv.FormatInt(ttl.Milliseconds(), 10))
		}
	}
	out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": res})
	return out
}

// forwardTask sends tasks/get, tasks/update or tasks/cancel of a task of
// the server's own to the child that holds it, with the child's id, and
// answers with the bridge's.
func (h poolServer) forwardTask(w http.ResponseWriter, r *http.Request, m *modernReq, tk *task) {
	params := maps.Clone(m.params)
	params["taskId"], _ = json.Marshal(tk.inner)
	cl, err := tk.child.start(m.e.Method, params, false, m.limit, -1)
	if err != nil {
		// the process that held the task is gone, and the task with it
		h.table.removeTask(tk, "lost with its server process")
		modernError(w, m.e.ID, codeInvalidParams, "Failed to retrieve task: Task not found")
		return
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	var b []byte
	select {
	case b = <-cl.final:
	case <-timer.C:
		cl.cancel("no answer within 30s")
		writeRPCError(w, http.StatusOK, m.e.ID, &rpcError{Code: codeInternalError, Message: "the server did not answer " + m.e.Method + " within 30s"})
		return
	case <-r.Context().Done():
		cl.cancel("the client went away")
		return
	}
	if e := member(b, "error"); e != nil {
		out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "error": json.RawMessage(e)})
		code, _ := strconv.Atoi(string(member(e, "code")))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(statusFor(code))
		_, _ = w.Write(out)
		return
	}
	if m.e.Method == "tasks/get" {
		status, _ := jsonscan.String(member(member(b, "result"), "status"))
		tk.mu.Lock()
		if status != "" {
			tk.status, tk.updated = status, time.Now()
		}
		if tk.terminal() && !tk.fetched && tk.expiry != nil {
			tk.fetched = true
			if left := time.Until(tk.created.Add(tk.ttl)); left > fetchedGrace {
				tk.expiry.Reset(fetchedGrace)
			}
		}
		tk.mu.Unlock()
	}
	out := rewriteTask(b, m.e.ID, tk.id, 0)
	if m.e.Method != "tasks/get" {
		out, _ = json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "result": map[string]any{"resultType": "complete"}})
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

func (t *task) terminal() bool {
	return t.status == taskCompleted || t.status == taskFailed || t.status == taskCancelled
}

// tasksOn reports whether the route gives tasks (task_after is not off).
func (c *settings) tasksOn() bool { return c.taskAfter >= 0 }

// declaresTasks reports whether a request declared the tasks extension in
// its own capabilities (the spec: per request, never remembered).
func (m *modernReq) declaresTasks() bool {
	ext, _ := objectMembers(m.caps["extensions"])
	v := ext[tasksExtension]
	return len(v) > 0 && v[0] == '{'
}

// needTasks is the -32021 error of a request that needs the extension.
func needTasks(id json.RawMessage, what string) []byte {
	return encodeError(id, &rpcError{Code: codeMissingCapability,
		Message: "missing required client capability: " + what + " needs the " + tasksExtension + " extension",
		Data:    map[string]any{"requiredCapabilities": map[string]any{"extensions": map[string]any{tasksExtension: map[string]any{}}}}})
}

// taskHint is what the server said of running tool name as a task
// (execution.taskSupport: "required", "optional", "forbidden"; "" unknown).
func (t *table) taskHint(name string) string {
	if h := t.hints.Load(); h != nil {
		return (*h)[name]
	}
	return ""
}

// learnHints records the execution.taskSupport of listed tools.
func (t *table) learnHints(tools json.RawMessage, firstPage bool) {
	var list []struct {
		Name      string `json:"name"`
		Execution struct {
			TaskSupport string `json:"taskSupport"`
		} `json:"execution"`
	}
	if json.Unmarshal(tools, &list) != nil {
		return
	}
	next := map[string]string{}
	if old := t.hints.Load(); old != nil && !firstPage {
		for k, v := range *old {
			next[k] = v
		}
	}
	for _, x := range list {
		if x.Execution.TaskSupport != "" && len(next) < 10000 {
			next[x.Name] = x.Execution.TaskSupport
		}
	}
	t.hints.Store(&next)
}

// askHints lists a legacy child's tools once per table, for their
// execution.taskSupport (a tool the server requires to run as a task is
// refused to clients without the extension), bounded by 5 s.
func (c *poolChild) askHints() {
	t := c.pool.t
	if !t.settings.Load().tasksOn() || !t.hintsAsked.CompareAndSwap(false, true) {
		return
	}
	if member(member(c.initResult, "capabilities"), "tools") == nil {
		return
	}
	cl, err := c.start("tools/list", map[string]json.RawMessage{}, false, "", -1)
	if err != nil {
		return
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case b := <-cl.final:
		if tools := member(member(b, "result"), "tools"); tools != nil && t.hints.Load() == nil {
			t.learnHints(tools, true)
		}
	case <-timer.C:
		c.finish(cl.id)
	}
}

// withTasksExtension adds the extension to a server's capabilities.
func withTasksExtension(caps json.RawMessage) json.RawMessage {
	c, _ := objectMembers(caps)
	if c == nil {
		c = map[string]json.RawMessage{}
	}
	ext, _ := objectMembers(c["extensions"])
	if ext == nil {
		ext = map[string]json.RawMessage{}
	}
	if ext[tasksExtension] != nil {
		return caps
	}
	ext[tasksExtension] = json.RawMessage(`{}`)
	c["extensions"], _ = json.Marshal(ext)
	out, _ := json.Marshal(c)
	return out
}

// newTask makes a task of a call in flight, if the limits leave room: the
// principal's and the route's oldest finished tasks make room; running ones
// never do (nil: the call goes on without a task).
func (h poolServer) newTask(m *modernReq, cl *call, rec *auditRecord) *task {
	t := h.table
	cfg := t.settings.Load()
	now := time.Now()
	tk := &task{id: instanceid.NewTaskID(h.sealer.ring, h.sealer.instance), owner: principalDigest(m.principal),
		limit: m.limit, tool: m.name, created: now, updated: now, ttl: cfg.taskTTL, poll: cfg.taskPoll,
		status: taskWorking, cl: cl, inputs: map[string]taskInput{},
		reissue: make(chan map[string]json.RawMessage, 1), stop: make(chan struct{})}
	if rec != nil {
		a := *rec
		tk.audit = &a
	}
	full := !t.admit(tk, cfg, true)
	if full {
		if c := h.logger.Check(zap.DebugLevel, "a call went on without a task: every task slot of its principal or route holds a running task"); c != nil {
			c.Write(zap.String("user", userForLog(m.principal)), zap.String("tool", m.name))
		}
		bridgeMetrics.tasks.WithLabelValues(h.cmdLabel, "refused").Inc()
		return nil
	}
	tk.mu.Lock()
	tk.expiry = time.AfterFunc(tk.ttl, func() { t.removeTask(tk, "expired") })
	tk.mu.Unlock()
	bridgeMetrics.tasks.WithLabelValues(h.cmdLabel, "created").Inc()
	return tk
}

// admit records tk within the count limits (task_max_per_user,
// task_route_max): the principal's and the route's oldest finished tasks
// make room. strict: refused (false) while running tasks fill the slots;
// otherwise (a task the server has made already) recorded anyway.
func (t *taskTable) admit(tk *task, cfg *settings, strict bool) bool {
	var evicted []*task
	t.tasksMu.Lock()
	if t.tasks == nil {
		t.tasks, t.taskCount, t.taskBytes = map[string]*task{}, map[string]int{}, map[string]int64{}
	}
	for cfg.taskMaxPerUser > 0 && t.taskCount[tk.limit] >= cfg.taskMaxPerUser {
		old := t.oldestFinishedLocked(tk.limit)
		if old == nil {
			break
		}
		evicted = append(evicted, old)
		t.dropLocked(old)
	}
	for cfg.taskRouteMax > 0 && len(t.tasks) >= cfg.taskRouteMax {
		old := t.oldestFinishedLocked("")
		if old == nil {
			break
		}
		evicted = append(evicted, old)
		t.dropLocked(old)
	}
	full := (cfg.taskMaxPerUser > 0 && t.taskCount[tk.limit] >= cfg.taskMaxPerUser) ||
		(cfg.taskRouteMax > 0 && len(t.tasks) >= cfg.taskRouteMax)
	ok := !full || !strict
	if ok {
		t.tasks[tk.id] = tk
		t.taskCount[tk.limit]++
	}
	t.tasksMu.Unlock()
	for _, old := range evicted {
		old.removedNow("evicted")
	}
	return ok
}

// oldestFinishedLocked is the oldest finished task of limit ("" any).
// tasksMu held.
func (t *taskTable) oldestFinishedLocked(limit string) *task {
	for _, x := range t.finished {
		if limit == "" || x.limit == limit {
			return x
		}
	}
	return nil
}

// dropLocked forgets a task. tasksMu held.
func (t *taskTable) dropLocked(tk *task) {
	if t.tasks[tk.id] != tk {
		return
	}
	delete(t.tasks, tk.id)
	if t.taskCount[tk.limit]--; t.taskCount[tk.limit] <= 0 {
		delete(t.taskCount, tk.limit)
	}
	if i := slices.Index(t.finished, tk); i >= 0 {
		t.finished = slices.Delete(t.finished, i, i+1)
		sz := t.sizeOf(tk)
		t.bytesAll -= sz
		if t.taskBytes[tk.limit] -= sz; t.taskBytes[tk.limit] <= 0 {
			delete(t.taskBytes, tk.limit)
		}
	}
}

// sizeOf is the bytes a finished task holds (set once, before it is
// listed in finished; read under tasksMu only).
func (t *taskTable) sizeOf(tk *task) int64 { return tk.sizeKept.Load() }

// removeTask forgets a task (expired, the route ended) and cancels it if it
// still runs.
func (t *table) removeTask(tk *task, why string) {
	t.tasksMu.Lock()
	t.dropLocked(tk)
	t.tasksMu.Unlock()
	tk.removedNow(why)
}

// removedNow stops what a forgotten task still runs.
func (tk *task) removedNow(why string) {
	tk.mu.Lock()
	if tk.removed {
		tk.mu.Unlock()
		return
	}
	tk.removed = true
	if tk.child != nil {
		// a task of the server's own: its child is no longer held for it
		c := tk.child
		if tk.expiry != nil {
			tk.expiry.Stop()
		}
		tk.mu.Unlock()
		c.mu.Lock()
		c.taskHolds--
		if len(c.calls) == 0 && c.idleSince.IsZero() {
			c.idleSince = time.Now()
		}
		c.mu.Unlock()
		tk.stopOnce.Do(func() { close(tk.stop) })
		return
	}
	cl, running := tk.cl, !tk.terminal()
	if tk.expiry != nil {
		tk.expiry.Stop()
	}
	if running {
		tk.status, tk.updated = taskFailed, time.Now()
	}
	open := tk.takeInputsLocked()
	tk.mu.Unlock()
	tk.stopOnce.Do(func() { close(tk.stop) })
	if running && cl != nil {
		answerOpen(cl.child, open, "the task "+why)
		cl.cancel("the task " + why)
	}
	if running {
		tk.event(why, codeInternalError)
	}
}

// takeInputsLocked empties the open questions. tk.mu held.
func (tk *task) takeInputsLocked() []taskInput {
	var open []taskInput
	for _, in := range tk.inputs {
		if in.id != nil {
			open = append(open, in)
		}
	}
	tk.inputs = map[string]taskInput{}
	tk.round, tk.answers = nil, nil
	return open
}

func answerOpen(c *poolChild, open []taskInput, reason string) {
	for _, in := range open {
		c.answerError(in.id, codeInternalError, reason)
	}
}

// lookupTask is the task id names, if the principal owns it.
func (t *table) lookupTask(id string, owner []byte) *task {
	t.tasksMu.Lock()
	tk := t.tasks[id]
	t.tasksMu.Unlock()
	if tk == nil || string(tk.owner) != string(owner) {
		return nil
	}
	return tk
}

// finish records a task's end: its result or error, kept within the
// byte limits (the principal's and the route's oldest finished tasks make
// room; a result larger than a limit is replaced by an error saying so).
func (h poolServer) finishTask(tk *task, status string, result, rpcErr json.RawMessage, message string) bool {
	t := h.table
	cfg := t.settings.Load()
	size := int64(len(result) + len(rpcErr))
	if (cfg.taskMaxBytes > 0 && size > cfg.taskMaxBytes) || (cfg.taskRouteBytes > 0 && size > cfg.taskRouteBytes) {
		h.logger.Warn("a task's result is larger than task_max_bytes or task_route_max_bytes: the task failed",
			zap.String("tool", tk.tool), zap.Int64("size", size))
		status, result, message = taskFailed, nil, "the result exceeded the route's task result limit"
		rpcErr, _ = json.Marshal(rpcError{Code: codeInternalError, Message: "the result of " + strconv.FormatInt(size, 10) +
			" bytes exceeds the bytes this route keeps for a task (task_max_bytes)"})
		size = int64(len(rpcErr))
	}
	tk.mu.Lock()
	if tk.terminal() || tk.removed {
		tk.mu.Unlock()
		return false
	}
	tk.status, tk.updated, tk.result, tk.rpcErr, tk.cl = status, time.Now(), result, rpcErr, nil
	if message != "" {
		tk.message = message
	}
	tk.inputs = map[string]taskInput{}
	tk.mu.Unlock()
	tk.sizeKept.Store(size)
	var evicted []*task
	t.tasksMu.Lock()
	if t.tasks[tk.id] == tk {
		for {
			over := (cfg.taskMaxBytes > 0 && t.taskBytes[tk.limit]+size > cfg.taskMaxBytes) ||
				(cfg.taskRouteBytes > 0 && t.bytesAll+size > cfg.taskRouteBytes)
			if !over {
				break
			}
			old := t.oldestFinishedLocked(tk.limit)
			if old == nil || (cfg.taskRouteBytes > 0 && t.bytesAll+size > cfg.taskRouteBytes && t.taskBytes[tk.limit]+size <= cfg.taskMaxBytes) {
				old = t.oldestFinishedLocked("")
			}
			if old == nil {
				break
			}
			evicted = append(evicted, old)
			t.dropLocked(old)
		}
		t.finished = append(t.finished, tk)
		t.taskBytes[tk.limit] += size
		t.bytesAll += size
	}
	t.tasksMu.Unlock()
	for _, old := range evicted {
		old.removedNow("evicted")
	}
	bridgeMetrics.tasks.WithLabelValues(h.cmdLabel, status).Inc()
	code := 0
	if rpcErr != nil {
		code, _ = strconv.Atoi(string(member(rpcErr, "code")))
	}
	tk.event(status, code)
	return true
}

// event writes the task's audit entry for a step of its life.
func (tk *task) event(what string, code int) {
	if tk.audit == nil {
		return
	}
	a := *tk.audit
	outcome := "task"
	switch what {
	case taskCompleted:
		outcome = "result"
		tk.mu.Lock()
		if v := member(tk.result, "isError"); string(v) == "true" {
			outcome = "tool_error"
		}
		tk.mu.Unlock()
	case taskFailed, "expired", "evicted", "ended with its route":
		outcome = "error"
	case taskCancelled:
		outcome = "cancelled"
	case taskInputRequired:
		outcome = "input_required"
	}
	a.taskID, a.taskEvent, a.outcome, a.errorCode = tk.id, what, outcome, code
	a.started = tk.created
	a.write()
}

// handle is the CreateTaskResult for the call's client.
func (tk *task) handle(id json.RawMessage) []byte {
	tk.mu.Lock()
	v := tk.viewLocked(false)
	tk.mu.Unlock()
	v["resultType"] = "task"
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": v})
	return b
}

// viewLocked is the task as tasks/get shows it (detailed: with its
// result, error or questions). tk.mu held.
func (tk *task) viewLocked(detailed bool) map[string]any {
	v := map[string]any{"taskId": tk.id, "status": tk.status,
		"createdAt":     tk.created.UTC().Format(time.RFC3339Nano),
		"lastUpdatedAt": tk.updated.UTC().Format(time.RFC3339Nano),
		"ttlMs":         max(tk.ttl.Milliseconds(), 1)}
	if tk.poll > 0 {
		v["pollIntervalMs"] = max(tk.poll.Milliseconds(), 1)
	}
	if tk.message != "" {
		v["statusMessage"] = tk.message
	}
	if !detailed {
		return v
	}
	switch tk.status {
	case taskCompleted:
		v["result"] = tk.result
	case taskFailed:
		v["error"] = tk.rpcErr
	case taskInputRequired:
		in := map[string]any{}
		for k, q := range tk.inputs {
			r := map[string]any{"method": q.method}
			if len(q.params) > 0 {
				r["params"] = q.params
			}
			in[k] = r
		}
		v["inputRequests"] = in
	}
	return v
}

// addInputLocked adds the child's question; tk.mu held.
func (tk *task) addInputLocked(in taskInput, prefix string) string {
	tk.keys++
	key := prefix + "-" + strconv.Itoa(tk.keys)
	tk.inputs[key] = in
	tk.status, tk.updated = taskInputRequired, time.Now()
	return key
}

// runTask serves a task's call in its child until it ends: the child's
// questions become the task's inputRequests, its progress the
// statusMessage, its answer the task's result or error. The run is bounded
// by the task's TTL (and call_timeout), and ends with the route.
func (h poolServer) runTask(tk *task, m *modernReq, cl *call) {
	t := h.table
	cfg := t.settings.Load()
	bound := tk.ttl
	if cfg.callTimeout > 0 && cfg.callTimeout < bound {
		bound = cfg.callTimeout
	}
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		select {
		case b := <-cl.final:
			for _, ev := range cl.pendingEvents() {
				tk.progress(ev)
			}
			next := h.settleTask(tk, m, cl, b)
			if next == nil {
				return
			}
			cl = next
		case b := <-cl.events:
			tk.progress(b)
		case b := <-cl.asks:
			e, err := parseEnvelope(b)
			if err != nil {
				continue
			}
			if need := m.missing(e.Method, e.Params); need != nil {
				cl.child.answerError(e.ID, codeMethodNotFound, "the client did not declare the capability "+e.Method+" needs")
				cl.cancel("the client lacks a capability the call needs")
				errObj, _ := json.Marshal(rpcError{Code: codeMissingCapability,
					Message: "the server needs a client capability the request did not declare, for " + e.Method,
					Data:    map[string]any{"requiredCapabilities": need}})
				h.finishTask(tk, taskFailed, nil, errObj, "")
				return
			}
			tk.mu.Lock()
			if tk.terminal() || tk.removed {
				tk.mu.Unlock()
				cl.child.answerError(e.ID, codeInternalError, "the task has ended")
				continue
			}
			tk.addInputLocked(taskInput{id: append(json.RawMessage(nil), e.ID...), method: e.Method,
				params: append(json.RawMessage(nil), e.Params...)}, askPrefix[e.Method])
			tk.mu.Unlock()
			tk.event("input_required", 0)
		case answers := <-tk.reissue:
			// a modern child's round, answered: the call again, with the
			// answers and the child's requestState, on the same child
			params := maps.Clone(m.params)
			params["inputResponses"], _ = json.Marshal(answers["responses"])
			if rs, ok := answers["requestState"]; ok {
				params["requestState"] = rs
			} else {
				delete(params, "requestState")
			}
			next, err := cl.child.start(m.e.Method, params, false, m.limit, m.logLevel)
			if err != nil {
				errObj, _ := json.Marshal(rpcError{Code: codeInternalError, Message: "the server process is gone: " + err.Error()})
				h.finishTask(tk, taskFailed, nil, errObj, "")
				return
			}
			tk.mu.Lock()
			tk.cl = next
			tk.mu.Unlock()
			cl = next
		case <-tk.stop:
			return
		case <-deadline.C:
			cl.cancel("the task exceeded its time")
			tk.mu.Lock()
			open := tk.takeInputsLocked()
			tk.mu.Unlock()
			answerOpen(cl.child, open, "the task exceeded its time")
			errObj, _ := json.Marshal(rpcError{Code: codeInternalError,
				Message: "the task exceeded its run time (" + bound.String() + ", task_ttl or call_timeout); the server was sent notifications/cancelled"})
			h.logger.Warn("task ended: it exceeded its run time", zap.String("tool", tk.tool), zap.Duration("bound", bound))
			h.finishTask(tk, taskFailed, nil, errObj, "")
			return
		case <-t.stop:
			cl.cancel("the route is reloading or stopping")
			return
		}
	}
}

// progress turns a child's progress notification into the statusMessage.
func (tk *task) progress(b []byte) {
	e, err := parseEnvelope(b)
	if err != nil || e.Method != "notifications/progress" {
		return
	}
	var p struct {
		Progress json.Number `json:"progress"`
		Total    json.Number `json:"total"`
		Message  string      `json:"message"`
	}
	if json.Unmarshal(e.Params, &p) != nil {
		return
	}
	msg := p.Message
	if msg == "" && p.Progress != "" {
		msg = "progress " + p.Progress.String()
		if p.Total != "" {
			msg += "/" + p.Total.String()
		}
	}
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	tk.mu.Lock()
	if !tk.terminal() && msg != "" {
		tk.message, tk.updated = msg, time.Now()
	}
	tk.mu.Unlock()
}

// settleTask takes the child's answer to a task's call: the task's result
// or error, or a modern child's own input_required round (the task waits
// for its answers; returns the call that goes on, nil when the task ended).
func (h poolServer) settleTask(tk *task, m *modernReq, cl *call, b []byte) *call {
	e, err := parseEnvelope(b)
	if err == nil && e.Result != nil {
		res, _ := objectMembers(e.Result)
		rt, _ := jsonscan.String(res["resultType"])
		if rt == "input_required" || (rt == "" && res["inputRequests"] != nil) {
			var reqs map[string]json.RawMessage
			_ = json.Unmarshal(res["inputRequests"], &reqs)
			tk.mu.Lock()
			if tk.terminal() || tk.removed {
				tk.mu.Unlock()
				return nil
			}
			tk.round, tk.answers = map[string]string{}, map[string]json.RawMessage{}
			if rs, ok := res["requestState"]; ok {
				tk.answers["\x00state"] = rs
			}
			for k, q := range reqs {
				var in struct {
					Method string          `json:"method"`
					Params json.RawMessage `json:"params"`
				}
				_ = json.Unmarshal(q, &in)
				key := tk.addInputLocked(taskInput{method: in.Method, params: in.Params}, "input")
				tk.round[key] = k
			}
			if len(reqs) == 0 {
				// a round of state only: the call again at once
				answers := tk.answers
				tk.round, tk.answers = nil, nil
				tk.mu.Unlock()
				tk.reissue <- map[string]json.RawMessage{"responses": json.RawMessage(`{}`), "requestState": answers["\x00state"]}
				return cl
			}
			tk.mu.Unlock()
			tk.event("input_required", 0)
			return cl
		}
	}
	if err == nil && e.Error != nil && member(e.Error, "code") != nil && string(member(e.Error, "code")) == strconv.Itoa(codeURLElicitation25) {
		errObj, _ := json.Marshal(rpcError{Code: codeInternalError,
			Message: "the server asked for a URL elicitation (-32042), which a task of this bridge cannot carry; call the tool without the tasks extension"})
		h.finishTask(tk, taskFailed, nil, errObj, "")
		return nil
	}
	_, out := h.translate(b, m, cl)
	if r := member(out, "result"); r != nil {
		h.finishTask(tk, taskCompleted, append(json.RawMessage(nil), r...), nil, "")
	} else {
		h.finishTask(tk, taskFailed, nil, append(json.RawMessage(nil), member(out, "error")...), "")
	}
	return nil
}

// serveTasks answers tasks/get, tasks/update and tasks/cancel (and the
// methods the extension removed: tasks/result, tasks/list).
func (h poolServer) serveTasks(w http.ResponseWriter, r *http.Request, m *modernReq) {
	switch m.e.Method {
	case "tasks/get", "tasks/update", "tasks/cancel":
	default:
		modernError(w, m.e.ID, codeMethodNotFound, "method not found: "+m.e.Method+" (the tasks extension has tasks/get, tasks/update and tasks/cancel)")
		return
	}
	if !m.tasks {
		b := needTasks(m.e.ID, m.e.Method)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(b)
		return
	}
	id, ok := jsonscan.String(m.params["taskId"])
	if !ok || id == "" {
		modernError(w, m.e.ID, codeInvalidParams, "params.taskId must be a non-empty string")
		return
	}
	tk := h.table.lookupTask(id, principalDigest(m.principal))
	if tk == nil {
		modernError(w, m.e.ID, codeInvalidParams, "Failed to retrieve task: Task not found")
		return
	}
	if tk.child != nil {
		h.forwardTask(w, r, m, tk)
		return
	}
	switch m.e.Method {
	case "tasks/get":
		tk.mu.Lock()
		v := tk.viewLocked(true)
		if tk.terminal() && !tk.fetched && tk.expiry != nil {
			tk.fetched = true
			if left := time.Until(tk.created.Add(tk.ttl)); left > fetchedGrace {
				tk.expiry.Reset(fetchedGrace)
			}
		}
		tk.mu.Unlock()
		v["resultType"] = "complete"
		writeResult(w, m.e.ID, v)
	case "tasks/update":
		var responses map[string]json.RawMessage
		if json.Unmarshal(m.params["inputResponses"], &responses) != nil {
			modernError(w, m.e.ID, codeInvalidParams, "params.inputResponses must be an object")
			return
		}
		h.updateTask(tk, responses)
		writeResult(w, m.e.ID, map[string]any{"resultType": "complete"})
	case "tasks/cancel":
		h.cancelTask(tk)
		writeResult(w, m.e.ID, map[string]any{"resultType": "complete"})
	}
}

// updateTask takes the client's answers to open questions (others are
// ignored, as the extension says): answered keys are gone from the task
// before the acknowledgement; the answers reach the child after.
func (h poolServer) updateTask(tk *task, responses map[string]json.RawMessage) {
	type answer struct {
		id json.RawMessage
		v  json.RawMessage
	}
	var out []answer
	var reissue map[string]json.RawMessage
	tk.mu.Lock()
	if tk.terminal() || tk.removed {
		tk.mu.Unlock()
		return
	}
	for k, v := range responses {
		in, open := tk.inputs[k]
		if !open || len(v) == 0 || v[0] != '{' {
			continue
		}
		delete(tk.inputs, k)
		if in.id != nil {
			out = append(out, answer{in.id, v})
		} else if ck, ok := tk.round[k]; ok {
			tk.answers[ck] = v
			delete(tk.round, k)
		}
	}
	if tk.round != nil && len(tk.round) == 0 {
		state, has := tk.answers["\x00state"]
		delete(tk.answers, "\x00state")
		resp, _ := json.Marshal(tk.answers)
		reissue = map[string]json.RawMessage{"responses": resp}
		if has {
			reissue["requestState"] = state
		}
		tk.round, tk.answers = nil, nil
	}
	if len(tk.inputs) == 0 && tk.status == taskInputRequired {
		tk.status = taskWorking
	}
	tk.updated = time.Now()
	var c *poolChild
	if tk.cl != nil {
		c = tk.cl.child
	}
	tk.mu.Unlock()
	for _, a := range out {
		if c != nil {
			c.answer(a.id, a.v)
		}
	}
	if reissue != nil {
		select {
		case tk.reissue <- reissue:
		default:
		}
	}
}

// cancelTask stops a running task: its child is sent notifications/cancelled
// for the call, its open questions are answered with an error, and the task
// is cancelled. A finished task stays as it ended.
func (h poolServer) cancelTask(tk *task) {
	tk.mu.Lock()
	if tk.terminal() || tk.removed {
		tk.mu.Unlock()
		return
	}
	cl := tk.cl
	open := tk.takeInputsLocked()
	tk.mu.Unlock()
	if !h.finishTask(tk, taskCancelled, nil, nil, "cancelled by the client") {
		return
	}
	tk.stopOnce.Do(func() { close(tk.stop) })
	if cl != nil {
		answerOpen(cl.child, open, "the task was cancelled")
		cl.cancel("the task was cancelled by the client")
	}
}

// endTasks forgets every task of a route that goes away.
func (t *table) endTasks() {
	t.tasksMu.Lock()
	all := make([]*task, 0, len(t.tasks))
	for _, tk := range t.tasks {
		all = append(all, tk)
	}
	t.tasksMu.Unlock()
	for _, tk := range all {
		t.removeTask(tk, "ended with its route")
	}
}

// taskCounts is the number of tasks a route holds and the bytes of their
// kept results (tests, metrics).
func (t *table) taskCounts() (int, int64) {
	t.tasksMu.Lock()
	defer t.tasksMu.Unlock()
	return len(t.tasks), t.bytesAll
}
