package mcpagg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// serveModern serves a 2026-07-28 request: stateless, each backend asked
// as the client asked (its _meta, its headers), lists and server/discover
// merged, calls routed by name. An input_required round's retry names the
// same tool (or prompt, or resource) and so reaches the same backend; its
// requestState passes through as the backend issued it.
func (h *Handler) serveModern(w http.ResponseWriter, r *http.Request, m mcpreq.Message) error {
	meta := metaOf(m.Raw)
	ctx := r.Context()
	if m.ID == nil {
		// 2026-07-28 defines no client notifications over HTTP (closing a
		// stream cancels): accepted and dropped
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	if slices.Contains(removedMethods, m.Method) {
		return writeJSON(w, http.StatusNotFound, rpcError(m.ID, codeMethodNotFound, "method not found: "+m.Method+" is not part of MCP 2026-07-28"))
	}
	// what every backend refuses about the request itself (its _meta, its
	// headers, its version) is the answer, as the backend gave it
	var refusedMu sync.Mutex
	var refused *backendAnswer
	call := func(ctx context.Context, b *Backend, method string, params map[string]any) (json.RawMessage, error) {
		a, err := h.callStateless(ctx, r, b, method, params, meta, true)
		if err != nil {
			return nil, err
		}
		if a.status >= 400 {
			refusedMu.Lock()
			if refused == nil {
				refused = a
			}
			refusedMu.Unlock()
			return nil, aggError(fmt.Sprintf("answered %d", a.status))
		}
		return a.body, nil
	}
	passRefusal := func() (bool, error) {
		if refused == nil {
			return false, nil
		}
		return true, writeJSON(w, refused.status, withID(refused.body, m.ID)) // the client's id, not ours
	}
	switch {
	case m.Method == "tasks/get" || m.Method == "tasks/update" || m.Method == "tasks/cancel":
		return h.serveTask(w, r, m)
	case m.Method == "subscriptions/listen":
		return h.listen(w, r, m)
	case m.Method == "server/discover":
		var mu sync.Mutex
		var results []map[string]json.RawMessage
		var base map[string]json.RawMessage
		var wg sync.WaitGroup
		for _, b := range h.Backends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := h.withTimeout(ctx)
				defer cancel()
				answer, err := call(ctx, b, m.Method, map[string]any{})
				var msg struct {
					Result map[string]json.RawMessage `json:"result"`
				}
				if err == nil && json.Unmarshal(answer, &msg) == nil && msg.Result != nil {
					mu.Lock()
					results = append(results, msg.Result)
					if base == nil {
						base = msg.Result
					}
					mu.Unlock()
					return
				}
				if err == nil {
					err = errNoResult
				}
				h.failed(b, m.Method, err)
			}()
		}
		wg.Wait()
		if base == nil {
			if ok, err := passRefusal(); ok {
				return err
			}
			return writeJSON(w, http.StatusBadGateway, rpcError(m.ID, codeInternal, "no backend answered server/discover"))
		}
		out := map[string]any{}
		for k, v := range base {
			out[k] = v
		}
		out["capabilities"] = mergeCapabilities(results)
		out["serverInfo"] = map[string]any{"name": "caddymcp-aggregate", "version": "1"}
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, out))
	case listKinds[m.Method].member != "":
		lists := h.fanList(ctx, m.Method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			return call(ctx, b, m.Method, params)
		})
		if !slices.ContainsFunc(lists, func(l backendList) bool { return l.err == nil }) {
			if ok, err := passRefusal(); ok {
				return err
			}
		}
		c := newCatalog()
		merged := h.merge(m.Method, lists, c)
		h.state.learned(c)
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, listResult(m.Method, merged, lists)))
	case m.Kind != "":
		rt, ok := h.resolve(m.Kind, m.Name, func() *catalog {
			c := h.state.catalog()
			if c != nil {
				if _, ok := c.find(m.Kind, m.Name); ok {
					return c
				}
			}
			// one request at a time, at most once a second (an unknown
			// name must not make every backend list everything)
			if !h.state.startLearning() {
				return c
			}
			defer h.state.doneLearning()
			return h.learnStateless(ctx, r, meta)
		})
		if !ok {
			return writeJSON(w, http.StatusOK, unknownName(m, true))
		}
		req := subRequest(ctx, r, http.MethodPost, rewriteName(m, rt.name), "")
		if v := r.Header.Get("Mcp-Method"); v != "" {
			req.Header.Set("Mcp-Method", v)
		}
		if r.Header.Get("Mcp-Name") != "" && m.Kind != "resource" {
			req.Header.Set("Mcp-Name", mcpreq.EncodeHeaderValue(rt.name))
		} else if v := r.Header.Get("Mcp-Name"); v != "" {
			req.Header.Set("Mcp-Name", v)
		}
		resp, err := roundTrip(rt.backend.serve(), req)
		if err != nil {
			h.logger.Error("a backend failed a call", zap.String("backend", rt.backend.Name), zap.Error(err))
			return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "backend "+rt.backend.Name+" is unavailable: "+err.Error()))
		}
		if m.Method == "tools/call" && bytes.Contains(meta, []byte(`"`+tasksExtension+`"`)) {
			// a task handle names its backend in its id
			return copyTaskResponse(w, resp, rt.backend.Name)
		}
		return copyResponse(w, resp)
	}
	return writeJSON(w, http.StatusNotFound, rpcError(m.ID, codeMethodNotFound, "method not found: "+m.Method))
}

// removedMethods are 2025 methods that 2026-07-28 dropped: 404 -32601.
var removedMethods = []string{"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}

// backendAnswer is a backend's answer to one request: its HTTP status and
// the response.
type backendAnswer struct {
	status int
	body   json.RawMessage
}

// learnStateless lists every kind for the routes of names (prefix never
// or collision).
func (h *Handler) learnStateless(ctx context.Context, r *http.Request, meta json.RawMessage) *catalog {
	c := newCatalog()
	for method := range listKinds {
		lists := h.fanList(ctx, method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			a, err := h.callStateless(ctx, r, b, method, params, meta, false)
			if err != nil {
				return nil, err
			}
			return a.body, nil
		})
		h.merge(method, lists, c)
	}
	h.state.learned(c)
	return c
}

// callStateless sends one 2026-07-28 request to b with the client's _meta
// and Mcp-Method header (as the client sent them: a backend judges them).
func (h *Handler) callStateless(ctx context.Context, front *http.Request, b *Backend, method string, params map[string]any, meta json.RawMessage, asSent bool) (*backendAnswer, error) {
	if meta != nil {
		params["_meta"] = meta
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": "agg-1", "method": method, "params": params})
	req := subRequest(ctx, front, http.MethodPost, body, "")
	switch {
	case !asSent:
		req.Header.Set("Mcp-Method", method) // a request of the aggregate's own
	case front.Header.Get("Mcp-Method") != "":
		req.Header.Set("Mcp-Method", front.Header.Get("Mcp-Method"))
	}
	resp, err := roundTrip(b.serve(), req)
	if err != nil {
		return nil, err
	}
	status := resp.StatusCode
	answer, err := finalAnswer(resp, json.RawMessage(`"agg-1"`), nil)
	if err != nil {
		return nil, err
	}
	return &backendAnswer{status: status, body: answer}, nil
}

// metaOf is params._meta of a message (nil: none).
func metaOf(raw []byte) json.RawMessage {
	var p struct {
		Params struct {
			Meta json.RawMessage `json:"_meta"`
		} `json:"params"`
	}
	_ = json.Unmarshal(raw, &p)
	return p.Params.Meta
}

type aggError string

func (e aggError) Error() string { return string(e) }

const errNoResult = aggError("no result")

// serveStream is a 2025 session's GET stream: every backend session's own
// stream, merged (its requests' ids wrapped). When a backend's stream
// ends (its server exited, a remote one went away), the client is told
// that the lists changed, and the backend is opened again, with a backoff,
// and the lists change again when it is back.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request) error {
	s := h.sessionOf(r, r.Header.Get("Mcp-Session-Id"))
	if s == nil {
		return writeJSON(w, http.StatusNotFound, rpcError(nil, codeInvalidRequest, "session not found"))
	}
	// one stream per session (a second would follow every backend twice)
	s.mu.Lock()
	busy := s.stream
	s.stream = true
	s.mu.Unlock()
	if busy {
		return writeJSON(w, http.StatusConflict, rpcError(nil, codeInvalidRequest, "this session has a stream open already"))
	}
	defer func() {
		s.mu.Lock()
		s.stream = false
		s.mu.Unlock()
	}()
	ctx := r.Context()
	sse := newSSE(w, s.id, true)
	events := make(chan json.RawMessage, 64)
	emit := func(msg json.RawMessage) {
		select {
		case events <- msg:
		case <-ctx.Done():
		}
	}
	changed := func() {
		for _, n := range []string{"notifications/tools/list_changed", "notifications/prompts/list_changed", "notifications/resources/list_changed"} {
			emit(json.RawMessage(`{"jsonrpc":"2.0","method":"` + n + `"}`))
		}
	}
	for _, b := range h.Backends {
		go h.pump(ctx, r, s, b, emit, changed)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-events:
			if err := sse.send(msg); err != nil {
				return nil
			}
		}
	}
}

// pump follows one backend's GET stream for a client's stream. A stream
// that ends (or cannot be opened) is reported once as a change of the
// lists, and opened again with a backoff; the backend session is opened
// again only when the backend has lost it (404).
func (h *Handler) pump(ctx context.Context, r *http.Request, s *session, b *Backend, emit func(json.RawMessage), changed func()) {
	backoff := 250 * time.Millisecond
	down := false
	for ctx.Err() == nil {
		s.mu.Lock()
		bs := s.backends[b.Name]
		s.mu.Unlock()
		var err error
		if bs == nil {
			octx, cancel := h.withTimeout(ctx)
			bs, err = h.open(octx, r, s, b)
			cancel()
		}
		if err == nil {
			req := subRequest(ctx, r, http.MethodGet, nil, bs.sid)
			req.Header.Set("MCP-Protocol-Version", bs.version)
			req.Header.Set("Accept", "text/event-stream")
			var resp *http.Response
			resp, err = roundTrip(b.serve(), req)
			switch {
			case err != nil:
			case resp.StatusCode == http.StatusMethodNotAllowed:
				resp.Body.Close()
				return // a backend without a stream of its own
			case resp.StatusCode == http.StatusNotFound:
				// the backend lost the session (its server exited)
				resp.Body.Close()
				s.mu.Lock()
				if s.backends[b.Name] == bs {
					delete(s.backends, b.Name)
				}
				s.mu.Unlock()
				err = aggError("the backend lost its session")
			case resp.StatusCode != http.StatusOK:
				resp.Body.Close()
				err = aggError("its stream answered " + resp.Status)
			default:
				if down {
					down = false
					h.logger.Info("a backend is back", zap.String("backend", b.Name))
					changed()
				}
				backoff = 250 * time.Millisecond
				err = readMessages(resp, func(msg json.RawMessage) bool {
					emit(h.fromBackend(b, msg))
					return ctx.Err() == nil
				})
				resp.Body.Close()
			}
		}
		if ctx.Err() != nil {
			return
		}
		if !down {
			down = true
			h.failed(b, "stream", errStreamEnded(err))
			changed()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func errStreamEnded(err error) error {
	if err == nil {
		return aggError("its stream ended")
	}
	return err
}

// listen serves a 2026-07-28 subscriptions/listen: the request (the
// client's own, so that each backend tags its notifications with the
// client's subscription id) is sent to every backend, their
// acknowledgements are merged into one (what any backend honours), and
// every notification of theirs is passed on. A backend whose stream ends
// (its server went away) is reported as a change of the lists it
// honoured. Resource subscriptions go to the backend that serves the URI.
func (h *Handler) listen(w http.ResponseWriter, r *http.Request, m mcpreq.Message) error {
	ctx := r.Context()
	var p struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	_ = json.Unmarshal(m.Raw, &p)
	var n map[string]json.RawMessage
	_ = json.Unmarshal(p.Params["notifications"], &n)
	var uris []string
	_ = json.Unmarshal(n["resourceSubscriptions"], &uris)
	byBackend := map[*Backend][]string{}
	if len(uris) > 0 {
		meta := metaOf(m.Raw)
		c := h.learnStateless(ctx, r, meta)
		for _, u := range uris {
			if rt, ok := c.find("resource", u); ok {
				byBackend[rt.backend] = append(byBackend[rt.backend], u)
			}
		}
	}
	type stream struct {
		b    *Backend
		resp *http.Response
		ack  map[string]json.RawMessage
	}
	msgs := make(chan json.RawMessage, 64)
	ended := make(chan *Backend, len(h.Backends))
	acks := make(chan *stream, len(h.Backends))
	var refused *backendAnswer
	var mu sync.Mutex
	for _, b := range h.Backends {
		go func() {
			params := map[string]json.RawMessage{}
			for k, v := range p.Params {
				params[k] = v
			}
			nb := map[string]json.RawMessage{}
			for k, v := range n {
				nb[k] = v
			}
			if len(uris) > 0 {
				nb["resourceSubscriptions"], _ = json.Marshal(nonNilStrings(byBackend[b]))
			}
			params["notifications"], _ = json.Marshal(nb)
			body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.ID, "method": m.Method, "params": params})
			req := subRequest(ctx, r, http.MethodPost, body, "")
			if v := r.Header.Get("Mcp-Method"); v != "" {
				req.Header.Set("Mcp-Method", v)
			}
			resp, err := roundTrip(b.serve(), req)
			st := &stream{b: b, resp: resp}
			if err != nil || resp.StatusCode >= 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				if err == nil {
					a, _ := io.ReadAll(io.LimitReader(resp.Body, maxMessage))
					resp.Body.Close()
					mu.Lock()
					if refused == nil && resp.StatusCode >= 400 {
						refused = &backendAnswer{status: resp.StatusCode, body: a}
					}
					mu.Unlock()
					err = aggError("answered " + resp.Status)
				}
				h.failed(b, m.Method, err)
				acks <- nil
				return
			}
			first := true
			_ = readMessages(resp, func(msg json.RawMessage) bool {
				if first {
					first = false
					var ack struct {
						Method string `json:"method"`
						Params struct {
							Notifications map[string]json.RawMessage `json:"notifications"`
						} `json:"params"`
					}
					if json.Unmarshal(msg, &ack) == nil && ack.Method == "notifications/subscriptions/acknowledged" {
						st.ack = ack.Params.Notifications
						acks <- st
						return true
					}
					acks <- st
				}
				select {
				case msgs <- msg:
					return true
				case <-ctx.Done():
					return false
				}
			})
			resp.Body.Close()
			if first {
				acks <- st
			}
			ended <- b
		}()
	}
	merged := map[string]any{}
	var ackedURIs []string
	honoured := map[*Backend]map[string]json.RawMessage{}
	got := 0
	ackWait := time.NewTimer(time.Duration(h.Timeout))
	defer ackWait.Stop()
acking:
	for range h.Backends {
		var st *stream
		select {
		case st = <-acks:
		case <-ackWait.C:
			break acking // a backend that does not acknowledge in time is left out
		case <-ctx.Done():
			return nil
		}
		if st == nil {
			continue
		}
		got++
		honoured[st.b] = st.ack
		for k, v := range st.ack {
			if k == "resourceSubscriptions" {
				var u []string
				_ = json.Unmarshal(v, &u)
				ackedURIs = append(ackedURIs, u...)
				continue
			}
			if string(v) == "true" {
				merged[k] = true
			}
		}
	}
	if got == 0 {
		mu.Lock()
		ref := refused
		mu.Unlock()
		if ref != nil {
			return writeJSON(w, ref.status, withID(ref.body, m.ID))
		}
		return writeJSON(w, http.StatusBadGateway, rpcError(m.ID, codeInternal, "no backend took the subscription"))
	}
	if len(ackedURIs) > 0 {
		merged["resourceSubscriptions"] = ackedURIs
	}
	sse := newSSE(w, "", true)
	ack, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
		"params": map[string]any{"_meta": map[string]any{"io.modelcontextprotocol/subscriptionId": m.ID}, "notifications": merged}})
	if sse.send(ack) != nil {
		return nil
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	live := got
	for live > 0 {
		select {
		case <-ctx.Done():
			return nil
		case msg := <-msgs:
			if sse.send(msg) != nil {
				return nil
			}
		case b := <-ended:
			live--
			// its lists are gone (or will change when it is back)
			for flag, method := range map[string]string{"toolsListChanged": "notifications/tools/list_changed",
				"promptsListChanged": "notifications/prompts/list_changed", "resourcesListChanged": "notifications/resources/list_changed"} {
				if string(honoured[b][flag]) == "true" {
					note, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method,
						"params": map[string]any{"_meta": map[string]any{"io.modelcontextprotocol/subscriptionId": m.ID}}})
					if sse.send(note) != nil {
						return nil
					}
				}
			}
		case <-keepalive.C:
			sse.mu.Lock()
			_, err := io.WriteString(sse.w, ": keepalive\n\n")
			if err == nil {
				err = sse.rc.Flush()
			}
			sse.mu.Unlock()
			if err != nil {
				return nil
			}
		}
	}
	return nil
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tasksExtension is the MCP tasks extension's identifier.
const tasksExtension = "io.modelcontextprotocol/tasks"

// A task id of the aggregate is the backend's name, '/', and the backend's
// own task id: tasks/* find their backend by it (a backend name has no
// '/'), and the `mcp` balancer policy reads the instance from the part
// after the last '/'.
func wrapTaskID(backend, id string) string { return backend + "/" + id }

func unwrapTaskID(id string) (backend, inner string, ok bool) {
	return strings.Cut(id, "/")
}

// rewriteTaskID renames result.taskId in a JSON-RPC response (nil: none).
func rewriteTaskID(msg []byte, rename func(string) (string, bool)) []byte {
	if !bytes.Contains(msg, []byte(`"taskId"`)) {
		return nil
	}
	var env map[string]json.RawMessage
	if json.Unmarshal(msg, &env) != nil {
		return nil
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(env["result"], &res) != nil || res == nil {
		return nil
	}
	var id string
	if json.Unmarshal(res["taskId"], &id) != nil || id == "" {
		return nil
	}
	nid, ok := rename(id)
	if !ok {
		return nil
	}
	res["taskId"], _ = json.Marshal(nid)
	env["result"], _ = json.Marshal(res)
	out, _ := json.Marshal(env)
	return out
}

// copyTaskResponse is copyResponse for a tools/call that may be answered
// with a task: the handle's taskId (JSON, or the SSE event that carries
// it) names the backend.
func copyTaskResponse(w http.ResponseWriter, resp *http.Response, backend string) error {
	rename := func(id string) (string, bool) { return wrapTaskID(backend, id), true }
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return err
		}
		if out := rewriteTaskID(body, rename); out != nil {
			body = out
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, err = w.Write(body)
		return err
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok && bytes.Contains(d, []byte(`"taskId"`)) {
			if out := rewriteTaskID(bytes.TrimRight(d, "\r\n"), rename); out != nil {
				line = append(append([]byte("data: "), out...), '\n')
			}
		}
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			if len(bytes.TrimSpace(line)) == 0 {
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			_ = rc.Flush()
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// serveTask sends tasks/get, tasks/update or tasks/cancel to the backend
// its task id names, with the backend's own id (body and Mcp-Name), and
// names the backend again in the answer. An id that names no backend is
// not found (-32602), as the backends say of ids they do not know.
func (h *Handler) serveTask(w http.ResponseWriter, r *http.Request, m mcpreq.Message) error {
	var env map[string]json.RawMessage
	_ = json.Unmarshal(m.Raw, &env)
	var params map[string]json.RawMessage
	_ = json.Unmarshal(env["params"], &params)
	var id string
	_ = json.Unmarshal(params["taskId"], &id)
	name, inner, ok := unwrapTaskID(id)
	var b *Backend
	for _, x := range h.Backends {
		if ok && x.Name == name {
			b = x
		}
	}
	if hv, _ := mcpreq.DecodeHeaderValue(r.Header.Get("Mcp-Name")); hv != id {
		// checked here: the backend sees the unwrapped id in both
		return writeJSON(w, http.StatusBadRequest, rpcError(m.ID, -32020, "header mismatch: Mcp-Name must equal params.taskId"))
	}
	if b == nil {
		if !bytes.Contains(metaOf(m.Raw), []byte(`"`+tasksExtension+`"`)) {
			return writeJSON(w, http.StatusBadRequest, json.RawMessage(`{"jsonrpc":"2.0","id":`+string(m.ID)+
				`,"error":{"code":-32021,"message":"missing required client capability: `+m.Method+` needs the `+tasksExtension+
				` extension","data":{"requiredCapabilities":{"extensions":{"`+tasksExtension+`":{}}}}}}`))
		}
		return writeJSON(w, http.StatusBadRequest, rpcError(m.ID, codeInvalidParams, "Failed to retrieve task: Task not found"))
	}
	params["taskId"], _ = json.Marshal(inner)
	env["params"], _ = json.Marshal(params)
	body, _ := json.Marshal(env)
	req := subRequest(r.Context(), r, http.MethodPost, body, "")
	req.Header.Set("Mcp-Method", m.Method)
	req.Header.Set("Mcp-Name", mcpreq.EncodeHeaderValue(inner))
	resp, err := roundTrip(b.serve(), req)
	if err != nil {
		h.logger.Error("a backend failed a tasks request", zap.String("backend", b.Name), zap.Error(err))
		return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "backend "+b.Name+" is unavailable: "+err.Error()))
	}
	return copyTaskResponse(w, resp, b.Name)
}
