package stdiobridge

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// A route's identity keys its session table: a reload that keeps the
// route finds its sessions, limits, settings, probe verdict and metric
// label again, and no other route can inherit them. It is the process
// config, the server's listeners, the matchers of every route on the way
// from the server to the handler (in a Caddyfile: the site's host
// matcher, then `route /a/mcp`, `handle`, the directive's own matcher …)
// and `name`; never a position, which adding or sorting routes changes.
//
// A handler cannot see its route while it is provisioned (its parents are
// provisioned around it), so the identity is settled once its config is
// fully provisioned: on the server's first connection or request, or, on
// a reload, when the old config's handlers are about to decide whether
// anyone else holds their tables (endStreams, Cleanup), whichever comes
// first. Until then a handler holds no table; `caddy validate` never
// makes one.
//
// Where the walk cannot find the handler (it sits in a handler that holds
// routes other than subroute, or outside an HTTP server), or two handlers
// have the same identity (the later one is shadowed: equal matchers send
// every request to the first), they are told apart by their order among
// such handlers, as before; `name` separates them for good.

var (
	unsettledMu sync.Mutex
	unsettled   = map[*Handler]struct{}{} // provisioned handlers whose route is not settled yet
)

// resolvePending settles the route of every provisioned handler; called
// before a handler decides whether another config holds its table.
func resolvePending() {
	unsettledMu.Lock()
	hs := make([]*Handler, 0, len(unsettled))
	for h := range unsettled {
		hs = append(hs, h)
	}
	unsettledMu.Unlock()
	for _, h := range hs {
		h.resolve()
	}
}

// routeState is a handler's route once settled (see resolve).
type routeState struct {
	mu       sync.Mutex
	resolved bool
	dead     bool // cleaned up before it was settled: never joins a table
	srv      *caddyhttp.Server
	fallback int // order among unlocatable handlers of this process config and server
}

// resolve settles this handler's route identity and joins its session
// table; idempotent. Everything that uses h.table calls it first.
func (h *Handler) resolve() {
	rs := h.route
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.resolved || rs.dead {
		return
	}
	rs.resolved = true
	// h leaves unsettled only once it holds its table (below): an old
	// config's handler that calls resolvePending then waits on rs.mu for
	// this resolve to finish, instead of missing h and letting the table
	// go while h is about to join it (a reload under load ended an
	// unchanged route's sessions so)
	defer func() {
		unsettledMu.Lock()
		delete(unsettled, h)
		unsettledMu.Unlock()
	}()

	id, label := routeIdentity(rs.srv, h, rs.fallback)
	h.poolKey = h.procKey + " " + id
	h.sealer.route = routeDigest(h.poolKey)
	if h.Name == "" && label != "" {
		h.cmdLabel = label
	}
	h.cfg.command = h.cmdLabel
	h.spawner.label = h.cmdLabel
	val, _, err := tables.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newTable(h.logger, h.gen, h.cfg, h.spawner), nil
	})
	if err != nil { // newTable never fails
		h.logger.Error("session table", zap.Error(err))
	}
	h.table = val.(*table)
	liveTables.Store(h.table, h.cmdLabel)
	h.table.tools.mu.Lock()
	if h.table.tools.max == 0 {
		h.table.tools.max = h.MetricsMaxTools
	}
	h.table.tools.mu.Unlock()
}

// forget takes an unsettled handler out of pending for good (Cleanup);
// true if it had settled (and holds a table reference).
func (h *Handler) forget() bool {
	rs := h.route
	if rs == nil {
		return false
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	unsettledMu.Lock()
	delete(unsettled, h)
	unsettledMu.Unlock()
	if !rs.resolved {
		rs.dead = true
	}
	return rs.resolved
}

// routeIdentity describes h's place by the matchers that lead to it, and
// a readable default metrics label (host and path of those matchers).
func routeIdentity(srv *caddyhttp.Server, h *Handler, fallback int) (id, label string) {
	name := ""
	if h.Name != "" {
		name = " name=" + h.Name
	}
	if srv == nil {
		return fmt.Sprintf("unlocated%s #%d", name, fallback), ""
	}
	listen := fmt.Sprintf("listen=%q", srv.Listen)
	type found struct {
		h     *Handler
		chain string
		host  string
		path  string
	}
	var all []found
	var walk func(routes caddyhttp.RouteList, chain, host, path string, depth int)
	walk = func(routes caddyhttp.RouteList, chain, host, path string, depth int) {
		if depth > 32 {
			return
		}
		for i := range routes {
			r := &routes[i]
			c, hs, ps := chain+" > "+describeMatchers(r.MatcherSets), host, path
			if h0, p0 := matcherHostPath(r.MatcherSets); h0 != "" || p0 != "" {
				if h0 != "" {
					hs = h0
				}
				if p0 != "" {
					ps = p0
				}
			}
			for _, hd := range r.Handlers {
				switch v := hd.(type) {
				case *Handler:
					all = append(all, found{v, c, hs, ps})
				case *caddyhttp.Subroute:
					walk(v.Routes, c, hs, ps, depth+1)
				}
			}
		}
	}
	walk(srv.Routes, "routes", "", "", 0)
	if srv.Errors != nil {
		walk(srv.Errors.Routes, "errors", "", "", 0)
	}
	names := make([]string, 0, len(srv.NamedRoutes))
	for n := range srv.NamedRoutes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if r := srv.NamedRoutes[n]; r != nil {
			walk(caddyhttp.RouteList{*r}, "named "+n, "", "", 0)
		}
	}
	seen := map[string]int{}
	for _, f := range all {
		k := f.h.procKey + f.chain + f.h.Name
		n := seen[k]
		seen[k] = n + 1
		if f.h == h {
			label = f.host + f.path
			if len(label) > 64 {
				label = label[:64]
			}
			return fmt.Sprintf("%s %s%s #%d", listen, f.chain, name, n), label
		}
	}
	h.logger.Warn("mcp_stdio: the route of this handler was not found among the server's routes and subroutes; it is told apart from identical handlers by its order (set name to keep its sessions when routes are added or moved)")
	return fmt.Sprintf("%s unlocated%s #%d", listen, name, fallback), ""
}

// describeMatchers renders matcher sets by module and config, so that
// equal matchers give equal text.
func describeMatchers(sets caddyhttp.MatcherSets) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, set := range sets {
		if i > 0 {
			b.WriteString(" | ")
		}
		for j, m := range set {
			if j > 0 {
				b.WriteString(" & ")
			}
			b.WriteString(describeMatcher(m))
		}
	}
	b.WriteByte(']')
	return b.String()
}

func describeMatcher(m any) string {
	switch v := m.(type) {
	case *caddyhttp.MatchNot:
		return "not" + describeMatchers(v.MatcherSets)
	case caddyhttp.MatchNot:
		return "not" + describeMatchers(v.MatcherSets)
	}
	id := caddy.GetModuleID(m)
	if id == "" {
		id = fmt.Sprintf("%T", m)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return id
	}
	return id + "=" + string(raw)
}

// matcherHostPath returns the first host and path of a route's matchers.
func matcherHostPath(sets caddyhttp.MatcherSets) (host, path string) {
	for _, set := range sets {
		for _, m := range set {
			switch v := m.(type) {
			case caddyhttp.MatchHost:
				if host == "" && len(v) > 0 {
					host = v[0]
				}
			case *caddyhttp.MatchHost:
				if host == "" && len(*v) > 0 {
					host = (*v)[0]
				}
			case caddyhttp.MatchPath:
				if path == "" && len(v) > 0 {
					path = v[0]
				}
			case *caddyhttp.MatchPath:
				if path == "" && len(*v) > 0 {
					path = (*v)[0]
				}
			}
		}
	}
	return host, path
}
