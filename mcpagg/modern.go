package mcpagg

import (
	"context"
	"encoding/json"
	"net/http"
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
	switch {
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
				answer, err := h.callStateless(ctx, r, b, m.Method, map[string]any{}, meta)
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
			return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "no backend answered server/discover"))
		}
		out := map[string]any{}
		for k, v := range base {
			out[k] = v
		}
		out["capabilities"] = mergeCapabilities(results)
		out["serverInfo"] = map[string]any{"name": "caddymcp-aggregate", "version": "1"}
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, out))
	case m.Method == "ping":
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, map[string]any{}))
	case listKinds[m.Method].member != "":
		lists := h.fanList(ctx, m.Method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			return h.callStateless(ctx, r, b, m.Method, params, meta)
		})
		merged := h.merge(m.Method, lists, newCatalog())
		return writeJSON(w, http.StatusOK, rpcResult(m.ID, listResult(m.Method, merged, lists)))
	case m.Kind != "":
		rt, ok := h.resolve(m.Kind, m.Name, func() *catalog { return h.learnStateless(ctx, r, meta) })
		if !ok {
			return writeJSON(w, http.StatusOK, unknownName(m, true))
		}
		req := subRequest(ctx, r, http.MethodPost, rewriteName(m, rt.name), "")
		req.Header.Set("Mcp-Method", m.Method)
		if r.Header.Get("Mcp-Name") != "" {
			req.Header.Set("Mcp-Name", mcpreq.EncodeHeaderValue(rt.name))
		}
		resp, err := roundTrip(rt.backend.serve(), req)
		if err != nil {
			h.logger.Error("a backend failed a call", zap.String("backend", rt.backend.Name), zap.Error(err))
			return writeJSON(w, http.StatusOK, rpcError(m.ID, codeInternal, "backend "+rt.backend.Name+" is unavailable: "+err.Error()))
		}
		return copyResponse(w, resp)
	}
	return writeJSON(w, http.StatusOK, rpcError(m.ID, codeMethodNotFound, "method not found: "+m.Method))
}

// learnStateless lists every kind for the routes of names (prefix never
// or collision).
func (h *Handler) learnStateless(ctx context.Context, r *http.Request, meta json.RawMessage) *catalog {
	c := newCatalog()
	for method := range listKinds {
		lists := h.fanList(ctx, method, func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error) {
			return h.callStateless(ctx, r, b, method, params, meta)
		})
		h.merge(method, lists, c)
	}
	return c
}

// callStateless sends one 2026-07-28 request to b with the client's _meta.
func (h *Handler) callStateless(ctx context.Context, front *http.Request, b *Backend, method string, params map[string]any, meta json.RawMessage) (json.RawMessage, error) {
	if meta != nil {
		params["_meta"] = meta
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": "agg-1", "method": method, "params": params})
	req := subRequest(ctx, front, http.MethodPost, body, "")
	req.Header.Set("Mcp-Method", method)
	resp, err := roundTrip(b.serve(), req)
	if err != nil {
		return nil, err
	}
	return finalAnswer(resp, json.RawMessage(`"agg-1"`), nil)
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
	s := h.session(r.Header.Get("Mcp-Session-Id"))
	if s == nil {
		return writeJSON(w, http.StatusNotFound, rpcError(nil, codeInvalidRequest, "session not found"))
	}
	ctx := r.Context()
	sse := newSSE(w, s.id)
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

// pump follows one backend's GET stream for a client's stream.
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
			if down {
				down = false
				h.logger.Info("a backend is back", zap.String("backend", b.Name))
				changed()
			}
			req := subRequest(ctx, r, http.MethodGet, nil, bs.sid)
			req.Header.Set("MCP-Protocol-Version", bs.version)
			req.Header.Set("Accept", "text/event-stream")
			var resp *http.Response
			resp, err = roundTrip(b.serve(), req)
			if err == nil {
				if resp.StatusCode == http.StatusMethodNotAllowed {
					resp.Body.Close()
					return // a backend without a stream of its own
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
		// the stream ended: the backend's session with it
		s.mu.Lock()
		if s.backends[b.Name] == bs {
			delete(s.backends, b.Name)
		}
		s.mu.Unlock()
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
