package stdiobridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// Protocol versions the bridge serves, newest first. The Streamable HTTP
// transport differs only in details between them (batching in 2025-03-26,
// the protocol version header from 2025-06-18, priming events from
// 2025-11-25).
var supportedVersions = []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// defaultVersion is assumed when a client sends no MCP-Protocol-Version
// header (2025-06-18 transport spec, section 2.7).
const defaultVersion = "2025-03-26"

// JSON-RPC error codes.
const (
	codeParseError              = -32700
	codeInvalidRequest          = -32600
	codeMethodNotFound          = -32601
	codeInternalError           = -32603
	codeUnsupportedProtocolVers = -32022 // SEP-2575
)

// envelope is one JSON-RPC 2.0 message. Absent members are nil; a JSON
// null is the four bytes "null".
type envelope struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`

	raw    []byte // the message as received (valid JSON)
	idSpan span   // where the id is in raw, if it could be located
}

// parseEnvelope reads a valid JSON message: by scanning its top level
// where possible (members alias raw), else through encoding/json.
func parseEnvelope(raw []byte) (*envelope, error) {
	e := &envelope{raw: raw}
	t, ok := scanTop(raw)
	if !ok {
		if ambiguousMembers(raw) {
			return nil, errAmbiguous
		}
		if err := json.Unmarshal(raw, e); err != nil {
			return nil, err
		}
		return e, nil
	}
	if t.ambiguous {
		return nil, errAmbiguous
	}
	str := func(s span) (string, error) {
		v := raw[s.start:s.end]
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && bytes.IndexByte(v, '\\') < 0 {
			return string(v[1 : len(v)-1]), nil
		}
		var out string
		err := json.Unmarshal(v, &out)
		return out, err
	}
	var err error
	if t.jsonrpc.present() {
		if e.JSONRPC, err = str(t.jsonrpc); err != nil {
			return nil, fmt.Errorf(`"jsonrpc": %w`, err)
		}
	}
	if t.method.present() {
		if e.Method, err = str(t.method); err != nil {
			return nil, fmt.Errorf(`"method": %w`, err)
		}
	}
	if t.id.present() {
		e.ID = raw[t.id.start:t.id.end]
		e.idSpan = t.id
	}
	if t.params.present() {
		e.Params = raw[t.params.start:t.params.end]
	}
	if t.result.present() {
		e.Result = raw[t.result.start:t.result.end]
	}
	if t.err.present() {
		e.Error = raw[t.err.start:t.err.end]
	}
	return e, nil
}

var errAmbiguous = errors.New("a member (jsonrpc, id, method, params, result, error) appears twice or in another case")

// ambiguousMembers is the check of scanTop's ambiguous for messages it
// cannot scan (escaped member names): a member of interest twice, or under
// a name that equals one only when unescaped or case-folded.
func ambiguousMembers(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		key, _ := tok.(string)
		for _, m := range memberNames {
			if strings.EqualFold(key, m) {
				if key != m || seen[m] {
					return true
				}
				seen[m] = true
			}
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return false
}

// withID renders the message with another id, on one line.
func (e *envelope) withID(id []byte) []byte {
	if e.idSpan.present() {
		return oneLine(splice(e.raw, e.idSpan, id))
	}
	out := *e
	out.ID = id
	b, _ := json.Marshal(&out)
	return b
}

// line renders the message unchanged, on one line (stdio framing).
func (e *envelope) line() []byte {
	if e.raw != nil {
		return oneLine(e.raw)
	}
	b, _ := json.Marshal(e)
	return b
}

// oneLine compacts JSON that spans several lines.
func oneLine(b []byte) []byte {
	if bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

func (e *envelope) isRequest() bool      { return e.Method != "" && e.ID != nil }
func (e *envelope) isNotification() bool { return e.Method != "" && e.ID == nil }
func (e *envelope) isResponse() bool     { return e.Method == "" && e.ID != nil }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// envelopeOf is a client's message as mcpreq read it (the reading every
// rule and matcher decided on: no second parse), checked as JSON-RPC.
func envelopeOf(m mcpreq.Message) (*envelope, *rpcError) {
	b := m.Raw
	at := func(s jsonscan.Span) json.RawMessage {
		if s.End == 0 {
			return nil
		}
		return b[s.Start:s.End]
	}
	e := &envelope{raw: b, ID: m.ID, Method: m.Method, Params: at(m.Top.Params), Result: at(m.Top.Result), Error: at(m.Top.Error),
		idSpan: span{m.Top.ID.Start, m.Top.ID.End}}
	if v := at(m.Top.JSONRPC); v != nil {
		e.JSONRPC, _ = jsonscan.String(v) // not a string: "", refused below
	}
	return e, checkEnvelope(e)
}

// notRPC answers a body that mcpreq found to be no JSON-RPC message (not
// JSON, not an object, no member it could read): with what is wrong with
// it, in the words of the bridge's own decoder. It is never served, even
// where that decoder would take it.
func notRPC(w http.ResponseWriter, body []byte) {
	e, rerr := decodeMessage(bytes.TrimSpace(body))
	if rerr == nil {
		rerr = &rpcError{Code: codeInvalidRequest, Message: "invalid request: not a JSON-RPC message"}
	}
	var id json.RawMessage
	if e != nil && validID(e.ID) {
		id = e.ID
	}
	writeRPCError(w, http.StatusBadRequest, id, rerr)
}

// decodeMessage parses and checks one JSON-RPC message: the bridge's
// reading of what mcpreq did not read (notRPC's wording, tests).
func decodeMessage(b []byte) (*envelope, *rpcError) {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, &rpcError{Code: codeParseError, Message: "parse error: " + fmt.Sprint(err)}
	}
	e, err := parseEnvelope(b)
	if err != nil {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "invalid request: " + err.Error()}
	}
	return e, checkEnvelope(e)
}

// checkEnvelope checks a client's message against JSON-RPC 2.0.
func checkEnvelope(e *envelope) *rpcError {
	if e.JSONRPC != "2.0" {
		return &rpcError{Code: codeInvalidRequest, Message: `invalid request: "jsonrpc" must be "2.0"`}
	}
	if e.ID != nil && !validID(e.ID) {
		return &rpcError{Code: codeInvalidRequest, Message: "invalid request: id must be a string or a number"}
	}
	switch {
	case e.Method != "":
		if e.Result != nil || e.Error != nil {
			return &rpcError{Code: codeInvalidRequest, Message: "invalid request: a request has no result or error"}
		}
	case e.ID == nil:
		return &rpcError{Code: codeInvalidRequest, Message: "invalid request: neither method nor id"}
	case (e.Result == nil) == (e.Error == nil):
		return &rpcError{Code: codeInvalidRequest, Message: "invalid response: exactly one of result and error"}
	}
	return nil
}

// validID accepts JSON strings and numbers (JSON-RPC 2.0 section 4; null
// ids are reserved for errors about unparseable requests).
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	switch c := id[0]; {
	case c == '"':
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

// idKey is the comparable form of a raw id.
func idKey(id json.RawMessage) string {
	if bytes.ContainsAny(id, " \t\r\n") {
		var buf bytes.Buffer
		if json.Compact(&buf, id) == nil {
			return buf.String()
		}
	}
	return string(id)
}

// encodeError renders a JSON-RPC error response.
func encodeError(id json.RawMessage, e *rpcError) []byte {
	if id == nil {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *rpcError       `json:"error"`
	}{"2.0", id, e})
	return b
}

// writeRPCError answers an HTTP request with a JSON-RPC error body.
func writeRPCError(w http.ResponseWriter, status int, id json.RawMessage, e *rpcError) {
	body := encodeError(id, e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// accepts reports whether the Accept header values allow the media types.
func accepts(values []string) (jsonOK, sseOK bool) {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch mt {
			case "application/json":
				jsonOK = true
			case "text/event-stream":
				sseOK = true
			case "*/*":
				jsonOK, sseOK = true, true
			case "application/*":
				jsonOK = true
			case "text/*":
				sseOK = true
			}
		}
	}
	return
}

func isJSONContentType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	return err == nil && mt == "application/json"
}

func versionSupported(v string) bool { return slices.Contains(supportedVersions, v) }

// unsupportedVersion is the SEP-2575 error for a client that probes with a
// newer protocol version: it lists what the bridge supports so the client
// falls back to initialize.
func unsupportedVersion(requested string) *rpcError {
	return &rpcError{
		Code:    codeUnsupportedProtocolVers,
		Message: "unsupported protocol version " + strconv.Quote(requested),
		Data: map[string]any{
			"supported": supportedVersions,
			"requested": requested,
		},
	}
}
