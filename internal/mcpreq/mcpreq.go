// Package mcpreq reads what an HTTP request asks of an MCP server (the
// JSON-RPC method and the name of the tool, prompt or resource), once per
// request, for every caddymcp module that needs it: the mcp matcher, the
// {http.mcp.*} placeholders, mcp_auth's rules and mcp_stdio.
//
// The body is read within a bound and put back, so that the next reader
// sees it whole; the result is kept in the request's Caddy vars, so no
// later module parses twice. A 2026-07-28 request's Mcp-Method and Mcp-Name
// headers are checked against the body: a mismatch makes the request
// invalid (matchers do not match it; mcp_stdio refuses it with -32020).
package mcpreq

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/dustin/go-humanize"
)

// DefaultMaxBytes bounds how much of a body is read to find the method.
const DefaultMaxBytes = 4 << 20

// Message is one JSON-RPC message of a request.
type Message struct {
	Method string
	// Kind is what the message addresses, for rules and matchers: "tool"
	// (tools/call), "prompt" (prompts/get; completion/complete of a
	// ref/prompt), "resource" (resources/read, resources/subscribe,
	// resources/unsubscribe, subscriptions/listen's resourceSubscriptions;
	// completion/complete of a ref/resource, by URI template) or "".
	Kind string
	// Name is the first of Names (the only one but for
	// subscriptions/listen).
	Name string
	// Names are the tool or prompt names or the resource URIs the message
	// addresses, exactly as sent.
	Names []string
	// NameSpans are where each of Names is in Raw (its JSON string), for a
	// module that rewrites a name (mcp_tools).
	NameSpans []jsonscan.Span
	// Arguments is where params.arguments is in Raw (End 0: absent).
	Arguments jsonscan.Span
	ID        json.RawMessage
	// RequestState is params.requestState of a 2026-07-28 retry (the
	// selection policy routes it to the instance that issued it).
	RequestState string
	// Raw is the message as sent (a batch's element), and Top where its
	// top-level members are in Raw: a module that serves the message reads
	// these very bytes rather than parsing it again.
	Raw []byte
	Top Top
	// TaskID is params.taskId of tasks/get, tasks/update and tasks/cancel
	// (the tasks extension; the `mcp` balancer policy routes by it).
	TaskID string
	// headerName is what a 2026-07-28 Mcp-Name header mirrors:
	// params.name of tools/call and prompts/get, params.uri of
	// resources/read, resources/subscribe and resources/unsubscribe.
	headerName string
}

// Top is where a message's top-level JSON-RPC members are in its Raw
// bytes (End 0: absent), found by the scan that refused every other
// reading of them (a member twice, escaped or in another case).
type Top struct{ JSONRPC, ID, Method, Params, Result, Error jsonscan.Span }

// Request is what a request asks, as far as MCP is concerned.
type Request struct {
	Messages        []Message // one, or a batch's
	Batch           bool
	ID              json.RawMessage // the id of a single message (kept when Err is set, for the error's id)
	ProtocolVersion string          // _meta (2026-07-28) or the MCP-Protocol-Version header
	Era             string          // "2026" or "2025"
	SessionID       string
	// Err says why the body is not an MCP request (not POST, not JSON-RPC,
	// too large, ambiguous, headers that contradict the body); then
	// Messages is empty.
	Err error

	parsed      []Message // Messages, kept where Err is ErrMismatch (Parsed)
	metaVersion bool      // ProtocolVersion came from _meta
	bound       int64     // the bound it was read within
	body        []byte    // the body as read (nil beyond the bound or on a read error)
}

// Body returns the body as it was read and parsed (nil if it was beyond
// the bound or could not be read), so that a module serving the request
// reads exactly what the rules read, and reads it once.
func (q *Request) Body() []byte { return q.body }

// Parsed returns the messages as read, also where the headers contradict
// them (Err is ErrMismatch and Messages empty), for the module that
// answers the request and says which header was wrong; nil where the body
// was not read as JSON-RPC.
func (q *Request) Parsed() []Message { return q.parsed }

// IsEncoded reports whether err says the body had a Content-Encoding.
func IsEncoded(err error) bool { return errors.Is(err, errEncoded) }

// First is the first message (the only one outside a batch).
func (q *Request) First() Message {
	if len(q.Messages) == 0 {
		return Message{}
	}
	return q.Messages[0]
}

// Unreadable reports why a POST is not a message that rules can decide
// on ("" if it is one, or the request is no POST): the {http.mcp.error}
// placeholder.
func (q *Request) Unreadable() string {
	if q.Err == nil || q.Err == errNotPOST {
		return ""
	}
	return q.Err.Error()
}

var (
	errNotPOST  = errors.New("not a POST")
	errTooLarge = errors.New("body larger than the bound")
	errNotJSON  = errors.New("body is not a JSON-RPC message")
	errBadJSON  = errors.New("body is not valid JSON (in UTF-8)")
	errEncoded  = errors.New("body has a Content-Encoding: the rules read only identity-encoded bodies")
	// ErrMismatch: a 2026-07-28 request's Mcp-Method or Mcp-Name header
	// contradicts its body (answered with -32020 HeaderMismatch).
	ErrMismatch = errors.New("header mismatch: the Mcp-Method or Mcp-Name header does not match the body")
	// ErrAmbiguous: servers could read the message in more than one way (a
	// member twice, under an escaped name or in another case, a name that
	// is not a string, a string that decodes differently in different
	// parsers). It is refused wherever anything decides on it.
	ErrAmbiguous = errors.New("ambiguous message")
	errReadError = errors.New("body could not be read")
)

// ambiguous makes an ErrAmbiguous that says why.
func ambiguous(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrAmbiguous}, args...)...)
}

// IsAmbiguous reports whether err says the message can be read two ways.
func IsAmbiguous(err error) bool { return errors.Is(err, ErrAmbiguous) }

// FailsClosed reports whether a POST that q cannot read must be refused by
// whatever decides on MCP messages, rather than let pass as something
// else: it is ambiguous, contradicts its headers, or, sent as JSON (a
// Content-Type naming json, or none), is too large, compressed, not valid
// UTF-8 JSON (UTF-16, say, which some servers decode) or could not be
// read. Valid JSON that is no JSON-RPC message is some other API's and
// passes, as does another content type's body.
func (q *Request) FailsClosed(r *http.Request) bool {
	switch {
	case q.Err == nil || q.Err == errNotPOST || q.Err == errNotJSON:
		return false
	case IsAmbiguous(q.Err) || q.Err == ErrMismatch:
		return true
	}
	ct := r.Header.Get("Content-Type")
	return ct == "" || strings.Contains(strings.ToLower(ct), "json")
}

// IsTooLarge reports whether err says the body was beyond the bound.
func IsTooLarge(err error) bool { return errors.Is(err, errTooLarge) }

const varKey = "caddymcp.mcp_request"

// Get returns the parse of r, parsing it (once) if no module did yet. A
// parse that found the body beyond a smaller bound than maxBytes is made
// again within maxBytes (a module with a larger bound must read what it
// serves itself).
func Get(r *http.Request, maxBytes int64) *Request {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if q, ok := caddyhttp.GetVar(r.Context(), varKey).(*Request); ok && q != nil {
		if q.Err != errTooLarge || q.bound >= maxBytes {
			return q
		}
	}
	q := parse(r, maxBytes)
	caddyhttp.SetVar(r.Context(), varKey, q)
	return q
}

func parse(r *http.Request, maxBytes int64) *Request {
	q := &Request{SessionID: r.Header.Get("Mcp-Session-Id"), ProtocolVersion: r.Header.Get("Mcp-Protocol-Version"), bound: maxBytes}
	if r.Method != http.MethodPost || r.Body == nil {
		q.Err = errNotPOST
		q.Era = era(q, nil)
		return q
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// servers that inflate bodies (Express's json()) would read what
		// the rules cannot
		q.Err = errEncoded
		q.Era = era(q, nil)
		return q
	}
	var body []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= maxBytes {
		// the usual case: read exactly what was announced, in one buffer
		body = make([]byte, n)
		var got int
		got, err = io.ReadFull(r.Body, body)
		body = body[:got]
		if err == io.ErrUnexpectedEOF {
			err = nil
		}
	} else {
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	}
	// put back what was read, followed by the rest, for the next reader
	r.Body = readCloser{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
	switch {
	case err != nil:
		q.Err = errReadError
	case int64(len(body)) > maxBytes:
		q.Err = errTooLarge
	default:
		q.body = body
		parseBody(q, body)
	}
	q.Era = era(q, body)
	if !q.Batch {
		q.ID = q.First().ID
	}
	q.parsed = q.Messages
	if q.Err == nil && q.Era == "2026" && !headersMatch(r.Header, q.First()) {
		q.Err = ErrMismatch
		q.Messages = nil
	}
	return q
}

type readCloser struct {
	io.Reader
	io.Closer
}

func parseBody(q *Request, body []byte) {
	trimmed := bytes.TrimSpace(body)
	if !json.Valid(trimmed) {
		q.Err = errBadJSON
		return
	}
	msgs := []jsonscan.Span{{Start: 0, End: len(trimmed)}}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		q.Batch = true
		var ok bool
		if msgs, ok = jsonscan.Elements(trimmed); !ok || len(msgs) == 0 {
			q.Err = errNotJSON
			return
		}
	}
	for _, sp := range msgs {
		msg, version, err := parseMessage(trimmed[sp.Start:sp.End])
		if err == errNotJSON && q.Batch {
			// a generic JSON-RPC server runs the batch's other elements
			err = ambiguous("a batch element is not a JSON-RPC message")
		}
		if err != nil {
			if !q.Batch {
				q.ID = msg.ID
			}
			q.Err, q.Messages = err, nil
			return
		}
		if version != "" && !q.Batch {
			q.ProtocolVersion, q.metaVersion = version, true
		}
		q.Messages = append(q.Messages, msg)
	}
}

// The members each level of a message is read by. Every server reads the
// same members, however it parses: a member of these names twice, or one
// whose name equals one of them only when unescaped or case-folded (Go's
// encoding/json matches struct fields by Unicode simple folding), makes
// the message ambiguous.
var (
	topMembers    = []string{"jsonrpc", "id", "method", "params", "result", "error"}
	paramsMembers = []string{"name", "uri", "ref", "requestState", "_meta", "notifications", "arguments", "taskId"}
	refMembers    = []string{"type", "name", "uri"}
	notifyMembers = []string{"resourceSubscriptions", "toolsListChanged", "promptsListChanged", "resourcesListChanged"}
	metaMembers   = []string{
		"io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientCapabilities",
		"io.modelcontextprotocol/clientInfo", "io.modelcontextprotocol/logLevel", "progressToken",
	}
)

// Indexes into the lists above.
const (
	topJSONRPC, topID, topMethod, topParams = 0, 1, 2, 3
	topResult, topError                     = 4, 5
	parName, parURI, parRef, parState       = 0, 1, 2, 3
	parMeta, parNotifications, parArguments = 4, 5, 6
	parTask                                 = 7
	refType, refName, refURI                = 0, 1, 2
	notifyURIs                              = 0
	metaVersion                             = 0
)

// members reads the object at b[start:] for the members of names: their
// spans, by index (End 0: absent). It fails on anything a server could read
// otherwise: not an object, a name escaped or invalid UTF-8, one of names
// twice, or a member whose name folds to one of names without being it.
func members(b []byte, start int, where string, names []string) ([]jsonscan.Span, error) {
	spans := make([]jsonscan.Span, len(names))
	var err error
	if i := jsonscan.SkipSpace(b, start); i >= len(b) || b[i] != '{' {
		return nil, ambiguous("%s is not an object", where)
	}
	end := jsonscan.WalkObject(b, start, func(n []byte, vs int) int {
		if err != nil {
			return -1
		}
		for i, name := range names {
			if string(n) == name {
				if spans[i].End != 0 {
					err = ambiguous("%s has %q twice", where, name)
					return -1
				}
				e := jsonscan.SkipValue(b, vs)
				spans[i] = jsonscan.Span{Start: vs, End: e}
				return e
			}
		}
		if folds(n, names) {
			err = ambiguous("%s has %q, which a case-insensitive server reads as one of %q", where, n, names)
		}
		return -1
	})
	if err != nil {
		return nil, err
	}
	if end < 0 {
		return nil, ambiguous("%s has a member name that is escaped or not UTF-8", where)
	}
	return spans, nil
}

// Folds reports whether a member name n is one that a server could read as
// one of names without being it (see folds): a rewriter that adds one of
// names to an object refuses an object that has such a member.
func Folds(n []byte, names []string) bool { return folds(n, names) }

// folds reports whether n equals one of names under Unicode simple case
// folding (strings.EqualFold, as encoding/json matches field names), or
// once underscores are dropped (Python SDK models accept a field's snake
// name beside its camelCase alias: resource_subscriptions, request_state,
// meta for _meta).
func folds(n []byte, names []string) bool {
	ascii := true
	for _, c := range n {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	bare := strings.ReplaceAll(string(n), "_", "")
	for _, name := range names {
		plain := strings.ReplaceAll(name, "_", "")
		if ascii && len(bare) != len(plain) {
			continue // ASCII folds only to ASCII of the same length (K and s aside, which are not ASCII)
		}
		if strings.EqualFold(bare, plain) {
			return true
		}
	}
	return false
}

// str reads a string member that something decides on: absent is "", a
// value that is not a string, or that parsers decode differently (invalid
// UTF-8, a lone surrogate), is ambiguous.
func str(b []byte, s jsonscan.Span, what string) (string, error) {
	if s.End == 0 {
		return "", nil
	}
	v := b[s.Start:s.End]
	out, ok := jsonscan.String(v)
	if !ok {
		return "", ambiguous("%s is not a string", what)
	}
	if strings.ContainsRune(out, utf8.RuneError) && !literalReplacement(v) {
		return "", ambiguous("%s has invalid UTF-8 or a lone surrogate, which parsers decode differently", what)
	}
	return out, nil
}

// literalReplacement reports whether a JSON string holds U+FFFD as such
// (UTF-8 or \ufffd) rather than as a decoder's replacement. It errs
// towards false: a string with a real U+FFFD and a lone surrogate too is
// refused, which no client sends.
func literalReplacement(v []byte) bool {
	if !utf8.Valid(v) {
		return false
	}
	for i := 0; i+1 < len(v); i++ {
		if v[i] == '\\' {
			if v[i+1] == 'u' && i+5 < len(v) {
				hex := strings.ToLower(string(v[i+2 : i+6]))
				if hex >= "d800" && hex <= "dfff" {
					return false // surrogates: a decoder may replace an unpaired one
				}
			}
			i++
		}
	}
	return true
}

// parseMessage reads one JSON-RPC message by scanning the members that
// anything decides on (no reflection, no copies but the strings it
// returns), and refuses it where a server could read them otherwise.
func parseMessage(b []byte) (Message, string, error) {
	msg := Message{Raw: b}
	if i := jsonscan.SkipSpace(b, 0); i >= len(b) || b[i] != '{' {
		return msg, "", errNotJSON
	}
	top, err := members(b, 0, "the message", topMembers)
	if err != nil {
		if !rpcShaped(b) {
			return msg, "", errNotJSON // some other JSON: no MCP module decides on it
		}
		return msg, "", err
	}
	msg.Top = Top{top[topJSONRPC], top[topID], top[topMethod], top[topParams], top[topResult], top[topError]}
	if s := top[topID]; s.End != 0 {
		msg.ID = json.RawMessage(b[s.Start:s.End])
	}
	if msg.Method, err = str(b, top[topMethod], "method"); err != nil {
		return msg, "", err
	}
	if !methods[msg.Method] && foldsToMethod(msg.Method) {
		// a server that matched methods without regard to case would run
		// what no rule decided on
		return msg, "", ambiguous("method %q is an MCP method in another case", msg.Method)
	}
	params := top[topParams]
	if params.End == 0 || b[params.Start] != '{' {
		return msg, "", nil
	}
	p, err := members(b, params.Start, "params", paramsMembers)
	if err != nil {
		return msg, "", err
	}
	if msg.RequestState, err = str(b, p[parState], "params.requestState"); err != nil {
		return msg, "", err
	}
	msg.Arguments = p[parArguments]
	name := func(s jsonscan.Span, what string) error {
		if s.End == 0 {
			return nil
		}
		n, err := str(b, s, what)
		if err == nil {
			msg.Names = append(msg.Names, n)
			msg.NameSpans = append(msg.NameSpans, s)
		}
		return err
	}
	switch msg.Method {
	case "tools/call", "prompts/get":
		msg.Kind = "tool"
		if msg.Method == "prompts/get" {
			msg.Kind = "prompt"
		}
		err = name(p[parName], "params.name")
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		msg.Kind = "resource"
		err = name(p[parURI], "params.uri")
	case "completion/complete":
		err = readRef(b, p[parRef], &msg, name)
	case "subscriptions/listen":
		err = readSubscriptions(b, p[parNotifications], &msg, name)
	case "tasks/get", "tasks/update", "tasks/cancel":
		// the tasks extension: Mcp-Name mirrors params.taskId
		if msg.TaskID, err = str(b, p[parTask], "params.taskId"); err == nil {
			msg.headerName = msg.TaskID
		}
	}
	if err != nil {
		return msg, "", err
	}
	if len(msg.Names) > 0 {
		msg.Name = msg.Names[0]
		if msg.Method != "completion/complete" && msg.Method != "subscriptions/listen" {
			msg.headerName = msg.Name
		}
	}
	version := ""
	if meta := p[parMeta]; meta.End != 0 {
		m, err := members(b, meta.Start, "params._meta", metaMembers)
		if err != nil {
			return msg, "", err
		}
		if m[metaVersion].End != 0 {
			version, _ = jsonscan.String(b[m[metaVersion].Start:m[metaVersion].End])
		}
	}
	return msg, version, nil
}

// foldsToMethod reports whether m equals an MCP method but for case.
func foldsToMethod(m string) bool {
	for known := range methods {
		if len(known) == len(m) && strings.EqualFold(known, m) {
			return true
		}
	}
	return false
}

// rpcShaped reports whether a JSON object that members refused is meant
// as a JSON-RPC message: a server could read a jsonrpc or method member in
// it (its names unescaped and case-folded).
func rpcShaped(b []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	for k := range m {
		if strings.EqualFold(k, "jsonrpc") || strings.EqualFold(k, "method") {
			return true
		}
	}
	return false
}

// readRef reads completion/complete's params.ref: a prompt by name or a
// resource template by URI.
func readRef(b []byte, s jsonscan.Span, msg *Message, name func(jsonscan.Span, string) error) error {
	if s.End == 0 {
		return nil
	}
	ref, err := members(b, s.Start, "params.ref", refMembers)
	if err != nil {
		return err
	}
	typ, err := str(b, ref[refType], "params.ref.type")
	if err != nil {
		return err
	}
	switch typ {
	case "ref/prompt":
		msg.Kind = "prompt"
		return name(ref[refName], "params.ref.name")
	case "ref/resource":
		msg.Kind = "resource"
		return name(ref[refURI], "params.ref.uri")
	}
	return nil
}

// readSubscriptions reads subscriptions/listen's
// params.notifications.resourceSubscriptions (MCP 2026-07-28).
func readSubscriptions(b []byte, s jsonscan.Span, msg *Message, name func(jsonscan.Span, string) error) error {
	if s.End == 0 {
		return nil
	}
	n, err := members(b, s.Start, "params.notifications", notifyMembers)
	if err != nil {
		return err
	}
	uris := n[notifyURIs]
	if uris.End == 0 {
		return nil
	}
	msg.Kind = "resource"
	if b[uris.Start] != '[' {
		return ambiguous("params.notifications.resourceSubscriptions is not an array")
	}
	if jsonscan.WalkArray(b, uris.Start, func(start int) int {
		end := jsonscan.SkipValue(b, start)
		if err == nil {
			err = name(jsonscan.Span{Start: start, End: end}, "a resourceSubscriptions entry")
		}
		return end
	}) < 0 && err == nil {
		err = ambiguous("params.notifications.resourceSubscriptions is not an array")
	}
	return err
}

// era is Era for a parsed request: its _meta version, where it has one,
// is in ProtocolVersion (metaVersion tells).
func era(q *Request, _ []byte) string {
	header := q.ProtocolVersion
	if q.metaVersion {
		header = ""
	}
	return Era(q.SessionID, header, q.metaVersion, q.Batch)
}

// headersMatch checks a 2026-07-28 request's Mcp-Method and Mcp-Name
// against its body (where present: mcp_stdio requires them).
func headersMatch(h http.Header, m Message) bool {
	if v := h.Get("Mcp-Method"); v != "" && v != m.Method {
		return false
	}
	if v := h.Get("Mcp-Name"); v != "" {
		v, ok := DecodeHeaderValue(v)
		if !ok || v != m.headerName {
			return false
		}
	}
	return true
}

// ProvidePlaceholders makes {http.mcp.method}, {http.mcp.name},
// {http.mcp.protocol_version}, {http.mcp.era}, {http.mcp.session_id},
// {http.mcp.batch} and {http.mcp.error} available on r's replacer; the
// body is parsed when one is first used. A batch's method and name are
// those of each of its messages, comma-separated, never the first alone;
// {http.mcp.batch} is its number of messages ("" outside a batch);
// {http.mcp.error} says why a POST is not a message rules can decide on
// ("" when it is one).
func ProvidePlaceholders(r *http.Request, maxBytes int64) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	if _, done := caddyhttp.GetVar(r.Context(), varKey+".placeholders").(bool); done {
		return
	}
	caddyhttp.SetVar(r.Context(), varKey+".placeholders", true)
	repl.Map(func(key string) (any, bool) {
		name, ok := strings.CutPrefix(key, "http.mcp.")
		if !ok {
			return nil, false
		}
		q := Get(r, maxBytes)
		switch name {
		case "method":
			return q.each(func(m Message) string { return m.Method }), true
		case "name":
			return q.each(func(m Message) string { return strings.Join(m.Names, ",") }), true
		case "protocol_version":
			return q.ProtocolVersion, true
		case "era":
			return q.Era, true
		case "session_id":
			return q.SessionID, true
		case "batch":
			if !q.Batch {
				return "", true
			}
			return strconv.Itoa(len(q.Messages)), true
		case "error":
			return q.Unreadable(), true
		}
		return nil, false
	})
}

// each joins what of every message says (one message: its own).
func (q *Request) each(what func(Message) string) string {
	if !q.Batch {
		return what(q.First())
	}
	parts := make([]string, len(q.Messages))
	for i, m := range q.Messages {
		parts[i] = what(m)
	}
	return strings.Join(parts, ",")
}

// Glob reports whether s matches pattern, where * matches any run of
// characters (slashes included: `file:///srv/*` covers the whole tree) and
// every other character matches itself.
func Glob[S ~string | ~[]byte](pattern string, s S) bool {
	star, mark := -1, 0
	p, i := 0, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Forget drops the kept parse of r (its body was rewritten): the next Get
// parses again.
func Forget(r *http.Request) {
	caddyhttp.SetVar(r.Context(), varKey, nil)
}

// ParseMaxSize reads a `max_size` Caddyfile argument: a size between 1
// byte and 1GiB (humanized: 512KiB, 4MB).
func ParseMaxSize(v string) (int64, error) {
	n, err := humanize.ParseBytes(v)
	if err != nil || n == 0 || n > 1<<30 {
		return 0, fmt.Errorf("max_size: %q is not a size between 1 byte and 1GiB", v)
	}
	return int64(n), nil
}
