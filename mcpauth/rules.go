package mcpauth

// Per-operation scope rules: `tool <glob…> scopes <scope…>` (and `prompt`,
// `resource`). A call whose tool, prompt or resource a rule matches needs
// the rule's scopes besides the route's `scopes`; a token without them gets
// 403 insufficient_scope naming every scope the operation needs (MCP
// step-up). Lists (tools/list, prompts/list, resources/list,
// resources/templates/list) are filtered to what the token may use, in JSON
// and in SSE responses, whatever serves them (mcp_stdio, reverse_proxy), and
// marked cacheScope "private": unlisted means uncallable.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// ScopeRule makes the operations on some tools, prompts or resources need
// more scopes than the route's.
type ScopeRule struct {
	// What the rule covers: "tool" (tools/call, tools/list entries),
	// "prompt" (prompts/get, prompts/list entries) or "resource"
	// (resources/read and resources/subscribe by URI; resources/list
	// entries by URI, resources/templates/list entries by URI template).
	Kind string `json:"kind,omitempty"`

	// Globs of the names (tools, prompts) or URIs (resources) covered; `*`
	// matches any run of characters, slashes included.
	Names []string `json:"names,omitempty"`

	// Scopes the token must all grant for them.
	Scopes []string `json:"scopes,omitempty"`
}

// needs returns the scopes an operation on (kind, name) needs beyond the
// route's: the union of the scopes of every rule that matches it.
func (h *Handler) needs(kind, name string) []string {
	var out []string
	for _, rule := range h.Rules {
		if rule.Kind != kind {
			continue
		}
		for _, g := range rule.Names {
			if mcpreq.Glob(g, name) {
				for _, s := range rule.Scopes {
					if !slices.Contains(out, s) {
						out = append(out, s)
					}
				}
				break
			}
		}
	}
	return out
}

// allowed reports whether granted scopes cover an operation on (kind,
// name): every rule that matches it has all its scopes granted.
func (h *Handler) allowed(kind, name string, granted []string) bool {
	return allowedName(h, kind, name, granted)
}

func allowedName[S ~string | ~[]byte](h *Handler, kind string, name S, granted []string) bool {
	for i := range h.Rules {
		rule := &h.Rules[i]
		if rule.Kind != kind {
			continue
		}
		matched := false
		for _, g := range rule.Names {
			if mcpreq.Glob(g, name) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		for _, s := range rule.Scopes {
			if !slices.Contains(granted, s) {
				return false
			}
		}
	}
	return true
}

// needsOf returns the scopes a message's operations need beyond the
// route's: those of every name it addresses (subscriptions/listen may name
// many resources).
func (h *Handler) needsOf(m mcpreq.Message) []string {
	if m.Kind == "" {
		return nil
	}
	if len(m.Names) == 0 {
		return h.needs(m.Kind, "")
	}
	var out []string
	for _, name := range m.Names {
		for _, s := range h.needs(m.Kind, name) {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// allowedMessage reports whether granted covers every name m addresses.
func (h *Handler) allowedMessage(m mcpreq.Message, granted []string) bool {
	if m.Kind == "" {
		return true
	}
	if len(m.Names) == 0 {
		return h.allowed(m.Kind, "", granted)
	}
	for _, name := range m.Names {
		if !h.allowed(m.Kind, name, granted) {
			return false
		}
	}
	return true
}

// ambiguousName returns, for a request whose rules a server could decide
// otherwise, what a server could read otherwise: a resource URI whose
// readings (as sent, RFC 3986 normalized, resolved as a path) need
// different scopes.
func (h *Handler) ambiguousName(q *mcpreq.Request) string {
	for _, m := range q.Messages {
		if m.Kind != "resource" {
			continue
		}
		for _, name := range m.Names {
			rs := mcpreq.Readings(name)
			want := strings.Join(h.needs(m.Kind, rs[0]), " ")
			for _, r := range rs[1:] {
				if strings.Join(h.needs(m.Kind, r), " ") != want {
					return fmt.Sprintf("resource URI %q reads as %q too, which the rules decide otherwise", name, r)
				}
			}
		}
	}
	return ""
}

// checkRules refuses a request whose operations the token's scopes do not
// cover, with the scopes it needs (the route's and the rules', all of
// them, in one challenge).
func (h *Handler) checkRules(q *mcpreq.Request, granted []string) (*failure, string) {
	if !slices.ContainsFunc(q.Messages, func(m mcpreq.Message) bool { return !h.allowedMessage(m, granted) }) {
		return nil, "" // the common case, without building the challenge
	}
	var need, missing []string
	for _, m := range q.Messages {
		for _, s := range h.needsOf(m) {
			if !slices.Contains(need, s) {
				need = append(need, s)
			}
			if !slices.Contains(granted, s) && !slices.Contains(missing, s) {
				missing = append(missing, s)
			}
		}
	}
	if len(missing) == 0 {
		return nil, ""
	}
	scope := slices.Clone(h.Scopes)
	for _, s := range need {
		if !slices.Contains(scope, s) {
			scope = append(scope, s)
		}
	}
	return insufficientScope("token lacks scope " + strings.Join(missing, " ") + " for " + q.First().Method + " " + q.First().Name),
		challengeScope(scope)
}

// isList reports whether a method's result is one the rules filter.
func isList(method string) bool {
	switch method {
	case "tools/list", "prompts/list", "resources/list", "resources/templates/list":
		return true
	}
	return false
}

// filtersFor reports whether a request's answers need filtering for a
// token: it lists something and some rule needs a scope the token lacks.
func (h *Handler) filtersFor(q *mcpreq.Request, granted []string) bool {
	if !slices.ContainsFunc(q.Messages, func(m mcpreq.Message) bool { return isList(m.Method) }) {
		return false
	}
	for _, rule := range h.Rules {
		for _, s := range rule.Scopes {
			if !slices.Contains(granted, s) {
				return true
			}
		}
	}
	return false
}

// listFilter rewrites list results in a response: JSON bodies once whole
// (bounded), SSE streams event by event as they pass.
type listFilter struct {
	*caddyhttp.ResponseWriterWrapper
	h       *Handler
	granted []string
	mode    int // 0 undecided, 1 JSON, 2 SSE, 3 untouched
	status  int
	buf     bytes.Buffer // JSON body, or the SSE event being read
	tooBig  bool
}

const (
	modeUndecided = iota
	modeJSON
	modeSSE
	modeOther
)

// maxFiltered bounds a JSON body held for filtering.
const maxFiltered = 16 << 20

func (f *listFilter) WriteHeader(status int) {
	if f.mode != modeUndecided {
		return
	}
	f.status = status
	f.mode = rewriteMode(f.Header())
	if f.mode != modeJSON {
		f.ResponseWriterWrapper.WriteHeader(status)
	}
}

// rewriteMode says how a response that mcp_auth rewrites is carried: a
// JSON body (held, rewritten whole), an SSE stream (rewritten event by
// event), or something else (untouched). A rewritten body's length
// changes, so Content-Length goes.
func rewriteMode(h http.Header) int {
	ct := h.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		h.Del("Content-Length")
		return modeJSON
	case strings.HasPrefix(ct, "text/event-stream"):
		h.Del("Content-Length")
		return modeSSE
	}
	return modeOther
}

func (f *listFilter) Write(b []byte) (int, error) {
	if f.mode == modeUndecided {
		f.WriteHeader(http.StatusOK)
	}
	switch f.mode {
	case modeJSON:
		if f.buf.Len()+len(b) > maxFiltered {
			f.tooBig = true
			return len(b), nil
		}
		f.buf.Write(b)
		return len(b), nil
	case modeSSE:
		f.buf.Write(b)
		return len(b), f.events()
	}
	return f.ResponseWriterWrapper.Write(b)
}

// events writes out every complete SSE event in buf, filtered.
func (f *listFilter) events() error {
	for {
		data := f.buf.Bytes()
		end, sep := bytes.Index(data, []byte("\n\n")), 2
		if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 && (end < 0 || i < end) {
			end, sep = i, 4
		}
		if end < 0 {
			return nil
		}
		ev := f.filterEvent(data[:end])
		f.buf.Next(end + sep)
		if _, err := f.ResponseWriterWrapper.Write(append(ev, "\n\n"...)); err != nil {
			return err
		}
	}
}

// filterEvent rewrites the data of one SSE event if it carries a list.
func (f *listFilter) filterEvent(ev []byte) []byte {
	var other, data [][]byte
	sc := bufio.NewScanner(bytes.NewReader(ev))
	sc.Buffer(make([]byte, 0, 64<<10), maxFiltered)
	for sc.Scan() {
		line := sc.Bytes()
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(d, []byte(" ")))
		} else {
			other = append(other, append([]byte(nil), line...))
		}
	}
	if len(data) == 0 {
		return ev
	}
	out, changed := f.filterJSON(bytes.Join(data, []byte("\n")))
	if !changed {
		return ev
	}
	return append(bytes.Join(append(other, nil), []byte("\n")), append([]byte("data: "), out...)...)
}

// Flush passes SSE events on as they come; a JSON body waits for the end.
func (f *listFilter) Flush() {
	if f.mode == modeJSON {
		return
	}
	_ = http.NewResponseController(f.ResponseWriterWrapper.ResponseWriter).Flush()
}

// finish writes a held JSON body, filtered, and what is left of a stream.
func (f *listFilter) finish() {
	switch f.mode {
	case modeJSON:
		if f.tooBig {
			f.h.logger.Error("a list response too large to filter was withheld; answered 502")
			f.ResponseWriterWrapper.WriteHeader(http.StatusBadGateway)
			return
		}
		out, _ := f.filterJSON(f.buf.Bytes())
		f.Header().Set("Content-Length", strconv.Itoa(len(out)))
		f.ResponseWriterWrapper.WriteHeader(f.status)
		_, _ = f.ResponseWriterWrapper.Write(out)
	case modeSSE:
		if f.buf.Len() > 0 {
			_, _ = f.ResponseWriterWrapper.Write(f.filterEvent(f.buf.Bytes()))
		}
	}
}

// filterJSON filters the list results in one JSON-RPC message or a batch
// of them; changed reports whether anything was rewritten.
func (f *listFilter) filterJSON(b []byte) ([]byte, bool) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var msgs []json.RawMessage
		if json.Unmarshal(trimmed, &msgs) != nil {
			return b, false
		}
		changed := false
		for i, m := range msgs {
			if out, ok := f.filterMessage(m); ok {
				msgs[i], changed = out, true
			}
		}
		if !changed {
			return b, false
		}
		out, _ := json.Marshal(msgs)
		return out, true
	}
	if out, ok := f.filterMessage(trimmed); ok {
		return out, true
	}
	return b, false
}

// listKeys: the result member of each list, the kind of its entries, and
// the entry member their rule names match.
var listKeys = []struct{ member, kind, key string }{
	{"tools", "tool", "name"},
	{"prompts", "prompt", "name"},
	{"resources", "resource", "uri"},
	{"resourceTemplates", "resource", "uriTemplate"},
}

func (f *listFilter) filterMessage(m json.RawMessage) (json.RawMessage, bool) {
	if !bytes.Contains(m, []byte(`"result"`)) {
		return nil, false
	}
	if out, ok, fast := f.filterFast(m); fast {
		return out, ok
	}
	var msg map[string]json.RawMessage
	if json.Unmarshal(m, &msg) != nil || msg["result"] == nil {
		return nil, false
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(msg["result"], &res) != nil {
		return nil, false
	}
	changed := false
	for _, l := range listKeys {
		raw, ok := res[l.member]
		if !ok {
			continue
		}
		var entries []json.RawMessage
		if json.Unmarshal(raw, &entries) != nil {
			continue
		}
		kept := entries[:0]
		for _, e := range entries {
			var entry map[string]json.RawMessage
			_ = json.Unmarshal(e, &entry)
			var name string
			_ = json.Unmarshal(entry[l.key], &name)
			if f.h.allowed(l.kind, name, f.granted) {
				kept = append(kept, e)
			}
		}
		if len(kept) != len(entries) {
			res[l.member], _ = json.Marshal(kept)
		}
		// a list that depends on the token is private, filtered or not
		res["cacheScope"] = json.RawMessage(`"private"`)
		changed = true
	}
	if !changed {
		return nil, false
	}
	msg["result"], _ = json.Marshal(res)
	out, _ := json.Marshal(msg)
	return out, true
}

// filterFast is filterMessage by splicing, in one pass over the message:
// the kept entries' bytes as they came, each list replaced, cacheScope set.
// fast is false where it cannot tell (escaped, invalid UTF-8 or repeated member
// names): the caller decodes instead.
func (f *listFilter) filterFast(m []byte) (out []byte, changed, fast bool) {
	var edits []jsonscan.Edit
	sawResult, bad, lists := false, false, 0
	var cacheScope jsonscan.Span
	resultStart, resultMembers := -1, 0
	end := jsonscan.WalkObject(m, 0, func(name []byte, start int) int {
		if string(name) != "result" {
			return -1
		}
		if sawResult {
			bad = true
		}
		sawResult, resultStart = true, start
		var seen [][]byte
		return jsonscan.WalkObject(m, start, func(member []byte, vstart int) int {
			resultMembers++
			for _, s := range seen {
				if bytes.Equal(s, member) {
					bad = true
				}
			}
			seen = append(seen, member)
			if string(member) == "cacheScope" {
				cacheScope = jsonscan.Span{Start: vstart, End: -1}
				return -1
			}
			var list *struct{ member, kind, key string }
			for i := range listKeys {
				if listKeys[i].member == string(member) {
					list = &listKeys[i]
				}
			}
			if list == nil {
				return -1
			}
			lists++
			kept := make([]byte, 1, len(m))
			kept[0] = '['
			dropped := false
			aend := jsonscan.WalkArray(m, vstart, func(estart int) int {
				var nameSpan jsonscan.Span
				found := false
				eend := jsonscan.WalkObject(m, estart, func(k []byte, ks int) int {
					if string(k) != list.key {
						return -1
					}
					if found {
						bad = true
					}
					found = true
					e := skipTo(m, ks)
					nameSpan = jsonscan.Span{Start: ks, End: e}
					return e
				})
				if eend < 0 {
					bad = true
					return -1
				}
				var n []byte
				if found {
					v := m[nameSpan.Start:nameSpan.End]
					if raw, ok := jsonscan.PlainString(v); ok {
						n = raw
					} else {
						str, _ := jsonscan.String(v)
						n = []byte(str)
					}
				}
				if allowedName(f.h, list.kind, n, f.granted) {
					if len(kept) > 1 {
						kept = append(kept, ',')
					}
					kept = append(kept, m[estart:eend]...)
				} else {
					dropped = true
				}
				return eend
			})
			if aend < 0 {
				bad = true
				return -1
			}
			if dropped {
				edits = append(edits, jsonscan.Edit{At: jsonscan.Span{Start: vstart, End: aend}, New: append(kept, ']')})
			}
			return aend
		})
	})
	if end < 0 || bad {
		return nil, false, false
	}
	if lists == 0 {
		return nil, false, true
	}
	// a list that depends on the token is private, filtered or not
	if cacheScope.End == -1 {
		cacheScope.End = skipTo(m, cacheScope.Start)
		edits = append(edits, jsonscan.Edit{At: cacheScope, New: []byte(`"private"`)})
	} else {
		at := skipSpaceFrom(m, resultStart) + 1 // after the result's '{'
		insert := []byte(`"cacheScope":"private"`)
		if resultMembers > 0 {
			insert = append(insert, ',')
		}
		edits = append(edits, jsonscan.Edit{At: jsonscan.Span{Start: at, End: at}, New: insert})
	}
	return jsonscan.Apply(m, edits), true, true
}

// skipTo is the end of the JSON value starting at i.
func skipTo(b []byte, i int) int { return jsonscan.SkipValue(b, i) }

func skipSpaceFrom(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
