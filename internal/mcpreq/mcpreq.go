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
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

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
	Name   string // params.name (tools/call, prompts/get) or params.uri (resources/read)
	ID     json.RawMessage
	// RequestState is params.requestState of a 2026-07-28 retry (the
	// selection policy routes it to the instance that issued it).
	RequestState string
}

// Request is what a request asks, as far as MCP is concerned.
type Request struct {
	Messages        []Message // one, or a batch's
	Batch           bool
	ID              json.RawMessage // the id of a single message (kept when Err is set, for the error's id)
	ProtocolVersion string          // _meta (2026-07-28) or the MCP-Protocol-Version header
	Era             string          // "2026" or "2025"
	SessionID       string
	// Err says why the body is not an MCP request (not POST, not JSON-RPC,
	// too large, headers that contradict the body); then Messages is empty.
	Err error
}

// First is the first message (the only one outside a batch).
func (q *Request) First() Message {
	if len(q.Messages) == 0 {
		return Message{}
	}
	return q.Messages[0]
}

var (
	errNotPOST  = errors.New("not a POST")
	errTooLarge = errors.New("body larger than the bound")
	errNotJSON  = errors.New("body is not a JSON-RPC message")
	// ErrMismatch: a 2026-07-28 request's Mcp-Method or Mcp-Name header
	// contradicts its body (answered with -32020 HeaderMismatch).
	ErrMismatch  = errors.New("header mismatch: the Mcp-Method or Mcp-Name header does not match the body")
	errAmbiguous = errors.New("a member appears twice or under an escaped name")
	errReadError = errors.New("body could not be read")
)

const varKey = "caddymcp.mcp_request"

// Get returns the parse of r, parsing it (once) if no module did yet.
func Get(r *http.Request, maxBytes int64) *Request {
	if q, ok := caddyhttp.GetVar(r.Context(), varKey).(*Request); ok && q != nil {
		return q
	}
	q := parse(r, maxBytes)
	caddyhttp.SetVar(r.Context(), varKey, q)
	return q
}

func parse(r *http.Request, maxBytes int64) *Request {
	q := &Request{SessionID: r.Header.Get("Mcp-Session-Id"), ProtocolVersion: r.Header.Get("Mcp-Protocol-Version")}
	if r.Method != http.MethodPost || r.Body == nil {
		q.Err = errNotPOST
		q.Era = era(q, nil)
		return q
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
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
		parseBody(q, body)
	}
	q.Era = era(q, body)
	if !q.Batch {
		q.ID = q.First().ID
	}
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
		q.Err = errNotJSON
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
		msg, version, ok := parseMessage(trimmed[sp.Start:sp.End])
		if !ok {
			q.Err, q.Messages = errAmbiguous, nil
			return
		}
		if version != "" && !q.Batch {
			q.ProtocolVersion = version
		}
		q.Messages = append(q.Messages, msg)
	}
}

// parseMessage reads one JSON-RPC message by scanning it once (no
// reflection, no copies but the strings it returns). A member it reads
// twice, or under an escaped or invalid UTF-8 name, makes the message
// ambiguous: parsers differ on which one counts, so no rule may trust it.
func parseMessage(b []byte) (Message, string, bool) {
	var msg Message
	var method, id, params jsonscan.Span
	bad := false
	once := func(s *jsonscan.Span, start int) int {
		if s.End != 0 {
			bad = true
		}
		end := jsonscan.SkipValue(b, start)
		*s = jsonscan.Span{Start: start, End: end}
		return end
	}
	if jsonscan.WalkObject(b, 0, func(name []byte, start int) int {
		switch string(name) {
		case "method":
			return once(&method, start)
		case "id":
			return once(&id, start)
		case "params":
			return once(&params, start)
		}
		return -1
	}) < 0 || bad {
		return Message{}, "", false
	}
	if method.End != 0 {
		msg.Method, _ = jsonscan.String(b[method.Start:method.End])
	}
	if id.End != 0 {
		msg.ID = json.RawMessage(b[id.Start:id.End])
	}
	if params.End == 0 || b[params.Start] != '{' {
		return msg, "", true
	}
	key := ""
	switch msg.Method {
	case "tools/call", "prompts/get":
		key = "name"
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		key = "uri"
	}
	var name, meta, version, state jsonscan.Span
	if jsonscan.WalkObject(b, params.Start, func(n []byte, start int) int {
		switch {
		case key != "" && string(n) == key:
			return once(&name, start)
		case string(n) == "requestState":
			return once(&state, start)
		case string(n) == "_meta":
			if b[start] != '{' {
				return -1
			}
			end := once(&meta, start)
			return end
		}
		return -1
	}) < 0 || bad {
		return Message{}, "", false
	}
	if name.End != 0 {
		msg.Name, _ = jsonscan.String(b[name.Start:name.End])
	}
	if state.End != 0 {
		msg.RequestState, _ = jsonscan.String(b[state.Start:state.End])
	}
	if meta.End != 0 {
		if jsonscan.WalkObject(b, meta.Start, func(n []byte, start int) int {
			if string(n) == "io.modelcontextprotocol/protocolVersion" {
				return once(&version, start)
			}
			return -1
		}) < 0 || bad {
			return Message{}, "", false
		}
	}
	v := ""
	if version.End != 0 {
		v, _ = jsonscan.String(b[version.Start:version.End])
	}
	return msg, v, true
}

// era: a session, an initialize or a batch is the 2025 era's; a request
// carrying the 2026 envelope (or a version the 2025 era does not know)
// the 2026 era's; without either, a sessionless message is 2026's too (as
// mcp_stdio decides).
func era(q *Request, body []byte) string {
	if q.SessionID != "" || q.Batch {
		return "2025"
	}
	v := q.ProtocolVersion
	if v != "" && !strings.HasPrefix(v, "2024-") && !strings.HasPrefix(v, "2025-") {
		return "2026"
	}
	if q.First().Method == "initialize" || q.Err == errNotPOST {
		return "2025"
	}
	return "2026"
}

// headersMatch checks a 2026-07-28 request's Mcp-Method and Mcp-Name
// against its body (where present: mcp_stdio requires them).
func headersMatch(h http.Header, m Message) bool {
	if v := h.Get("Mcp-Method"); v != "" && v != m.Method {
		return false
	}
	if v := h.Get("Mcp-Name"); v != "" {
		if enc, ok := strings.CutPrefix(v, "=?base64?"); ok {
			if enc, ok = strings.CutSuffix(enc, "?="); ok {
				b, err := base64.StdEncoding.DecodeString(enc)
				if err != nil {
					return false
				}
				v = string(b)
			}
		}
		if v != m.Name {
			return false
		}
	}
	return true
}

// ProvidePlaceholders makes {http.mcp.method}, {http.mcp.name},
// {http.mcp.protocol_version}, {http.mcp.era} and {http.mcp.session_id}
// available on r's replacer; the body is parsed when one is first used.
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
			return q.First().Method, true
		case "name":
			return q.First().Name, true
		case "protocol_version":
			return q.ProtocolVersion, true
		case "era":
			return q.Era, true
		case "session_id":
			return q.SessionID, true
		}
		return nil, false
	})
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
