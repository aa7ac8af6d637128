package stdiobridge

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpccode"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Who a request is, as mcp_auth verified it (read from the replacer):
// used by both servers, kept apart from the Handler's own code so that a
// request's path enters each file once.

// principal is whom a session is bound to: the issuer and subject that
// mcp_auth verified ("" without authentication; mcpreq.Principal).
func principal(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	sub, _ := repl.GetString("http.auth.user.id")
	iss, _ := repl.GetString("http.auth.user.iss")
	return mcpreq.Principal(iss, sub)
}

// tokenExpiry is when the token that authenticated r expires (zero if none).
func tokenExpiry(r *http.Request) time.Time {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return time.Time{}
	}
	v, ok := repl.GetString("http.auth.claims.exp")
	if !ok || v == "" {
		return time.Time{}
	}
	exp, err := strconv.ParseFloat(v, 64)
	if err != nil || exp <= 0 || exp > 1e11 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// userForLog renders a principal for logs (issuer and subject).
func userForLog(p string) string { return strings.Replace(p, "\x00", " ", 1) }

// refuse answers an initialize (or stateless request) that reserve
// refused, with the status that says why.
func (h *Handler) refuse(w http.ResponseWriter, id json.RawMessage, why refusal, user string) {
	switch why {
	case refusedPerUser:
		// no idle session to end: say when one of the user's frees
		w.Header().Set("Retry-After", strconv.Itoa(int(h.table.retryAfter(user).Round(time.Second)/time.Second)))
		h.limitLog("max_sessions_per_user reached; refused", zap.String("user", userForLog(user)),
			zap.Int("max_sessions_per_user", h.MaxSessionsPerUser))
		writeRPCError(w, http.StatusTooManyRequests, id, &rpcError{Code: rpccode.RateLimited, Message: "Too Many Requests: too many sessions for this user"})
	case refusedRate:
		w.Header().Set("Retry-After", "1")
		h.limitLog("initialize_rate exceeded; refused", zap.String("user", userForLog(user)),
			zap.Int("initialize_rate", h.InitializeRate))
		writeRPCError(w, http.StatusTooManyRequests, id, &rpcError{Code: rpccode.RateLimited, Message: "Too Many Requests: sessions started too fast"})
	default:
		w.Header().Set("Retry-After", "5")
		h.limitLog("max_sessions reached or route ending; refused", zap.Int("max_sessions", h.MaxSessions))
		writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: rpccode.Unavailable, Message: "Service Unavailable: too many sessions, try again later"})
	}
}
