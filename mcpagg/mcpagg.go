// Package mcpagg is the mcp_aggregate handler (http.handlers.mcp_aggregate):
// several MCP servers behind one endpoint. Each backend is a Caddy handler
// chain of its own (a subroute: mcp_stdio for a stdio server, reverse_proxy
// for a remote Streamable HTTP one, with mcp_tools or anything else in
// front), served in this process. Lists are merged with names prefixed by
// the backend's name, calls are routed to the backend that owns the name,
// and a backend that fails is left out of lists while the others answer.
package mcpagg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/keyring"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the mcp_aggregate handler.
type Handler struct {
	// Backends are the servers aggregated, each a named handler chain.
	Backends []*Backend `json:"backends"`
	// Prefix says when names (tools, prompts) get their backend's name
	// and Separator in front: "always" (default), "collision" (only names
	// that two backends share) or "never" (a name two backends share is
	// then left out of lists, with a log line).
	Prefix string `json:"prefix,omitempty"`
	// Separator joins a backend's name and a name (default "_").
	Separator string `json:"separator,omitempty"`
	// Timeout bounds a backend's answer to a list or to initialize
	// (default 10s); one that takes longer is left out of that answer.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// SessionIdleTimeout ends a 2025 client session (and its backend
	// sessions) unused this long (default 30m).
	SessionIdleTimeout caddy.Duration `json:"session_idle_timeout,omitempty"`
	// MaxSessions bounds the live 2025 client sessions (default 10000).
	MaxSessions int `json:"max_sessions,omitempty"`
	// AllowedHosts are the Host names served (DNS-rebinding protection,
	// as mcp_stdio's; the Caddyfile's default: the site's names).
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	// AllowedOrigins are Origins accepted besides the request's own.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// InstanceID names this instance in its session ids, as mcp_stdio's
	// does, so that `lb_policy mcp` sends a session's requests home
	// (default: from Caddy's instance UUID).
	InstanceID string `json:"instance_id,omitempty"`

	segments []caddyfile.Segment // the backends' blocks, until parseCaddyfile made them subroutes
	logger   *zap.Logger
	ring     *keyring.Ring
	byName   map[string]*Backend
	state    *state
	stop     chan struct{}
}

// state is a handler's live sessions, and the routes of the names its
// 2026-07-28 lists last showed (stateless requests have no session to
// keep them in).
type state struct {
	mu        sync.Mutex // guards all below; before session.mu
	sessions  map[string]*session
	cat       *catalog
	learning  bool
	learnedAt time.Time
}

// catalog is the routes 2026-07-28 lists learned (nil: none yet).
func (s *state) catalog() *catalog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cat
}

// learned adds c's routes (starting afresh past maxRoutes: routes of
// names no list shows any more do not pile up).
func (s *state) learned(c *catalog) {
	s.mu.Lock()
	if s.cat != nil && len(s.cat.tools)+len(s.cat.prompts)+len(s.cat.uris)+len(s.cat.templates) > maxRoutes {
		s.cat = nil
	}
	s.cat = mergeCatalog(cloneCatalog(s.cat), c)
	s.mu.Unlock()
}

// maxRoutes bounds the routes the handler keeps for 2026-07-28 requests.
const maxRoutes = 10000

// startLearning reports whether the caller may ask the backends for their
// lists now (no one else is, and the last time was learnInterval ago).
func (s *state) startLearning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.learning || time.Since(s.learnedAt) < learnInterval {
		return false
	}
	s.learning = true
	return true
}

func (s *state) doneLearning() {
	s.mu.Lock()
	s.learning, s.learnedAt = false, time.Now()
	s.mu.Unlock()
}

// Backend is one aggregated server.
type Backend struct {
	// Name names the backend: the prefix of its names, in logs and
	// metrics. Letters, digits, '-' and '.'.
	Name string `json:"name"`
	// HandlerRaw is the chain that serves it (usually a subroute).
	HandlerRaw json.RawMessage `json:"handler" caddy:"namespace=http.handlers inline_key=handler"`

	handler caddyhttp.MiddlewareHandler
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_aggregate",
		New: func() caddy.Module { return new(Handler) },
	}
}

var backendName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// Provision loads the backends' chains.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Prefix == "" {
		h.Prefix = "always"
	}
	if h.Separator == "" {
		h.Separator = "_"
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(10 * time.Second)
	}
	if h.SessionIdleTimeout == 0 {
		h.SessionIdleTimeout = caddy.Duration(30 * time.Minute)
	}
	if h.MaxSessions == 0 {
		h.MaxSessions = 10000
	}
	initMetrics(ctx.GetMetricsRegistry())
	id, ring, err := instanceid.ForConfig(ctx, h.InstanceID, h.logger)
	if err != nil {
		return fmt.Errorf("mcp_aggregate: %w", err)
	}
	h.InstanceID, h.ring = id, ring
	h.byName = map[string]*Backend{}
	for _, b := range h.Backends {
		if b == nil || !backendName.MatchString(b.Name) || len(b.HandlerRaw) == 0 {
			return fmt.Errorf("mcp_aggregate: a backend needs a name of letters, digits, '-' and '.', and a handler")
		}
		if h.byName[b.Name] != nil {
			return fmt.Errorf("mcp_aggregate: backend %q twice", b.Name)
		}
		if strings.Contains(b.Name, h.Separator) {
			return fmt.Errorf("mcp_aggregate: backend %q holds the separator %q", b.Name, h.Separator)
		}
		mod, err := ctx.LoadModule(b, "HandlerRaw")
		if err != nil {
			return fmt.Errorf("mcp_aggregate: backend %s: %w", b.Name, err)
		}
		b.handler = mod.(caddyhttp.MiddlewareHandler)
		h.byName[b.Name] = b
	}
	h.state = &state{sessions: map[string]*session{}}
	h.stop = make(chan struct{})
	go h.reapIdle()
	return nil
}

// Validate checks the config.
func (h *Handler) Validate() error {
	if len(h.Backends) == 0 {
		return errors.New("mcp_aggregate: no backends")
	}
	switch h.Prefix {
	case "always", "collision", "never":
	default:
		return fmt.Errorf("mcp_aggregate: prefix %q is not always, collision or never", h.Prefix)
	}
	return nil
}

// Cleanup ends every client session and its backend sessions.
func (h *Handler) Cleanup() error {
	close(h.stop)
	h.state.mu.Lock()
	sessions := h.state.sessions
	h.state.sessions = map[string]*session{}
	h.state.mu.Unlock()
	for _, s := range sessions {
		s.close(h)
	}
	return nil
}

// reapIdle ends sessions unused for SessionIdleTimeout.
func (h *Handler) reapIdle() {
	t := time.NewTicker(min(time.Duration(h.SessionIdleTimeout)/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		var idle []*session
		h.state.mu.Lock()
		for id, s := range h.state.sessions {
			if s.idleSince() > time.Duration(h.SessionIdleTimeout) {
				idle = append(idle, s)
				delete(h.state.sessions, id)
			}
		}
		h.state.mu.Unlock()
		for _, s := range idle {
			s.close(h)
		}
	}
}

// serve is a backend's chain as a handler: what no route of it answers
// is a 404.
func (b *Backend) serve() caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return b.handler.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			return caddyhttp.Error(http.StatusNotFound, errors.New("no route of the backend served the request"))
		}))
	})
}

var aggMetrics struct {
	once     sync.Once
	failures *prometheus.CounterVec
}

func initMetrics(reg *prometheus.Registry) {
	aggMetrics.once.Do(func() {
		aggMetrics.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_aggregate_backend_failures_total",
			Help: "Backends left out of an answer (failed or timed out), by backend and operation.",
		}, []string{"backend", "operation"})
	})
	if reg == nil {
		return
	}
	if err := reg.Register(aggMetrics.failures); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			panic(err)
		}
	}
}

// failed logs and counts a backend left out of an answer.
func (h *Handler) failed(b *Backend, op string, err error) {
	h.logger.Warn("a backend is left out of the answer", zap.String("backend", b.Name), zap.String("operation", op), zap.Error(err))
	if aggMetrics.failures != nil {
		aggMetrics.failures.WithLabelValues(b.Name, op).Inc()
	}
}

// rpcError is a JSON-RPC error answer.
func rpcError(id json.RawMessage, code int, msg string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
	return b
}

// rpcResult is a JSON-RPC result answer.
func rpcResult(id json.RawMessage, result any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": result})
	return b
}

func writeJSON(w http.ResponseWriter, status int, msg json.RawMessage) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(msg)
	return err
}

// withTimeout is ctx bounded by the handler's backend timeout.
func (h *Handler) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, time.Duration(h.Timeout))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
