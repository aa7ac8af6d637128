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
	"io"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// DefaultMaxBytes bounds how much of a body is read to find the method.
const DefaultMaxBytes = 4 << 20

// Message is one JSON-RPC message of a request.
type Message struct {
	Method string
	Name   string // params.name (tools/call, prompts/get) or params.uri (resources/read)
	ID     json.RawMessage
}

// Request is what a request asks, as far as MCP is concerned.
type Request struct {
	Messages        []Message // one, or a batch's
	Batch           bool
	ProtocolVersion string // _meta (2026-07-28) or the MCP-Protocol-Version header
	Era             string // "2026" or "2025"
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
	errNotPOST   = errors.New("not a POST")
	errTooLarge  = errors.New("body larger than the bound")
	errNotJSON   = errors.New("body is not a JSON-RPC message")
	errMismatch  = errors.New("Mcp-Method or Mcp-Name header does not match the body")
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
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
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
	if q.Err == nil && q.Era == "2026" && !headersMatch(r.Header, q.First()) {
		q.Err = errMismatch
		q.Messages = nil
	}
	return q
}

type readCloser struct {
	io.Reader
	io.Closer
}

type wire struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
}

func parseBody(q *Request, body []byte) {
	trimmed := bytes.TrimSpace(body)
	var msgs []wire
	if len(trimmed) > 0 && trimmed[0] == '[' {
		q.Batch = true
		if json.Unmarshal(trimmed, &msgs) != nil || len(msgs) == 0 {
			q.Err = errNotJSON
			return
		}
	} else {
		var m wire
		if json.Unmarshal(trimmed, &m) != nil {
			q.Err = errNotJSON
			return
		}
		msgs = []wire{m}
	}
	for _, m := range msgs {
		msg := Message{Method: m.Method, ID: m.ID}
		var p struct {
			Name string `json:"name"`
			URI  string `json:"uri"`
			Meta struct {
				Version string `json:"io.modelcontextprotocol/protocolVersion"`
			} `json:"_meta"`
		}
		if len(m.Params) > 0 && m.Params[0] == '{' {
			_ = json.Unmarshal(m.Params, &p)
		}
		switch m.Method {
		case "tools/call", "prompts/get":
			msg.Name = p.Name
		case "resources/read", "resources/subscribe", "resources/unsubscribe":
			msg.Name = p.URI
		}
		if p.Meta.Version != "" && !q.Batch {
			q.ProtocolVersion = p.Meta.Version
		}
		q.Messages = append(q.Messages, msg)
	}
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
func Glob(pattern, s string) bool {
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
