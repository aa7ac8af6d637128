package stdiobridge

import (
	"net/http"
	"slices"
	"sort"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/childproc"
	"github.com/caddymcp/caddymcp/internal/sandbox"
)

// spawner starts a route's children, every kind alike: a 2025 session's,
// a pool child, the probe's sibling and a prewarmed one. A handler builds
// one from its process config; the table starts children with the spawner
// of the newest config it published (table.startChild), which has the
// same process config (it is part of the table's key). This is the seam
// where how a child runs (childproc today) is decided.
type spawner struct {
	command   string
	args      []string
	dir       string
	inherited []string          // the variables children inherit from Caddy (inherit_env)
	env       map[string]string // env, with its placeholders
	label     string            // the route label of the children-started metric
	policy    *sandbox.Policy   // the route's sandbox, nil: none
}

// environ is a child's environment: the inherited variables and env, its
// placeholders resolved from r if given (nil: a child started for no
// request, such as a prewarmed one).
func (s *spawner) environ(r *http.Request) []string {
	env := slices.Clone(s.inherited)
	if len(s.env) == 0 {
		return env
	}
	var repl *caddy.Replacer
	if r != nil {
		repl, _ = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	}
	names := make([]string, 0, len(s.env))
	for name := range s.env {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v := s.env[name]
		if repl != nil {
			v = repl.ReplaceAll(v, "")
		}
		env = append(env, name+"="+v)
	}
	return env
}

// sandboxField says what a child runs under, for the line that logs its
// start: the restrictions the route's sandbox applied ("none" without
// one), and the child's own cgroup when it has one.
func (h *Handler) sandboxField(p *childproc.Process) zap.Field {
	if h.policy == nil {
		return zap.String("sandbox", "none")
	}
	if cg := p.Cgroup(); cg != "" {
		return zap.String("sandbox", h.policy.Summary()+" ("+cg+")")
	}
	return zap.String("sandbox", h.policy.Summary())
}

// start starts a child with the environment env (nil: environ(nil)),
// whose stdout lines are held to maxSize as it reads when each begins.
func (s *spawner) start(env []string, maxSize func() int, sink childproc.Sink, logger *zap.Logger) (*childproc.Process, error) {
	if env == nil {
		env = s.environ(nil)
	}
	countStart(s.label, sink)
	return childproc.Start(childproc.Config{Command: s.command, Args: s.args, Env: env, Dir: s.dir, MaxMessageSize: maxSize, Sandbox: s.policy}, sink, logger)
}
