package mcpauth

// Metrics in Caddy's registry (see stdiobridge/metrics.go for the scheme):
// authentication and authorization decisions by result, JWKS fetches, and
// token introspection: calls to the endpoint by outcome, cache hits by the
// answer they held.

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var authMetrics struct {
	once      sync.Once
	decisions *prometheus.CounterVec
	fetches   *prometheus.CounterVec
	ok        prometheus.Counter // decisions{result="ok"}, resolved once: the hot path

	introspections *prometheus.CounterVec
	cacheHits      *prometheus.CounterVec
	// their children, resolved once
	calls       map[string]prometheus.Counter // by outcome: active, inactive, error
	hitActive   prometheus.Counter
	hitInactive prometheus.Counter
}

func initAuthMetrics(reg *prometheus.Registry) {
	authMetrics.once.Do(func() {
		authMetrics.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_decisions_total",
			Help: "mcp_auth decisions: ok, no_token, invalid_token (by reason), invalid_request, insufficient_scope, rate_limited, unreadable, unavailable (token introspection failed).",
		}, []string{"result", "reason"})
		authMetrics.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_jwks_fetches_total",
			Help: "JWKS fetches by mcp_auth, by what started them and whether keys were loaded.",
		}, []string{"what", "result"})
		authMetrics.ok = authMetrics.decisions.WithLabelValues("ok", "")
		authMetrics.introspections = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_introspections_total",
			Help: "Calls of mcp_auth to a token introspection endpoint (RFC 7662), by outcome: active, inactive, error (no usable answer).",
		}, []string{"result"})
		authMetrics.cacheHits = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_introspection_cache_hits_total",
			Help: "Requests whose token mcp_auth found in its introspection cache, by the answer cached: active, inactive.",
		}, []string{"answer"})
		authMetrics.calls = map[string]prometheus.Counter{}
		for _, r := range []string{"active", "inactive", "error"} {
			authMetrics.calls[r] = authMetrics.introspections.WithLabelValues(r)
		}
		authMetrics.hitActive = authMetrics.cacheHits.WithLabelValues("active")
		authMetrics.hitInactive = authMetrics.cacheHits.WithLabelValues("inactive")
	})
	for _, c := range []prometheus.Collector{authMetrics.decisions, authMetrics.fetches, authMetrics.introspections, authMetrics.cacheHits} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

// countDecision counts one decision; reason is set for invalid_token only
// (invalidReason), "" otherwise.
func countDecision(result, reason string) {
	switch {
	case authMetrics.decisions == nil:
	case result == "ok":
		authMetrics.ok.Inc()
	default:
		authMetrics.decisions.WithLabelValues(result, reason).Inc()
	}
}

// countIntrospection counts one call to an introspection endpoint by its
// outcome: active, inactive or error.
func countIntrospection(result string) {
	if c := authMetrics.calls[result]; c != nil {
		c.Inc()
	}
}

// countCacheHit counts a request answered from the introspection cache.
func countCacheHit(active bool) {
	switch {
	case authMetrics.hitActive == nil:
	case active:
		authMetrics.hitActive.Inc()
	default:
		authMetrics.hitInactive.Inc()
	}
}
