package mcpmatch

import (
	"reflect"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

var stringSlice = reflect.TypeOf([]string{})

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens:
//
//	mcp <method> [<name-glob...>] {
//		max_size <size>
//	}
func (m *MatchMCP) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // matcher name
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	m.Method, m.Names = args[0], args[1:]
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_size":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<30 {
				return d.Errf("max_size: %q is not a size between 1 byte and 1GiB", v)
			}
			m.MaxSize = int64(n)
		default:
			return d.Errf("unrecognized mcp matcher option %q", d.Val())
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*MatchMCP)(nil)
