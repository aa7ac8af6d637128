package stdiobridge

// MCP 2026-07-28 request metadata headers (SEP-2243): Mcp-Method and
// Mcp-Name mirror the body and must match it; Mcp-Param-{Name} mirrors the
// tool arguments whose inputSchema property carries "x-mcp-header". The
// checks follow go-sdk's mcp/streamable_headers.go (v1.8.0), which the
// conformance suite holds as the reference.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

const ()

// paramBinding is one x-mcp-header annotation: the path of properties to
// the argument, and the header name part.
type paramBinding struct {
	path   []string
	header string
}

type schemaProp struct {
	Type       json.RawMessage       `json:"type"`
	XMCPHeader json.RawMessage       `json:"x-mcp-header"`
	Properties map[string]schemaProp `json:"properties"`
}

// headerBindings reads a tool's inputSchema for x-mcp-header annotations
// reachable through "properties" only.
func headerBindings(inputSchema json.RawMessage) []paramBinding {
	var s schemaProp
	if len(inputSchema) == 0 || json.Unmarshal(inputSchema, &s) != nil {
		return nil
	}
	var out []paramBinding
	var walk func(props map[string]schemaProp, prefix []string)
	walk = func(props map[string]schemaProp, prefix []string) {
		for name, p := range props {
			path := append(append([]string(nil), prefix...), name)
			var h string
			if json.Unmarshal(p.XMCPHeader, &h) == nil && h != "" {
				out = append(out, paramBinding{path: path, header: h})
			}
			if len(p.Properties) > 0 && len(path) < 32 {
				walk(p.Properties, path)
			}
		}
	}
	walk(s.Properties, nil)
	return out
}

// nameOf is the body value Mcp-Name mirrors: params.name or params.uri.
func nameOf(method string, params map[string]json.RawMessage) (string, bool) {
	var key string
	switch method {
	case "tools/call", "prompts/get":
		key = "name"
	case "resources/read":
		key = "uri"
	case "tasks/get", "tasks/update", "tasks/cancel":
		key = "taskId" // the tasks extension: Mcp-Name carries the task id
	default:
		return "", false
	}
	v, _ := jsonscan.String(params[key]) // "" unless a string
	return v, true
}

// checkStandardHeaders validates Mcp-Method and Mcp-Name against the body.
func checkStandardHeaders(h http.Header, method string, params map[string]json.RawMessage) error {
	m := h.Get("Mcp-Method")
	if m == "" {
		return fmt.Errorf("missing required Mcp-Method header")
	}
	if m != method {
		return fmt.Errorf("header mismatch: Mcp-Method header value %q does not match body value %q", m, method)
	}
	body, named := nameOf(method, params)
	if !named {
		return nil
	}
	raw := h.Get("Mcp-Name")
	if raw == "" {
		return fmt.Errorf("missing required Mcp-Name header for method %q", method)
	}
	name, ok := mcpreq.DecodeHeaderValue(raw)
	if !ok {
		return fmt.Errorf("header mismatch: Mcp-Name header carries invalid Base64")
	}
	if !validHeaderChars(raw) {
		return fmt.Errorf("header mismatch: Mcp-Name header contains invalid characters")
	}
	if name != body {
		return fmt.Errorf("header mismatch: Mcp-Name header value %q does not match body value %q", name, body)
	}
	return nil
}

// checkParamHeaders validates the Mcp-Param-* headers of a tools/call
// against its arguments, for the tool's x-mcp-header bindings.
func checkParamHeaders(h http.Header, params map[string]json.RawMessage, bindings []paramBinding) error {
	if len(bindings) == 0 {
		return nil
	}
	var args map[string]json.RawMessage
	_ = json.Unmarshal(params["arguments"], &args)
	for _, b := range bindings {
		full := "Mcp-Param-" + b.header
		hv := h.Get(full)
		arg, found := lookupArg(args, b.path)
		if !found || string(arg) == "null" {
			if hv != "" {
				return fmt.Errorf("header mismatch: unexpected %s header for absent or null parameter %q", full, strings.Join(b.path, "."))
			}
			continue
		}
		if hv == "" {
			return fmt.Errorf("header mismatch: missing %s header for parameter %q", full, strings.Join(b.path, "."))
		}
		if !validHeaderChars(hv) {
			return fmt.Errorf("header mismatch: %s header contains invalid characters", full)
		}
		decoded, ok := mcpreq.DecodeHeaderValue(hv)
		if !ok {
			return fmt.Errorf("header mismatch: %s header contains invalid Base64 encoding", full)
		}
		if !primitiveEqual(decoded, arg) {
			return fmt.Errorf("header mismatch: %s header value %q does not match body value", full, hv)
		}
	}
	return nil
}

func lookupArg(args map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	cur, ok := args[path[0]]
	for _, part := range path[1:] {
		if !ok {
			return nil, false
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(cur, &obj) != nil {
			return nil, false
		}
		cur, ok = obj[part]
	}
	return cur, ok
}

// primitiveEqual compares a decoded header value with a JSON argument:
// strings exactly, booleans as true/false, integers numerically (within
// JavaScript's safe range).
func primitiveEqual(header string, arg json.RawMessage) bool {
	var v any
	if json.Unmarshal(arg, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case string:
		return header == v
	case bool:
		return header == strconv.FormatBool(v)
	case float64:
		const safe = 1<<53 - 1
		if v != math.Trunc(v) || v > safe || v < -safe {
			return false
		}
		n, err := strconv.ParseFloat(header, 64)
		return err == nil && n == v
	}
	return false
}

// validHeaderChars: visible ASCII, space and tab (RFC 9110 field values).
func validHeaderChars(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return false
		}
	}
	return true
}
