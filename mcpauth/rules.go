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
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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

// listFilter rewrites list results in a response: JSON bodies once whole
// (bounded), SSE streams event by event as they pass (each event bounded).
// What it cannot read is never passed on: a body with a Content-Encoding,
// of a type it does not read (a 2xx answer to a POST), not JSON, or over
// maxFiltered is answered 502 with a log line saying why; once an SSE
// stream has begun, the stream is cut before the event instead (the
// connection is aborted, so the client sees it break, not end).
type listFilter struct {
	*caddyhttp.ResponseWriterWrapper
	h           *Handler
	granted     []string
	streamsOnly bool // JSON and other bodies pass untouched (not a POST)
	mode        int
	status      int
	started     bool         // the status line went out
	buf         bytes.Buffer // JSON body, or the SSE event being read
	cut         bool         // refused after the stream began: abort
}

const (
	modeUndecided = iota
	modeJSON
	modeSSE
	modeOther   // untouched
	modeHeld    // a 2xx of a type the filter does not read: refused at its first byte
	modeRefused // answered 502 (or cut): nothing more goes out
)

// maxFiltered bounds a JSON body, or one SSE event, held for filtering.
const maxFiltered = 16 << 20

// errWithheld is what writes get once the filter has refused the
// response, so that whatever produces it stops.
var errWithheld = errors.New("mcp_auth: the response was withheld by the list filter")

func (f *listFilter) WriteHeader(status int) {
	if f.mode != modeUndecided {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		// informational (103 Early Hints): the response is still to come
		f.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	f.status = status
	f.mode = carriage(f.Header())
	switch {
	case f.mode == modeOther || (f.mode == modeJSON && f.streamsOnly):
		if !f.streamsOnly && status >= 200 && status < 300 {
			f.mode = modeHeld
			return
		}
		f.mode = modeOther
		f.start()
		return
	}
	if ce := contentEncoding(f.Header()); ce != "" {
		f.refuse("the response has Content-Encoding " + ce + "; the list filter reads identity only")
		return
	}
	// the length changes; the status line waits for the whole JSON body,
	// or for an SSE stream's first event or flush
	f.Header().Del("Content-Length")
}

// carriage says how a response is carried: a JSON body, an SSE stream, or
// something else.
func carriage(h http.Header) int {
	ct := h.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		return modeJSON
	case strings.HasPrefix(ct, "text/event-stream"):
		return modeSSE
	}
	return modeOther
}

// rewriteMode is carriage for a response that mcp_auth rewrites: a
// rewritten body's length changes, so Content-Length goes.
func rewriteMode(h http.Header) int {
	mode := carriage(h)
	if mode != modeOther {
		h.Del("Content-Length")
	}
	return mode
}

// contentEncoding is a response's Content-Encoding unless identity.
func contentEncoding(h http.Header) string {
	for _, v := range h.Values("Content-Encoding") {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// start sends the status line, once.
func (f *listFilter) start() {
	if !f.started {
		f.started = true
		f.ResponseWriterWrapper.WriteHeader(f.status)
	}
}

// refuse withholds the response: 502 if nothing went out yet, else the
// stream is cut (see finish). Either way it is logged with its cause.
func (f *listFilter) refuse(cause string) {
	f.mode = modeRefused
	f.buf = bytes.Buffer{}
	if f.started {
		f.cut = true
		f.h.logger.Warn("a stream the list filter cannot read was cut before the event", zap.String("cause", cause))
		return
	}
	f.h.logger.Warn("a response the list filter cannot read was withheld; answered 502", zap.String("cause", cause))
	h := f.Header()
	for _, k := range []string{"Content-Type", "Content-Encoding", "Content-Length", "Transfer-Encoding"} {
		h.Del(k)
	}
	h.Set("Content-Length", "0")
	// the producer's writes fail from now on, and reverse_proxy aborts the
	// connection then: it must not be one the client uses again
	h.Set("Connection", "close")
	f.status, f.started = http.StatusBadGateway, true
	f.ResponseWriterWrapper.WriteHeader(http.StatusBadGateway)
	_ = http.NewResponseController(f.ResponseWriterWrapper.ResponseWriter).Flush()
}

func (f *listFilter) Write(b []byte) (int, error) {
	if f.mode == modeUndecided {
		f.WriteHeader(http.StatusOK)
	}
	switch f.mode {
	case modeRefused:
		return 0, errWithheld
	case modeHeld:
		if len(b) == 0 {
			return 0, nil
		}
		f.refuse("the response has Content-Type " + f.Header().Get("Content-Type") + ", which the list filter does not read")
		return 0, errWithheld
	case modeJSON:
		if f.buf.Len()+len(b) > maxFiltered {
			f.refuse("a JSON body of more than " + strconv.Itoa(maxFiltered) + " bytes is too large to filter")
			return 0, errWithheld
		}
		f.buf.Write(b)
		return len(b), nil
	case modeSSE:
		f.buf.Write(b)
		if err := f.events(); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return f.ResponseWriterWrapper.Write(b)
}

// ReadFrom reads through Write: the wrapper's own ReadFrom would copy
// around the filter.
func (f *listFilter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{f}, r)
}

type writerOnly struct{ io.Writer }

// events writes out every complete SSE event in buf, filtered.
func (f *listFilter) events() error {
	for {
		data := f.buf.Bytes()
		end, sep := bytes.Index(data, []byte("\n\n")), 2
		if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 && (end < 0 || i < end) {
			end, sep = i, 4
		}
		if end < 0 {
			if f.buf.Len() > maxFiltered {
				f.refuse(tooLargeEvent)
				return errWithheld
			}
			return nil
		}
		if end > maxFiltered {
			f.refuse(tooLargeEvent)
			return errWithheld
		}
		ev, err := f.filterEvent(data[:end])
		if err != nil {
			f.refuse(err.Error())
			return errWithheld
		}
		f.buf.Next(end + sep)
		f.start()
		if _, err := f.ResponseWriterWrapper.Write(append(ev, "\n\n"...)); err != nil {
			return err
		}
	}
}

var tooLargeEvent = "an SSE event of more than " + strconv.Itoa(maxFiltered) + " bytes is too large to filter"

// filterEvent rewrites the data of one SSE event if it carries a list.
func (f *listFilter) filterEvent(ev []byte) ([]byte, error) {
	var other, data [][]byte
	sc := bufio.NewScanner(bytes.NewReader(ev))
	sc.Buffer(make([]byte, 0, 64<<10), maxFiltered+1)
	for sc.Scan() {
		line := sc.Bytes()
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(d, []byte(" ")))
		} else {
			other = append(other, append([]byte(nil), line...))
		}
	}
	if sc.Err() != nil {
		return nil, errors.New("an SSE event the list filter cannot split into lines: " + sc.Err().Error())
	}
	if len(data) == 0 {
		return ev, nil
	}
	out, changed, err := f.filterJSON(bytes.Join(data, []byte("\n")))
	if err != nil || !changed {
		return ev, err
	}
	if bytes.ContainsAny(out, "\r\n") {
		// one data line: JSON spread over several was spliced as it came
		var c bytes.Buffer
		if json.Compact(&c, out) != nil {
			return nil, errors.New("an SSE event whose rewritten data is not JSON")
		}
		out = c.Bytes()
	}
	return append(bytes.Join(append(other, nil), []byte("\n")), append([]byte("data: "), out...)...), nil
}

// Flush passes SSE events on as they come; a JSON body waits for the end.
func (f *listFilter) Flush() {
	if f.mode == modeUndecided {
		f.WriteHeader(http.StatusOK) // as a flush before WriteHeader means
	}
	switch f.mode {
	case modeJSON, modeHeld:
		return
	case modeSSE:
		f.start()
	}
	_ = http.NewResponseController(f.ResponseWriterWrapper.ResponseWriter).Flush()
}

// finish writes a held JSON body, filtered, and what is left of a stream.
// A stream cut after it began is aborted (http.ErrAbortHandler, as
// reverse_proxy ends a stream it cannot finish).
func (f *listFilter) finish() {
	switch f.mode {
	case modeJSON:
		out, _, err := f.filterJSON(f.buf.Bytes())
		if err != nil {
			f.refuse(err.Error())
			return
		}
		f.Header().Set("Content-Length", strconv.Itoa(len(out)))
		f.start()
		_, _ = f.ResponseWriterWrapper.Write(out)
	case modeSSE:
		if f.buf.Len() > 0 {
			ev, err := f.filterEvent(f.buf.Bytes())
			if err != nil {
				f.refuse(err.Error())
				break
			}
			f.start()
			_, _ = f.ResponseWriterWrapper.Write(ev)
		}
		f.start()
	case modeHeld:
		f.start() // nothing came: the status as it was
	}
	if f.cut {
		panic(http.ErrAbortHandler)
	}
}

// filterJSON filters the list results in one JSON-RPC message or a batch
// of them; changed reports whether anything was rewritten. A message that
// may hold a result but is not JSON is an error: it passes no filter.
func (f *listFilter) filterJSON(b []byte) ([]byte, bool, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var msgs []json.RawMessage
		if json.Unmarshal(trimmed, &msgs) != nil {
			if mayHoldResult(trimmed) {
				return nil, false, errNotJSON
			}
			return b, false, nil
		}
		changed := false
		for i, m := range msgs {
			out, ok, err := f.filterMessage(m)
			if err != nil {
				return nil, false, err
			}
			if ok {
				msgs[i], changed = out, true
			}
		}
		if !changed {
			return b, false, nil
		}
		out, _ := json.Marshal(msgs)
		return out, true, nil
	}
	out, ok, err := f.filterMessage(trimmed)
	if err != nil || !ok {
		return b, false, err
	}
	return out, true, nil
}

var errNotJSON = errors.New("a message that may hold a list is not JSON")

// mayHoldResult: the bytes spell a "result" member, plainly or escaped.
func mayHoldResult(m []byte) bool {
	return bytes.Contains(m, []byte(`"result"`)) || bytes.Contains(m, []byte(`\u`))
}

// listKeys: the result member of each list, the kind of its entries, and
// the entry member their rule names match.
var listKeys = []struct{ member, kind, key string }{
	{"tools", "tool", "name"},
	{"prompts", "prompt", "name"},
	{"resources", "resource", "uri"},
	{"resourceTemplates", "resource", "uriTemplate"},
}

func (f *listFilter) filterMessage(m json.RawMessage) (json.RawMessage, bool, error) {
	if !mayHoldResult(m) {
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
