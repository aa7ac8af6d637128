package mcpagg

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/cfargs"
	"github.com/caddymcp/caddymcp/internal/originguard"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_aggregate", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("mcp_aggregate", httpcaddyfile.After, "reverse_proxy")
}

// parseCaddyfile reads the directive (UnmarshalCaddyfile) and turns each
// backend's block into its subroute, as a route block is.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	for i, seg := range m.segments {
		sub, err := httpcaddyfile.ParseSegmentAsSubroute(h.WithDispenser(caddyfile.NewDispenser(seg)))
		if err != nil {
			return nil, err
		}
		m.Backends[i].HandlerRaw = caddyconfig.JSONModuleObject(sub, "handler", "subroute", nil)
	}
	m.segments = nil
	if m.AllowedHosts == nil {
		m.AllowedHosts = originguard.SiteHosts(h)
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	mcp_aggregate [<matcher>] {
//		backend <name> { <directives...> }
//		prefix always|collision|never
//		separator <text>
//		timeout <duration>
//		session_idle_timeout <duration>
//		max_sessions <n>
//		instance_id <id>
//		allowed_hosts <host...>
//		allowed_origins <origin...>
//	}
//
// backend may be repeated, one per server; its block holds the
// directives that serve it (mcp_stdio, reverse_proxy, mcp_tools…), as a
// route block does; allowed_hosts and allowed_origins accumulate (the
// DNS-rebinding protection, as mcp_stdio's: default allowed_hosts, the
// site's names). Every other option is given once.
func (m *Handler) UnmarshalCaddyfile(h *caddyfile.Dispenser) error {
	h.Next() // directive name
	if h.NextArg() {
		return h.ArgErr()
	}
	once := cfargs.Once{}
	for h.NextBlock(0) {
		opt := h.Val()
		if opt != "backend" && opt != "allowed_hosts" && opt != "allowed_origins" {
			if err := once.Check(h); err != nil {
				return err
			}
		}
		switch opt {
		case "backend":
			seg := h.NextSegment()
			if len(seg) < 3 || seg[2].Text != "{" {
				return h.Errf("backend: want backend <name> { <directives> }")
			}
			// the block as a route block: its directive token, then the block
			m.segments = append(m.segments, append(caddyfile.Segment{seg[0]}, seg[2:]...))
			m.Backends = append(m.Backends, &Backend{Name: seg[1].Text})
		case "prefix", "separator", "instance_id":
			var v string
			if !h.AllArgs(&v) {
				return h.ArgErr()
			}
			if opt == "instance_id" {
				m.InstanceID = v
			} else if opt == "prefix" {
				if v != "always" && v != "collision" && v != "never" {
					return h.Errf("prefix: %q is not always, collision or never", v)
				}
				m.Prefix = v
			} else {
				if v == "" {
					return h.Errf("separator: empty")
				}
				m.Separator = v
			}
		case "timeout", "session_idle_timeout":
			var v string
			if !h.AllArgs(&v) {
				return h.ArgErr()
			}
			d, err := caddy.ParseDuration(v)
			if err != nil || d <= 0 {
				return h.Errf("%s: %q is not a duration", opt, v)
			}
			if opt == "timeout" {
				m.Timeout = caddy.Duration(d)
			} else {
				m.SessionIdleTimeout = caddy.Duration(d)
			}
		case "allowed_hosts", "allowed_origins":
			args := h.RemainingArgs()
			if len(args) == 0 {
				return h.ArgErr()
			}
			if opt == "allowed_hosts" {
				m.AllowedHosts = append(m.AllowedHosts, args...)
			} else {
				m.AllowedOrigins = append(m.AllowedOrigins, args...)
			}
		case "max_sessions":
			var v string
			if !h.AllArgs(&v) {
				return h.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return h.Errf("max_sessions: %q is not a positive number", v)
			}
			m.MaxSessions = n
		default:
			return h.Errf("unrecognized mcp_aggregate option %q", opt)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
