// Package mcpmatch provides the mcp request matcher (http.matchers.mcp):
// it matches MCP JSON-RPC requests by method and by the name of the tool,
// prompt or resource they address, so that any Caddy directive can apply
// to some MCP operations only.
//
// Caddyfile syntax:
//
//	@name mcp <method> [<name-glob...>]
//
// The method is a glob too (`tools/*`); names are globs where `*` matches
// any run of characters, slashes included (`file:///srv/*`). A batch
// (2025-03-26) matches when any of its requests matches. A 2026-07-28
// request whose Mcp-Method or Mcp-Name header contradicts its body matches
// nothing. The body is read within max_size and put back; the parse is
// kept for the request's other caddymcp modules, and the {http.mcp.*}
// placeholders become available. In CEL expressions:
// mcp('tools/call', 'write_*').
package mcpmatch

import (
	"errors"
	"fmt"
	"net/http"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types/ref"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

func init() {
	caddy.RegisterModule(MatchMCP{})
}

// MatchMCP matches MCP requests by JSON-RPC method and name.
type MatchMCP struct {
	// The JSON-RPC method, or a glob of methods (`tools/call`,
	// `resources/*`). Required.
	Method string `json:"method,omitempty"`

	// Globs of the names the request addresses: the tool (tools/call), the
	// prompt (prompts/get) or the resource URI (resources/read). Empty:
	// any name, and requests without one.
	Names []string `json:"names,omitempty"`

	// Match the POSTs whose body is no MCP message that a rule could
	// decide on: not JSON-RPC, larger than max_size, read two ways by
	// servers, or contradicted by its Mcp-Method / Mcp-Name headers (the
	// reason is {http.mcp.error}). Method and names are then not needed.
	// Deny with it: `@unreadable mcp { unreadable }` and `respond
	// @unreadable 400`.
	Unreadable bool `json:"unreadable,omitempty"`

	// The most of a body read to find the method, in bytes; a larger body
	// matches nothing. Default: 4 MiB.
	MaxSize int64 `json:"max_size,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MatchMCP) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.mcp",
		New: func() caddy.Module { return new(MatchMCP) },
	}
}

// Provision sets defaults.
func (m *MatchMCP) Provision(caddy.Context) error {
	if m.MaxSize == 0 {
		m.MaxSize = mcpreq.DefaultMaxBytes
	}
	return nil
}

// Validate checks the configuration.
func (m *MatchMCP) Validate() error {
	if m.Method == "" && !m.Unreadable {
		return errors.New("mcp matcher: a method is required")
	}
	if m.MaxSize < 0 {
		return errors.New("mcp matcher: max_size must not be negative")
	}
	return nil
}

// Match reports whether r is an MCP request that m matches.
func (m MatchMCP) Match(r *http.Request) bool {
	ok, _ := m.MatchWithError(r)
	return ok
}

// MatchWithError reports whether r is an MCP request that m matches. A
// POST it cannot read is an error, whatever the matcher guards, so that
// it is refused, never passed on (fail closed): a message that servers
// could read in more than one way (a member twice, escaped or in another
// case; a resource URI whose spellings the globs decide differently), one
// whose 2026-07-28 headers contradict it, and a JSON body that is invalid
// or beyond max_size (400, 413; handle_errors sees them).
func (m MatchMCP) MatchWithError(r *http.Request) (bool, error) {
	mcpreq.ProvidePlaceholders(r, m.MaxSize)
	q := mcpreq.Get(r, m.MaxSize)
	if m.Unreadable {
		return q.Unreadable() != "", nil
	}
	if q.Err != nil {
		if q.FailsClosed(r) {
			status := http.StatusBadRequest
			if mcpreq.IsTooLarge(q.Err) {
				status = http.StatusRequestEntityTooLarge
			}
			return false, caddyhttp.Error(status, fmt.Errorf("mcp matcher: %w", q.Err))
		}
		return false, nil
	}
	matched := false
	for _, msg := range q.Messages {
		ok, err := m.matches(msg)
		if err != nil {
			return false, caddyhttp.Error(http.StatusBadRequest, err)
		}
		matched = matched || ok
	}
	return matched, nil
}

func (m MatchMCP) matches(msg mcpreq.Message) (bool, error) {
	if !mcpreq.Glob(m.Method, msg.Method) {
		return false, nil
	}
	if len(m.Names) == 0 {
		return true, nil
	}
	anyGlob := func(name string) bool {
		for _, g := range m.Names {
			if mcpreq.Glob(g, name) {
				return true
			}
		}
		return false
	}
	if why := mcpreq.Disagreement(msg.Kind, msg.Names, anyGlob); why != "" {
		return false, fmt.Errorf("%w: %s by the mcp matcher", mcpreq.ErrAmbiguous, why)
	}
	for _, name := range msg.Names {
		if name != "" && anyGlob(name) {
			return true, nil
		}
	}
	return false, nil
}

// CELLibrary makes the matcher available in CEL expressions:
// mcp('tools/call', 'write_*', 'delete_*') (the method, then name globs).
func (MatchMCP) CELLibrary(caddy.Context) (cel.Library, error) {
	return caddyhttp.CELMatcherImpl(
		"mcp",
		"mcp_match_request_list",
		[]*cel.Type{cel.ListType(cel.StringType)},
		func(data ref.Val) (caddyhttp.RequestMatcherWithError, error) {
			v, err := data.ConvertToNative(stringSlice)
			if err != nil {
				return nil, err
			}
			list := v.([]string)
			if len(list) == 0 {
				return nil, errors.New("mcp matcher: a method is required")
			}
			m := MatchMCP{Method: list[0], Names: list[1:], MaxSize: mcpreq.DefaultMaxBytes}
			return m, nil
		},
	)
}

// Interface guards
var (
	_ caddy.Provisioner                 = (*MatchMCP)(nil)
	_ caddy.Validator                   = (*MatchMCP)(nil)
	_ caddyhttp.RequestMatcherWithError = (*MatchMCP)(nil)
	_ caddyhttp.CELLibraryProducer      = (*MatchMCP)(nil)
)
