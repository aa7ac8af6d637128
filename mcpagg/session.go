package mcpagg

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// session is a 2025 client session: one backend session per backend,
// opened when the client initializes (a backend that fails then is opened
// again when next used), closed with it. Lock order: Handler.mu before
// session.mu; neither is held across a backend's I/O.
type session struct {
	id         string
	version    string          // the protocol version agreed with the client
	initParams json.RawMessage // the client's initialize params, for each backend
	principal  string          // the verified user who opened it ("" none): no one else may use it
	front      *http.Request   // its initialize, detached: what ending its backend sessions is made from

	mu       sync.Mutex
	backends map[string]*backendSession
	inflight map[string]*Backend // the client's request id -> the backend serving it
	cat      *catalog            // the routes of the names last listed
	learned  time.Time           // when the lists were last asked for a name not known
	learning bool                // they are being asked for now
	stream   bool                // a GET stream is open
	last     time.Time
	closed   bool
}

// backendSession is a backend's session for one client session.
type backendSession struct {
	sid     string
	version string
	result  map[string]json.RawMessage // its initialize result
}

func (s *session) idleSince() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.last)
}

func (s *session) touch() {
	s.mu.Lock()
	s.last = time.Now()
	s.mu.Unlock()
}

// session is the live session of id (nil: none).
func (h *Handler) session(id string) *session {
	if id == "" {
		return nil
	}
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	return h.state.sessions[id]
}

// sessionOf is the session of id if r's user is the one who opened it
// (another user's request gets none: 404, as for an unknown id).
func (h *Handler) sessionOf(r *http.Request, id string) *session {
	s := h.session(id)
	if s == nil || s.principal != principalOf(r) {
		return nil
	}
	return s
}

// principalOf is r's verified user (mcp_auth's placeholders), "" none.
func principalOf(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	sub, _ := repl.GetString("http.auth.user.id")
	iss, _ := repl.GetString("http.auth.user.iss")
	return mcpreq.Principal(iss, sub)
}

// close ends every backend session (DELETE), once.
func (s *session) close(h *Handler) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	backends := s.backends
	s.backends = map[string]*backendSession{}
	s.mu.Unlock()
	for name, bs := range backends {
		h.end(s, h.byName[name], bs)
	}
}

// end ends one backend session (DELETE), made from the session's own
// initialize (its Caddy context: a reverse_proxy backend needs its
// replacer), bounded in time.
func (h *Handler) end(s *session, b *Backend, bs *backendSession) {
	if bs.sid == "" {
		return
	}
	ctx, cancel := context.WithTimeout(s.front.Context(), 5*time.Second)
	defer cancel()
	req := subRequest(ctx, s.front, http.MethodDelete, nil, bs.sid)
	req.Header.Set("MCP-Protocol-Version", bs.version)
	if resp, err := roundTrip(b.serve(), req); err == nil {
		resp.Body.Close()
	}
}

// open initializes a backend session for s.
func (h *Handler) open(ctx context.Context, front *http.Request, s *session, b *Backend) (*backendSession, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": "agg-init", "method": "initialize", "params": s.initParams})
	req := subRequest(ctx, front, http.MethodPost, body, "")
	req.Header.Set("MCP-Protocol-Version", s.version)
	resp, err := roundTrip(b.serve(), req)
	if err != nil {
		return nil, err
	}
	sid := resp.Header.Get("Mcp-Session-Id")
	answer, err := finalAnswer(resp, json.RawMessage(`"agg-init"`), nil)
	if err != nil {
		return nil, err
	}
	var msg struct {
		Result map[string]json.RawMessage `json:"result"`
		Error  *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(answer, &msg); err != nil || msg.Result == nil {
		if msg.Error != nil {
			return nil, errors.New("initialize: " + msg.Error.Message)
		}
		return nil, errors.New("initialize: no result")
	}
	bs := &backendSession{sid: sid, version: s.version, result: msg.Result}
	_ = json.Unmarshal(msg.Result["protocolVersion"], &bs.version)
	note := subRequest(ctx, front, http.MethodPost, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), sid)
	note.Header.Set("MCP-Protocol-Version", bs.version)
	if resp, err := roundTrip(b.serve(), note); err == nil {
		resp.Body.Close()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		h.end(s, b, bs) // opened too late: ended at once
		return nil, errors.New("the session ended")
	}
	if other := s.backends[b.Name]; other != nil {
		// another request opened one meanwhile: that one is kept
		s.mu.Unlock()
		h.end(s, b, bs)
		return other, nil
	}
	s.backends[b.Name] = bs
	s.mu.Unlock()
	return bs, nil
}

// send posts body to b in s's backend session (opened if it is not),
// reopening it once if the backend lost it (404).
func (h *Handler) send(ctx context.Context, front *http.Request, s *session, b *Backend, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		bs := s.backends[b.Name]
		s.mu.Unlock()
		if bs == nil {
			var err error
			if bs, err = h.open(ctx, front, s, b); err != nil {
				return nil, err
			}
		}
		req := subRequest(ctx, front, http.MethodPost, body, bs.sid)
		req.Header.Set("MCP-Protocol-Version", bs.version)
		resp, err := roundTrip(b.serve(), req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusNotFound || bs.sid == "" || attempt > 0 {
			return resp, nil
		}
		// the backend's session is gone (its server exited): a new one
		resp.Body.Close()
		s.mu.Lock()
		if s.backends[b.Name] == bs {
			delete(s.backends, b.Name)
		}
		s.mu.Unlock()
		h.logger.Info("a backend session ended; opening another", zap.String("backend", b.Name))
	}
}

// call sends one request to b in s and returns its response, passing the
// other messages on to other.
func (h *Handler) call(ctx context.Context, front *http.Request, s *session, b *Backend, method string, params map[string]any) (json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": "agg-1", "method": method, "params": params})
	resp, err := h.send(ctx, front, s, b, body)
	if err != nil {
		return nil, err
	}
	return finalAnswer(resp, json.RawMessage(`"agg-1"`), nil)
}

// learnInterval bounds how often an unknown name makes the aggregate ask
// every backend for its lists.
const learnInterval = time.Second

// legacyVersions are the 2025-era versions the aggregator agrees to.
var legacyVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26"}

// serveLegacy serves a 2025 message.
func (h *Handler) serveLegacy(w http.ResponseWriter, r *http.Request, m mcpreq.Message) error {
	if m.Method == "initialize" {
		return h.initialize(w, r, m)
	}
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		return writeJSON(w, http.StatusBadRequest, rpcError(m.ID, codeInvalidRequest, "Mcp-Session-Id is required (initialize first)"))
	}
	s := h.sessionOf(r, sid)
	if s == nil {
		return writeJSON(w, http.StatusNotFound, rpcError(m.ID, codeInvalidRequest, "session not found"))
	}
	s.touch()
	w.Header().Set("Mcp-Session-Id", s.id)
	ctx := r.Context()
	isResponse := m.Method == "" && (m.Top.Result.End != 0 || m.Top.Error.End != 0)
	switch {
	case isResponse:
		// the client's answer to a backend's request
		b, id, ok := h.parseServerRequestID(m.ID)
		if !ok {
			w.WriteHeader(http.StatusAccepted)
			return nil
		}
		if resp, err := h.send(ctx, r, s, b, withID(m.Raw, id)); err == nil {
			resp.Body.Close()
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	case m.Method == "notifications/cancelled":
		var p struct {
			Params struct {
				RequestID json.RawMessage `json:"requestId"`
			} `json:"params"`
		}
		_ = json.Unmarshal(m.Raw, &p)
		s.mu.Lock()
		b := s.inflight[string(p.Params.RequestID)]
		delete(s.inflight, string(p.Params.RequestID))
		s.mu.Unlock()
		if b != nil {
			if resp, err := h.send(ctx, r, s, b, m.Raw); err == nil {
				resp.Body.Close()
			}
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	case m.ID == nil:
		// other notifications (initialized, roots changed): every backend
		if m.Method != "notifications/initialized" {
			h.broadcast(ctx, r, s, m.Raw)
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	case m.Method == "ping":
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, map[string]any{}))
	case m.Method == "logging/setLevel":
		h.broadcast(ctx, r, s, m.Raw)
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, map[string]any{}))
	case listKinds[m.Method].member != "":
		lists := h.fanList(ctx, m.Method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			return h.call(ctx, r, s, b, m.Method, params)
		})
		c := newCatalog()
		merged := h.merge(m.Method, lists, c)
		s.mu.Lock()
		s.cat = mergeCatalog(cloneCatalog(s.cat), c)
		s.mu.Unlock()
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, listResult(m.Method, merged, lists)))
	case m.Kind != "":
		rt, ok := h.resolve(m.Kind, m.Name, func() *catalog {
			// the names last listed, else the lists asked for now
			s.mu.Lock()
			c := s.cat
			if c != nil {
				if _, ok := c.find(m.Kind, m.Name); ok {
					s.mu.Unlock()
					return c
				}
			}
			// a name not known: the lists are asked for again, by one
			// request at a time and at most once a second (an unknown
			// name must not make every backend list everything)
			if s.learning || time.Since(s.learned) < learnInterval {
				s.mu.Unlock()
				return c
			}
			s.learning = true
			s.mu.Unlock()
			c = h.learn(ctx, r, s)
			s.mu.Lock()
			s.learning, s.learned = false, time.Now()
			s.mu.Unlock()
			return c
		})
		if !ok {
			return writeJSON(w, http.StatusOK, unknownName(m, false))
		}
		return h.forward(w, r, s, rt.backend, m, rewriteName(m, rt.name))
	}
	return writeJSON(w, http.StatusOK, rpcError(m.ID, codeMethodNotFound, "method not found: "+m.Method))
}

// learn lists every kind in s (for names prefix never or collision did
// not tell), and returns the routes.
func (h *Handler) learn(ctx context.Context, r *http.Request, s *session) *catalog {
	c := newCatalog()
	for method := range listKinds {
		lists := h.fanList(ctx, method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			return h.call(ctx, r, s, b, method, params)
		})
		h.merge(method, lists, c)
	}
	if s != nil {
		s.mu.Lock()
		s.cat = mergeCatalog(cloneCatalog(s.cat), c)
		s.mu.Unlock()
	}
	return c
}

// cloneCatalog is a copy of c that can be changed (c may be read by
// others while it is).
func cloneCatalog(c *catalog) *catalog {
	if c == nil {
		return nil
	}
	out := newCatalog()
	for k, v := range c.tools {
		out.tools[k] = v
	}
	for k, v := range c.prompts {
		out.prompts[k] = v
	}
	for k, v := range c.uris {
		out.uris[k] = v
	}
	out.templates = slices.Clone(c.templates)
	return out
}

// mergeCatalog adds c's routes to old's (c wins).
func mergeCatalog(old, c *catalog) *catalog {
	if old == nil {
		return c
	}
	for k, v := range c.tools {
		old.tools[k] = v
	}
	for k, v := range c.prompts {
		old.prompts[k] = v
	}
	for k, v := range c.uris {
		old.uris[k] = v
	}
	if len(c.templates) > 0 {
		old.templates = c.templates
	}
	return old
}

// unknownName is the error a server gives for a name it does not have.
func unknownName(m mcpreq.Message, modern bool) json.RawMessage {
	switch m.Kind {
	case "tool":
		return rpcError(m.ID, codeInvalidParams, "Unknown tool: "+m.Name)
	case "prompt":
		return rpcError(m.ID, codeInvalidParams, "Unknown prompt: "+m.Name)
	}
	code := codeNotFound25
	if modern {
		code = codeInvalidParams
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": map[string]any{
		"code": code, "message": "Resource not found", "data": map[string]string{"uri": m.Name}}})
	return b
}

// broadcast sends a notification to every open backend session.
func (h *Handler) broadcast(ctx context.Context, r *http.Request, s *session, msg []byte) {
	s.mu.Lock()
	var open []*Backend
	for name := range s.backends {
		open = append(open, h.byName[name])
	}
	s.mu.Unlock()
	for _, b := range open {
		if resp, err := h.send(ctx, r, s, b, msg); err == nil {
			resp.Body.Close()
		}
	}
}

// initialize opens a client session: a backend session per backend (in
// parallel, each within the timeout; one that fails is left out, and
// opened again when used), answered with the backends' capabilities merged.
func (h *Handler) initialize(w http.ResponseWriter, r *http.Request, m mcpreq.Message) error {
	var p struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if json.Unmarshal(m.Raw, &p) != nil {
		return writeJSON(w, http.StatusBadRequest, rpcError(m.ID, codeInvalidParams, "initialize: params must be an object"))
	}
	if p.Params == nil {
		p.Params = map[string]json.RawMessage{}
	}
	var asked string
	_ = json.Unmarshal(p.Params["protocolVersion"], &asked)
	version := legacyVersions[0]
	for _, v := range legacyVersions {
		if v == asked {
			version = v
		}
	}
	p.Params["protocolVersion"], _ = json.Marshal(version)
	front := r.Clone(context.WithoutCancel(r.Context()))
	front.Body, front.ContentLength = http.NoBody, 0
	s := &session{id: instanceid.NewSessionID(h.ring, h.InstanceID), version: version, principal: principalOf(r), front: front, backends: map[string]*backendSession{}, inflight: map[string]*Backend{}, last: time.Now()}
	s.initParams, _ = json.Marshal(p.Params)
	h.state.mu.Lock()
	if len(h.state.sessions) >= h.MaxSessions {
		h.state.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		return writeJSON(w, http.StatusServiceUnavailable, rpcError(m.ID, -32011, "too many sessions"))
	}
	h.state.sessions[s.id] = s
	h.state.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range h.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := h.withTimeout(r.Context())
			defer cancel()
			if _, err := h.open(ctx, r, s, b); err != nil {
				h.failed(b, "initialize", err)
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	results := make([]map[string]json.RawMessage, 0, len(s.backends))
	for _, b := range h.Backends {
		if bs := s.backends[b.Name]; bs != nil {
			results = append(results, bs.result)
		}
	}
	s.mu.Unlock()
	w.Header().Set("Mcp-Session-Id", s.id)
	return writeJSON(w, http.StatusOK, rpcResult(m.ID, map[string]any{
		"protocolVersion": version,
		"capabilities":    mergeCapabilities(results),
		"serverInfo":      map[string]any{"name": "caddymcp-aggregate", "version": "1"},
	}))
}

// mergeCapabilities is the union of the backends' capabilities: a feature
// any backend has, with listChanged (the aggregate tells of a backend
// that comes and goes) and subscribe where one has it.
func mergeCapabilities(results []map[string]json.RawMessage) map[string]any {
	caps := map[string]any{"tools": map[string]any{"listChanged": true}}
	for _, res := range results {
		var c map[string]map[string]any
		_ = json.Unmarshal(res["capabilities"], &c)
		for k, v := range c {
			switch k {
			case "tools", "prompts":
				caps[k] = map[string]any{"listChanged": true}
			case "resources":
				rc := map[string]any{"listChanged": true}
				if prev, ok := caps[k].(map[string]any); ok && prev["subscribe"] == true {
					rc["subscribe"] = true
				}
				if v["subscribe"] == true {
					rc["subscribe"] = true
				}
				caps[k] = rc
			case "logging", "completions":
				caps[k] = map[string]any{}
			case "extensions":
				// the tasks extension: the aggregate routes tasks/* by
				// id; other extensions are not carried across backends
				if v[tasksExtension] != nil {
					caps[k] = map[string]any{tasksExtension: map[string]any{}}
				}
			}
		}
	}
	return caps
}

// forward sends a tools/call, prompts/get, resources/* or completion to
// its backend in s, and streams the backend's answer to the client as SSE:
// its progress and log notifications, its requests (elicitation,
// sampling, roots) with ids that find it again, then the response.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, s *session, b *Backend, m mcpreq.Message, body []byte) error {
	key := string(m.ID)
	s.mu.Lock()
	if len(s.inflight) >= 1024 {
		for k := range s.inflight {
			delete(s.inflight, k)
			break
		}
	}
	s.inflight[key] = b
	s.mu.Unlock()
	defer func() {
		// a client that went away may cancel the call next: the backend
		// is kept for its notifications/cancelled (at most 1024 of them)
		if r.Context().Err() != nil {
			return
		}
		s.mu.Lock()
		delete(s.inflight, key)
		s.mu.Unlock()
	}()
	resp, err := h.send(r.Context(), r, s, b, body)
	if err != nil {
		h.logger.Error("a backend failed a call", zap.String("backend", b.Name), zap.String("method", m.Method), zap.Error(err))
		return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "backend "+b.Name+" is unavailable: "+err.Error()))
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		h.logger.Error("a backend refused a call", zap.String("backend", b.Name), zap.String("method", m.Method), zap.Int("status", resp.StatusCode))
		return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "backend "+b.Name+" answered "+resp.Status))
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		// one answer and nothing else (no request of the backend's to
		// rewrite): passed on as it came
		return copyResponse(w, resp)
	}
	// an answer that is the response alone goes out as JSON (one write);
	// one with messages before it (progress, logs, the backend's
	// questions) as an SSE stream, begun at the first of them
	var sse *sseWriter
	final, err := finalAnswer(resp, m.ID, func(msg json.RawMessage) {
		if sse == nil {
			sse = newSSE(w, s.id, false)
		}
		_ = sse.send(h.fromBackend(b, msg))
	})
	switch {
	case err == nil && sse == nil:
		return writeJSON(w, http.StatusOK, final)
	case err == nil:
		_ = sse.send(final)
	default:
		h.logger.Warn("a backend's answer broke off", zap.String("backend", b.Name), zap.Error(err))
		e := rpcError(m.ID, codeInternal, "backend "+b.Name+" broke off its answer")
		if sse == nil {
			return writeJSON(w, http.StatusOK, e)
		}
		_ = sse.send(e)
	}
	return nil
}

// fromBackend is a backend's message as the client gets it: a request's
// id wrapped so that the answer finds the backend.
func (h *Handler) fromBackend(b *Backend, msg json.RawMessage) json.RawMessage {
	if v, found, ok := jsonscan.Find(msg, "method"); ok && (!found || v.End == 0) {
		return msg // a response: nothing to wrap
	}
	var probe struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(msg, &probe) != nil || probe.ID == nil || probe.Method == "" {
		return msg
	}
	return withID(msg, serverRequestID(b, probe.ID))
}
