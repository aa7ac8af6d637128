// Package caddymcp puts MCP servers on the web safely with Caddy. Importing
// it registers all of its modules:
//
//   - http.handlers.oauth_protected_resource (package metadata): OAuth 2.0
//     Protected Resource Metadata, RFC 9728;
//   - http.handlers.mcp_authorization_server (package mcpas): an OAuth 2.1
//     authorization server for MCP clients that logs users in upstream;
//   - http.handlers.mcp_auth (package mcpauth): bearer-JWT middleware per the
//     MCP authorization spec;
//   - http.handlers.mcp_stdio (package stdiobridge): a stdio MCP server served
//     as an MCP Streamable HTTP endpoint;
//   - http.handlers.mcp_aggregate (package mcpagg): several MCP servers
//     behind one endpoint, each a handler chain of its own;
//   - http.handlers.mcp_tools (package mcptools): curates what an MCP
//     route offers (tools, prompts, resources shown, renamed, overridden,
//     arguments fixed);
//   - http.matchers.mcp (package mcpmatch): matches MCP requests by method
//     and tool, prompt or resource name;
//   - http.reverse_proxy.selection_policies.mcp (package mcplb): sends each
//     request to the caddymcp instance that owns its session or round.
//
// Build Caddy with them: xcaddy build --with github.com/caddymcp/caddymcp
package caddymcp

import (
	_ "github.com/caddymcp/caddymcp/mcpagg"
	_ "github.com/caddymcp/caddymcp/mcpas"
	_ "github.com/caddymcp/caddymcp/mcpauth"
	_ "github.com/caddymcp/caddymcp/mcplb"
	_ "github.com/caddymcp/caddymcp/mcpmatch"
	_ "github.com/caddymcp/caddymcp/mcptools"
	_ "github.com/caddymcp/caddymcp/metadata"
	_ "github.com/caddymcp/caddymcp/stdiobridge"
)
