package mcpagg

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/originguard"
	"github.com/caddymcp/caddymcp/internal/rpccode"
)

// JSON-RPC codes.
const (
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeInternal       = -32603
	codeNotFound25     = -32002
)

// ServeHTTP serves the aggregated endpoint.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if reason := originguard.Check(r, h.AllowedHosts, h.AllowedOrigins); reason != "" {
		if c := h.logger.Check(zap.DebugLevel, "request refused (DNS-rebinding protection)"); c != nil {
			c.Write(zap.String("reason", reason))
		}
		return writeJSON(w, http.StatusForbidden, rpcError(nil, rpccode.Forbidden, reason))
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodGet:
		return h.serveStream(w, r)
	case http.MethodDelete:
		s := h.sessionOf(r, r.Header.Get("Mcp-Session-Id"))
		if s == nil {
			return writeJSON(w, http.StatusNotFound, rpcError(nil, codeInvalidRequest, "no such session"))
		}
		h.state.mu.Lock()
		delete(h.state.sessions, s.id)
		h.state.mu.Unlock()
		s.close(h)
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		return writeJSON(w, http.StatusMethodNotAllowed, rpcError(nil, codeInvalidRequest, "method not allowed"))
	}
	q := mcpreq.Get(r, 0)
	if q.Err != nil {
		code := codeInvalidRequest
		if errors.Is(q.Err, mcpreq.ErrMismatch) {
			code = -32020
		}
		return writeJSON(w, http.StatusBadRequest, rpcError(q.ID, code, q.Err.Error()))
	}
	if q.Batch {
		return writeJSON(w, http.StatusBadRequest, rpcError(nil, codeInvalidRequest, "mcp_aggregate does not take batches"))
	}
	m := q.First()
	if q.Era == "2026" {
		return h.serveModern(w, r, m)
	}
	return h.serveLegacy(w, r, m)
}

// route is where a client's name goes: a backend and the name there.
type route struct {
	backend *Backend
	name    string
}

// resolve finds the backend of a client's tool or prompt name (kind
// "tool" or "prompt") or resource URI ("resource"); learn lists the
// backends when the name is not known yet.
func (h *Handler) resolve(kind, name string, learn func() *catalog) (route, bool) {
	if kind != "resource" && h.Prefix == "always" {
		for _, b := range h.Backends {
			if rest, ok := strings.CutPrefix(name, b.Name+h.Separator); ok && rest != "" {
				return route{b, rest}, true
			}
		}
		return route{}, false
	}
	c := learn()
	if c == nil {
		return route{}, false
	}
	return c.find(kind, name)
}

// catalog is the merged lists of one moment: every front name's route.
type catalog struct {
	tools, prompts map[string]route
	uris           map[string]route
	templates      []templateRoute
}

type templateRoute struct {
	prefix string // the URI template up to its first expression
	route  route
}

func (c *catalog) find(kind, name string) (route, bool) {
	switch kind {
	case "tool":
		r, ok := c.tools[name]
		return r, ok
	case "prompt":
		r, ok := c.prompts[name]
		return r, ok
	}
	if r, ok := c.uris[name]; ok {
		return r, true
	}
	best := -1
	for i, t := range c.templates {
		if strings.HasPrefix(name, t.prefix) && (best < 0 || len(t.prefix) > len(c.templates[best].prefix)) {
			best = i
		}
	}
	if best >= 0 {
		return c.templates[best].route, true
	}
	return route{}, false
}

// listKinds: each list method's result member and what names its entries.
var listKinds = map[string]struct{ member, key, kind string }{
	"tools/list":               {"tools", "name", "tool"},
	"prompts/list":             {"prompts", "name", "prompt"},
	"resources/list":           {"resources", "uri", "resource"},
	"resources/templates/list": {"resourceTemplates", "uriTemplate", "template"},
}

// backendList is one backend's whole list (every page) of a method.
type backendList struct {
	backend *Backend
	entries []map[string]json.RawMessage
	extra   map[string]json.RawMessage // the first page's other result members
	err     error
}

// fanList asks every backend for the whole list of method (following its
// cursors), in parallel, each within the timeout; call sends one request
// to a backend and returns its answer.
func (h *Handler) fanList(ctx context.Context, method string, call func(ctx context.Context, b *Backend, params map[string]any) (json.RawMessage, error)) []backendList {
	kind := listKinds[method]
	out := make([]backendList, len(h.Backends))
	var wg sync.WaitGroup
	for i, b := range h.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := h.withTimeout(ctx)
			defer cancel()
			bl := backendList{backend: b}
			cursor := ""
			for page := 0; page < 100; page++ {
				params := map[string]any{}
				if cursor != "" {
					params["cursor"] = cursor
				}
				answer, err := call(ctx, b, params)
				if err != nil {
					bl.err = err
					break
				}
				var msg struct {
					Result map[string]json.RawMessage `json:"result"`
					Error  *struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal(answer, &msg); err != nil {
					bl.err = err
					break
				}
				if msg.Error != nil {
					if msg.Error.Code != codeMethodNotFound { // a server without that feature lists nothing
						bl.err = fmt.Errorf("%s: %d %s", method, msg.Error.Code, msg.Error.Message)
					}
					break
				}
				var entries []map[string]json.RawMessage
				_ = json.Unmarshal(msg.Result[kind.member], &entries)
				bl.entries = append(bl.entries, entries...)
				if bl.extra == nil {
					bl.extra = msg.Result
				}
				cursor = ""
				_ = json.Unmarshal(msg.Result["nextCursor"], &cursor)
				if cursor == "" {
					break
				}
			}
			if bl.err != nil {
				h.failed(b, method, bl.err)
				bl.entries = nil
			}
			out[i] = bl
		}()
	}
	wg.Wait()
	return out
}

// merge makes the client's list from the backends', and the routes of
// its names.
func (h *Handler) merge(method string, lists []backendList, c *catalog) []map[string]json.RawMessage {
	kind := listKinds[method]
	count := map[string]int{} // the backends that list a name
	for _, l := range lists {
		seen := map[string]bool{}
		for _, e := range l.entries {
			var n string
			if json.Unmarshal(e[kind.key], &n) != nil || n == "" || seen[n] {
				continue
			}
			seen[n] = true
			count[n]++
		}
	}
	type named struct {
		e     map[string]json.RawMessage
		front string
		rt    route
	}
	var all []named
	fronts := map[string]int{} // the entries that would show a front name
	for _, l := range lists {
		for _, e := range l.entries {
			var n string
			if json.Unmarshal(e[kind.key], &n) != nil || n == "" {
				continue
			}
			front := n
			if kind.kind == "tool" || kind.kind == "prompt" {
				if h.Prefix == "always" || (h.Prefix == "collision" && count[n] > 1) {
					front = l.backend.Name + h.Separator + n
				}
			}
			all = append(all, named{e, front, route{l.backend, n}})
			fronts[front]++
		}
	}
	var out []map[string]json.RawMessage
	for _, x := range all {
		if fronts[x.front] > 1 {
			// two entries would show one name (a name two backends share
			// with prefix never, or a backend listing another's prefixed
			// name): neither is shown, so neither can take the other's calls
			h.logger.Warn("a name two entries would show is left out of the list", zap.String("kind", kind.kind), zap.String("name", x.front))
			continue
		}
		switch kind.kind {
		case "tool":
			x.e[kind.key], _ = json.Marshal(x.front)
			c.tools[x.front] = x.rt
		case "prompt":
			x.e[kind.key], _ = json.Marshal(x.front)
			c.prompts[x.front] = x.rt
		case "resource":
			c.uris[x.front] = x.rt
		case "template":
			prefix, _, _ := strings.Cut(x.front, "{")
			c.templates = append(c.templates, templateRoute{prefix, x.rt})
		}
		out = append(out, x.e)
	}
	return out
}

func newCatalog() *catalog {
	return &catalog{tools: map[string]route{}, prompts: map[string]route{}, uris: map[string]route{}}
}

// listResult is the merged list as a result: the list, and the members
// every backend's first page agreed on (a 2026-07-28 result's resultType,
// ttlMs as the smallest), no cursor.
func listResult(method string, merged []map[string]json.RawMessage, lists []backendList) map[string]any {
	res := map[string]any{listKinds[method].member: nonNil(merged)}
	var ttl *float64
	for _, l := range lists {
		if l.extra == nil {
			continue
		}
		if v, ok := l.extra["resultType"]; ok {
			res["resultType"] = v
		}
		var t float64
		if json.Unmarshal(l.extra["ttlMs"], &t) == nil && (ttl == nil || t < *ttl) {
			ttl = &t
		}
	}
	if ttl != nil {
		res["ttlMs"] = *ttl
		res["cacheScope"] = "private" // the backends' answers may depend on the user
	}
	return res
}

func nonNil(l []map[string]json.RawMessage) []map[string]json.RawMessage {
	if l == nil {
		return []map[string]json.RawMessage{}
	}
	return l
}

// rewriteName is the message with its tool or prompt name replaced by the
// backend's (a resource URI goes as it is).
func rewriteName(m mcpreq.Message, name string) []byte {
	if len(m.NameSpans) == 0 || m.Kind == "resource" { // URIs are not renamed
		return m.Raw
	}
	if m.Name == name {
		return m.Raw
	}
	b, _ := json.Marshal(name)
	return jsonscan.Apply(m.Raw, []jsonscan.Edit{{At: m.NameSpans[0], New: b}})
}

// finalAnswer reads a backend's answer to a request with id: its response,
// passing every other message it sends to other (nil: dropped).
func finalAnswer(resp *http.Response, id json.RawMessage, other func(json.RawMessage)) (json.RawMessage, error) {
	defer func() {
		// what follows the response (a stream's end) is read, not cut off:
		// the backend's chain then finishes its answer as it would to a
		// client (reverse_proxy logs a cut answer as aborted); the read
		// ends with the request that the sub-request was made for
		go func() {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxMessage))
			resp.Body.Close()
		}()
	}()
	var final json.RawMessage
	err := readMessages(resp, func(msg json.RawMessage) bool {
		if v, found, ok := jsonscan.Find(msg, "id"); ok && found && bytes.Equal(bytes.TrimSpace(msg[v.Start:v.End]), bytes.TrimSpace(id)) {
			if _, hasMethod, _ := jsonscan.Find(msg, "method"); !hasMethod {
				final = msg
				return false
			}
		}
		if other != nil {
			other(msg)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if final == nil {
		return nil, errors.New("the backend ended its answer without a response")
	}
	return final, nil
}

// serverRequestID wraps the id of a backend's request to the client so
// that the client's answer finds the backend again.
func serverRequestID(b *Backend, id json.RawMessage) json.RawMessage {
	out, _ := json.Marshal("agg~" + b.Name + "~" + base64.RawURLEncoding.EncodeToString(id))
	return out
}

// parseServerRequestID undoes serverRequestID.
func (h *Handler) parseServerRequestID(id json.RawMessage) (*Backend, json.RawMessage, bool) {
	var s string
	if json.Unmarshal(id, &s) != nil {
		return nil, nil, false
	}
	rest, ok := strings.CutPrefix(s, "agg~")
	if !ok {
		return nil, nil, false
	}
	name, enc, ok := strings.Cut(rest, "~")
	b := h.byName[name]
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if !ok || b == nil || err != nil || !json.Valid(raw) {
		return nil, nil, false
	}
	return b, raw, true
}

// withID is msg with its top-level id replaced.
func withID(msg json.RawMessage, id json.RawMessage) json.RawMessage {
	v, found, ok := jsonscan.Find(msg, "id")
	if !ok || !found {
		return msg
	}
	return jsonscan.Apply(msg, []jsonscan.Edit{{At: v, New: id}})
}

// sseWriter writes SSE events to the client, flushed each.
type sseWriter struct {
	mu sync.Mutex
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSE(w http.ResponseWriter, sessionID string, flush bool) *sseWriter {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	if sessionID != "" {
		w.Header().Set("Mcp-Session-Id", sessionID)
	}
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	if flush {
		// a stream that may stay quiet: its client sees it open now (an
		// answer's stream sends its status line with its first event: one
		// write, not two)
		_ = s.rc.Flush()
	}
	return s
}

func (s *sseWriter) send(msg json.RawMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.ContainsAny(msg, "\r\n") {
		// one data line: JSON spread over several lines is compacted
		var c bytes.Buffer
		if json.Compact(&c, msg) != nil {
			c.Reset()
			c.Write(bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte("\r"), nil), []byte("\n"), nil))
		}
		msg = c.Bytes()
	}
	buf := make([]byte, 0, len(msg)+24)
	buf = append(buf, "event: message\ndata: "...)
	buf = append(buf, msg...)
	buf = append(buf, "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

// writerOnly and readerOnly hide ReadFrom and WriteTo, so that CopyBuffer
// uses the pooled buffer.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)

// copyBuffers are the buffers of copyResponse's streams.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// copyResponse streams a backend's answer to the client as it came.
func copyResponse(w http.ResponseWriter, resp *http.Response) error {
	defer resp.Body.Close()
	for _, k := range []string{"Content-Type", "Cache-Control"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_, err := io.CopyBuffer(writerOnly{w}, readerOnly{resp.Body}, buf) // whole: nothing to flush on the way
		return err
	}
	rc := http.NewResponseController(w)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
