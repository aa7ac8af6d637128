package stdiobridge

// The MCP 2026-07-28 request transport: no session, no handshake; every
// request carries its protocol version and client capabilities in _meta,
// and is served by a child of the route's pool (pool.go). A legacy child is
// spoken to in 2025 form and its answers translated: resultType, ttlMs and
// cacheScope on results, serverInfo in result _meta, renumbered error
// codes, and its questions to the client turned into input_required rounds
// (mrtr.go).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// modernVersion is the protocol revision served without sessions.
const modernVersion = "2026-07-28"

// allVersions are the versions this endpoint serves, newest first: the
// modern one per request, the 2025 ones through initialize and sessions.
var allVersions = append([]string{modernVersion}, supportedVersions...)

// JSON-RPC error codes of MCP 2026-07-28.
const (
	codeInvalidParams      = -32602
	codeHeaderMismatch     = -32020
	codeMissingCapability  = -32021
	codeResourceNotFound25 = -32002 // 2025 resource not found, -32602 since 2026-07-28
	codeURLElicitation25   = -32042 // 2025-11-25 URL elicitation required; retired in 2026-07-28
)

// Gathering a legacy child's questions into one round: a round is answered
// once the child has asked nothing new for gatherQuiet (go-sdk servers ask
// all of a round's questions at once, concurrently), or gatherMax after
// the first question. Timing decides only how questions are grouped into
// rounds, never which call they belong to.
var (
	gatherQuiet = 25 * time.Millisecond
	gatherMax   = 250 * time.Millisecond
)

const (
	metaVersion  = "io.modelcontextprotocol/protocolVersion"
	metaCaps     = "io.modelcontextprotocol/clientCapabilities"
	metaLogLevel = "io.modelcontextprotocol/logLevel"
	metaServer   = "io.modelcontextprotocol/serverInfo"
	metaSubID    = "io.modelcontextprotocol/subscriptionId"
)

// clientModern reports the client's era of a POSTed message (not what the
// child speaks: childEra): mcpreq's verdict (mcpreq.Era) on the very
// reading that mcp_auth's rules, the mcp matcher and {http.mcp.era}
// decided on, so that what they call 2025 is served as 2025.
func clientModern(q *mcpreq.Request) bool { return q.Era == "2026" }

// modernReq is a validated 2026-07-28 request.
type modernReq struct {
	e         *envelope
	params    map[string]json.RawMessage
	meta      map[string]json.RawMessage
	caps      map[string]json.RawMessage
	logLevel  int // -1: no log messages
	levelName string
	name      string // params.name or params.uri
	principal string
	limit     string
	started   time.Time
	pool      *childPool // the pool that serves it (nil until poolFor)
	tasks     bool       // the request declared the tasks extension (tasks.go)
}

// missing returns the capability a question of the child needs that the
// client did not declare (nil when it declared it), in the form of
// MissingRequiredClientCapabilityError's data.requiredCapabilities. An
// elicitation's mode counts: a client that declared "elicitation": {} (or
// only form) takes form mode only (client/elicitation: servers MUST NOT
// send modes the client did not declare).
func (m *modernReq) missing(method string, params json.RawMessage) map[string]any {
	switch method {
	case "elicitation/create":
		mode, _ := jsonscan.String(member(params, "mode"))
		if mode == "" {
			mode = "form"
		}
		need := map[string]any{"elicitation": map[string]any{mode: map[string]any{}}}
		raw := m.caps["elicitation"]
		if raw == nil {
			return need
		}
		modes, _ := objectMembers(raw)
		if modes["form"] == nil && modes["url"] == nil {
			modes = map[string]json.RawMessage{"form": json.RawMessage(`{}`)} // {}: form only
		}
		if modes[mode] == nil {
			return need
		}
		return nil
	case "sampling/createMessage", "roots/list":
		c := askPrefix[method]
		if m.caps[c] == nil {
			return map[string]any{c: map[string]any{}}
		}
		return nil
	}
	return map[string]any{}
}

// missingCapability is the client's answer when a call needs a capability
// it did not declare (basic/index: -32021, 400).
func missingCapability(id json.RawMessage, method string, need map[string]any) []byte {
	return encodeError(id, &rpcError{Code: codeMissingCapability,
		Message: "the server needs a client capability this request did not declare, for " + method,
		Data:    map[string]any{"requiredCapabilities": need}})
}

func statusFor(code int) int {
	switch code {
	case codeMethodNotFound:
		return http.StatusNotFound
	case codeInvalidParams, codeHeaderMismatch, codeMissingCapability, codeUnsupportedProtocolVers, codeInvalidRequest, codeParseError:
		return http.StatusBadRequest
	}
	return http.StatusOK
}

func modernError(w http.ResponseWriter, id json.RawMessage, code int, msg string) {
	writeRPCError(w, statusFor(code), id, &rpcError{Code: code, Message: msg})
}

// removedMethods are 2025 methods that 2026-07-28 dropped: 404 -32601.
var removedMethods = []string{"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}

// serveModern serves one 2026-07-28 message.
func (h poolServer) serveModern(w http.ResponseWriter, r *http.Request, e *envelope) {
	if e.isResponse() {
		badRequest(w, e.ID, "a 2026-07-28 client sends no JSON-RPC responses")
		return
	}
	if e.isNotification() {
		// 2026-07-28 defines no client notifications over HTTP (closing a
		// stream cancels); accepted and dropped
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if hv := r.Header.Get("Mcp-Protocol-Version"); hv != "" && !slices.Contains(allVersions, hv) {
		// a version this endpoint does not know: say what it speaks
		writeRPCError(w, http.StatusBadRequest, e.ID, &rpcError{Code: codeUnsupportedProtocolVers,
			Message: "unsupported protocol version " + strconv.Quote(hv),
			Data:    map[string]any{"supported": allVersions, "requested": hv}})
		return
	}
	m := &modernReq{e: e, logLevel: -1, started: time.Now()}
	var err error
	if len(e.Params) > 0 {
		if m.params, err = objectMembers(e.Params); err != nil {
			modernError(w, e.ID, codeInvalidParams, "params must be an object")
			return
		}
	}
	if m.params == nil {
		m.params = map[string]json.RawMessage{}
	}
	if m.meta, err = objectMembers(m.params["_meta"]); err != nil || m.meta == nil {
		modernError(w, e.ID, codeInvalidParams, "missing _meta: a 2026-07-28 request carries "+metaVersion+" and "+metaCaps)
		return
	}
	version, _ := jsonscan.String(m.meta[metaVersion])
	if version == "" {
		modernError(w, e.ID, codeInvalidParams, "missing or invalid _meta field "+metaVersion)
		return
	}
	if json.Unmarshal(m.meta[metaCaps], &m.caps) != nil || m.caps == nil {
		modernError(w, e.ID, codeInvalidParams, "missing or invalid _meta field "+metaCaps)
		return
	}
	m.tasks = m.declaresTasks()
	if hv := r.Header.Get("Mcp-Protocol-Version"); hv != version {
		msg := "MCP-Protocol-Version header is required and must equal _meta " + metaVersion
		if hv != "" {
			msg = "header mismatch: MCP-Protocol-Version header value " + strconv.Quote(hv) + " does not match body value " + strconv.Quote(version)
		}
		modernError(w, e.ID, codeHeaderMismatch, msg)
		return
	}
	if version != modernVersion {
		writeRPCError(w, http.StatusBadRequest, e.ID, &rpcError{Code: codeUnsupportedProtocolVers,
			Message: "unsupported protocol version " + strconv.Quote(version),
			Data:    map[string]any{"supported": allVersions, "requested": version}})
		return
	}
	if err := checkStandardHeaders(r.Header, e.Method, m.params); err != nil {
		modernError(w, e.ID, codeHeaderMismatch, err.Error())
		return
	}
	if raw := m.meta[metaLogLevel]; raw != nil {
		if json.Unmarshal(raw, &m.levelName) != nil {
			modernError(w, e.ID, codeInvalidParams, "invalid _meta field "+metaLogLevel)
			return
		}
		lvl, ok := logLevels[m.levelName]
		if !ok {
			modernError(w, e.ID, codeInvalidParams, "invalid _meta field "+metaLogLevel+": "+strconv.Quote(m.levelName))
			return
		}
		m.logLevel = lvl
	}
	m.name, _ = nameOf(e.Method, m.params)
	m.principal = principal(r)
	m.limit = mcpreq.LimitKey(r, m.principal)
	if slices.Contains(removedMethods, e.Method) {
		modernError(w, e.ID, codeMethodNotFound, "method not found: "+e.Method+" is not part of MCP "+modernVersion)
		return
	}
	if strings.HasPrefix(e.Method, "tasks/") && h.table.settings.Load().tasksOn() {
		h.serveTasks(w, r, m)
		return
	}
	m.pool = h.poolFor(r, m)
	defer h.table.leavePool(m.pool)
	switch {
	case e.Method == "server/discover":
		h.discover(w, r, m)
	case e.Method == "subscriptions/listen":
		h.listen(w, r, m)
	default:
		h.modernCall(w, r, m)
	}
}

// objectMembers decodes the members of a JSON object that the bridge has
// validated already (the request body passed json.Valid) without a second
// validation pass or reflection; the values share b. Anything jsonscan
// leaves to encoding/json (an escaped or repeated name, not an object)
// goes through json.Unmarshal, as before.
func objectMembers(b []byte) (map[string]json.RawMessage, error) {
	if ms, ok := jsonscan.Members(b); ok {
		m := make(map[string]json.RawMessage, len(ms))
		for _, x := range ms {
			m[x.Name] = json.RawMessage(b[x.Value.Start:x.Value.End:x.Value.End])
		}
		return m, nil
	}
	var m map[string]json.RawMessage
	err := json.Unmarshal(b, &m)
	return m, err
}

// paramsMap decodes params for a look at its members (nil if it is not an
// object).
func paramsMap(params json.RawMessage) map[string]json.RawMessage {
	p, _ := objectMembers(params)
	return p
}

// poolFor returns the pool that serves a request, for its use until
// table.leavePool: the principal's own (pool per_user, the default, when
// mcp_auth verified one) or everyone's (pool shared, or no principal);
// within it, children started with exactly the environment this request
// resolves to (placeholders in env), so that no request is ever served by
// a child started with another request's values.
func (h poolServer) poolFor(r *http.Request, m *modernReq) *childPool {
	var env []string
	key := "\x00"
	if h.perRequest {
		env = h.spawner.environ(r)
		d := sha256.Sum256([]byte(strings.Join(env, "\x00")))
		key += string(d[:16])
	}
	if h.Pool != "shared" && m.principal != "" {
		return h.table.poolFor("u"+m.principal+key, m.principal, m.limit, env)
	}
	return h.table.poolFor("s"+key, "", "", env)
}

// cacheScope is "private" unless the answer is the same for everyone: a
// shared child and an unauthenticated request.
func (h poolServer) cacheScope(m *modernReq) string {
	if h.perRequest || m.principal != "" {
		return "private"
	}
	return "public"
}

// child returns a ready pool child for a call, starting one if needed; on
// failure it has answered the client.
func (h poolServer) child(w http.ResponseWriter, r *http.Request, m *modernReq, p *childPool, asking bool, prefer uint64) *poolChild {
	// a wait ends when the client goes away or the route shuts down (no
	// goroutine per request to watch both)
	c, why, err := p.acquire(r.Context(), h.shutdown, asking, m.limit, prefer, func() (*poolChild, refusal, error) {
		return h.startPoolChild(r, p, m.limit)
	})
	switch {
	case c != nil:
		return c
	case r.Context().Err() != nil:
		// the client went away while waiting
	case errors.Is(err, context.Canceled) || (err != nil && h.table.isStopped()):
		// a child that failed because the route ended is not a fault
		h.logger.Info("request ended while waiting for a child: the route is reloading or stopping")
		writeRPCError(w, http.StatusServiceUnavailable, m.e.ID, &rpcError{Code: codeInternalError,
			Message: "the route is reloading or stopping; retry the request"})
	case err != nil && why == admitted:
		h.spawnFailed(w, m.e.ID, err)
	default:
		h.refuse(w, m.e.ID, why, m.limit)
	}
	return nil
}

// startPoolChild starts and initializes a child for p, within the limits:
// a per-user pool's children count against its principal, a shared pool's
// against the principal whose request started it (so that no one principal
// can fill a shared pool), all against max_sessions.
func (h poolServer) startPoolChild(r *http.Request, p *childPool, requester string) (*poolChild, refusal, error) {
	limit := p.limit
	if limit == "" {
		limit = requester
	}
	if why := h.table.reserve(limit); why != admitted {
		return nil, why, nil
	}
	c := &poolChild{pool: p, ready: make(chan struct{}), started: make(chan struct{}), calls: map[uint64]*call{}, tokens: map[string]*call{},
		logLevel: -1, idleSince: time.Now(), serial: childSerials.Add(1), modern: h.childEra(r) == eraModern, limit: limit}
	c.exited = make(chan struct{})
	if p.owner != "" {
		c.logger = h.logger.With(zap.String("pool", userForLog(p.owner)))
	} else {
		c.logger = h.logger.With(zap.String("pool", "shared"))
	}
	began := time.Now()
	prewarmed := false
	if !h.perRequest {
		if wc := h.table.pool.take(); wc != nil {
			c.proc = wc.proc
			if wc.sink.adopt(c) {
				prewarmed = true
			} else {
				c.proc = nil
			}
		}
	}
	if !prewarmed {
		proc, err := h.table.startChild(p.env, c, c.logger)
		c.proc = proc
		if err != nil {
			close(c.started)
			h.table.release(limit)
			return nil, admitted, err
		}
	}
	close(c.started)
	if err := c.handshake(defaultPoolVersion); err != nil {
		c.end("initialize failed")
		if !c.modern {
			h.assumptionFailed() // a guessed legacy verdict may be wrong (probe.go)
		}
		return nil, admitted, err
	}
	observeStart(h.cmdLabel, began)
	if c.modern {
		h.table.discoveredModern(c.initResult)
	} else {
		h.table.discovered(c.initResult)
	}
	c.logger.Info("pool child started", zap.Int("pid", c.proc.Pid()), zap.Bool("prewarmed", prewarmed), zap.Bool("modern", c.modern), h.sandboxField(c.proc))
	return c, admitted, nil
}

// bridgeMeta is the _meta of the bridge's own requests to a modern child.
var bridgeMeta = json.RawMessage(`{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
	`"io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"caddymcp","version":"1"}}`)

// childSerials numbers pool children (a wrapped requestState names one).
var childSerials atomic.Uint64

// defaultPoolVersion is what the bridge speaks to a legacy child.
const defaultPoolVersion = "2025-11-25"

// discover answers server/discover from the cached InitializeResult of the
// route's children (a child is started the first time only).
func (h poolServer) discover(w http.ResponseWriter, r *http.Request, m *modernReq) {
	if h.childEra(r) == eraModern {
		res := h.table.discover.Load()
		if res == nil {
			c := h.child(w, r, m, m.pool, false, 0)
			if c == nil {
				return
			}
			res = &c.initResult
		}
		out := json.RawMessage(*res)
		private, tasks := h.cacheScope(m) == "private", h.table.settings.Load().tasksOn()
		if private || tasks {
			var r map[string]json.RawMessage
			if json.Unmarshal(out, &r) == nil {
				if private {
					r["cacheScope"] = json.RawMessage(`"private"`)
				}
				if tasks {
					r["capabilities"] = withTasksExtension(r["capabilities"])
				}
				out, _ = json.Marshal(r)
			}
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "result": out})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
		return
	}
	init := h.table.initResult()
	if init == nil {
		c := h.child(w, r, m, m.pool, false, 0)
		if c == nil {
			return
		}
		init = c.initResult
	}
	var ir struct {
		Capabilities json.RawMessage `json:"capabilities"`
		ServerInfo   json.RawMessage `json:"serverInfo"`
		Instructions string          `json:"instructions,omitempty"`
	}
	_ = json.Unmarshal(init, &ir)
	ir.Capabilities = untaskedCaps(ir.Capabilities)
	if h.table.settings.Load().tasksOn() {
		ir.Capabilities = withTasksExtension(ir.Capabilities)
	}
	res := map[string]any{
		"resultType":        "complete",
		"supportedVersions": allVersions,
		"capabilities":      ir.Capabilities,
		"ttlMs":             h.cfg.cacheTTL.Milliseconds(),
		"cacheScope":        h.cacheScope(m),
	}
	if ir.ServerInfo != nil {
		res["_meta"] = map[string]any{metaServer: ir.ServerInfo}
	}
	if ir.Instructions != "" {
		res["instructions"] = ir.Instructions
	}
	writeResult(w, m.e.ID, res)
}

func writeResult(w http.ResponseWriter, id json.RawMessage, result any) {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// modernCall forwards a request to a pool child and answers it.
func (h poolServer) modernCall(w http.ResponseWriter, r *http.Request, m *modernReq) {
	p := m.pool
	// a modern child asks nothing over stdio: its calls need no asker slot
	asking := mcpreq.Invokes(m.e.Method) && h.childEra(r) != eraModern
	if m.params["requestState"] != nil && mcpreq.Invokes(m.e.Method) {
		h.resume(w, r, m, p)
		return
	}
	if m.e.Method == "tools/call" {
		// 2025-11-25's task request; 2026-07-28 has none (the extension:
		// servers MUST ignore it), and no child is asked for a task of its own
		delete(m.params, "task")
		bindings, ok := h.toolBindings(w, r, m, p)
		if !ok {
			return
		}
		if err := checkParamHeaders(r.Header, m.params, bindings); err != nil {
			modernError(w, m.e.ID, codeHeaderMismatch, err.Error())
			return
		}
		if h.table.settings.Load().tasksOn() && !m.tasks && h.table.taskHint(m.name) == "required" {
			// the server runs this tool as a task only (execution.taskSupport)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write(needTasks(m.e.ID, "the tool "+strconv.Quote(m.name)))
			return
		}
	}
	if tc := traceContext(r.Context()); tc != nil {
		annotateSpan(r, m.e.Method, m.name)
		for k, v := range tc {
			m.meta[k], _ = json.Marshal(v)
		}
		m.params["_meta"], _ = json.Marshal(m.meta)
	}
	c := h.child(w, r, m, p, asking, 0)
	if c == nil {
		return
	}
	if m.logLevel >= 0 && !c.modern {
		c.setLogLevel(r.Context(), m.levelName)
	}
	h.serveCall(w, r, m, c, asking)
}

// serveCall sends a request to a ready child and answers it, audited.
func (h poolServer) serveCall(w http.ResponseWriter, r *http.Request, m *modernReq, c *poolChild, asking bool) {
	if c.modern && m.caps["extensions"] != nil && !h.table.ownTasks() {
		// the tasks are the bridge's: a 2026 server is never asked to make
		// one of its own (its task ids would name no task of this route)
		if ext, _ := objectMembers(m.caps["extensions"]); ext[tasksExtension] != nil {
			delete(ext, tasksExtension)
			caps := maps.Clone(m.caps)
			caps["extensions"], _ = json.Marshal(ext)
			m.caps = caps
			m.meta[metaCaps], _ = json.Marshal(caps)
			m.params["_meta"], _ = json.Marshal(m.meta)
		}
	}
	if c.modern && m.caps["roots"] != nil && !h.table.settings.Load().rootsForward {
		// a 2026 server learns of no roots capability (roots none or a
		// configured list: the client's roots are not the server's
		// boundary), so it asks the client for none
		caps := maps.Clone(m.caps)
		delete(caps, "roots")
		m.caps = caps
		m.meta[metaCaps], _ = json.Marshal(caps)
		m.params["_meta"], _ = json.Marshal(m.meta)
	}
	rec := h.newAudit(r, "2026", m.e.Method, m.e.ID, m.e.Params)
	cl, err := c.start(m.e.Method, m.params, asking, m.limit, m.logLevel)
	if err != nil {
		h.childUnavailable(w, m.e.ID, err)
		if rec != nil {
			rec.outcome, rec.errorCode = "error", codeInternalError
			rec.write()
		}
		return
	}
	if rec != nil {
		rec.pid = c.proc.Pid()
	}
	h.await(w, r, m, cl, rec)
}

// parked accounts for a request answered with an input_required round.
func (h poolServer) parked(m *modernReq, rec *auditRecord) {
	if rec != nil {
		rec.outcome = "input_required"
	}
	h.observe(m.e.Method, m.name, modernVersion, 0, false, m.started)
	bridgeMetrics.rounds.WithLabelValues(h.cmdLabel).Inc()
}

// replier answers one request: JSON unless something streams before the
// answer, then SSE.
type replier struct {
	w   http.ResponseWriter
	sse *sseWriter
}

func (rp *replier) event(b []byte) error {
	if rp.sse == nil {
		rp.sse = newSSEWriter(rp.w, "")
	}
	rp.sse.add("", b)
	return rp.sse.flush()
}

func (rp *replier) finish(status int, body []byte) {
	if rp.sse != nil {
		rp.sse.add("", body)
		_ = rp.sse.flush()
		return
	}
	h := rp.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rp.w.WriteHeader(status)
	_, _ = rp.w.Write(body)
}

// await serves a call until its answer, or until the child's questions
// make a round (input_required), the client goes away (the call is
// cancelled), or the route shuts down.
func (h poolServer) await(w http.ResponseWriter, r *http.Request, m *modernReq, cl *call, rec *auditRecord) {
	rp := &replier{w: w}
	if rec != nil {
		defer func() {
			// the answer goes out first: a client waits for it, not for
			// the entry
			_ = http.NewResponseController(w).Flush()
			rec.write()
		}()
	}
	var quiet, hard, bound, taskAt <-chan time.Time
	var quietT *time.Timer
	asked := false
	cfg := h.table.settings.Load()
	limit := cfg.callTimeout
	if m.e.Method == "tools/call" && cfg.tasksOn() && m.tasks && !(cl.child.modern && h.table.ownTasks()) {
		// a call that has not finished after task_after becomes a task
		tt := time.NewTimer(max(cfg.taskAfter, time.Nanosecond))
		defer tt.Stop()
		taskAt = tt.C
	}
	if limit > 0 {
		// time the child works on this leg of the call; a parked round
		// returns from here, and its retry starts a new bound
		bt := time.NewTimer(limit)
		defer bt.Stop()
		bound = bt.C
	}
	toTask := func() bool {
		tk := h.newTask(m, cl, rec)
		if tk == nil {
			return false // no slot: the call goes on without a task
		}
		for _, ev := range cl.pendingEvents() {
			tk.progress(ev)
		}
		rp.finish(http.StatusOK, tk.handle(m.e.ID))
		if rec != nil {
			rec.outcome, rec.taskID, rec.taskEvent = "task", tk.id, "created"
		}
		h.observe(m.e.Method, m.name, modernVersion, 0, false, m.started)
		go h.runTask(tk, m, cl)
		return true
	}
	if taskAt != nil && cfg.taskAfter == 0 {
		// task_after 0: every such call is a task, at once
		taskAt = nil
		if toTask() {
			return
		}
	}
	for {
		select {
		case <-bound:
			cl.cancel("the call exceeded call_timeout")
			if rec != nil {
				rec.outcome, rec.errorCode = "error", codeInternalError
			}
			h.logger.Warn("call ended: it exceeded call_timeout", zap.String("method", m.e.Method),
				zap.String("name", m.name), zap.Duration("call_timeout", limit))
			h.observe(m.e.Method, m.name, modernVersion, codeInternalError, false, m.started)
			rp.finish(http.StatusOK, encodeError(m.e.ID, &rpcError{Code: codeInternalError,
				Message: "the call exceeded call_timeout (" + limit.String() + "); the server was sent notifications/cancelled"}))
			return
		case b := <-cl.final:
			for _, ev := range cl.pendingEvents() {
				if rp.event(ev) != nil {
					break
				}
			}
			if m.tasks && cl.child.modern && m.e.Method == "tools/call" && h.table.ownTasks() && cfg.tasksOn() {
				// a task of the server's own, under an id of the bridge's
				if out, ok := h.proxyTask(b, m, cl); ok {
					rp.finish(http.StatusOK, out)
					if rec != nil {
						id, _ := jsonscan.String(member(member(out, "result"), "taskId"))
						rec.outcome, rec.taskID, rec.taskEvent = "task", id, "created"
					}
					return
				}
			}
			status, body := h.translate(b, m, cl)
			rp.finish(status, body)
			outcome, code := outcomeOf(body)
			if rec != nil {
				rec.outcome, rec.errorCode = outcome, code
				rec.exitCause = cl.child.limitCause()
			}
			h.observe(m.e.Method, m.name, modernVersion, code, outcome == "tool_error", m.started)
			if outcome == "input_required" {
				bridgeMetrics.rounds.WithLabelValues(h.cmdLabel).Inc()
			}
			return
		case b := <-cl.events:
			if rp.event(b) != nil {
				cl.cancel("the client went away")
				if rec != nil {
					rec.outcome = "cancelled"
				}
				return
			}
		case b := <-cl.asks:
			e, err := parseEnvelope(b)
			if err != nil {
				continue
			}
			if need := m.missing(e.Method, e.Params); need != nil {
				// the call cannot complete for this client: it is told
				// what it lacks, the child that its call is cancelled
				cl.child.answerError(e.ID, codeMethodNotFound, "the client did not declare the capability "+e.Method+" needs")
				cl.cancel("the client lacks a capability the call needs")
				rp.finish(http.StatusBadRequest, missingCapability(m.e.ID, e.Method, need))
				if rec != nil {
					rec.outcome, rec.errorCode = "error", codeMissingCapability
				}
				h.observe(m.e.Method, m.name, modernVersion, codeMissingCapability, false, m.started)
				return
			}
			cl.addAsk(ask{id: append(json.RawMessage(nil), e.ID...), method: e.Method, params: append(json.RawMessage(nil), e.Params...)})
			if quietT == nil {
				quietT = time.NewTimer(gatherQuiet)
				defer quietT.Stop()
			} else {
				quietT.Reset(gatherQuiet)
			}
			quiet = quietT.C
			if !asked {
				asked = true
				t := time.NewTimer(gatherMax)
				defer t.Stop()
				hard = t.C
			}
		case <-taskAt:
			taskAt = nil
			// the child's questions make an input_required round first
			// (the extension: MRTR before the task)
			if !asked && toTask() {
				return
			}
		case <-quiet:
			rp.finish(http.StatusOK, h.park(cl, m))
			h.parked(m, rec)
			return
		case <-hard:
			rp.finish(http.StatusOK, h.park(cl, m))
			h.parked(m, rec)
			return
		case <-r.Context().Done():
			cl.cancel("the client went away")
			if rec != nil {
				rec.outcome = "cancelled"
			}
			return
		case <-h.shutdown:
			cl.cancel("the route is reloading or stopping")
			if rec != nil {
				rec.outcome, rec.errorCode = "error", codeInternalError
			}
			h.logger.Info("request ended: the route is reloading or stopping", zap.String("method", m.e.Method))
			rp.finish(http.StatusServiceUnavailable, encodeError(m.e.ID, &rpcError{Code: codeInternalError,
				Message: "the route is reloading or stopping; retry the request"}))
			return
		}
	}
}

// translate renders a child's response for a modern client.
func (h poolServer) translate(b []byte, m *modernReq, cl *call) (int, []byte) {
	e, err := parseEnvelope(b)
	if err != nil {
		h.logger.Warn("the server process answered with an invalid JSON-RPC message; answered 502", zap.Error(err))
		return http.StatusBadGateway, encodeError(m.e.ID, &rpcError{Code: codeInternalError, Message: "invalid response from the server process"})
	}
	if e.Error != nil {
		var re struct {
			Code    int             `json:"code"`
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data,omitempty"`
		}
		_ = json.Unmarshal(e.Error, &re)
		// codes 2026-07-28 retired (basic/index, Error Codes: MUST NOT
		// emit them) are translated
		switch {
		case re.Code == codeURLElicitation25 && mcpreq.Invokes(m.e.Method):
			// the child's URL elicitations become an input_required
			// round; the retry sends the call again
			if status, out, ok := h.urlRound(m, cl, re.Data); ok {
				return status, out
			}
			re.Code = codeInternalError
		case re.Code == codeURLElicitation25:
			re.Code = codeInternalError
		case re.Code == codeResourceNotFound25 && m.e.Method == "resources/read":
			re.Code = codeInvalidParams
			var data map[string]json.RawMessage
			_ = json.Unmarshal(re.Data, &data)
			if data == nil {
				data = map[string]json.RawMessage{}
			}
			if data["uri"] == nil {
				data["uri"], _ = json.Marshal(m.name)
			}
			re.Data, _ = json.Marshal(data)
		case re.Code == codeResourceNotFound25:
			// "not found" of a 2025 server, whatever it named: 2026-07-28
			// says that with -32602
			re.Code = codeInvalidParams
		}
		out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "error": re})
		return statusFor(re.Code), out
	}
	if fastTranslate {
		if out, ok := h.translateFast(e.Result, m); ok {
			return http.StatusOK, out
		}
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(e.Result, &res) != nil || res == nil {
		return http.StatusOK, e.withID(m.e.ID)
	}
	var rt string
	_ = json.Unmarshal(res["resultType"], &rt)
	if rt == "input_required" || (rt == "" && res["inputRequests"] != nil && mcpreq.Invokes(m.e.Method)) {
		// the child's own round (a modern child; or a go-sdk server's
		// later round in 2025 mode): its requestState goes inside ours, so
		// that the retry is verified and reaches this child
		var inner string
		_, has := res["requestState"]
		_ = json.Unmarshal(res["requestState"], &inner)
		res["resultType"] = json.RawMessage(`"input_required"`)
		if c := string(res["content"]); c == "[]" || c == "null" {
			delete(res, "content")
		}
		// an interim result is not cacheable and carries no caching
		// hints (server/utilities/caching)
		delete(res, "ttlMs")
		delete(res, "cacheScope")
		// single-use, like the bridge's own rounds: the route's table
		// holds its id until the retry
		once, expires := randomID(16), time.Now().Add(h.cfg.inputTimeout)
		h.table.issuePass(once, expires.Add(time.Second))
		res["requestState"], _ = json.Marshal(h.sealer.seal(&sealedState{Principal: principalDigest(m.principal),
			Method: m.e.Method, Name: m.name, Args: m.argsDigest(), Expires: expires.Unix() + 1,
			Inner: inner, HasInner: has, Child: cl.child.serial, Once: once}))
		rt = "input_required"
	} else if rt == "" {
		res["resultType"] = json.RawMessage(`"complete"`)
	}
	switch m.e.Method {
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read":
		if rt == "input_required" {
			break
		}
		if res["ttlMs"] == nil {
			res["ttlMs"] = json.RawMessage(strconv.FormatInt(h.cfg.cacheTTL.Milliseconds(), 10))
		}
		if res["cacheScope"] == nil || h.cacheScope(m) == "private" {
			// an answer to a principal, or of a per-user child, is never
			// public, whatever the child says (a 2026-native child does
			// not know the route is authenticated)
			res["cacheScope"], _ = json.Marshal(h.cacheScope(m))
		}
	}
	if m.e.Method == "tools/list" && res["tools"] != nil {
		tasks := h.table.settings.Load().tasksOn()
		if tasks && cl != nil && !cl.child.modern {
			h.table.learnHints(res["tools"], m.params["cursor"] == nil)
		}
		res["tools"] = untasked(res["tools"], tasks)
	}
	if si := h.table.serverInfo(); si != nil {
		var meta map[string]json.RawMessage
		_ = json.Unmarshal(res["_meta"], &meta)
		if meta == nil {
			meta = map[string]json.RawMessage{}
		}
		if meta[metaServer] == nil {
			meta[metaServer] = si
			res["_meta"], _ = json.Marshal(meta)
		}
	}
	if m.e.Method == "tools/list" && m.pool != nil {
		m.pool.learnTools(res["tools"], m.params["cursor"] == nil)
	}
	out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "result": res})
	return http.StatusOK, out
}

// fastTranslate: translate splices where it can (tests compare both ways).
var fastTranslate = true

// translateFast is translate for the common result, by splicing instead of
// decoding and re-encoding it: a complete result (no input_required, no
// resultType or "complete") whose _meta, if any, already names the server.
// It adds resultType, the serverInfo _meta, and on cacheable results ttlMs
// and cacheScope where they are missing; ok is false where the slow path
// must decide (tools/list, whose schemas the pool learns, too).
func (h poolServer) translateFast(result json.RawMessage, m *modernReq) ([]byte, bool) {
	if m.e.Method == "tools/list" {
		return nil, false
	}
	members, ok := jsonscan.Members(result)
	if !ok {
		return nil, false
	}
	mem := func(name string) (jsonscan.Span, bool) { return jsonscan.Get(members, name) }
	if _, asks := mem("inputRequests"); asks {
		return nil, false
	}
	add := make([]byte, 0, 160)
	if rt, has := mem("resultType"); has {
		if string(result[rt.Start:rt.End]) != `"complete"` {
			return nil, false
		}
	} else {
		add = append(add, `"resultType":"complete",`...)
	}
	switch m.e.Method {
	case "prompts/list", "resources/list", "resources/templates/list", "resources/read":
		if _, has := mem("ttlMs"); !has {
			add = append(add, `"ttlMs":`...)
			add = strconv.AppendInt(add, h.cfg.cacheTTL.Milliseconds(), 10)
			add = append(add, ',')
		}
		if cs, has := mem("cacheScope"); has && h.cacheScope(m) == "private" && string(result[cs.Start:cs.End]) != `"private"` {
			return nil, false // an answer to a principal must say private
		} else if !has {
			add = append(add, `"cacheScope":"`...)
			add = append(add, h.cacheScope(m)...)
			add = append(add, `",`...)
		}
	}
	if meta, has := mem("_meta"); has {
		if !bytes.Contains(result[meta.Start:meta.End], []byte(`"`+metaServer+`"`)) && h.table.serverInfo() != nil {
			return nil, false
		}
	} else if si := h.table.serverInfo(); si != nil {
		add = append(add, `"_meta":{"`+metaServer+`":`...)
		add = append(add, si...)
		add = append(add, `},`...)
	}
	rest := bytes.TrimLeft(result, " \t\r\n")[1:] // after '{'
	if r := bytes.TrimLeft(rest, " \t\r\n"); len(r) > 0 && r[0] == '}' {
		add = bytes.TrimSuffix(add, []byte(","))
	}
	out := make([]byte, 0, len(result)+len(add)+64)
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, m.e.ID...)
	out = append(out, `,"result":{`...)
	out = append(out, add...)
	out = append(out, rest...)
	return append(out, '}'), true
}

// learnTools records the x-mcp-header bindings of listed tools.
func (p *childPool) learnTools(raw json.RawMessage, firstPage bool) {
	var tools []struct {
		Name        string          `json:"name"`
		InputSchema json.RawMessage `json:"inputSchema"`
	}
	if json.Unmarshal(raw, &tools) != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if firstPage || p.tools == nil {
		p.tools = map[string][]paramBinding{}
	}
	for _, t := range tools {
		p.tools[t.Name] = headerBindings(t.InputSchema)
	}
	if firstPage {
		p.toolsKnown = true
	}
	names := make([]string, 0, len(tools))
	for _, t := range tools {
		names = append(names, t.Name)
	}
	p.t.tools.learn(names)
}

// toolBindings returns the x-mcp-header bindings of the called tool,
// listing the tools from a child first if the pool does not know them.
func (h poolServer) toolBindings(w http.ResponseWriter, r *http.Request, m *modernReq, p *childPool) ([]paramBinding, bool) {
	p.mu.Lock()
	known := p.toolsKnown
	b := p.tools[m.name]
	p.mu.Unlock()
	if known {
		return b, true
	}
	c := h.child(w, r, m, p, false, 0)
	if c == nil {
		return nil, false
	}
	var cursor json.RawMessage
	first := true
	for page := 0; page < 50; page++ {
		params := map[string]json.RawMessage{}
		if cursor != nil {
			params["cursor"] = cursor
		}
		if c.modern {
			// a modern child takes a message without the envelope for a
			// 2025 client's, and may switch its connection to 2025
			params["_meta"] = bridgeMeta
		}
		cl, err := c.start("tools/list", params, false, "", -1)
		if err != nil {
			h.childUnavailable(w, m.e.ID, err)
			return nil, false
		}
		var resp []byte
		select {
		case resp = <-cl.final:
		case <-r.Context().Done():
			cl.cancel("the client went away")
			return nil, false
		case <-time.After(30 * time.Second):
			cl.cancel("tools/list took too long")
			h.logger.Warn("the server process did not list its tools within 30s; answered -32603")
			modernError(w, m.e.ID, codeInternalError, "the MCP server did not list its tools in time")
			return nil, false
		}
		e, err := parseEnvelope(resp)
		if err != nil || e.Result == nil {
			break // no tools capability: nothing to bind
		}
		var res struct {
			Tools      json.RawMessage `json:"tools"`
			NextCursor json.RawMessage `json:"nextCursor"`
		}
		_ = json.Unmarshal(e.Result, &res)
		p.learnTools(res.Tools, first)
		first = false
		if len(res.NextCursor) == 0 || string(res.NextCursor) == "null" || string(res.NextCursor) == `""` {
			break
		}
		cursor = res.NextCursor
	}
	p.mu.Lock()
	p.toolsKnown = true
	b = p.tools[m.name]
	p.mu.Unlock()
	return b, true
}

// urlRound renders a legacy child's -32042 (URL elicitation required,
// 2025-11-25) as an input_required round with its URL elicitations; the
// round's retry sends the call to the child again, as a 2025 client retries
// once the user has been to the URL. ok is false where data holds no
// elicitation. A client that did not declare URL mode is told so (-32021).
func (h poolServer) urlRound(m *modernReq, cl *call, data json.RawMessage) (int, []byte, bool) {
	var d struct {
		Elicitations []json.RawMessage `json:"elicitations"`
	}
	if json.Unmarshal(data, &d) != nil || len(d.Elicitations) == 0 {
		return 0, nil, false
	}
	if need := m.missing("elicitation/create", json.RawMessage(`{"mode":"url"}`)); need != nil {
		return http.StatusBadRequest, missingCapability(m.e.ID, "elicitation/create", need), true
	}
	inputs := map[string]any{}
	for i, el := range d.Elicitations {
		inputs["elicitation-"+strconv.Itoa(i+1)] = map[string]any{"method": "elicitation/create", "params": el}
	}
	once, expires := randomID(16), time.Now().Add(h.cfg.inputTimeout)
	h.table.issuePass(once, expires.Add(time.Second))
	res := map[string]any{"resultType": "input_required", "inputRequests": inputs,
		"requestState": h.sealer.seal(&sealedState{Principal: principalDigest(m.principal), Method: m.e.Method,
			Name: m.name, Args: m.argsDigest(), Expires: expires.Unix() + 1, Child: cl.child.serial, Once: once, Again: true})}
	if si := h.table.serverInfo(); si != nil {
		res["_meta"] = map[string]any{metaServer: si}
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.e.ID, "result": res})
	return http.StatusOK, b, true
}

// untaskedCaps is a legacy child's capabilities without the 2025-11-25
// tasks capability, which 2026-07-28 does not have (tasks are an
// extension there, and the bridge does not offer it).
func untaskedCaps(caps json.RawMessage) json.RawMessage {
	c, _ := objectMembers(caps)
	if c == nil {
		return json.RawMessage(`{}`)
	}
	if _, ok := c["tasks"]; !ok {
		return caps
	}
	delete(c, "tasks")
	out, _ := json.Marshal(c)
	return out
}

// untasked drops execution.taskSupport (2025-11-25) from listed tools. A
// tool that requires a task (taskSupport "required") is left out of the
// list where the route gives no tasks (a 2026-07-28 client cannot ask for
// one); where it does (tasks), the bridge runs it as a task for a client
// that declared the extension, and it stays listed.
func untasked(raw json.RawMessage, tasks bool) json.RawMessage {
	if !bytes.Contains(raw, []byte(`"taskSupport"`)) {
		return raw
	}
	var tools []map[string]json.RawMessage
	if json.Unmarshal(raw, &tools) != nil {
		return raw
	}
	kept := tools[:0]
	for _, t := range tools {
		ex, _ := objectMembers(t["execution"])
		if ex != nil && ex["taskSupport"] != nil {
			if ts, _ := jsonscan.String(ex["taskSupport"]); ts == "required" && !tasks {
				continue
			}
			delete(ex, "taskSupport")
			if len(ex) == 0 {
				delete(t, "execution")
			} else {
				t["execution"], _ = json.Marshal(ex)
			}
		}
		kept = append(kept, t)
	}
	out, _ := json.Marshal(kept)
	return out
}
