// Package mcplb is reverse_proxy's `mcp` selection policy: it sends every
// request that carries an id made by a caddymcp instance (a 2025
// Mcp-Session-Id, a 2026-07-28 retry's requestState, a task id in the
// Mcp-Name of tasks/get, tasks/update, tasks/cancel) to the upstream that
// is that instance, and everything else (initialize, stateless 2026-07-28
// requests) to a fallback policy, least_conn by default.
//
// Ids name their instance in clear and are authenticated with the key ring
// that every instance shares through Caddy's storage (internal/keyring,
// internal/instanceid); the balancer reads the same storage, so a client
// cannot steer a request with a forged id: an id that does not verify is
// treated as no id (the fallback's instance then answers 404, or refuses
// the requestState). Which upstream is which instance is configured
// (`instance <id> <dial>`); an instance not listed is the upstream whose
// dial address equals its id. Config only: it survives reloads of the
// balancer, and instances need not be reachable for it to load.
//
// When an id's instance is gone (not in the pool, or unhealthy), the
// request goes to the fallback: another instance answers it as the spec
// says for lost state (404 for a session, which the client re-initializes;
// -32602 for a round, which the client sends again without requestState).
// `drain <id...>` takes an instance out of the fallback: it gets no new
// work, while requests naming it still reach it, so its sessions finish.
package mcplb

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddymcp/caddymcp/internal/instanceid"
	"github.com/caddymcp/caddymcp/internal/keyring"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

func init() {
	caddy.RegisterModule(Selection{})
}

// Selection routes MCP requests to the caddymcp instance that owns them.
type Selection struct {
	// Which upstream is which instance: instance id -> the upstream's dial
	// address (as in `to`, e.g. "10.0.0.2:8080"). An instance not listed
	// is the upstream whose dial address equals its id.
	Instances map[string]string `json:"instances,omitempty"`

	// Instances that take no new work: requests that name them still
	// reach them (their sessions and rounds finish), the fallback never
	// chooses them.
	Drain []string `json:"drain,omitempty"`

	// The policy for requests that name no instance, or whose instance is
	// gone. Default: least_conn.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	// How much of a POST body is read to find a requestState. Default: 4MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	fallback reverseproxy.Selector
	ring     *keyring.Ring
	drainSet map[string]bool // dial addresses
	logger   *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Selection) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.mcp",
		New: func() caddy.Module { return new(Selection) },
	}
}

// Provision loads the fallback policy and the shared key ring.
func (s *Selection) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if s.MaxSize <= 0 {
		s.MaxSize = mcpreq.DefaultMaxBytes
	}
	if s.FallbackRaw == nil {
		s.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.LeastConnSelection{}, "policy", "least_conn", nil)
	}
	mod, err := ctx.LoadModule(s, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading fallback selection policy: %v", err)
	}
	s.fallback = mod.(reverseproxy.Selector)
	for id := range s.Instances {
		if err := instanceid.Valid(id); err != nil {
			return err
		}
	}
	s.drainSet = map[string]bool{}
	for _, id := range s.Drain {
		s.drainSet[s.dialOf(id)] = true
	}
	s.ring, err = keyring.For(ctx, ctx.Storage(), s.logger)
	if err != nil {
		return fmt.Errorf("the shared key ring (Caddy storage): %v", err)
	}
	return nil
}

func (s *Selection) dialOf(instance string) string {
	if d, ok := s.Instances[instance]; ok {
		return d
	}
	return instance
}

// owner is the instance that an authenticated id in the request names, or
// "".
func (s *Selection) owner(r *http.Request) string {
	if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
		inst, ok := instanceid.SessionOwner(r.Context(), s.ring, sid)
		if !ok {
			s.debug("session id does not verify: routed as if it had none")
		}
		return inst
	}
	if r.Method != http.MethodPost {
		return ""
	}
	if strings.HasPrefix(r.Header.Get("Mcp-Method"), "tasks/") {
		// the tasks extension: Mcp-Name carries the task id (the instance
		// checks that it is the body's), so that balancers route by it
		id, _ := mcpreq.DecodeHeaderValue(r.Header.Get("Mcp-Name"))
		if i := strings.LastIndexByte(id, '/'); i >= 0 {
			id = id[i+1:] // mcp_aggregate's: backend/id
		}
		if id == "" {
			return ""
		}
		inst, ok := instanceid.TaskOwner(r.Context(), s.ring, id)
		if !ok {
			s.debug("task id does not verify: routed as if it had none")
		}
		return inst
	}
	q := mcpreq.Get(r, s.MaxSize)
	if q.Batch || q.First().RequestState == "" {
		return ""
	}
	inst, _, err := instanceid.Open(r.Context(), s.ring, q.First().RequestState)
	if err != nil {
		s.debug("requestState does not verify: routed as if it had none")
		return ""
	}
	return inst
}

func (s *Selection) debug(msg string) {
	if c := s.logger.Check(zapcore.DebugLevel, msg); c != nil {
		c.Write()
	}
}

// Select returns the upstream of the request's instance if it is
// available, else the fallback's choice among the upstreams not draining.
func (s *Selection) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	if inst := s.owner(r); inst != "" {
		dial := s.dialOf(inst)
		for _, u := range pool {
			if u.Dial == dial {
				if u.Available() {
					return u
				}
				break
			}
		}
		if c := s.logger.Check(zapcore.DebugLevel, "the request's instance is not available: routed by the fallback"); c != nil {
			c.Write(zap.String("instance", inst))
		}
	}
	if len(s.drainSet) == 0 {
		return s.fallback.Select(pool, r, w)
	}
	open := slices.DeleteFunc(slices.Clone(pool), func(u *reverseproxy.Upstream) bool { return s.drainSet[u.Dial] })
	if len(open) == 0 {
		open = pool
	}
	return s.fallback.Select(open, r, w)
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Selection)(nil)
	_ reverseproxy.Selector = (*Selection)(nil)
)
