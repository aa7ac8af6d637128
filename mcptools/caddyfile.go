package mcptools

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/cfargs"
	"github.com/caddymcp/caddymcp/internal/mcpreq"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_tools", parseCaddyfile)
	// after mcp_auth (whose rules then see the names clients see) and
	// encode (so that the answers it curates are not compressed yet)
	httpcaddyfile.RegisterDirectiveOrder("mcp_tools", httpcaddyfile.After, "templates")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	mcp_tools [<matcher>] {
//		allow tools|prompts|resources <glob...>
//		deny tools|prompts|resources <glob...>
//		tool <name> {
//			rename <name>
//			title <text>
//			description <text>
//			annotation <name> <json>
//			fixed <argument> <json>
//		}
//		prompt <name> {
//			rename <name>
//			title <text>
//			description <text>
//			fixed <argument> <text>
//		}
//		pin <name> [tofu|approved]
//		approve tool|prompt|template <name> <digest>
//		max_size <size>
//	}
//
// pin holds back definitions that change (README, Pinning); approve
// approves a digest in the config, and needs pin. allow, deny, tool,
// prompt and approve may be repeated (globs accumulate; a tool
// or prompt named twice is refused); the options of a tool or prompt
// block, but for annotation and fixed (one per name), are given once. A
// fixed or annotation value that is valid JSON is that JSON (42, true,
// {"a":1}); any other is a string. A fixed value may hold placeholders
// ({http.auth.user.id}), replaced on each call.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "allow", "deny":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.ArgErr()
			}
			s := h.setFor(args[0])
			if s == nil {
				return d.Errf("%s: %q is not tools, prompts or resources", opt, args[0])
			}
			if opt == "allow" {
				s.Allow = append(s.Allow, args[1:]...)
			} else {
				s.Deny = append(s.Deny, args[1:]...)
			}
		case "tool", "prompt":
			var name string
			if !d.Args(&name) || d.NextArg() {
				return d.ArgErr()
			}
			s := h.setFor(opt + "s")
			if s.Entries == nil {
				s.Entries = map[string]*Entry{}
			}
			if _, ok := s.Entries[name]; ok {
				return d.Errf("%s %q: given twice", opt, name)
			}
			e, err := parseEntry(d, opt)
			if err != nil {
				return err
			}
			s.Entries[name] = e
		case "pin":
			if err := once.Check(d); err != nil {
				return err
			}
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			if h.Pin == nil {
				h.Pin = &Pin{}
			}
			h.Pin.Name = args[0]
			if len(args) == 2 {
				if args[1] != "tofu" && args[1] != "approved" {
					return d.Errf("pin: %q is not tofu or approved", args[1])
				}
				h.Pin.Mode = args[1]
			}
		case "approve":
			var kind, name, digest string
			if !d.AllArgs(&kind, &name, &digest) {
				return d.ArgErr()
			}
			if _, ok := definitionFields[kind]; !ok {
				return d.Errf("approve: %q is not tool, prompt or template", kind)
			}
			if h.Pin == nil {
				h.Pin = &Pin{}
			}
			if h.Pin.Approve == nil {
				h.Pin.Approve = map[string]string{}
			}
			h.Pin.Approve[kind+":"+name] = digest
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
			h.MaxSize = n
		default:
			return d.Errf("unrecognized mcp_tools option %q", opt)
		}
	}
	return nil
}

// setFor is the Set of a kind's plural, made if absent (nil: no such kind).
func (h *Handler) setFor(kinds string) *Set {
	var p **Set
	switch kinds {
	case "tools":
		p = &h.Tools
	case "prompts":
		p = &h.Prompts
	case "resources":
		p = &h.Resources
	default:
		return nil
	}
	if *p == nil {
		*p = &Set{}
	}
	return *p
}

// parseEntry reads a tool or prompt block (its syntax is
// UnmarshalCaddyfile's).
func parseEntry(d *caddyfile.Dispenser, kind string) (*Entry, error) {
	e := &Entry{}
	once := cfargs.Once{}
	for d.NextBlock(1) {
		opt := d.Val()
		switch opt {
		case "rename", "title", "description":
			if err := once.Check(d); err != nil {
				return nil, err
			}
			var v string
			if !d.AllArgs(&v) {
				return nil, d.ArgErr()
			}
			switch opt {
			case "rename":
				if v == "" {
					return nil, d.Errf("rename: the new name is empty")
				}
				e.Rename = v
			case "title":
				e.Title = &v
			default:
				e.Description = &v
			}
		case "annotation", "fixed":
			var name, v string
			if !d.AllArgs(&name, &v) {
				return nil, d.ArgErr()
			}
			if opt == "annotation" && kind == "prompt" {
				return nil, d.Errf("annotation: prompts have no annotations")
			}
			m := &e.Annotations
			if opt == "fixed" {
				m = &e.Fixed
			}
			if *m == nil {
				*m = map[string]json.RawMessage{}
			}
			if _, ok := (*m)[name]; ok {
				return nil, d.Errf("%s %q: set twice", opt, name)
			}
			(*m)[name] = jsonValue(v, kind == "prompt" && opt == "fixed")
		default:
			return nil, d.Errf("unrecognized %s option %q", kind, opt)
		}
	}
	return e, nil
}

// jsonValue is v as JSON: itself where it is valid JSON (and not asString),
// else a JSON string.
func jsonValue(v string, asString bool) json.RawMessage {
	if !asString && json.Valid([]byte(v)) {
		return json.RawMessage(v)
	}
	b, _ := json.Marshal(v)
	return b
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
