package mcpmatch

import (
	"reflect"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/cfargs"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

var stringSlice = reflect.TypeOf([]string{})

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens:
//
//	mcp <method> [<name-glob...>] {
//		max_size <size>
//	}
//	mcp {
//		unreadable
//		max_size <size>
//	}
//
// Each option may be given once.
func (m *MatchMCP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // matcher name
	args := d.RemainingArgs()
	if len(args) > 0 {
		m.Method, m.Names = args[0], args[1:]
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		switch d.Val() {
		case "unreadable":
			if err := once.Check(d); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			m.Unreadable = true
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
			m.MaxSize = n
		default:
			return d.Errf("unrecognized mcp matcher option %q", d.Val())
		}
	}
	if (m.Method == "") == !m.Unreadable {
		return d.Err("mcp <method> [<name-glob...>], or mcp { unreadable }")
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*MatchMCP)(nil)
