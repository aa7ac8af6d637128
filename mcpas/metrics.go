package mcpas

// Metrics in Caddy's registry (see stdiobridge/metrics.go for the scheme):
// tokens issued by grant, logins by result, client registrations by
// result.

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var asMetrics struct {
	once          sync.Once
	tokens        *prometheus.CounterVec
	logins        *prometheus.CounterVec
	registrations *prometheus.CounterVec
}

func initMetrics(reg *prometheus.Registry) {
	asMetrics.once.Do(func() {
		asMetrics.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_authorization_server_tokens_total",
			Help: "Access tokens issued by mcp_authorization_server, by grant: authorization_code, refresh_token.",
		}, []string{"grant"})
		asMetrics.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_authorization_server_logins_total",
			Help: "Upstream logins that reached mcp_authorization_server's callback, by upstream and result: ok, refused (no allow rule matches), failed (the upstream's answer could not be used), denied (the user or the upstream said no).",
		}, []string{"upstream", "result"})
		asMetrics.registrations = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_authorization_server_registrations_total",
			Help: "Dynamic client registrations, by result: ok, invalid (refused metadata), full (max_clients), limited (register_rate).",
		}, []string{"result"})
	})
	for _, c := range []prometheus.Collector{asMetrics.tokens, asMetrics.logins, asMetrics.registrations} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err)
			}
		}
	}
}

func count(v *prometheus.CounterVec, labels ...string) {
	if v != nil {
		v.WithLabelValues(labels...).Inc()
	}
}
