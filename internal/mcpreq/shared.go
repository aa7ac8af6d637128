package mcpreq

import (
	"encoding/base64"
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// What mcp_auth and mcp_stdio must read the same way lives here once.

// Invokes reports whether method invokes one of a server's tools, prompts
// or resources by name (tools/call, prompts/get, resources/read): the
// messages the audit logs record, and the ones a server may answer with
// input_required (MRTR).
func Invokes(method string) bool {
	return method == "tools/call" || method == "prompts/get" || method == "resources/read"
}

// Header values that are not visible ASCII are sent as
// =?base64?<standard base64>?= (2026-07-28, Mcp-Name and x-mcp-header).
const (
	base64Prefix = "=?base64?"
	base64Suffix = "?="
)

// DecodeHeaderValue undoes that encoding; ok is false for a value that
// claims it and is not valid base64. Other values are returned unchanged.
func DecodeHeaderValue(v string) (string, bool) {
	if enc, ok := strings.CutPrefix(v, base64Prefix); ok {
		if enc, ok = strings.CutSuffix(enc, base64Suffix); ok {
			b, err := base64.StdEncoding.DecodeString(enc)
			if err != nil {
				return "", false
			}
			return string(b), true
		}
	}
	return v, true
}

// Principal is the key of a verified user: issuer and subject, so that two
// issuers' users with the same sub stay apart; "" without a subject.
func Principal(iss, sub string) string {
	if sub == "" {
		return ""
	}
	return iss + "\x00" + sub
}

// LimitKey is whom a request counts against for per-user limits: its
// principal, or else the client's IP (Caddy's client IP, which honours
// trusted_proxies; else the connection's address without its port).
func LimitKey(r *http.Request, principal string) string {
	if principal != "" {
		return principal
	}
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return "ip:" + ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}

// Era is the one rule for a message's era, used by mcp_auth, the mcp
// matcher, {http.mcp.era} and mcp_stdio alike: a session or a batch is the
// 2025 era's; a message whose params._meta carries the protocol version is
// 2026's, whatever the header says; so is one whose MCP-Protocol-Version
// header names a version the 2025 era does not know. A message with
// neither signal is 2025's (revisions before 2025-06-18 send no header: a
// sessionless 2025-03-26 message on a stateless route), an initialize
// among them.
func Era(sessionID, headerVersion string, metaVersion, batch bool) string {
	switch {
	case sessionID != "" || batch:
		return "2025"
	case metaVersion:
		return "2026"
	case headerVersion != "" && !LegacyVersion(headerVersion):
		return "2026"
	}
	return "2025"
}

// LegacyVersion reports whether v names a handshake-based (2025-era or
// earlier) protocol revision.
func LegacyVersion(v string) bool {
	return strings.HasPrefix(v, "2024-") || strings.HasPrefix(v, "2025-")
}

// EncodeHeaderValue is DecodeHeaderValue's inverse: a value of visible
// ASCII only (and not one that looks encoded) as it is, any other in
// base64.
func EncodeHeaderValue(v string) string {
	plain := !strings.HasPrefix(v, base64Prefix)
	for i := 0; i < len(v) && plain; i++ {
		plain = v[i] > 0x20 && v[i] < 0x7f || (v[i] == ' ' && i > 0 && i < len(v)-1)
	}
	if plain {
		return v
	}
	return base64Prefix + base64.StdEncoding.EncodeToString([]byte(v)) + base64Suffix
}

// ClientNamesVar is the Caddy var where mcp_tools, having rewritten a
// request for the server (a renamed tool or prompt), keeps the names the
// client used: one entry per message, a message's names comma-separated.
// mcp_stdio's audit records them beside the server's.
const ClientNamesVar = "caddymcp.mcp_tools.client_names"
