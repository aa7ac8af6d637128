package mcpauth

// Per-operation scope rules: `tool <glob…> scopes <scope…>` (and `prompt`,
// `resource`). A call whose tool, prompt or resource a rule matches needs
// the rule's scopes besides the route's `scopes`; a token without them gets
// 403 insufficient_scope naming every scope the operation needs (MCP
// step-up). Lists (tools/list, prompts/list, resources/list,
// resources/templates/list) are filtered to what the token may use, in JSON
// and in SSE responses, whatever serves them (mcp_stdio, reverse_proxy), and
// marked cacheScope "private": unlisted means uncallable. Replays are
// filtered like first deliveries (every answer holding a list, in any
// stream a GET opens or resumes, and in subscriptions/listen streams); an
// answer the filter cannot read (compressed, over 16 MiB, not JSON) is
// never passed on (see listFilter).

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpcstream"
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
// otherwise, why: a resource URI that URL parsers rewrite, or whose
// readings (as sent, RFC 3986 normalized, resolved as a path) need
// different scopes.
func (h *Handler) ambiguousName(q *mcpreq.Request) string {
	if !h.hasRules("resource") {
		return ""
	}
	for _, m := range q.Messages {
		if why := mcpreq.Disagreement(m.Kind, m.Names, func(u string) string { return strings.Join(h.needs(m.Kind, u), " ") }); why != "" {
			return why + " by the rules"
		}
	}
	return ""
}

// hasRules reports whether some rule decides on kind.
func (h *Handler) hasRules(kind string) bool {
	return slices.ContainsFunc(h.Rules, func(r ScopeRule) bool { return r.Kind == kind })
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
// token (some rule needs a scope the token lacks), and whether only SSE
// streams among them do. A POST's answers are those of its messages: they
// are filtered when it lists something, or listens (a stream whose content
// the server chooses). Any other request (a GET stream, resumed with
// Last-Event-ID or not) is filtered too, its SSE streams only: a resumed
// stream replays answers to requests this request does not name, and the
// filter cannot tell which replayed answer is a list, so every answer that
// holds a list is filtered, as on first delivery.
func (h *Handler) filtersFor(r *http.Request, q *mcpreq.Request, granted []string) (filter, streamsOnly bool) {
	lacks := false
	for _, rule := range h.Rules {
		for _, s := range rule.Scopes {
			if !slices.Contains(granted, s) {
				lacks = true
			}
		}
	}
	if !lacks {
		return false, false
	}
	if r.Method != http.MethodPost {
		return true, true
	}
	return slices.ContainsFunc(q.Messages, func(m mcpreq.Message) bool {
		return isList(m.Method) || m.Method == "subscriptions/listen"
	}), false
}

// listFilter filters the list results of a response (rpcstream carries
// it: JSON bodies whole, SSE streams event by event; what it cannot read
// is withheld).
type listFilter struct {
	h       *Handler
	granted []string
}

// newListFilter wraps w with the list filter for a token's scopes.
func newListFilter(w http.ResponseWriter, h *Handler, granted []string, streamsOnly bool) *rpcstream.Rewriter {
	f := &listFilter{h: h, granted: granted}
	return rpcstream.New(w, "the list filter", h.logger, streamsOnly, f.filterMessage)
}

// filterJSON filters one message or a batch, for the benchmarks.
func (f *listFilter) filterJSON(b []byte) ([]byte, bool, error) {
	rw := rpcstream.Rewriter{Rewrite: f.filterMessage}
	return rw.RewriteJSON(b)
}

var errNotJSON = rpcstream.ErrNotJSON

// listKeys: the result member of each list, the kind of its entries, and
// the entry member their rule names match.
var listKeys = []struct{ member, kind, key string }{
	{"tools", "tool", "name"},
	{"prompts", "prompt", "name"},
	{"resources", "resource", "uri"},
	{"resourceTemplates", "resource", "uriTemplate"},
}

func (f *listFilter) filterMessage(m []byte) ([]byte, bool, error) {
	if !rpcstream.MayHoldResult(m) {
		return nil, false, nil
	}
	if out, ok, fast := f.filterFast(m); fast {
		return out, ok, nil
	}
	var msg map[string]json.RawMessage
	if json.Unmarshal(m, &msg) != nil {
		return nil, false, errNotJSON
	}
	if msg["result"] == nil {
		return nil, false, nil
	}
	var res map[string]json.RawMessage
	if json.Unmarshal(msg["result"], &res) != nil {
		return nil, false, nil // not an object: no list in it
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
				if entry != nil {
					// as decoded: with a name twice, the one judged
					e, _ = json.Marshal(entry)
				}
				kept = append(kept, e)
			}
		}
		res[l.member], _ = json.Marshal(kept)
		// a list that depends on the token is private, filtered or not
		res["cacheScope"] = json.RawMessage(`"private"`)
		changed = true
	}
	if !changed {
		return nil, false, nil
	}
	msg["result"], _ = json.Marshal(res)
	out, _ := json.Marshal(msg)
	return out, true, nil
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
	if end < 0 || bad || skipSpaceFrom(m, end) != len(m) {
		// (anything after the message: a second one would pass unread)
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
