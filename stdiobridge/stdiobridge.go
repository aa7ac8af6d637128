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
//	}
package stdiobridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
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
// user that mcp_auth authenticated ({http.auth.user.id}): another user's
// request with the same session id gets 404.
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

	// Names of Caddy's environment variables the child inherits. Default:
	// PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_ALL, LC_CTYPE, TZ, TMPDIR.
	InheritEnv []string `json:"inherit_env,omitempty"`

	// Working directory of the child. Default: Caddy's.
	Dir string `json:"dir,omitempty"`

	// A session without a client request for this long is ended, even
	// while a GET stream is open. Default: 30m.
	SessionIdleTimeout caddy.Duration `json:"session_idle_timeout,omitempty"`

	// At most this many sessions at once; beyond it, initialize gets 503
	// with Retry-After. Default: 1000.
	MaxSessions int `json:"max_sessions,omitempty"`

	// Start one child per request instead of one per session; GET and
	// DELETE get 405.
	Stateless bool `json:"stateless,omitempty"`

	// How long each step of ending a child waits (stdin closed, SIGTERM)
	// before the next (SIGTERM, SIGKILL). Default: 5s.
	ShutdownTimeout caddy.Duration `json:"shutdown_timeout,omitempty"`

	// Origins allowed besides the request's own (and, on a loopback
	// listener, loopback origins).
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

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

	table        *table
	poolKey      string
	cfg          *settings
	inherited    []string
	logger       *zap.Logger
	shutdown     chan struct{}
	shutdownOnce *sync.Once
}

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
// configuration. It starts no process.
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
		h.MaxSessions = 1000
	}
	if h.MaxMessageSize == 0 {
		h.MaxMessageSize = 4 << 20
	}
	if h.InheritEnv == nil {
		h.InheritEnv = defaultInheritEnv
	}
	if err := h.Validate(); err != nil {
		return err
	}
	for _, name := range h.InheritEnv {
		if v, ok := os.LookupEnv(name); ok {
			h.inherited = append(h.inherited, name+"="+v)
		}
	}
	h.cfg = &settings{
		idleTimeout:     time.Duration(h.SessionIdleTimeout),
		shutdownTimeout: time.Duration(h.ShutdownTimeout),
		maxSessions:     h.MaxSessions,
		maxMessageSize:  h.MaxMessageSize,
		writeTimeout:    30 * time.Second,
	}
	key, _ := json.Marshal(struct {
		Command    string
		Args       []string
		Env        map[string]string
		InheritEnv []string
		Dir        string
		Stateless  bool
	}{h.Command, h.Args, h.Env, h.inherited, h.Dir, h.Stateless})
	h.poolKey = string(key)
	logger := h.logger
	val, _, err := tables.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newTable(logger), nil
	})
	if err != nil {
		return err
	}
	h.table = val.(*table)
	h.table.settings.Store(h.cfg)
	if h.Prewarm > 0 {
		h.table.pool.CompareAndSwap(nil, &warmPool{t: h.table, logger: h.logger,
			limit: rate.NewLimiter(rate.Limit(max(h.Prewarm, 4)), max(h.Prewarm, 4))})
		pool := h.table.pool.Load()
		pool.mu.Lock()
		pool.n = h.Prewarm
		pool.spawn = func(sink messageSink) (*process, error) { return h.startChild(nil, sink, h.logger) }
		pool.mu.Unlock()
	}

	// Streams must not hold up a reload or stop: Caddy waits for active
	// connections before a module's Cleanup runs.
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterOnShutdown(h.endStreams)
		if h.Prewarm > 0 {
			// the server is serving: time to warm up (validate never gets here)
			srv.RegisterConnState(func(_ net.Conn, state http.ConnState) {
				if state == http.StateNew {
					h.warmUp()
				}
			})
		}
	}
	return nil
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
	if h.Prewarm < 0 {
		return fmt.Errorf("prewarm: must not be negative")
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
	if h.SessionIdleTimeout < 0 || h.ShutdownTimeout < 0 {
		return fmt.Errorf("session_idle_timeout, shutdown_timeout: must not be negative")
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
	if h.poolKey != "" {
		_, err := tables.Delete(h.poolKey)
		return err
	}
	return nil
}

// warmUp starts the prewarmed children, once the server is serving.
func (h *Handler) warmUp() {
	if pool := h.table.pool.Load(); h.Prewarm > 0 && pool != nil {
		pool.fill()
	}
}

func (h *Handler) endStreams() {
	if h.shutdownOnce != nil {
		h.shutdownOnce.Do(func() { close(h.shutdown) })
	}
}

// ServeHTTP serves the Streamable HTTP transport.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
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

// subject is the authenticated user a session is bound to ("" if none).
func subject(r *http.Request) string {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if v, ok := repl.GetString("http.auth.user.id"); ok {
			return v
		}
	}
	return ""
}

// lookup finds the request's session; it writes the error itself.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, id json.RawMessage) *Session {
	sid := r.Header.Get("Mcp-Session-Id")
	if sid == "" {
		badRequest(w, id, "Mcp-Session-Id header is required")
		return nil
	}
	s := h.table.get(sid)
	if s == nil || s.subject != subject(r) {
		if s != nil {
			h.logger.Warn("session id presented by another user; answered as unknown",
				zap.String("session", sid), zap.String("user", subject(r)))
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
			h.logger.Warn("writing to server process failed", zap.String("session", s.id), zap.Error(err))
			childUnavailable(w, e.ID, err)
			return
		}
		h.writeStream(w, r, s, st, 0, "")
	default:
		msg, _ := s.outgoing(e, nil)
		if err := s.proc.send(msg, s.cfg.writeTimeout); err != nil {
			childUnavailable(w, nil, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

// childUnavailable answers a message the child could not be sent.
func childUnavailable(w http.ResponseWriter, id json.RawMessage, err error) {
	writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: codeInternalError,
		Message: "MCP server process is not accepting messages: " + err.Error()})
}

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

func (h *Handler) initialize(w http.ResponseWriter, r *http.Request, e *envelope) {
	h.warmUp()
	if !h.table.reserve() {
		w.Header().Set("Retry-After", "5")
		h.logger.Warn("max_sessions reached; initialize refused", zap.Int("max_sessions", h.MaxSessions))
		writeRPCError(w, http.StatusServiceUnavailable, e.ID, &rpcError{Code: codeServerBusy, Message: "Service Unavailable: too many sessions, try again later"})
		return
	}
	table := h.table
	if h.Stateless {
		table = nil
	}
	s := newSession(table, subject(r), h.cfg, h.logger)
	s.ending = &h.table.ending
	prewarmed := false
	if pool := h.table.pool.Load(); pool != nil && !h.Stateless {
		if c := pool.take(); c != nil && c.sink.adopt(s) {
			s.proc, prewarmed = c.proc, true
		}
	}
	if !prewarmed {
		if err := h.spawn(r, s); err != nil {
			h.table.release()
			h.logger.Error("could not start MCP server process", zap.String("command", h.Command), zap.Error(err))
			writeRPCError(w, http.StatusInternalServerError, e.ID, &rpcError{Code: codeInternalError, Message: "could not start the MCP server process: " + err.Error()})
			return
		}
	}
	if h.Stateless {
		h.table.release()
		defer s.end("stateless request answered")
	} else {
		h.table.add(s)
		s.mu.Lock()
		if s.closed {
			h.table.remove(s)
		}
		s.mu.Unlock()
		s.logger.Info("session started", zap.Int("pid", s.proc.pid()), zap.String("user", s.subject),
			zap.String("command", h.Command), zap.Bool("prewarmed", prewarmed))
	}
	var p struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	_ = json.Unmarshal(e.Params, &p)
	s.mu.Lock()
	s.protocolVersion = p.ProtocolVersion // until the child answers
	st := s.newStreamLocked(false)
	s.mu.Unlock()
	msg, err := s.startRequest(e, st)
	if err == nil {
		err = s.proc.send(msg, s.cfg.writeTimeout)
	}
	if err != nil {
		s.end("initialize could not be sent")
		writeRPCError(w, http.StatusInternalServerError, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process is not accepting messages"})
		return
	}
	sid := s.id
	if h.Stateless {
		sid = ""
	}
	h.writeStream(w, r, s, st, 0, sid)
}

// serveStateless answers one message with a child of its own: the bridge
// initializes the child itself, then forwards the message.
func (h *Handler) serveStateless(w http.ResponseWriter, r *http.Request, e *envelope, version string) {
	if !h.table.reserve() {
		w.Header().Set("Retry-After", "5")
		writeRPCError(w, http.StatusServiceUnavailable, e.ID, &rpcError{Code: codeServerBusy, Message: "Service Unavailable: too many requests in progress"})
		return
	}
	s := newSession(nil, subject(r), h.cfg, h.logger)
	s.ending = &h.table.ending
	err := h.spawn(r, s)
	h.table.release()
	if err != nil {
		h.logger.Error("could not start MCP server process", zap.String("command", h.Command), zap.Error(err))
		writeRPCError(w, http.StatusInternalServerError, e.ID, &rpcError{Code: codeInternalError, Message: "could not start the MCP server process: " + err.Error()})
		return
	}
	defer s.end("stateless request answered")
	if version == "" {
		version = defaultVersion
	}
	if err := s.handshake(r, version); err != nil {
		h.logger.Warn("stateless handshake with server process failed", zap.Error(err))
		writeRPCError(w, http.StatusBadGateway, e.ID, &rpcError{Code: codeInternalError, Message: "MCP server process did not initialize: " + err.Error()})
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
			childUnavailable(w, nil, err)
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
// stream over (resumption), the session ends, or the server shuts down.
func (h *Handler) writeStream(w http.ResponseWriter, r *http.Request, s *Session, st *stream, after uint64, sessionID string) {
	sw := newSSEWriter(w, sessionID)
	s.mu.Lock()
	prime := s.protocolVersion >= "2025-11-25"
	kick := make(chan struct{})
	if st.writer != nil {
		close(st.writer)
	}
	st.writer = kick
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if st.writer == kick {
			st.writer = nil
		}
		s.mu.Unlock()
	}()
	if prime {
		// lets the client resume from here if the stream breaks (SEP-1699)
		sw.add(eventID(st.id, after), nil)
	}
	if err := sw.flush(); err != nil {
		return
	}
	keepalive := time.NewTicker(25 * time.Second)
	defer keepalive.Stop()
	var batch []event
	for {
		s.mu.Lock()
		evs, evicted := st.since(after)
		batch = append(batch[:0], evs...)
		done, closed := st.done, s.closed
		s.mu.Unlock()
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
			s.mu.Lock()
			st.delivered = max(st.delivered, after)
			s.mu.Unlock()
		}
		if done || closed {
			return
		}
		select {
		case <-st.notify:
		case <-s.closedCh:
		case <-kick:
			return
		case <-h.shutdown:
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
