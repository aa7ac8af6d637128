// Package mcptools is the mcp_tools middleware (http.handlers.mcp_tools):
// it curates what an MCP server offers, on any route that serves MCP
// (mcp_stdio, reverse_proxy to a remote server): tools, prompts and
// resources allowed or denied by glob, tools and prompts renamed, their
// titles, descriptions and annotations overridden, and arguments fixed
// (removed from the advertised schema, set on every call; a client that
// sets one is refused). Both protocol eras, JSON bodies and SSE streams.
//
// Decisions are made on the request as internal/mcpreq reads it, the one
// reading that mcp_auth and mcp_stdio share, which refuses what servers
// could read two ways; lists are rewritten through internal/rpcstream,
// which withholds what it cannot read.
package mcptools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpcstream"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the mcp_tools middleware.
type Handler struct {
	// Tools curates the server's tools, by the names the server gives them.
	Tools *Set `json:"tools,omitempty"`
	// Prompts curates its prompts, by the server's names.
	Prompts *Set `json:"prompts,omitempty"`
	// Resources allows and denies resources by URI, and resource
	// templates by URI template (globs; no entries: a resource is not
	// renamed).
	Resources *Set `json:"resources,omitempty"`
	// MaxSize bounds the request body read to decide (default 4 MiB, as
	// mcp_auth's); a larger one is refused with 413.
	MaxSize int64 `json:"max_size,omitempty"`
	// Pin holds back tool, prompt and resource template definitions that
	// change (nil: none are pinned).
	Pin *Pin `json:"pin,omitempty"`

	logger *zap.Logger
	audit  *zap.Logger
	pins   *pinSet
}

// Set is the curation of one kind: what is shown, and how.
type Set struct {
	// Allow lists globs (* matches any run of characters) of the names
	// shown; empty: all. A resource is matched by its URI, a resource
	// template by its URI template.
	Allow []string `json:"allow,omitempty"`
	// Deny lists globs of names hidden, whatever Allow says.
	Deny []string `json:"deny,omitempty"`
	// Entries change single tools or prompts, by the server's name.
	Entries map[string]*Entry `json:"entries,omitempty"`

	fromClient map[string]string // a renamed entry's client name -> the server's
}

// Entry changes how one tool or prompt is shown and called.
type Entry struct {
	// Rename is the name clients see and call it by; the server's own name
	// is then unknown to them.
	Rename string `json:"rename,omitempty"`
	// Title replaces its title.
	Title *string `json:"title,omitempty"`
	// Description replaces its description.
	Description *string `json:"description,omitempty"`
	// Annotations are merged into a tool's annotations, each value as
	// given (readOnlyHint false forces it false).
	Annotations map[string]json.RawMessage `json:"annotations,omitempty"`
	// Fixed are arguments set on every call (a prompt's: strings), removed
	// from the advertised input schema or argument list; a call that sets
	// one itself is refused.
	Fixed map[string]json.RawMessage `json:"fixed,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_tools",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets the handler up.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.audit = h.logger.Named("audit")
	if h.Pin != nil {
		initPinMetrics(ctx.GetMetricsRegistry())
		pins, err := openPinSet(ctx, ctx.Storage(), h.Pin)
		if err != nil {
			return err
		}
		h.pins = pins
	}
	if h.MaxSize == 0 {
		h.MaxSize = mcpreq.DefaultMaxBytes
	}
	for _, s := range []*Set{h.Tools, h.Prompts, h.Resources} {
		if s == nil {
			continue
		}
		s.fromClient = map[string]string{}
		for name, e := range s.Entries {
			if e != nil && e.Rename != "" {
				s.fromClient[e.Rename] = name
			}
		}
	}
	return nil
}

// Validate checks the config.
func (h *Handler) Validate() error {
	if h.MaxSize < 0 {
		return errors.New("mcp_tools: max_size is negative")
	}
	if p := h.Pin; p != nil {
		if p.Name == "" && len(p.Approve) > 0 {
			return errors.New("mcp_tools: approve needs pin")
		}
		if p.Name == "" || strings.Trim(p.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || strings.HasPrefix(p.Name, ".") {
			return fmt.Errorf("mcp_tools: pin name %q: letters, digits, '.', '_' and '-' only", p.Name)
		}
		if p.Mode != "" && p.Mode != "tofu" && p.Mode != "approved" {
			return fmt.Errorf("mcp_tools: pin mode %q is not tofu or approved", p.Mode)
		}
		for k, d := range p.Approve {
			kind, name, _ := strings.Cut(k, ":")
			if _, ok := definitionFields[kind]; !ok || name == "" || !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
				return fmt.Errorf("mcp_tools: pin approve %q %q: want tool|prompt|template:<name> and sha256:<64 hex digits>", k, d)
			}
		}
	}
	if h.Resources != nil && len(h.Resources.Entries) > 0 {
		return errors.New("mcp_tools: resources take allow and deny only")
	}
	for kind, s := range map[string]*Set{"tool": h.Tools, "prompt": h.Prompts} {
		if s == nil {
			continue
		}
		seen := map[string]string{}
		for name, e := range s.Entries {
			if e == nil {
				return fmt.Errorf("mcp_tools: %s %q has no settings", kind, name)
			}
			if e.Rename != "" {
				if other, ok := seen[e.Rename]; ok {
					return fmt.Errorf("mcp_tools: %ss %q and %q are both renamed %q", kind, other, name, e.Rename)
				}
				seen[e.Rename] = name
				if _, ok := s.Entries[e.Rename]; ok && e.Rename != name {
					return fmt.Errorf("mcp_tools: %s %q is renamed %q, the name of another %s with settings of its own", kind, name, e.Rename, kind)
				}
			}
			if kind == "prompt" && len(e.Annotations) > 0 {
				return fmt.Errorf("mcp_tools: prompt %q: prompts have no annotations", name)
			}
			for arg, v := range e.Fixed {
				if arg == "" || !json.Valid(v) {
					return fmt.Errorf("mcp_tools: %s %q: fixed argument %q is not a name and a JSON value", kind, name, arg)
				}
				if kind == "prompt" && (len(v) == 0 || v[0] != '"') {
					return fmt.Errorf("mcp_tools: prompt %q: fixed argument %q: prompt arguments are strings", name, arg)
				}
			}
			for k, v := range e.Annotations {
				if k == "" || !json.Valid(v) {
					return fmt.Errorf("mcp_tools: tool %q: annotation %q is not a name and a JSON value", name, k)
				}
			}
		}
	}
	return nil
}

// shown reports whether the server's name passes allow and deny.
func (s *Set) shown(name string) bool {
	if s == nil {
		return true
	}
	if len(s.Allow) > 0 && !slices.ContainsFunc(s.Allow, func(g string) bool { return mcpreq.Glob(g, name) }) {
		return false
	}
	return !slices.ContainsFunc(s.Deny, func(g string) bool { return mcpreq.Glob(g, name) })
}

// entry is the settings of the server's name (nil: none).
func (s *Set) entry(name string) *Entry {
	if s == nil {
		return nil
	}
	return s.Entries[name]
}

// clientName is the name clients know the server's name by.
func (s *Set) clientName(server string) string {
	if e := s.entry(server); e != nil && e.Rename != "" {
		return e.Rename
	}
	return server
}

// serverName is the server's name for a client's; ok is false for a name
// clients cannot call: hidden, or a renamed entry's old name.
func (s *Set) serverName(client string) (string, bool) {
	name := client
	if s != nil {
		if orig, ok := s.fromClient[client]; ok {
			name = orig
		} else if e := s.Entries[client]; e != nil && e.Rename != "" {
			return "", false
		}
	}
	return name, s.shown(name)
}

// set is the curation of a message kind (tool, prompt, resource).
func (h *Handler) set(kind string) *Set {
	switch kind {
	case "tool":
		return h.Tools
	case "prompt":
		return h.Prompts
	case "resource":
		return h.Resources
	}
	return nil
}

// ServeHTTP curates one request and its answers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.Method != http.MethodPost {
		if r.Method != http.MethodGet {
			return next.ServeHTTP(w, r)
		}
		// a GET stream (resumed or not) may replay answers to lists
		return h.serveRewritten(w, r, next, true)
	}
	q := mcpreq.Get(r, h.MaxSize)
	if q.Err != nil {
		if q.FailsClosed(r) {
			return h.refuseUnreadable(w, q)
		}
		return next.ServeHTTP(w, r)
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var refusals []refusal
	edits := make([][]jsonscan.Edit, len(q.Messages))
	headerName := ""
	lists := false
	for i, m := range q.Messages {
		switch m.Method {
		case "tools/list", "prompts/list", "resources/list", "resources/templates/list", "subscriptions/listen":
			lists = true
		}
		e, name, ref := h.decide(m, repl)
		if ref != nil {
			ref.index = i
			refusals = append(refusals, *ref)
			continue
		}
		edits[i] = e
		if i == 0 && name != "" {
			headerName = name
		}
	}
	if len(refusals) > 0 {
		return h.refuse(w, r, q, refusals)
	}
	if slices.ContainsFunc(edits, func(e []jsonscan.Edit) bool { return len(e) > 0 }) {
		h.rewriteRequest(r, q, edits, headerName)
	}
	if !lists {
		return next.ServeHTTP(w, r)
	}
	return h.serveRewritten(w, r, next, false)
}

// serveRewritten passes the request on with its answers' lists curated.
func (h *Handler) serveRewritten(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, streamsOnly bool) error {
	// identity, so that the lists can be read (encode, ordered before
	// mcp_tools, compresses what leaves)
	r.Header.Del("Accept-Encoding")
	f := rpcstream.New(w, "mcp_tools", h.logger, streamsOnly, h.rewriteMessage)
	err := next.ServeHTTP(f, r)
	f.Finish()
	if f.Refused() {
		if err != nil && !errors.Is(err, rpcstream.ErrWithheld) {
			h.logger.Debug("the handler after mcp_tools failed on a withheld response", zap.Error(err))
		}
		return nil
	}
	return err
}

// refusal is a message mcp_tools answers itself.
type refusal struct {
	index   int
	code    int
	message string
	data    any
}

// JSON-RPC codes of the errors a server gives for what it does not have.
const (
	codeInvalidParams      = -32602
	codeInvalidRequest     = -32600
	codeResourceNotFound25 = -32002 // 2025; -32602 since 2026-07-28
)

// decide reads one message: the edits that send it to the server (its
// name as the server knows it, fixed arguments), the server's name where
// the Mcp-Name header must change, or why it is refused.
func (h *Handler) decide(m mcpreq.Message, repl *caddy.Replacer) (edits []jsonscan.Edit, headerName string, ref *refusal) {
	if m.Kind == "" || len(m.Names) == 0 {
		return nil, "", nil
	}
	s := h.set(m.Kind)
	if m.Kind == "resource" && s != nil {
		// a URI that servers could read as one the globs decide otherwise
		// (another case, another form, dot segments, encodings) is refused
		if why := mcpreq.Disagreement("resource", m.Names, s.shown); why != "" {
			return nil, "", &refusal{code: codeInvalidRequest, message: why}
		}
	}
	for i, client := range m.Names {
		server, ok := s.serverName(client)
		if !ok {
			return nil, "", unknown(m, client)
		}
		if server != client {
			b, _ := json.Marshal(server)
			edits = append(edits, jsonscan.Edit{At: m.NameSpans[i], New: b})
		}
		if i == 0 {
			headerName = server
		}
		if key := h.pinKey(m, server); key != "" {
			ok, why := h.pins.callable(key, h.Pin.Approve)
			if !ok {
				h.pins.recheck(context.Background())
				ok, why = h.pins.callable(key, h.Pin.Approve)
			}
			if !ok {
				return nil, "", &refusal{code: codeInvalidParams, message: fmt.Sprintf("%s %q %s", m.Kind, client, why)}
			}
		}
		if e := s.entry(server); e != nil && len(e.Fixed) > 0 && (m.Method == "tools/call" || m.Method == "prompts/get") {
			fix, why := fixArguments(m, e.Fixed, repl)
			if why != "" {
				return nil, "", &refusal{code: codeInvalidParams, message: why}
			}
			edits = append(edits, fix...)
		}
	}
	return edits, headerName, nil
}

// pinKey is the pin a message must pass ("" none): a tool's for a call, a
// prompt's for prompts/get and completion/complete of it, and, for a
// resource URI (read, subscribe, completion), the template it falls under
// in the last list.
func (h *Handler) pinKey(m mcpreq.Message, server string) string {
	if h.pins == nil {
		return ""
	}
	switch m.Kind {
	case "tool", "prompt":
		return m.Kind + ":" + server
	case "resource":
		if t := h.pins.templateOf(server); t != "" {
			return "template:" + t
		}
	}
	return ""
}

// unknown is the error a server gives for a name it does not have.
func unknown(m mcpreq.Message, name string) *refusal {
	switch m.Kind {
	case "tool":
		return &refusal{code: codeInvalidParams, message: "Unknown tool: " + name}
	case "prompt":
		return &refusal{code: codeInvalidParams, message: "Unknown prompt: " + name}
	}
	return &refusal{code: codeResourceNotFound25, message: "Resource not found", data: map[string]string{"uri": name}}
}

// fixArguments is the edit that sets a call's fixed arguments, or why
// the call is refused: it sets one itself (under any spelling a server
// could read as it), or its arguments are not an object.
func fixArguments(m mcpreq.Message, fixed map[string]json.RawMessage, repl *caddy.Replacer) ([]jsonscan.Edit, string) {
	names := make([]string, 0, len(fixed))
	for k := range fixed {
		names = append(names, k)
	}
	slices.Sort(names)
	var members bytes.Buffer
	for i, k := range names {
		if i > 0 {
			members.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		members.Write(kb)
		members.WriteByte(':')
		members.Write(withPlaceholders(fixed[k], repl))
	}
	raw := m.Raw
	if m.Arguments.End == 0 {
		// no arguments: add them to params
		p := m.Top.Params
		if p.End == 0 || raw[jsonscan.SkipSpace(raw, p.Start)] != '{' {
			return nil, "params is not an object"
		}
		at := jsonscan.SkipSpace(raw, p.Start) + 1
		ins := append([]byte(`"arguments":{`), members.Bytes()...)
		ins = append(ins, '}')
		if raw[jsonscan.SkipSpace(raw, at)] != '}' {
			ins = append(ins, ',')
		}
		return []jsonscan.Edit{{At: jsonscan.Span{Start: at, End: at}, New: ins}}, ""
	}
	a := m.Arguments
	start := jsonscan.SkipSpace(raw, a.Start)
	if raw[start] == 'n' { // null
		return []jsonscan.Edit{{At: a, New: append(append([]byte{'{'}, members.Bytes()...), '}')}}, ""
	}
	if raw[start] != '{' {
		return nil, "arguments is not an object"
	}
	var why string
	count := 0
	end := jsonscan.WalkObject(raw, start, func(n []byte, vs int) int {
		count++
		if why == "" && (slices.Contains(names, string(n)) || mcpreq.Folds(n, names)) {
			why = fmt.Sprintf("argument %q is fixed by the gateway: the call may not set it", n)
		}
		return -1
	})
	if end < 0 {
		return nil, "arguments has a member name that is escaped or not UTF-8"
	}
	if why != "" {
		return nil, why
	}
	ins := members.Bytes()
	if count > 0 {
		ins = append(slices.Clone(ins), ',')
	}
	return []jsonscan.Edit{{At: jsonscan.Span{Start: start + 1, End: start + 1}, New: ins}}, ""
}

// withPlaceholders is a fixed value with the placeholders of a string
// replaced (another JSON value as it is).
func withPlaceholders(v json.RawMessage, repl *caddy.Replacer) []byte {
	if repl == nil || len(v) == 0 || v[0] != '"' || !bytes.ContainsRune(v, '{') {
		return v
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return v
	}
	b, _ := json.Marshal(repl.ReplaceAll(s, ""))
	return b
}

// rewriteRequest replaces the body with the edited messages, and the
// Mcp-Name header with the server's name, for the handlers after this one
// (which parse the new body again).
func (h *Handler) rewriteRequest(r *http.Request, q *mcpreq.Request, edits [][]jsonscan.Edit, headerName string) {
	var body []byte
	if q.Batch {
		parts := make([][]byte, len(q.Messages))
		for i, m := range q.Messages {
			parts[i] = jsonscan.Apply(m.Raw, edits[i])
		}
		body = append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']')
	} else {
		body = jsonscan.Apply(q.Messages[0].Raw, edits[0])
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	if headerName != "" && r.Header.Get("Mcp-Name") != "" {
		r.Header.Set("Mcp-Name", mcpreq.EncodeHeaderValue(headerName))
	}
	// the names clients used, for the audit of the handler after
	names := make([]string, 0, len(q.Messages))
	for _, m := range q.Messages {
		names = append(names, strings.Join(m.Names, ","))
	}
	caddyhttp.SetVar(r.Context(), mcpreq.ClientNamesVar, names)
	mcpreq.Forget(r)
}

// refuse answers the messages mcp_tools refuses; a batch holding one is
// not sent at all (its other messages are answered so).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, q *mcpreq.Request, refusals []refusal) error {
	resourceCode := codeResourceNotFound25
	if q.Era == "2026" {
		resourceCode = codeInvalidParams
	}
	byIndex := map[int]refusal{}
	for _, f := range refusals {
		if f.code == codeResourceNotFound25 {
			f.code = resourceCode
		}
		byIndex[f.index] = f
		if c := h.logger.Check(zap.DebugLevel, "request refused by mcp_tools"); c != nil {
			c.Write(zap.String("method", q.Messages[f.index].Method), zap.Strings("names", q.Messages[f.index].Names), zap.String("reason", f.message))
		}
	}
	var out []json.RawMessage
	for i, m := range q.Messages {
		if m.ID == nil {
			continue // a notification gets no answer
		}
		f, ok := byIndex[i]
		if !ok {
			f = refusal{code: -32600, message: "not sent: this batch holds a message that mcp_tools refuses"}
		}
		e := map[string]any{"code": f.code, "message": f.message}
		if f.data != nil {
			e["data"] = f.data
		}
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": m.ID, "error": e})
		out = append(out, b)
	}
	if len(out) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	body := []byte(out[0])
	if q.Batch {
		body, _ = json.Marshal(out)
	}
	w.Header().Set("Content-Type", "application/json")
	if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
		w.Header().Set("Mcp-Session-Id", sid)
	}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(body)
	return err
}

// refuseUnreadable answers a body that cannot be curated because servers
// could read it otherwise (or it contradicts its headers): 400, with the
// JSON-RPC error saying why (413 when too large).
func (h *Handler) refuseUnreadable(w http.ResponseWriter, q *mcpreq.Request) error {
	code, status := -32600, http.StatusBadRequest
	switch {
	case errors.Is(q.Err, mcpreq.ErrMismatch):
		code = -32020
	case mcpreq.IsTooLarge(q.Err):
		status = http.StatusRequestEntityTooLarge
	}
	if c := h.logger.Check(zap.DebugLevel, "request refused: mcp_tools cannot read it unambiguously"); c != nil {
		c.Write(zap.Error(q.Err))
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": q.ID, "error": map[string]any{"code": code, "message": q.Err.Error()}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
