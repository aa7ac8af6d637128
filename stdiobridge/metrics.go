package stdiobridge

// Metrics in Caddy's registry, named after the OpenTelemetry MCP semantic
// conventions in Prometheus form. The collectors are the process's (their
// values outlive a reload, like the tables do) and are registered into each
// config's registry as it loads (ctx.GetMetricsRegistry), the way
// reverse_proxy does. Label values come from bounded sets only, whatever
// a client (or a server) sends: the configured route name; MCP's methods
// and released protocol versions (mcpreq.MethodLabel, VersionLabel), any
// other method or version "other"; tool names the server listed (at most
// metrics_max_tools of them, then "other"); the JSON-RPC and MCP error
// codes (errorLabel), any other code "other".

import (
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddymcp/caddymcp/internal/childproc"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

var bridgeMetrics struct {
	once        sync.Once
	operations  *prometheus.HistogramVec
	childStarts *prometheus.CounterVec
	childExits  *prometheus.CounterVec
	rounds      *prometheus.CounterVec
	tasks       *prometheus.CounterVec
	startTime   *prometheus.HistogramVec
	live        *liveCollector
}

// liveCollector reports the live sessions and pool children of every
// table, per route, when scraped.
type liveCollector struct {
	sessions, children *prometheus.Desc
}

var liveTables sync.Map // *table -> route label

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sessions
	ch <- c.children
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	sessions, children := map[string]int{}, map[string]int{}
	liveTables.Range(func(k, v any) bool {
		t, cmd := k.(*table), v.(string)
		t.mu.Lock()
		n := len(t.sessions)
		t.mu.Unlock()
		sessions[cmd] += n
		for _, p := range t.poolList() {
			children[cmd] += len(p.snapshot())
		}
		children[cmd] += n
		return true
	})
	for cmd, n := range sessions {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(n), cmd)
	}
	for cmd, n := range children {
		ch <- prometheus.MustNewConstMetric(c.children, prometheus.GaugeValue, float64(n), cmd)
	}
}

func initBridgeMetrics(reg *prometheus.Registry) {
	bridgeMetrics.once.Do(func() {
		bridgeMetrics.operations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcp_server_operation_duration_seconds",
			Help:    "MCP requests served by mcp_stdio, by method, tool, error type and protocol version.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "mcp_method_name", "gen_ai_tool_name", "error_type", "mcp_protocol_version"})
		bridgeMetrics.childStarts = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_stdio_child_starts_total", Help: "Server processes started by mcp_stdio (sessions and pool children).",
		}, []string{"route", "kind"})
		bridgeMetrics.childExits = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_stdio_child_exits_total", Help: "Server processes that exited, by cause (ended by the bridge, or on their own).",
		}, []string{"route", "cause"})
		bridgeMetrics.rounds = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_stdio_input_required_rounds_total", Help: "input_required rounds answered to MCP 2026-07-28 clients.",
		}, []string{"route"})
		bridgeMetrics.tasks = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_stdio_tasks_total", Help: "Tasks of mcp_stdio by event: created, refused (no slot free), and how they ended (completed, failed, cancelled).",
		}, []string{"route", "event"})
		bridgeMetrics.startTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mcp_stdio_child_start_seconds",
			Help:    "From starting a server process to its answer to initialize (or server/discover).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"})
		bridgeMetrics.live = &liveCollector{
			sessions: prometheus.NewDesc("mcp_stdio_sessions", "Live 2025 sessions per route (mcp_stdio's name, default its command's base name).", []string{"route"}, nil),
			children: prometheus.NewDesc("mcp_stdio_children", "Live server processes per route: sessions' and pool children.", []string{"route"}, nil),
		}
	})
	for _, c := range []prometheus.Collector{bridgeMetrics.operations, bridgeMetrics.childStarts, bridgeMetrics.childExits,
		bridgeMetrics.rounds, bridgeMetrics.tasks, bridgeMetrics.startTime, bridgeMetrics.live} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// commandLabel is the command's base name, the route's label.
func commandLabel(cmd string) string { return filepath.Base(cmd) }

// toolLabels keeps the tool names a route's server listed, up to a bound.
// Readers (every request) load an immutable set without a lock; learn
// (a tools/list answer) copies it under mu.
type toolLabels struct {
	mu    sync.Mutex // serializes learn and setting max
	names atomic.Pointer[map[string]bool]
	max   int
}

func (l *toolLabels) learn(names []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.names.Load()
	next := map[string]bool{}
	if old != nil {
		for n := range *old {
			next[n] = true
		}
	}
	added := false
	for _, n := range names {
		if len(next) >= l.max {
			break
		}
		if !next[n] {
			next[n] = true
			added = true
		}
	}
	if added || old == nil {
		l.names.Store(&next)
	}
}

// label is name if the server listed it (and the bound allows), else "other".
func (l *toolLabels) label(name string) string {
	if name == "" {
		return ""
	}
	if m := l.names.Load(); m != nil && (*m)[name] {
		return name
	}
	return "other"
}

// errorCodes are the error codes an error_type label names: JSON-RPC's,
// and those MCP and its SDKs define.
var errorCodes = map[int]bool{
	-32700: true, -32600: true, -32601: true, -32602: true, -32603: true, // JSON-RPC
	-32000: true,                                                         // a generic server error (SDKs)
	-32010: true, -32011: true, -32012: true, -32013: true, -32014: true, // caddymcp's own (internal/rpccode)
	-32001: true,                             // request timeout (TypeScript SDK)
	-32002: true,                             // resource not found (2025)
	-32020: true, -32021: true, -32022: true, // header mismatch, missing capability, unsupported version (2026-07-28)
	-32042: true, // URL elicitation required (2025-11-25)
	-32800: true, // request cancelled
}

// errorLabel is code as an error_type label: the server chooses its codes
// (or relays another's), so only known ones name themselves.
func errorLabel(code int) string {
	if errorCodes[code] {
		return strconv.Itoa(code)
	}
	return "other"
}

// opKey is one label set of the operations histogram (but the route's).
type opKey struct{ method, tool, errorType, version string }

// observe records one served request.
func (h *Handler) observe(method, name, version string, errCode int, toolError bool, started time.Time) {
	if bridgeMetrics.operations == nil {
		return
	}
	et := ""
	switch {
	case errCode != 0:
		et = errorLabel(errCode)
	case toolError:
		et = "tool_error"
	}
	tool := ""
	if method == "tools/call" {
		tool = h.table.tools.label(name)
	}
	method, version = mcpreq.MethodLabel(method), mcpreq.VersionLabel(version)
	// the observer of a label set is looked up once per handler: the vec's
	// own lookup hashes the labels under a lock shared by every request
	if h.observers == nil { // a handler made in a test, not provisioned
		bridgeMetrics.operations.WithLabelValues(h.cmdLabel, method, tool, et, version).Observe(time.Since(started).Seconds())
		return
	}
	k := opKey{method, tool, et, version}
	o, ok := h.observers.Load(k)
	if !ok {
		o, _ = h.observers.LoadOrStore(k, bridgeMetrics.operations.WithLabelValues(h.cmdLabel, method, tool, et, version))
	}
	o.(prometheus.Observer).Observe(time.Since(started).Seconds())
}

// countExit counts a server process that exited: ended by the bridge, or
// on its own.
func countExit(cfg *settings, expected bool, err error) {
	if bridgeMetrics.childExits == nil || cfg == nil {
		return
	}
	cause := childproc.ExitCause(err) // a sandbox limit: memory, cpu, file_size
	switch {
	case cause != "":
	case expected:
		cause = "ended"
	default:
		cause = "exited"
	}
	bridgeMetrics.childExits.WithLabelValues(cfg.command, cause).Inc()
}

// countStart counts a server process started for sink.
func countStart(command string, sink childproc.Sink) {
	if bridgeMetrics.childStarts == nil {
		return
	}
	kind := "session"
	switch sink.(type) {
	case *poolChild:
		kind = "pool"
	case *probeSink:
		kind = "probe"
	case *switchSink:
		kind = "prewarm"
	}
	bridgeMetrics.childStarts.WithLabelValues(command, kind).Inc()
}

// observeStart records how long a server process took to answer its first
// request.
func observeStart(command string, since time.Time) {
	if bridgeMetrics.startTime != nil {
		bridgeMetrics.startTime.WithLabelValues(command).Observe(time.Since(since).Seconds())
	}
}
