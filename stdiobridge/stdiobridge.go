package stdiobridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpccode"
	"github.com/caddymcp/caddymcp/internal/sandbox"
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

	// Who shares the children that serve MCP 2026-07-28 requests (which
	// carry no session): "per_user" (the default) gives each principal
	// that mcp_auth verified (issuer and subject) children of its own, as
	// 2025 sessions have; "shared" lets every principal's requests use the
	// same children (fewer processes, but whatever a server keeps in memory
	// between calls is seen by everyone). Unauthenticated requests share
	// one pool either way. Children whose env resolves differently (a
	// placeholder) never serve each other's requests, whatever this says.
	Pool string `json:"pool,omitempty"`

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
	// Caddy determines it, trusted_proxies included). At the limit, a new
	// session ends the principal's least recently used idle session or pool
	// child (no call in flight, no open stream); with none idle, 429 with
	// Retry-After the time until the soonest one may free.
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

	// The longest a forwarded 2026-07-28 call may take while its child
	// works on it (a parked input_required round does not count; that is
	// input_timeout). At the bound the child is sent notifications/cancelled
	// and the client gets a -32603 error naming call_timeout. Default: 30m,
	// generous enough for long tool runs (builds, crawls) while a hung child
	// still frees its slot; negative (Caddyfile: off) means no bound.
	CallTimeout caddy.Duration `json:"call_timeout,omitempty"`

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

	// Arguments in the audit log (http.handlers.mcp_stdio.audit): "hash"
	// (their SHA-256) or "full". Default: none.
	AuditArguments string `json:"audit_arguments,omitempty"`

	// This instance's id in the ids it hands out that must come back to it
	// (2025 session ids, requestState), so that reverse_proxy's `mcp`
	// selection policy can route them to it. Give every mcp_stdio of one
	// Caddy the same id, and each Caddy of a deployment its own (a host
	// name, or the address the balancer dials). Default: the first 12
	// characters of Caddy's instance UUID (kept in its data directory).
	InstanceID string `json:"instance_id,omitempty"`

	// This route's name in metrics (the `route` label) and in the audit
	// log. Default: the command's base name (e.g. "npx"); set it where two
	// routes run the same program with different arguments.
	Name string `json:"name,omitempty"`

	// What the server learns of roots (the directories it may work in):
	// "none" (the default) declares no roots capability to the server and
	// refuses its roots/list; "forward" passes the client's roots and its
	// roots/list_changed; or a list of file:// URIs (absolute paths on
	// Caddy's machine), declared to the server and given as the answer to
	// its roots/list. A remote client's roots name directories on the
	// client's machine, not on Caddy's; a server that takes them as its
	// file-system boundary (server-filesystem) would serve whatever
	// directory of Caddy's machine the client names.
	Roots []string `json:"roots,omitempty"`

	// Tool names used as metric labels: the first this many that the
	// server listed; calls of others count as "other", so no client can
	// grow a metric's label set. Default: 100.
	MetricsMaxTools int `json:"metrics_max_tools,omitempty"`

	// A tools/call of a 2026-07-28 client that declared the tasks extension
	// (io.modelcontextprotocol/tasks) becomes a task when it has not
	// finished after this long: the client gets a task handle at once and
	// polls tasks/get; the call goes on in its child, whether the client
	// stays connected or not. 0: every such call is a task; negative
	// (Caddyfile: off): no tasks, and the extension is not offered.
	// Default: 2s (tasks are for clients that asked for them, and a task
	// holds its child no longer than the call it replaces would).
	TaskAfter *caddy.Duration `json:"task_after,omitempty"`

	// How long a task lives from its creation (its ttlMs): a running task
	// is ended at it (and its child sent notifications/cancelled), a
	// finished one forgotten; a fetched result is kept one minute more at
	// most. call_timeout bounds a task's run too. Default: 1h.
	TaskTTL caddy.Duration `json:"task_ttl,omitempty"`

	// The pollIntervalMs tasks suggest to clients. Default: 1s.
	TaskPollInterval caddy.Duration `json:"task_poll_interval,omitempty"`

	// At most this many tasks (running or finished and kept) per principal;
	// the principal's oldest finished task makes room for a new one, and a
	// call that finds every slot taken by running tasks goes on without a
	// task. Default: 100.
	TaskMaxPerUser int `json:"task_max_per_user,omitempty"`

	// Bytes of finished tasks' results kept per principal; the oldest
	// finished tasks make room, and a result larger than this fails its
	// task with an error saying so. Default: 16 MiB.
	TaskMaxBytes int64 `json:"task_max_bytes,omitempty"`

	// At most this many tasks for the route, all principals. Default: 10000.
	TaskRouteMax int `json:"task_route_max,omitempty"`

	// Bytes of finished tasks' results kept for the route, all principals.
	// Default: 256 MiB.
	TaskRouteMaxBytes int64 `json:"task_route_max_bytes,omitempty"`

	// Sandbox confines every server process of the route (sessions,
	// pools, the probe, prewarmed ones) with Landlock, namespaces,
	// seccomp, another user and rlimits (README, Sandbox). Provisioning
	// fails if a restriction cannot be applied here, unless it says
	// best_effort. Linux only.
	Sandbox *sandbox.Config `json:"sandbox,omitempty"`

	policy       *sandbox.Policy // Sandbox resolved on this machine
	table        *table
	sealer       *stateSealer
	observers    *sync.Map // opKey -> prometheus.Observer (metrics.go)
	cmdLabel     string
	audit        *zap.Logger
	perRequest   bool   // the process config depends on the request (placeholders in env): pools by resolved env
	poolKey      string // the session table's key: procKey and the route's identity (route.go)
	procKey      string
	route        *routeState
	gen          uint64 // this config's generation (table.publish)
	cfg          *settings
	inherited    []string
	spawner      *spawner // this config's; the table starts children with its newest published one
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
// defaultCallTimeout is call_timeout where a route sets none (a variable
// so that a test can show the default at work without waiting 30 minutes).
var defaultCallTimeout = 30 * time.Minute

func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.audit = h.logger.Named("audit")
	h.cmdLabel = h.Name
	if h.cmdLabel == "" {
		h.cmdLabel = commandLabel(h.Command)
	}
	if h.MetricsMaxTools == 0 {
		h.MetricsMaxTools = 100
	}
	initBridgeMetrics(ctx.GetMetricsRegistry())
	h.observers = new(sync.Map)
	id, ring, err := instanceid.ForConfig(ctx, h.InstanceID, h.logger)
	if err != nil {
		return err
	}
	h.InstanceID = id
	h.sealer = &stateSealer{ring: ring, instance: h.InstanceID}
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
	if h.CallTimeout == 0 {
		h.CallTimeout = caddy.Duration(defaultCallTimeout)
	}
	if h.TaskAfter == nil {
		d := caddy.Duration(2 * time.Second)
		h.TaskAfter = &d
	}
	if h.TaskTTL == 0 {
		h.TaskTTL = caddy.Duration(time.Hour)
	}
	if h.TaskPollInterval == 0 {
		h.TaskPollInterval = caddy.Duration(time.Second)
	}
	if h.TaskMaxPerUser == 0 {
		h.TaskMaxPerUser = 100
	}
	if h.TaskMaxBytes == 0 {
		h.TaskMaxBytes = 16 << 20
	}
	if h.TaskRouteMax == 0 {
		h.TaskRouteMax = 10000
	}
	if h.TaskRouteMaxBytes == 0 {
		h.TaskRouteMaxBytes = 256 << 20
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
	h.spawner = &spawner{command: h.Command, args: h.Args, dir: h.Dir, inherited: h.inherited, env: h.Env, label: h.cmdLabel}
	if h.Sandbox != nil {
		pol, err := sandbox.Resolve(*h.Sandbox, h.Command, h.Dir, h.spawner.environ(nil), caddyDirs(ctx))
		if err != nil {
			return fmt.Errorf("mcp_stdio %s: %w", h.Command, err)
		}
		for _, why := range pol.Skipped() {
			h.logger.Warn("sandbox best_effort: a restriction is not applied", zap.String("command", h.Command), zap.String("skipped", why))
		}
		if h.Sandbox.Network == "outbound" && len(h.Sandbox.ConnectPorts) == 0 {
			h.logger.Warn("sandbox network outbound without ports: the server may connect to any TCP port, Caddy's admin endpoint (default localhost:2019) included; list the ports it needs, or set admin off or to a unix socket",
				zap.String("command", h.Command))
		}
		h.logger.Info("sandbox ready", zap.String("command", h.Command), zap.Strings("args", h.Args),
			zap.String("name", h.Name), zap.String("sandbox", pol.Summary()), zap.Strings("limits", pol.Notes()))
		h.policy, h.spawner.policy = pol, pol
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
		callTimeout:     time.Duration(max(h.CallTimeout, 0)),
		cacheTTL:        time.Duration(h.CacheTTL),
		command:         h.cmdLabel,
		rootsForward:    len(h.Roots) == 1 && h.Roots[0] == "forward",
		rootsResult:     rootsResult(h.Roots),
		newID:           func() string { return instanceid.NewSessionID(ring, h.InstanceID) },
		taskAfter:       time.Duration(*h.TaskAfter),
		taskTTL:         time.Duration(h.TaskTTL),
		taskPoll:        time.Duration(h.TaskPollInterval),
		taskMaxPerUser:  h.TaskMaxPerUser,
		taskMaxBytes:    h.TaskMaxBytes,
		taskRouteMax:    h.TaskRouteMax,
		taskRouteBytes:  h.TaskRouteMaxBytes,
	}
	h.gen = generations.Add(1)
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	h.procKey = h.processKey()
	h.route = &routeState{srv: srv, fallback: fallbackOrdinal(srv, h.procKey)}
	unsettledMu.Lock()
	unsettled[h] = struct{}{}
	unsettledMu.Unlock()
	if srv == nil {
		h.resolve() // nothing to find it in
	}

	// Streams must not hold up a reload or stop: Caddy waits for active
	// connections before a module's Cleanup runs.
	if srv != nil {
		srv.RegisterOnShutdown(h.endStreams)
		// a connection to this server means the config runs: publish the
		// settings, and warm up (validate never gets here)
		srv.RegisterConnState(func(_ net.Conn, state http.ConnState) {
			if state == http.StateNew {
				h.resolve()
				h.publish()
				h.warmUp()
			}
		})
	}
	return nil
}

// tableOrdinals numbers handlers with the same process configuration
// within one server of one config load, in provisioning order: what tells
// apart handlers whose route cannot be found (route.go).
var (
	tableOrdinalsMu sync.Mutex
	tableOrdinals   = map[*caddyhttp.Server]map[string]int{}
)

func fallbackOrdinal(srv *caddyhttp.Server, proc string) int {
	if srv == nil {
		return 0
	}
	tableOrdinalsMu.Lock()
	defer tableOrdinalsMu.Unlock()
	seen := tableOrdinals[srv]
	if seen == nil {
		seen = map[string]int{}
		tableOrdinals[srv] = seen
	}
	n := seen[proc]
	seen[proc] = n + 1
	return n
}

// processKey is the process configuration part of the table key; the
// route's identity (route.go) completes it.
func (h *Handler) processKey() string {
	proc, _ := json.Marshal(struct {
		Command    string
		Args       []string
		Env        map[string]string
		InheritEnv []string
		Dir        string
		Stateless  bool
		// a changed sandbox is a changed process config: no child
		// started under the old one (or none) serves on after a reload
		Sandbox *sandbox.Config
	}{h.Command, h.Args, h.Env, h.inherited, h.Dir, h.Stateless, h.Sandbox})
	return string(proc)
}

// publish makes this handler's settings its table's once its config runs.
func (h *Handler) publish() {
	if h.table.gen.Load() < h.gen {
		h.table.publish(h.gen, h.cfg, h.spawner)
	}
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
	if h.TaskTTL < 0 || h.TaskPollInterval < 0 {
		return fmt.Errorf("task_ttl, task_poll_interval: must be positive")
	}
	if h.TaskMaxPerUser < 0 || h.TaskMaxBytes < 0 || h.TaskRouteMax < 0 || h.TaskRouteMaxBytes < 0 {
		return fmt.Errorf("task_max_per_user, task_max_bytes, task_route_max, task_route_max_bytes: must be positive")
	}
	if h.AuditArguments != "" && h.AuditArguments != "hash" && h.AuditArguments != "full" {
		return fmt.Errorf("audit_arguments: %q is not hash or full", h.AuditArguments)
	}
	if h.Pool != "" && h.Pool != "per_user" && h.Pool != "shared" {
		return fmt.Errorf("pool: %q is not per_user or shared", h.Pool)
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
	if err := validRoots(h.Roots); err != nil {
		return err
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
	joined := h.forget()
	resolvePending() // a new config's handlers join their tables before this one lets go
	h.endStreams()
	tableOrdinalsMu.Lock()
	clear(tableOrdinals) // provisioning of this load is over; the counts served their turn
	tableOrdinalsMu.Unlock()
	if joined && h.poolKey != "" {
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
		resolvePending()
		if refs, ok := tables.References(h.poolKey); ok && refs <= 1 && h.table != nil {
			h.table.failInFlight("the mcp_stdio route was removed or changed, or the server is stopping; retry")
		}
		close(h.shutdown)
	})
}

// ServeHTTP serves the Streamable HTTP transport.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.resolve()
	h.publish()
	mcpreq.ProvidePlaceholders(r, int64(h.MaxMessageSize))
	if reason := h.checkOrigin(r); reason != "" {
		if c := h.logger.Check(zap.DebugLevel, "request refused (DNS rebinding protection)"); c != nil { // the client's doing
			c.Write(zap.String("reason", reason), zap.String("host", r.Host), zap.String("origin", r.Header.Get("Origin")))
		}
		writeRPCError(w, http.StatusForbidden, nil, &rpcError{Code: rpccode.Forbidden, Message: "Forbidden: " + reason})
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
		sessionServer{h}.serveGET(w, r)
	case r.Method == http.MethodDelete && !h.Stateless:
		sessionServer{h}.serveDELETE(w, r)
	case r.Method == http.MethodOptions:
		w.Header().Set("Allow", allow+", OPTIONS")
		w.WriteHeader(http.StatusNoContent)
	default:
		msg := "Method Not Allowed"
		if h.Stateless {
			msg += ": stateless endpoint"
		}
		w.Header().Set("Allow", allow)
		writeRPCError(w, http.StatusMethodNotAllowed, nil, &rpcError{Code: rpccode.MethodNotAllowed, Message: msg})
	}
	return nil
}

func badRequest(w http.ResponseWriter, id json.RawMessage, msg string) {
	writeRPCError(w, http.StatusBadRequest, id, &rpcError{Code: codeInvalidRequest, Message: "Bad Request: " + msg})
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
	// the body as mcpreq read it, once for every module of the request:
	// what mcp_auth's rules and the mcp matcher decided on is what is
	// served, and what they would call ambiguous is never served
	q := mcpreq.Get(r, int64(h.MaxMessageSize))
	if mcpreq.IsAmbiguous(q.Err) {
		if c := h.logger.Check(zap.DebugLevel, "request refused: servers could read it in more than one way"); c != nil {
			c.Write(zap.Error(q.Err))
		}
		var id json.RawMessage
		if validID(q.ID) {
			id = q.ID
		}
		writeRPCError(w, http.StatusBadRequest, id, &rpcError{Code: codeInvalidRequest, Message: "invalid request: " + q.Err.Error()})
		return
	}
	body := q.Body()
	switch {
	case body == nil && mcpreq.IsEncoded(q.Err):
		writeRPCError(w, http.StatusUnsupportedMediaType, nil, &rpcError{Code: codeInvalidRequest, Message: "Unsupported Media Type: a request body must not have a Content-Encoding"})
		return
	case (body == nil && mcpreq.IsTooLarge(q.Err)) || len(body) > h.MaxMessageSize:
		writeRPCError(w, http.StatusRequestEntityTooLarge, nil, &rpcError{Code: codeInvalidRequest,
			Message: "Request Entity Too Large: message exceeds max_message_size (" + strconv.Itoa(h.MaxMessageSize) + " bytes)"})
		return
	case body == nil:
		badRequest(w, nil, "reading body: "+q.Err.Error())
		return
	}
	version := r.Header.Get("Mcp-Protocol-Version")
	msgs := q.Parsed()
	if q.Batch {
		sessionServer{h}.serveBatch(w, r, msgs, version) // batches are 2025's (mcpreq.Era)
		return
	}
	if len(msgs) == 0 {
		// not a JSON-RPC message (mcpreq read no member that rules could
		// decide on): answered with what is wrong with it, never served
		notRPC(w, body)
		return
	}
	e, rerr := envelopeOf(msgs[0])
	if rerr != nil {
		var id json.RawMessage
		if validID(e.ID) {
			id = e.ID
		}
		writeRPCError(w, http.StatusBadRequest, id, rerr)
		return
	}
	if clientModern(q) {
		poolServer{h}.serveModern(w, r, e)
		return
	}
	sessionServer{h}.serveMessage(w, r, e, version)
}

// childUnavailable answers a message the child could not be sent.
func (h *Handler) childUnavailable(w http.ResponseWriter, id json.RawMessage, err error) {
	h.logger.Warn("writing to server process failed; answered 503", zap.Error(err))
	writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: codeInternalError,
		Message: "MCP server process is not accepting messages"})
}

// spawnFailed answers a request whose child could not be started: the
// cause goes to the log, never to the client.
// Out of descriptors or processes (the machine's limits, not the
// command's fault) is a 503 with Retry-After: the client may try again.
func (h *Handler) spawnFailed(w http.ResponseWriter, id json.RawMessage, err error) {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM) {
		h.logger.Error("could not start MCP server process: out of descriptors, processes or memory (raise the limit or lower max_sessions); answered 503",
			zap.String("command", h.Command), zap.Error(err))
		w.Header().Set("Retry-After", "5")
		writeRPCError(w, http.StatusServiceUnavailable, id, &rpcError{Code: rpccode.Unavailable, Message: "Service Unavailable: the server is out of resources, try again later"})
		return
	}
	h.logger.Error("could not start MCP server process; answered 500", zap.String("command", h.Command), zap.Error(err))
	writeRPCError(w, http.StatusInternalServerError, id, &rpcError{Code: codeInternalError, Message: "could not start the MCP server process"})
}

// caddyDirs are the directories a sandboxed server is never given: Caddy's
// data and config directories and its file storage (the key ring, TLS keys).
func caddyDirs(ctx caddy.Context) []string {
	dirs := []string{caddy.AppDataDir(), caddy.AppConfigDir()}
	if fs, ok := ctx.Storage().(*certmagic.FileStorage); ok {
		dirs = append(dirs, fs.Path)
	}
	return dirs
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// validRoots checks the roots setting: none, forward, or file:// URIs of
// absolute paths (what roots/list may name; a server on this machine can
// use nothing else).
func validRoots(roots []string) error {
	if len(roots) == 1 && (roots[0] == "none" || roots[0] == "forward") {
		return nil
	}
	for _, r := range roots {
		u, err := url.Parse(r)
		if r == "none" || r == "forward" {
			return fmt.Errorf("roots: %s stands alone", r)
		}
		if err != nil || u.Scheme != "file" || (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") ||
			u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return fmt.Errorf("roots: %q is not none, forward or a file:// URI of an absolute path (file:///srv/data)", r)
		}
	}
	return nil
}

// rootsResult is the bridge's answer to a server's roots/list: the
// configured roots, or nil (refuse) for none and forward.
func rootsResult(roots []string) json.RawMessage {
	if len(roots) == 0 || roots[0] == "none" || roots[0] == "forward" {
		return nil
	}
	type root struct {
		URI  string `json:"uri"`
		Name string `json:"name,omitempty"`
	}
	list := make([]root, 0, len(roots))
	for _, r := range roots {
		list = append(list, root{URI: r, Name: path.Base(strings.TrimPrefix(r, "file://"))})
	}
	b, _ := json.Marshal(map[string]any{"roots": list})
	return b
}

// limitLog logs a refusal a client can cause on every request: at warn at
// most once a minute per route (an operator can alert on it), else at debug.
func (h *Handler) limitLog(msg string, fields ...zap.Field) {
	level := zap.DebugLevel
	if h.table != nil && h.table.warnEvery != nil && h.table.warnEvery.Allow() {
		level = zap.WarnLevel
	}
	if c := h.logger.Check(level, msg); c != nil {
		c.Write(fields...)
	}
}
