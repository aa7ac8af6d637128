package mcpauth

// Metrics in Caddy's registry (see stdiobridge/metrics.go for the scheme):
// authentication and authorization decisions by result, and JWKS fetches.

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
}

func initAuthMetrics(reg *prometheus.Registry) {
	authMetrics.once.Do(func() {
		authMetrics.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_decisions_total",
			Help: "mcp_auth decisions: ok, no_token, invalid_token (by reason), invalid_request, insufficient_scope, rate_limited, unreadable.",
		}, []string{"result", "reason"})
		authMetrics.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_auth_jwks_fetches_total",
			Help: "JWKS fetches by mcp_auth, by what started them and whether keys were loaded.",
		}, []string{"what", "result"})
		authMetrics.ok = authMetrics.decisions.WithLabelValues("ok", "")
	})
	for _, c := range []prometheus.Collector{authMetrics.decisions, authMetrics.fetches} {
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
