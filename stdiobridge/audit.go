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
	"strconv"
	"time"

	"github.com/caddymcp/caddymcp/internal/jsonscan"
	"github.com/caddymcp/caddymcp/internal/mcpreq"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
	exposedAs string // the name the client used, where mcp_tools renamed it
	id        json.RawMessage
	args      string // "", a SHA-256, or the arguments (audit_arguments)
	pid       int
	started   time.Time
	outcome   string // result, error, tool_error, input_required, cancelled
	errorCode int
	exitCause string // the sandbox limit that ended the server (memory, cpu, file_size)
	taskID    string // the task the call became (tasks.go)
	taskEvent string // a step of the task's life: created, input_required, completed, failed, cancelled, expired, evicted
}

// newAudit starts a record for an audited request, nil for others.
func (h *Handler) newAudit(r *http.Request, era, method string, id, params json.RawMessage) *auditRecord {
	if h.audit == nil || !mcpreq.Invokes(method) {
		return nil
	}
	a := &auditRecord{logger: h.audit, era: era, method: method, id: append(json.RawMessage(nil), id...),
		started: time.Now(), route: h.cmdLabel}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		a.iss, _ = repl.GetString("http.auth.user.iss")
		a.sub, _ = repl.GetString("http.auth.user.id")
		a.clientID, _ = repl.GetString("http.auth.user.client_id")
	}
	// the client as Caddy determined it (trusted_proxies included), as the limits do
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		a.remote = ip
	} else {
		a.remote, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	// the request was validated as JSON; members are read in place
	key := "name"
	if method == "resources/read" {
		key = "uri"
	}
	if v := member(params, key); v != nil {
		a.name, _ = jsonscan.String(v)
	}
	if names, ok := caddyhttp.GetVar(r.Context(), mcpreq.ClientNamesVar).([]string); ok && len(names) == 1 && names[0] != a.name {
		a.exposedAs = names[0]
	}
	switch h.AuditArguments {
	case "hash":
		sum := sha256.Sum256(member(params, "arguments"))
		a.args = "sha256:" + hex.EncodeToString(sum[:])
	case "full":
		a.args = string(member(params, "arguments"))
	}
	return a
}

// settle records how the operation ended, from the child's answer.
func (a *auditRecord) settle(e *envelope) {
	a.outcome, a.errorCode = outcomeOfEnvelope(e.Result, e.Error)
}

// outcomeOf reads how a JSON-RPC response ended: result, tool_error,
// input_required, or error with its code.
func outcomeOf(answer []byte) (string, int) {
	if v := member(answer, "result"); v != nil {
		return outcomeOfEnvelope(v, nil)
	}
	if v := member(answer, "error"); v != nil {
		return outcomeOfEnvelope(nil, v)
	}
	return "error", codeInternalError
}

// outcomeOfEnvelope is outcomeOf on a response's result or error member.
func outcomeOfEnvelope(result, rpcErr []byte) (string, int) {
	switch {
	case rpcErr != nil:
		code, _ := strconv.Atoi(string(member(rpcErr, "code")))
		return "error", code
	case result == nil:
		return "error", codeInternalError
	case bytes.Contains(result, []byte(`"input_required"`)):
		return "input_required", 0
	case bytes.Contains(result, []byte(`"isError":true`)):
		return "tool_error", 0
	}
	return "result", 0
}

// member is the value of an object's member, nil where it is absent.
func member(obj []byte, name string) []byte {
	v, found, ok := jsonscan.Find(obj, name)
	if !ok { // escaped names, a member twice: as encoding/json reads it
		var m map[string]json.RawMessage
		if json.Unmarshal(obj, &m) != nil {
			return nil
		}
		return m[name]
	}
	if !found {
		return nil
	}
	return obj[v.Start:v.End]
}

// write emits the entry (callers hold no lock).
func (a *auditRecord) write() {
	if a == nil {
		return
	}
	fields := make([]zap.Field, 0, 15)
	fields = append(fields,
		zap.String("iss", a.iss), zap.String("sub", a.sub), zap.String("client_id", a.clientID),
		zap.String("remote_ip", a.remote), zap.String("route", a.route), zap.String("era", a.era),
		zap.String("method", a.method), zap.String("name", a.name), zap.ByteString("request_id", a.id),
		zap.String("decision", "allowed"), zap.String("outcome", a.outcome),
		zap.Duration("duration", time.Since(a.started)),
	)
	if a.exposedAs != "" {
		fields = append(fields, zap.String("exposed_as", a.exposedAs))
	}
	if a.errorCode != 0 {
		fields = append(fields, zap.Int("error_code", a.errorCode))
	}
	if a.pid != 0 {
		fields = append(fields, zap.Int("pid", a.pid))
	}
	if a.exitCause != "" {
		fields = append(fields, zap.String("exit_cause", a.exitCause))
	}
	if a.args != "" {
		fields = append(fields, zap.String("arguments", a.args))
	}
	if a.taskID != "" {
		fields = append(fields, zap.String("task_id", a.taskID), zap.String("task_event", a.taskEvent))
	}
	a.logger.Info("mcp "+a.method, fields...)
}
