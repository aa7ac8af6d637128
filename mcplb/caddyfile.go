package mcplb

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddymcp/caddymcp/internal/cfargs"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens:
//
//	lb_policy mcp {
//		instance <id> <dial address>
//		drain <id...>
//		fallback <policy> [<args...>]
//		max_size <size>
//	}
//
// instance (once per id) and drain may be repeated; fallback and max_size
// may not.
func (s *Selection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // policy name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		switch d.Val() {
		case "instance":
			var id, dial string
			if !d.AllArgs(&id, &dial) {
				return d.ArgErr()
			}
			if err := once.CheckKey(d, "instance", id); err != nil {
				return err
			}
			if s.Instances == nil {
				s.Instances = map[string]string{}
			}
			s.Instances[id] = dial
		case "drain":
			ids := d.RemainingArgs()
			if len(ids) == 0 {
				return d.ArgErr()
			}
			s.Drain = append(s.Drain, ids...)
		case "fallback":
			if err := once.Check(d); err != nil {
				return err
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "http.reverse_proxy.selection_policies."+name)
			if err != nil {
				return err
			}
			sel, ok := unm.(reverseproxy.Selector)
			if !ok {
				return d.Errf("module %s is not a selection policy", name)
			}
			s.FallbackRaw = caddyconfig.JSONModuleObject(sel, "policy", name, nil)
		case "max_size":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := mcpreq.ParseMaxSize(v)
			if err != nil {
				return d.Err(err.Error())
			}
			s.MaxSize = n
		default:
			return d.Errf("unrecognized mcp selection policy option %q", d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Selection)(nil)
