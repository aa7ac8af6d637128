package mcpauth

// The audit log of refusals: for every tools/call, prompts/get and
// resources/read that mcp_auth refuses (no token, a bad token, missing
// scopes, a rate limit, a body the rules cannot read), one entry on
// http.handlers.mcp_auth.audit, beside mcp_stdio's entries for the
// operations it serves. Never the token, never the arguments.

import (
	"net"
	"net/http"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// auditRefused writes an entry for each audited message of a refused
// request; only, is the one message refused in a batch (nil: all).
func (h *Handler) auditRefused(r *http.Request, claims jwt.MapClaims, q *mcpreq.Request, only *mcpreq.Message, reason string) {
	if h.audit == nil {
		return
	}
	if q == nil {
		// an unauthenticated request: read at most 64 KiB of its body to
		// name it (a refusal must stay cheap)
		q = mcpreq.Get(r, 64<<10)
	}
	msgs := q.Messages
	if only != nil {
		msgs = []mcpreq.Message{*only}
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	iss, _ := claims["iss"].(string)
	sub, _ := claims["sub"].(string)
	clientID, _ := claims["client_id"].(string)
	for _, m := range msgs {
		if !mcpreq.Invokes(m.Method) {
			continue
		}
		h.audit.Info("mcp "+m.Method, zap.String("iss", iss), zap.String("sub", sub), zap.String("client_id", clientID),
			zap.String("remote_ip", remote), zap.String("route", r.Host+r.URL.Path), zap.String("era", q.Era),
			zap.String("method", m.Method), zap.String("name", m.Name), zap.ByteString("request_id", m.ID),
			zap.String("decision", "refused"), zap.String("reason", reason))
	}
}
