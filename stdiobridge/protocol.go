package stdiobridge

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	codeServerBusy              = -32000
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

// decodeMessage parses and checks one JSON-RPC message from a client.
func decodeMessage(b []byte) (*envelope, *rpcError) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, &rpcError{Code: codeParseError, Message: "parse error: " + err.Error()}
	}
	if e.JSONRPC != "2.0" {
		return &e, &rpcError{Code: codeInvalidRequest, Message: `invalid request: "jsonrpc" must be "2.0"`}
	}
	if e.ID != nil && !validID(e.ID) {
		return &e, &rpcError{Code: codeInvalidRequest, Message: "invalid request: id must be a string or a number"}
	}
	switch {
	case e.Method != "":
		if e.Result != nil || e.Error != nil {
			return &e, &rpcError{Code: codeInvalidRequest, Message: "invalid request: a request has no result or error"}
		}
	case e.ID == nil:
		return &e, &rpcError{Code: codeInvalidRequest, Message: "invalid request: neither method nor id"}
	case (e.Result == nil) == (e.Error == nil):
		return &e, &rpcError{Code: codeInvalidRequest, Message: "invalid response: exactly one of result and error"}
	}
	return &e, nil
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
