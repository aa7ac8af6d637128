package mcpauth

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/cfargs"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("mcp_auth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("mcp_auth", httpcaddyfile.After, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mcp_auth [<matcher>] {
//		issuer <url>
//		audience <aud...>
//		jwks_url <url>
//		jwks_file <path>
//		jwks_refresh_interval <duration>
//		jwks_refresh_min_interval <duration>
//		scopes <scope...>
//		algorithms <alg...>
//		leeway <duration>
//		mode strict|optional|permissive
//		resource_metadata <url>
//		pass_token
//		token_cache <entries>|off
//		introspection_url <url>
//		introspection_client_id <id>
//		introspection_client_secret <secret>
//		introspection_auth_method client_secret_basic|client_secret_post
//		introspection_timeout <duration>
//		introspection_cache <entries>|off
//		introspection_cache_ttl <duration>
//		introspection_negative_ttl <duration>
//		scope_implies <scope> <implied-scope...>
//		tool <glob...> scopes <scope...>
//		prompt <glob...> scopes <scope...>
//		resource <uri-glob...> scopes <scope...>
//		rate <n>/<window> [tool <glob...>]
//	}
//
// audience, scopes, algorithms, scope_implies (once per scope), tool,
// prompt, resource and rate may be repeated: lists accumulate, rules and
// limits add up. Any other option given twice is refused.
func (m *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "issuer", "jwks_url", "jwks_file", "mode", "resource_metadata",
			"introspection_url", "introspection_client_id", "introspection_client_secret", "introspection_auth_method":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "issuer":
				m.Issuer = v
			case "jwks_url":
				m.JWKSURL = v
			case "jwks_file":
				m.JWKSFile = v
			case "mode":
				m.Mode = v
			case "resource_metadata":
				m.ResourceMetadata = v
			case "introspection_url":
				m.IntrospectionURL = v
			case "introspection_client_id":
				m.IntrospectionClientID = v
			case "introspection_client_secret":
				m.IntrospectionClientSecret = v
			case "introspection_auth_method":
				m.IntrospectionAuthMethod = v
			}
		case "audience", "scopes", "algorithms":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			switch opt {
			case "audience":
				m.Audience = append(m.Audience, args...)
			case "scopes":
				m.Scopes = append(m.Scopes, args...)
			case "algorithms":
				m.Algorithms = append(m.Algorithms, args...)
			}
		case "jwks_refresh_interval", "jwks_refresh_min_interval", "leeway",
			"introspection_timeout", "introspection_cache_ttl", "introspection_negative_ttl":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("%s: %v", opt, err)
			}
			switch opt {
			case "jwks_refresh_interval":
				m.JWKSRefreshInterval = caddy.Duration(dur)
			case "jwks_refresh_min_interval":
				m.JWKSRefreshMinInterval = caddy.Duration(dur)
			case "leeway":
				m.Leeway = caddy.Duration(dur)
			case "introspection_timeout":
				m.IntrospectionTimeout = caddy.Duration(dur)
			case "introspection_cache_ttl":
				m.IntrospectionCacheTTL = caddy.Duration(dur)
			case "introspection_negative_ttl":
				m.IntrospectionNegativeTTL = caddy.Duration(dur)
			}
		case "token_cache", "introspection_cache":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n := -1 // off
			if v != "off" {
				var err error
				n, err = strconv.Atoi(v)
				if err != nil || n < 1 || n > maxTokenCache {
					return d.Errf("%s: %q is not off or a number of entries between 1 and %d", opt, v, maxTokenCache)
				}
			}
			if opt == "token_cache" {
				m.TokenCache = n
			} else {
				m.IntrospectionCache = n
			}
		case "pass_token":
			if err := once.Check(d); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			m.PassToken = true
		case "rate":
			args := d.RemainingArgs()
			if len(args) != 1 && (len(args) < 3 || args[1] != "tool") {
				return d.Errf("rate <n>/<window> [tool <glob...>]")
			}
			n, window, ok := strings.Cut(args[0], "/")
			count, err := strconv.Atoi(n)
			if !ok || err != nil || count < 1 {
				return d.Errf("rate: %q is not <n>/<window>, e.g. 10/1m", args[0])
			}
			dur, err := caddy.ParseDuration(window)
			if err != nil || dur <= 0 {
				return d.Errf("rate: %q is not <n>/<window>, e.g. 10/1m", args[0])
			}
			rl := RateLimit{Requests: count, Window: caddy.Duration(dur)}
			if len(args) > 2 {
				rl.Tools = args[2:]
			}
			m.Rates = append(m.Rates, rl)
		case "scope_implies":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("scope_implies <scope> <implied-scope...>")
			}
			if err := once.CheckKey(d, "scope_implies", args[0]); err != nil {
				return err
			}
			if m.ScopeImplies == nil {
				m.ScopeImplies = map[string][]string{}
			}
			m.ScopeImplies[args[0]] = args[1:]
		case "tool", "prompt", "resource":
			args := d.RemainingArgs()
			i := slices.Index(args, "scopes")
			if i < 1 || i == len(args)-1 {
				return d.Errf("%s <glob...> scopes <scope...>", opt)
			}
			m.Rules = append(m.Rules, ScopeRule{Kind: opt, Names: args[:i], Scopes: args[i+1:]})
		default:
			return d.Errf("unrecognized mcp_auth option %q", opt)
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
