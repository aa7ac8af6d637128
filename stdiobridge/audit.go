package stdiobridge

// The audit log: one entry per tools/call, prompts/get and resources/read
// (and per input_required round of one), in either era, on its own logger
// (http.handlers.mcp_stdio.audit) so that Caddy's `log` can route it to a
// file of its own. Who (issuer, subject, client_id, client address), what
// (route, method, name, request id, era), and how it ended (outcome, error
// code, duration, child pid). Arguments only when asked (`audit_arguments
// hash` or `full`); never a token. Entries are collected under a session's
// lock and written after it is released (no lock across I/O).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// auditRecord is one audited operation, from request to outcome.
type auditRecord struct {
	logger    *zap.Logger
	iss, sub  string
	clientID  string
	remote    string
	route     string
	era       string
	method    string
	name      string
	id        json.RawMessage
	args      string // "", a SHA-256, or the arguments (audit_arguments)
	pid       int
	started   time.Time
	outcome   string // result, error, tool_error, input_required, cancelled
	errorCode int
}

func audited(method string) bool {
	return method == "tools/call" || method == "prompts/get" || method == "resources/read"
}

// newAudit starts a record for an audited request, nil for others.
func (h *Handler) newAudit(r *http.Request, era, method string, id, params json.RawMessage) *auditRecord {
	if h.audit == nil || !audited(method) {
		return nil
	}
	a := &auditRecord{logger: h.audit, era: era, method: method, id: append(json.RawMessage(nil), id...),
		started: time.Now(), route: r.Host + r.URL.Path}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		a.iss, _ = repl.GetString("http.auth.user.iss")
		a.sub, _ = repl.GetString("http.auth.user.id")
		a.clientID, _ = repl.GetString("http.auth.user.client_id")
	}
	a.remote, _, _ = net.SplitHostPort(r.RemoteAddr)
	var p struct {
		Name      string          `json:"name"`
		URI       string          `json:"uri"`
		Arguments json.RawMessage `json:"arguments"`
	}
	_ = json.Unmarshal(params, &p)
	a.name = p.Name
	if method == "resources/read" {
		a.name = p.URI
	}
	switch h.AuditArguments {
	case "hash":
		sum := sha256.Sum256(p.Arguments)
		a.args = "sha256:" + hex.EncodeToString(sum[:])
	case "full":
		a.args = string(p.Arguments)
	}
	return a
}

// settle records how the operation ended, from the answer (a JSON-RPC
// response in the child's or the client's form).
func (a *auditRecord) settle(answer []byte) {
	a.outcome, a.errorCode = outcomeOf(answer)
}

// outcomeOf reads how a JSON-RPC response ended: result, tool_error,
// input_required, or error with its code.
func outcomeOf(answer []byte) (string, int) {
	e, err := parseEnvelope(answer)
	switch {
	case err != nil:
		return "error", codeInternalError
	case e.Error != nil:
		var re struct {
			Code int `json:"code"`
		}
		_ = json.Unmarshal(e.Error, &re)
		return "error", re.Code
	case bytes.Contains(e.Result, []byte(`"input_required"`)):
		return "input_required", 0
	case bytes.Contains(e.Result, []byte(`"isError":true`)):
		return "tool_error", 0
	}
	return "result", 0
}

// write emits the entry (callers hold no lock).
func (a *auditRecord) write() {
	if a == nil {
		return
	}
	fields := []zap.Field{
		zap.String("iss", a.iss), zap.String("sub", a.sub), zap.String("client_id", a.clientID),
		zap.String("remote_ip", a.remote), zap.String("route", a.route), zap.String("era", a.era),
		zap.String("method", a.method), zap.String("name", a.name), zap.ByteString("request_id", a.id),
		zap.String("decision", "allowed"), zap.String("outcome", a.outcome),
		zap.Duration("duration", time.Since(a.started)),
	}
	if a.errorCode != 0 {
		fields = append(fields, zap.Int("error_code", a.errorCode))
	}
	if a.pid != 0 {
		fields = append(fields, zap.Int("pid", a.pid))
	}
	if a.args != "" {
		fields = append(fields, zap.String("arguments", a.args))
	}
	a.logger.Info("mcp "+a.method, fields...)
}
