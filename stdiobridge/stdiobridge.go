// Package stdiobridge provides the mcp_stdio handler: it runs a stdio MCP
// server (npx …, uvx …, any binary) as child processes and serves it as an
// MCP Streamable HTTP endpoint (MCP 2025-11-25, also serving 2025-06-18 and
// 2025-03-26 clients).
//
// Caddyfile syntax:
//
//	mcp_stdio [<matcher>] {
//		command <program> [<args...>]
//		env <NAME> <value>
//		inherit_env <NAME...>
//		dir <path>
//		session_idle_timeout <duration>
//		max_sessions <n>
//		stateless
//		shutdown_timeout <duration>
//		allowed_origins <origin...>
//		max_message_size <size>
//		prewarm <n>
//		max_sessions_per_user <n>
//		initialize_rate <n>
//		allowed_hosts <host...>
//	}
package stdiobridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves a stdio MCP server as an MCP Streamable HTTP endpoint.
//
// Each session (started by an `initialize` request) gets its own child
// process, started in its own process group; DELETE, idle expiry, a removed
// or changed route and Caddy's stop end it: stdin is closed, then the group
// gets SIGTERM, then SIGKILL after `shutdown_timeout`. With `stateless`,
// every POST gets a fresh child that is ended after the answer.
//
// Requests are checked as the transport spec asks (Accept, Content-Type,
// MCP-Protocol-Version, Mcp-Session-Id) and for DNS rebinding (Host and
// Origin). Answers to requests come as SSE streams with event ids; a client
// resumes a broken stream with Last-Event-ID. Sessions are bound to the
// principal that mcp_auth authenticated ({http.auth.user.iss} and
// {http.auth.user.id}): another principal's request with the same session
// id gets 404.
//
// The child's environment holds only `inherit_env` variables of Caddy's own
// environment plus `env` entries, whose values may use placeholders resolved
// when the session starts (e.g. {http.auth.user.id}).
type Handler struct {
	// The program to run, found in PATH if it has no slash. Required.
	Command string `json:"command,omitempty"`

	// Arguments of the program.
	Args []string `json:"args,omitempty"`

	// Environment variables set for the child. Values may use placeholders,
	// resolved per session when the child starts.
	Env map[string]string `json:"env,omitempty"`

	// Names of Caddy's environment variables the child inherits, in
	// addition to PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_ALL, LC_CTYPE,
	// TZ and TMPDIR (always inherited), e.g. HTTPS_PROXY or
	// NODE_EXTRA_CA_CERTS.
	InheritEnv []string `json:"inherit_env,omitempty"`

	// Working directory of the child. Default: Caddy's.
	Dir string `json:"dir,omitempty"`

	// A session without a client request for this long is ended, even
	// while a GET stream is open. Default: 30m.
	SessionIdleTimeout caddy.Duration `json:"session_idle_timeout,omitempty"`

	// At most this many sessions (and stateless children) at once; beyond
	// it, initialize gets 503 with Retry-After. Each session is a process
	// (10 MiB and more), so the default is what a small machine holds:
	// 100.
	MaxSessions int `json:"max_sessions,omitempty"`

	// At most this many of them for one principal (the issuer and subject
	// that mcp_auth verified; without authentication, the client IP as
	// Caddy determines it, trusted_proxies included); beyond it, 429.
	// Default: a quarter of max_sessions (at least 1).
	MaxSessionsPerUser int `json:"max_sessions_per_user,omitempty"`

	// New sessions one principal may start per second (bursts of twice
	// that); beyond it, initialize gets 429 with Retry-After. Default: 10.
	InitializeRate int `json:"initialize_rate,omitempty"`

	// Start one child per request instead of one per session; GET and
	// DELETE get 405.
	Stateless bool `json:"stateless,omitempty"`

	// How long each step of ending a child waits (stdin closed, SIGTERM)
	// before the next (SIGTERM, SIGKILL). Default: 5s.
	ShutdownTimeout caddy.Duration `json:"shutdown_timeout,omitempty"`

	// Origins allowed besides the request's own (and, on a loopback
	// listener, loopback origins).
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// Host names this endpoint answers to (DNS-rebinding protection on any
	// listener): the Host header, and the host of an Origin not listed in
	// allowed_origins, must be one of them; `*.example.com` matches one
	// label. In a Caddyfile the default is the site's own host names, if
	// it has any. Empty: any Host (on a loopback listener, loopback names
	// only).
	AllowedHosts []string `json:"allowed_hosts,omitempty"`

	// Largest JSON-RPC message accepted in either direction, in bytes.
	// Default: 4 MiB.
	MaxMessageSize int `json:"max_message_size,omitempty"`

	// Keep this many children started and waiting for a session, so that
	// initialize does not wait for the server's start-up. They are started
	// when the server gets its first connection (never by `caddy
	// validate`), refilled in the background, count toward max_sessions,
	// and end with the route. Not with `stateless` or with placeholders in
	// `env`.
	Prewarm int `json:"prewarm,omitempty"`

	// How long a child's question to a 2026-07-28 client (an
	// input_required round: elicitation, sampling, roots) waits for the
	// client's retry. The child keeps the call open meanwhile, and serves
	// no other call that may ask; after it, the child's question is
	// answered with an error and its call cancelled. Default: 5m.
	InputTimeout caddy.Duration `json:"input_timeout,omitempty"`

	// ttlMs on the list and read results (and server/discover) that
	// 2026-07-28 clients get: how long they may reuse one. A stdio server
	// announces changes on subscriptions/listen streams, not in its
	// results, so the default is 0 (re-fetch when needed).
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// What the stdio server speaks: "auto" (the default) asks a throwaway
	// sibling process server/discover once per process config, "modern"
	// (2026-07-28: requests pass through) or "legacy" (2025: the bridge
	// does the handshake and translates) skip the probe.
	ChildEra string `json:"child_era,omitempty"`

	table        *table
	perRequest   bool // the process config depends on the request: one pool per principal
	poolKey      string
	gen          uint64 // this config's generation (table.publish)
	cfg          *settings
	inherited    []string
	logger       *zap.Logger
	shutdown     chan struct{}
	shutdownOnce *sync.Once
}

// generations numbers provisioned handlers, so that a table takes the
// settings of the newest config that runs.
var generations atomic.Uint64

var defaultInheritEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

// resumeGrace is how long a request whose stream broke stays alive for a
// client that can resume (2025-11-25) before it is cancelled.
const resumeGrace = 30 * time.Second

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_stdio",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and joins the session table of this process
// configuration. It starts no process and changes nothing a running config
// uses: the table takes this handler's settings once its config runs.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.shutdown = make(chan struct{})
	h.shutdownOnce = new(sync.Once)
	if h.SessionIdleTimeout == 0 {
		h.SessionIdleTimeout = caddy.Duration(30 * time.Minute)
	}
	if h.ShutdownTimeout == 0 {
		h.ShutdownTimeout = caddy.Duration(5 * time.Second)
	}
	if h.MaxSessions == 0 {
		h.MaxSessions = 100
	}
	if h.MaxSessionsPerUser == 0 {
		h.MaxSessionsPerUser = max(1, h.MaxSessions/4)
	}
	if h.InitializeRate == 0 {
		h.InitializeRate = 10
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = 4 << 20
	}
	if h.InputTimeout == 0 {
		h.InputTimeout = caddy.Duration(5 * time.Minute)
	}
	for _, v := range h.Env {
		if strings.Contains(v, "{") {
			h.perRequest = true
		}
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if _, err := exec.LookPath(h.Command); err != nil {
		h.logger.Warn("command not found; sessions will fail to start until it is there",
			zap.String("command", h.Command), zap.Error(err))
	}
	for _, name := range slices.Concat(defaultInheritEnv, h.InheritEnv) {
		if v, ok := os.LookupEnv(name); ok && !slices.ContainsFunc(h.inherited, func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
			h.inherited = append(h.inherited, name+"="+v)
		}
	}
	h.cfg = &settings{
		idleTimeout:     time.Duration(h.SessionIdleTimeout),
		shutdownTimeout: time.Duration(h.ShutdownTimeout),
		maxSessions:     h.MaxSessions,
		maxPerUser:      h.MaxSessionsPerUser,
		initRate:        float64(h.InitializeRate),
		maxMessageSize:  h.MaxMessageSize,
		writeTimeout:    30 * time.Second,
		prewarm:         h.Prewarm,
		inputTimeout:    time.Duration(h.InputTimeout),
		cacheTTL:        time.Duration(h.CacheTTL),
	}
	h.gen = generations.Add(1)
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	h.poolKey = h.tableKey(srv)
	val, _, err := tables.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newTable(h.logger, h.gen, h.cfg, h.spawnWarm), nil
	})
	if err != nil {
		return err
	}
	h.table = val.(*table)

	// Streams must not hold up a reload or stop: Caddy waits for active
	// connections before a module's Cleanup runs.
	if srv != nil {
		srv.RegisterOnShutdown(h.endStreams)
		// a connection to this server means the config runs: publish the
		// settings, and warm up (validate never gets here)
		srv.RegisterConnState(func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				h.publish()
				h.warmUp()
			}
		})
	}
	return nil
}

// tableOrdinals numbers handlers with the same process configuration
// within one server of one config load, so that identical mcp_stdio blocks
// on two sites keep their own sessions and limits, while a reload that
// leaves them unchanged finds the same tables again (handlers are
// provisioned in config order).
var (
	tableOrdinalsMu sync.Mutex
	tableOrdinals   = map[*caddyhttp.Server]map[string]int{}
)

// tableKey identifies this handler's session table: its process
// configuration, its server's listeners and its place among identical
// handlers of that server.
func (h *Handler) tableKey(srv *caddyhttp.Server) string {
	proc, _ := json.Marshal(struct {
		Command    string
		Args       []string
		Env        map[string]string
		InheritEnv []string
		Dir        string
		Stateless  bool
	}{h.Command, h.Args, h.Env, h.inherited, h.Dir, h.Stateless})
	if srv == nil {
		return string(proc)
	}
	tableOrdinalsMu.Lock()
	defer tableOrdinalsMu.Unlock()
	seen := tableOrdinals[srv]
	if seen == nil {
		seen = map[string]int{}
		tableOrdinals[srv] = seen
	}
	n := seen[string(proc)]
	seen[string(proc)] = n + 1
	return fmt.Sprintf("%s listen=%q #%d", proc, srv.Listen, n)
}

// publish makes this handler's settings its table's once its config runs.
func (h *Handler) publish() {
	if h.table.gen.Load() < h.gen {
		h.table.publish(h.gen, h.cfg, h.spawnWarm)
	}
}

// spawnWarm starts a prewarmed child (no request: env has no placeholders).
func (h *Handler) spawnWarm(sink messageSink) (*process, error) {
	return h.startChild(nil, sink, h.logger)
}

// Validate checks the configuration; errors name the field.
func (h *Handler) Validate() error {
	if h.Command == "" {
		return fmt.Errorf("command: required")
	}
	for name, v := range h.Env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return fmt.Errorf("env: invalid variable name %q", name)
		}
		if strings.Contains(strings.ToLower(v), "http.request.header.authorization") {
			return fmt.Errorf("env %s: the client's Authorization header must never reach the server process", name)
		}
	}
	if h.MaxSessions < 0 {
		return fmt.Errorf("max_sessions: must not be negative")
	}
	if h.MaxSessionsPerUser < 0 || (h.MaxSessions > 0 && h.MaxSessionsPerUser > h.MaxSessions) {
		return fmt.Errorf("max_sessions_per_user: must be between 0 and max_sessions (%d)", h.MaxSessions)
	}
	if h.InitializeRate < 0 {
		return fmt.Errorf("initialize_rate: must not be negative")
	}
	for _, name := range h.InheritEnv {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return fmt.Errorf("inherit_env: invalid variable name %q", name)
		}
	}
	for _, host := range h.AllowedHosts {
		if host == "" || strings.ContainsAny(host, "/[] ") || strings.Contains(host[1:], "*") ||
			(strings.Contains(host, ":") && net.ParseIP(host) == nil) ||
			(strings.HasPrefix(host, "*") && !strings.HasPrefix(host, "*.")) {
			return fmt.Errorf("allowed_hosts: %q is not a host name (example.com, *.example.com, 192.0.2.1)", host)
		}
	}
	if h.Prewarm < 0 {
		return fmt.Errorf("prewarm: must not be negative")
	}
	if h.ChildEra != "" && h.ChildEra != "auto" && h.ChildEra != "legacy" && h.ChildEra != "modern" {
		return fmt.Errorf("child_era: %q is not auto, legacy or modern", h.ChildEra)
	}
	if h.Prewarm > 0 {
		if h.Stateless {
			return fmt.Errorf("prewarm: not with stateless (every request starts its own child)")
		}
		for name, v := range h.Env {
			if strings.Contains(v, "{") {
				return fmt.Errorf("prewarm: env %s depends on the request (%s); a prewarmed child cannot know it", name, v)
			}
		}
		if h.MaxSessions > 0 && h.Prewarm > h.MaxSessions {
			return fmt.Errorf("prewarm: %d is more than max_sessions %d", h.Prewarm, h.MaxSessions)
		}
	}
	if h.MaxMessageSize < 0 {
		return fmt.Errorf("max_message_size: must not be negative")
	}
	if h.SessionIdleTimeout < 0 || h.ShutdownTimeout < 0 || h.InputTimeout < 0 || h.CacheTTL < 0 {
		return fmt.Errorf("session_idle_timeout, shutdown_timeout, input_timeout, cache_ttl: must not be negative")
	}
	for _, o := range h.AllowedOrigins {
		if o != "*" && !strings.Contains(o, "://") {
			return fmt.Errorf("allowed_origins: %q is not an origin (scheme://host[:port])", o)
		}
	}
	return nil
}

// Cleanup ends this handler's streams and releases the session table;
// sessions end only when no config uses the table any more.
func (h *Handler) Cleanup() error {
	h.endStreams()
	tableOrdinalsMu.Lock()
	clear(tableOrdinals) // provisioning of this load is over; the counts served their turn
	tableOrdinalsMu.Unlock()
	if h.poolKey != "" {
		_, err := tables.Delete(h.poolKey)
		return err
	}
	return nil
}

// warmUp starts the prewarmed children, once the server is serving.
func (h *Handler) warmUp() {
	if h.table.settings.Load().prewarm > 0 {
		h.table.pool.fill()
	}
}

// endStreams ends this handler's open streams (the server shuts down). If
// no other config keeps the table, the route is going away: every request
// still in flight is answered with an error first, so that its client
// learns at once instead of waiting for its own timeout.
func (h *Handler) endStreams() {
	if h.shutdownOnce == nil {
		return
	}
	h.shutdownOnce.Do(func() {
		if refs, ok := tables.References(h.poolKey); ok && refs <= 1 && h.table != nil {
			h.table.failInFlight("the mcp_stdio route was removed or changed, or the server is stopping; retry")
		}
		close(h.shutdown)
	})
}

// ServeHTTP serves the Streamable HTTP transport.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.publish()
	if reason := h.checkOrigin(r); reason != "" {
		h.logger.Warn("request refused (DNS rebinding protection)", zap.String("reason", reason),
			zap.String("host", r.Host), zap.String("origin", r.Header.Get("Origin")))
		writeRPCError(w, http.StatusForbidden, nil, &rpcError{Code: codeServerBusy, Message: "Forbidden: " + reason})
		return nil
	}
	allow := "GET, POST, DELETE"
	if h.Stateless {
		allow = "POST"
	}
	switch {
	case r.Method == http.MethodPost:
		h.servePOST(w, r)
	case r.Method == http.MethodGet && !h.Stateless:
		h.serveGET(w, r)
	case r.Method == http.MethodDelete && !h.Stateless:
		h.serveDELETE(w, r)
	case r.Method == http.MethodOptions:
		w.Header().Set("Allow", allow+", OPTIONS")
		w.WriteHeader(http.StatusNoContent)
	default:
		msg := "Method Not Allowed"
		if h.Stateless {
			msg += ": stateless endpoint"
		}
		w.Header().Set("Allow", allow)
		writeRPCError(w, http.StatusMethodNotAllowed, nil, &rpcError{Code: codeServerBusy, Message: msg})
	}
	return nil
}

func badRequest(w http.ResponseWriter, id json.RawMessage, msg string) {
	writeRPCError(w, http.StatusBadRequest, id, &rpcError{Code: codeInvalidRequest, Message: "Bad Request: " + msg})
}

func sessionNotFound(w http.ResponseWriter, id json.RawMessage) {
	writeRPCError(w, http.StatusNotFound, id, &rpcError{Code: -32001, Message: "Session not found"})
}

// principal is whom a session is bound to: the issuer and subject that
// mcp_auth verified ("" without authentication). Binding to the subject
// alone would let two issuers' users with the same sub share sessions.
func principal(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	sub, _ := repl.GetString("http.auth.user.id")
	if sub == "" {
		return ""
	}
	iss, _ := repl.GetString("http.auth.user.iss")
	return iss + "\x00" + sub
}

// limitKey is whom a new session counts against for max_sessions_per_user
// and initialize_rate: the principal, or else the client's IP.
func limitKey(r *http.Request, principal string) string {
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

// lookup finds the request's session; it writes the error itself.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, id json.RawMessage) *Session {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		badRequest(w, id, "Mcp-Session-Id header is required")
		return nil
	}
	s := h.table.get(sid)
	if s == nil || s.subject != principal(r) {
		if s != nil {
			h.logger.Warn("session id presented by another user; answered as unknown",
				zap.String("session", sid), zap.String("user", userForLog(principal(r))))
		}
		sessionNotFound(w, id)
		return nil
	}
	s.touch()
	return s
}

func (h *Handler) servePOST(w http.ResponseWriter, r *http.Request) {
	if !isJSONContentType(r.Header.Get("Content-Type")) {
		writeRPCError(w, http.StatusUnsupportedMediaType, nil, &rpcError{Code: codeInvalidRequest, Message: "Unsupported Media Type: Content-Type must be application/json"})
		return
	}
	if jsonOK, sseOK := accepts(r.Header.Values("Accept")); !jsonOK || !sseOK {
		writeRPCError(w, http.StatusNotAcceptable, nil, &rpcError{Code: codeInvalidRequest, Message: "Not Acceptable: Accept must include application/json and text/event-stream"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(h.MaxMessageSize)+1))
	if err != nil {
		badRequest(w, nil, "reading body: "+err.Error())
		return
	}
	if len(body) > h.MaxMessageSize {
		writeRPCError(w, http.StatusRequestEntityTooLarge, nil, &rpcError{Code: codeInvalidRequest,
			Message: "Request Entity Too Large: message exceeds max_message_size (" + strconv.Itoa(h.MaxMessageSize) + " bytes)"})
		return
	}
	trimmed := bytes.TrimSpace(body)
	version := r.Header.Get("Mcp-Protocol-Version")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		h.serveBatch(w, r, trimmed, version)
		return
	}
	e, rerr := decodeMessage(trimmed)
	if rerr != nil {
		var id json.RawMessage
		if e != nil && validID(e.ID) {
			id = e.ID
		}
		writeRPCError(w, http.StatusBadRequest, id, rerr)
		return
	}
	if h.isModern(r, e) {
		h.serveModern(w, r, e)
		return
	}
	if version != "" && !versionSupported(version) {
		// a newer client probing (server/discover) learns what we speak
		// and falls back to initialize; nothing is spawned
		writeRPCError(w, http.StatusBadRequest, e.ID, unsupportedVersion(version))
		return
	}
	if e.Method == "initialize" {
		if !e.isRequest() {
			badRequest(w, nil, "initialize must be a request")
			return
		}
		if r.Header.Get("Mcp-Session-Id") != "" {
			badRequest(w, e.ID, "initialize must not carry an Mcp-Session-Id")
			return
		}
		h.initialize(w, r, e)
		return
	}
	if h.Stateless {
		h.serveStateless(w, r, e, version)
		return
	}
	s := h.lookup(w, r, e.ID)
	if s == nil {
		return
	}
	h.forward(w, r, s, e)
}

// forward sends one non-initialize message of a live session to its child.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, s *Session, e *envelope) {
	switch {
	case e.isRequest():
		s.mu.Lock()
		st := s.newStreamLocked(false)
		s.mu.Unlock()
		msg, err := s.outgoing(e, st)
		if err != nil {
			sessionNotFound(w, e.ID)
			return
		}
		if err := s.proc.send(msg, s.cfg.writeTimeout); err != nil {
			s.abandon(e)
			h.childUnavailable(w, e.ID, err)
			return
		}
		h.writeStream(w, r, s, st, 0, "")
	default:
		msg, _ := s.outgoing(e, nil)
		if err := s.proc.send(msg, s.cfg.writeTimeout); err != nil {
			h.childUnavailable(w, nil, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// childUnavailable answers a message the child could not be sent.
func (h *Handler) childUnavailable(w http.ResponseWriter, id json.RawMessage, err error) {
	h.logger.Warn("writing to server process failed; answered 503", zap.Error(err))
	writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: codeInternalError,
		Message: "MCP server process is not accepting messages"})
}

// userForLog renders a principal for logs (issuer and subject).
func userForLog(p string) string { return strings.Replace(p, "\x00", " ", 1) }

// spawn starts a session's child with the per-request environment.
func (h *Handler) spawn(r *http.Request, s *Session) error {
	proc, err := h.startChild(r, s, s.logger)
	if err != nil {
		return err
	}
	s.proc = proc
	return nil
}

// startChild starts a child; env placeholders are resolved from r if given.
func (h *Handler) startChild(r *http.Request, sink messageSink, logger *zap.Logger) (*process, error) {
	env := slices.Clone(h.inherited)
	if len(h.Env) > 0 {
		var repl *caddy.Replacer
		if r != nil {
			repl, _ = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		}
		names := make([]string, 0, len(h.Env))
		for name := range h.Env {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			v := h.Env[name]
			if repl != nil {
				v = repl.ReplaceAll(v, "")
			}
			env = append(env, name+"="+v)
		}
	}
	return startProcess(spawnConfig{
		command: h.Command, args: h.Args, env: env, dir: h.Dir,
		maxMessageSize: h.MaxMessageSize, writeTimeout: h.cfg.writeTimeout,
	}, sink, logger)
}

// refuse answers an initialize (or stateless request) that reserve
// refused, with the status that says why.
func (h *Handler) refuse(w http.ResponseWriter, id json.RawMessage, why refusal, user string) {
	switch why {
	case refusedPerUser:
		w.Header().Set("Retry-After", "5")
		h.logger.Warn("max_sessions_per_user reached; refused", zap.String("user", userForLog(user)),
			zap.Int("max_sessions_per_user", h.MaxSessionsPerUser))
		writeRPCError(w, http.StatusTooManyRequests, id, &rpcError{Code: codeServerBusy, Message: "Too Many Requests: too many sessions for this user"})
	case refusedRate:
		w.Header().Set("Retry-After", "1")
		h.logger.Warn("initialize_rate exceeded; refused", zap.String("user", userForLog(user)),
			zap.Int("initialize_rate", h.InitializeRate))
		writeRPCError(w, http.StatusTooManyRequests, id, &rpcError{Code: codeServerBusy, Message: "Too Many Requests: sessions started too fast"})
	default:
		w.Header().Set("Retry-After", "5")
		h.logger.Warn("max_sessions reached or route ending; refused", zap.Int("max_sessions", h.MaxSessions))
		writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: codeServerBusy, Message: "Service Unavailable: too many sessions, try again later"})
	}
}

// spawnFailed answers a request whose child could not be started: the
// cause goes to the log, never to the client.
func (h *Handler) spawnFailed(w http.ResponseWriter, id json.RawMessage, err error) {
	h.logger.Error("could not start MCP server process; answered 500", zap.String("command", h.Command), zap.Error(err))
	writeRPCError(w, http.StatusInternalServerError, id, &rpcError{Code: codeInternalError, Message: "could not start the MCP server process"})
}

func (h *Handler) initialize(w http.ResponseWriter, r *http.Request, e *envelope) {
	h.warmUp()
	user := principal(r)
	key := limitKey(r, user)
	if why := h.table.reserve(key); why != admitted {
		h.refuse(w, e.ID, why, key)
		return
	}
	table := h.table
	if h.Stateless {
		table = nil
	}
	s := newSession(table, user, key, h.cfg, h.logger)
	s.ending = &h.table.ending
	prewarmed := false
	if !h.Stateless {
		if c := h.table.pool.take(); c != nil && c.sink.adopt(s) {
			s.proc, prewarmed = c.proc, true
		}
	}
	if !prewarmed {
		if err := h.spawn(r, s); err != nil {
			h.table.release(key)
			h.spawnFailed(w, e.ID, err)
			return
		}
	}
	if h.Stateless {
		// the slot is held until the child has exited
		s.onExit = func() { h.table.release(key) }
		defer s.end("stateless request answered")
	} else {
		if !h.table.add(s) {
			// the route was removed or changed meanwhile
			s.end("route removed or changed during initialize")
			h.refuse(w, e.ID, refusedStopped, key)
			return
		}
		s.mu.Lock()
		if s.closed {
			h.table.remove(s)
		}
		s.mu.Unlock()
		s.logger.Info("session started", zap.Int("pid", s.proc.pid()), zap.String("user", userForLog(s.subject)),
			zap.String("command", h.Command), zap.Bool("prewarmed", prewarmed))
	}
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	_ = json.Unmarshal(e.Params, &p)
	s.mu.Lock()
	s.protocolVersion = p.ProtocolVersion // until the child answers
	st := s.newStreamLocked(false)
	s.initStream = st
	s.mu.Unlock()
	msg, err := s.startRequest(e, st)
	if err == nil {
		err = s.proc.send(msg, s.cfg.writeTimeout)
	}
	if err != nil {
		s.end("initialize could not be sent")
		if errors.Is(err, errSessionClosed) {
			// ended meanwhile (route removed or changed, server stopping)
			h.refuse(w, e.ID, refusedStopped, key)
			return
		}
		h.logger.Error("initialize could not be sent to the server process; answered 500", zap.Error(err))
		writeRPCError(w, http.StatusInternalServerError, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process is not accepting messages"})
		return
	}
	s.markStarted()
	sid := s.id
	if h.Stateless {
		sid = ""
	}
	h.writeStream(w, r, s, st, 0, sid)
}

// serveStateless answers one message with a child of its own: the bridge
// initializes the child itself, then forwards the message. The child holds
// its max_sessions slot until it has exited.
func (h *Handler) serveStateless(w http.ResponseWriter, r *http.Request, e *envelope, version string) {
	user := principal(r)
	key := limitKey(r, user)
	if why := h.table.reserve(key); why != admitted {
		h.refuse(w, e.ID, why, key)
		return
	}
	s := newSession(nil, user, key, h.cfg, h.logger)
	s.ending = &h.table.ending
	if err := h.spawn(r, s); err != nil {
		h.table.release(key)
		h.spawnFailed(w, e.ID, err)
		return
	}
	s.onExit = func() { h.table.release(key) }
	defer s.end("stateless request answered")
	if version == "" {
		version = defaultVersion
	}
	if err := s.handshake(r, version); err != nil {
		h.logger.Warn("stateless handshake with server process failed; answered 502", zap.Error(err))
		writeRPCError(w, http.StatusBadGateway, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process did not initialize"})
		return
	}
	h.forward(w, r, s, e)
}

// handshake initializes a stateless child on the client's behalf.
func (s *Session) handshake(r *http.Request, version string) error {
	init, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0", "id": "caddymcp-init", "method": "initialize",
		"params": map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{},
			"clientInfo":      map[string]any{"name": "caddymcp-stateless", "version": "1"},
		},
	})
	var e envelope
	_ = json.Unmarshal(init, &e)
	s.mu.Lock()
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	msg, err := s.startRequest(&e, st)
	if err != nil {
		return err
	}
	if err := s.proc.send(msg, s.cfg.writeTimeout); err != nil {
		return err
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		done, closed := st.done, s.closed
		s.mu.Unlock()
		if done {
			break
		}
		if closed {
			return errSessionClosed
		}
		select {
		case <-st.notify:
		case <-s.closedCh:
		case <-r.Context().Done():
			return r.Context().Err()
		case <-timeout.C:
			return fmt.Errorf("no initialize response within 30s")
		}
	}
	return s.proc.send([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), s.cfg.writeTimeout)
}

// serveBatch handles a JSON-RPC batch: allowed only for protocol versions
// that have batching (2025-03-26 and before).
func (h *Handler) serveBatch(w http.ResponseWriter, r *http.Request, body []byte, version string) {
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		writeRPCError(w, http.StatusBadRequest, nil, &rpcError{Code: codeParseError, Message: "parse error: " + err.Error()})
		return
	}
	if h.Stateless {
		badRequest(w, nil, "JSON-RPC batches are not supported on a stateless endpoint")
		return
	}
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	if version == "" {
		s.mu.Lock()
		version = s.protocolVersion
		s.mu.Unlock()
	}
	if version > "2025-03-26" {
		badRequest(w, nil, "JSON-RPC batches are not supported in protocol version "+version)
		return
	}
	if len(raws) == 0 {
		badRequest(w, nil, "empty JSON-RPC batch")
		return
	}
	if len(raws) > maxBatchLength {
		badRequest(w, nil, "JSON-RPC batch of "+strconv.Itoa(len(raws))+" messages; at most "+strconv.Itoa(maxBatchLength))
		return
	}
	envs := make([]*envelope, 0, len(raws))
	for _, raw := range raws {
		e, rerr := decodeMessage(raw)
		if rerr != nil {
			writeRPCError(w, http.StatusBadRequest, nil, rerr)
			return
		}
		if e.Method == "initialize" {
			badRequest(w, nil, "initialize must not be part of a batch")
			return
		}
		envs = append(envs, e)
	}
	s.mu.Lock()
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	requests := 0
	for _, e := range envs {
		if e.isRequest() {
			requests++
		}
		msg, err := s.outgoing(e, st)
		if err == nil {
			err = s.proc.send(msg, s.cfg.writeTimeout)
		}
		if err != nil {
			h.childUnavailable(w, nil, err)
			return
		}
	}
	if requests == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	h.writeStream(w, r, s, st, 0, "")
}

func (h *Handler) serveGET(w http.ResponseWriter, r *http.Request) {
	if _, sseOK := accepts(r.Header.Values("Accept")); !sseOK {
		writeRPCError(w, http.StatusNotAcceptable, nil, &rpcError{Code: codeInvalidRequest, Message: "Not Acceptable: Accept must include text/event-stream"})
		return
	}
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	s.mu.Lock()
	st, after := s.standalone, s.standalone.delivered
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		sid, seq, ok := parseEventID(last)
		if st = s.streams[sid]; !ok || st == nil {
			s.mu.Unlock()
			badRequest(w, nil, "Last-Event-ID names a stream this session does not have (any more)")
			return
		}
		if seq >= st.next {
			s.mu.Unlock()
			badRequest(w, nil, "Last-Event-ID names an event this stream has not sent")
			return
		}
		after = seq
	}
	s.mu.Unlock()
	h.writeStream(w, r, s, st, after, "")
}

func (h *Handler) serveDELETE(w http.ResponseWriter, r *http.Request) {
	s := h.lookup(w, r, nil)
	if s == nil {
		return
	}
	s.end("client sent DELETE")
	w.WriteHeader(http.StatusNoContent)
}

// writeStream sends a stream's events after seq `after` as SSE until the
// stream is complete, the client goes away, another writer takes the
// stream over (resumption), the session ends, the token that opened the
// stream expires, or the server shuts down (then what is already there is
// still delivered, within the write deadline). Every write has a deadline.
func (h *Handler) writeStream(w http.ResponseWriter, r *http.Request, s *Session, st *stream, after uint64, sessionID string) {
	sw := newSSEWriter(w, sessionID)
	kick, prime := s.attachWriter(st)
	defer s.detachWriter(st, kick)
	if prime {
		// lets the client resume from here if the stream breaks (SEP-1699)
		sw.add(eventID(st.id, after), nil)
	}
	if err := sw.flush(); err != nil {
		return
	}
	var expired <-chan time.Time
	if exp := tokenExpiry(r); !exp.IsZero() {
		t := time.NewTimer(time.Until(exp))
		defer t.Stop()
		expired = t.C
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	var batch []event
	shuttingDown := false
	for {
		var evicted, done, closed bool
		batch, evicted, done, closed = s.snapshot(st, after, batch)
		if evicted {
			s.logger.Warn("stream fell behind its buffer (client not reading); closed", zap.String("stream", st.id))
			return
		}
		for _, ev := range batch {
			sw.add(eventID(st.id, ev.seq), ev.data)
			after = ev.seq
		}
		if len(batch) > 0 {
			if err := sw.flush(); err != nil {
				h.detached(s, st)
				return
			}
			s.delivered(st, after)
		}
		if done || closed || shuttingDown {
			return
		}
		select {
		case <-st.notify:
		case <-s.closedCh:
		case <-kick:
			return
		case <-h.shutdown:
			shuttingDown = true // one more pass delivers what endStreams settled
		case <-expired:
			s.logger.Info("stream ended: the token that opened it expired", zap.String("stream", st.id))
			return
		case <-r.Context().Done():
			h.detached(s, st)
			return
		case <-keepalive.C:
			sw.comment("keep-alive")
			if err := sw.flush(); err != nil {
				h.detached(s, st)
				return
			}
		}
	}
}

// attachWriter makes the caller the stream's writer, evicting another one
// (a resumption takes over), and reports whether to send a priming event.
func (s *Session) attachWriter(st *stream) (kick chan struct{}, prime bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kick = make(chan struct{})
	if st.writer != nil {
		close(st.writer)
	}
	st.writer = kick
	return kick, s.protocolVersion >= "2025-11-25"
}

func (s *Session) detachWriter(st *stream, kick chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.writer == kick {
		st.writer = nil
	}
	st.pinned = false
}

func (s *Session) delivered(st *stream, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.delivered = max(st.delivered, seq)
}

// detached handles a client that went away from an unfinished request
// stream: a client that can resume gets resumeGrace to do so, others'
// requests are cancelled at once.
func (h *Handler) detached(s *Session, st *stream) {
	if st.standalone {
		return
	}
	s.mu.Lock()
	resumable := s.protocolVersion >= "2025-11-25"
	done := st.done
	s.mu.Unlock()
	if done {
		return
	}
	if !resumable {
		s.cancelStream(st, "client disconnected")
		return
	}
	time.AfterFunc(resumeGrace, func() {
		s.mu.Lock()
		abandoned := st.writer == nil && !st.done && !s.closed
		s.mu.Unlock()
		if abandoned {
			s.cancelStream(st, "client disconnected and did not resume")
		}
	})
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
