package mcpas

import (
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/cfargs"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_authorization_server", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("mcp_authorization_server", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mcp_authorization_server [<matcher>] {
//		issuer <url>
//		resource <url...>
//		scopes <scope...>
//		upstream <name> oidc <issuer-url> {
//			client_id <id>
//			client_secret <secret>
//			scopes <scope...>
//			label <text>
//		}
//		upstream <name> github {
//			client_id <id>
//			client_secret <secret>
//			scopes <scope...>
//			label <text>
//			auth_url <url>
//			token_url <url>
//			api_url <url>
//		}
//		allow <condition...>
//		grant <scope...> [if <condition...>]
//		access_token_lifetime <duration>
//		refresh_token_lifetime <duration>
//		consent_lifetime <duration>
//		session_lifetime <duration>
//		client_lifetime <duration>
//		max_clients <n>
//		registration on|off
//		register_rate <n>/<window>
//		token_rate <n>/<window>
//		allow_private_metadata
//	}
//
// A condition is one or more of: upstream <name>, email <address...>,
// email_domain <domain...>, claim <name> <value...>, github_org <org...>,
// github_team <org/team...>, subject <sub...>, everyone; all must hold. An
// allow line is a rule: a user matching any may log in. resource, scopes,
// upstream, allow and grant may be repeated; any other option given twice
// is refused.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "resource", "scopes", "upstream", "allow", "grant":
		default:
			if err := once.Check(d); err != nil {
				return err
			}
		}
		switch opt {
		case "issuer", "registration", "register_rate", "token_rate", "max_clients":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "issuer":
				h.Issuer = v
			case "registration":
				if v != "on" && v != "off" {
					return d.Errf("registration: on or off, not %q", v)
				}
				on := v == "on"
				h.Registration = &on
			case "register_rate":
				h.RegisterRate = v
			case "token_rate":
				h.TokenRate = v
			case "max_clients":
				n, err := strconv.Atoi(v)
				if err != nil || n <= 0 {
					return d.Errf("max_clients: a positive number, not %q", v)
				}
				h.MaxClients = n
			}
		case "resource", "scopes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if opt == "resource" {
				h.Resources = append(h.Resources, args...)
			} else {
				h.Scopes = append(h.Scopes, args...)
			}
		case "access_token_lifetime", "refresh_token_lifetime", "consent_lifetime", "session_lifetime", "client_lifetime":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s: a positive duration, not %q", opt, v)
			}
			*map[string]*caddy.Duration{
				"access_token_lifetime": &h.AccessTokenLifetime, "refresh_token_lifetime": &h.RefreshTokenLifetime,
				"consent_lifetime": &h.ConsentLifetime, "session_lifetime": &h.SessionLifetime, "client_lifetime": &h.ClientLifetime,
			}[opt] = caddy.Duration(dur)
		case "allow_private_metadata":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.AllowPrivateMetadata = true
		case "upstream":
			up, err := parseUpstream(d)
			if err != nil {
				return err
			}
			h.Upstreams = append(h.Upstreams, up)
		case "allow":
			r, err := parseRule(d, d.RemainingArgs())
			if err != nil {
				return err
			}
			h.Allow = append(h.Allow, r)
		case "grant":
			args := d.RemainingArgs()
			i := slices.Index(args, "if")
			g := &Grant{Scopes: args}
			if i >= 0 {
				g.Scopes = args[:i]
				r, err := parseRule(d, args[i+1:])
				if err != nil {
					return err
				}
				g.If = r
			}
			if len(g.Scopes) == 0 {
				return d.Err("grant: at least one scope")
			}
			h.Grants = append(h.Grants, g)
		default:
			return d.Errf("unrecognized mcp_authorization_server option %q", opt)
		}
	}
	return nil
}

func parseUpstream(d *caddyfile.Dispenser) (*Upstream, error) {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return nil, d.Err("upstream <name> oidc <issuer-url> | upstream <name> github")
	}
	up := &Upstream{Name: args[0], Kind: args[1]}
	switch {
	case up.Kind == "oidc" && len(args) == 3:
		up.Issuer = args[2]
	case up.Kind == "github" && len(args) == 2:
	default:
		return nil, d.Err("upstream <name> oidc <issuer-url> | upstream <name> github")
	}
	once := cfargs.Once{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if err := once.Check(d); err != nil {
			return nil, err
		}
		if opt == "scopes" {
			if up.Scopes = d.RemainingArgs(); len(up.Scopes) == 0 {
				return nil, d.ArgErr()
			}
			continue
		}
		var v string
		if !d.AllArgs(&v) {
			return nil, d.ArgErr()
		}
		switch opt {
		case "scopes": // read above: a list
		case "client_id":
			up.ClientID = v
		case "client_secret":
			up.ClientSecret = v
		case "label":
			up.Label = v
		case "auth_url", "token_url", "api_url":
			if up.Kind != "github" {
				return nil, d.Errf("%s is for github upstreams", opt)
			}
			*map[string]*string{"auth_url": &up.AuthURL, "token_url": &up.TokenURL, "api_url": &up.APIURL}[opt] = v
		default:
			return nil, d.Errf("unrecognized upstream option %q", opt)
		}
	}
	return up, nil
}

// conditionWords start a condition of a rule.
var conditionWords = []string{"upstream", "email", "email_domain", "claim", "github_org", "github_team", "subject", "everyone"}

func parseRule(d *caddyfile.Dispenser, args []string) (*Rule, error) {
	r := &Rule{}
	if len(args) == 0 {
		return nil, d.Err("a rule needs a condition: upstream, email, email_domain, claim, github_org, github_team, subject or everyone")
	}
	for i := 0; i < len(args); {
		word := args[i]
		if !slices.Contains(conditionWords, word) {
			return nil, d.Errf("%q is not a condition (upstream, email, email_domain, claim, github_org, github_team, subject, everyone)", word)
		}
		j := i + 1
		for j < len(args) && !slices.Contains(conditionWords, args[j]) {
			j++
		}
		vals := args[i+1 : j]
		i = j
		if word == "everyone" {
			if len(vals) > 0 {
				return nil, d.Err("everyone takes no value")
			}
			r.Everyone = true
			continue
		}
		if len(vals) == 0 || (word == "claim" && len(vals) < 2) || (word == "upstream" && len(vals) != 1) {
			return nil, d.Errf("%s: missing value", word)
		}
		switch word {
		case "upstream":
			r.Upstream = vals[0]
		case "email":
			r.Emails = append(r.Emails, vals...)
		case "email_domain":
			r.EmailDomains = append(r.EmailDomains, vals...)
		case "claim":
			if r.Claim != "" {
				return nil, d.Err("one claim per rule")
			}
			r.Claim, r.Values = vals[0], vals[1:]
		case "github_org":
			r.GitHubOrgs = append(r.GitHubOrgs, vals...)
		case "github_team":
			r.GitHubTeams = append(r.GitHubTeams, vals...)
		case "subject":
			r.Subjects = append(r.Subjects, vals...)
		}
	}
	return r, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
