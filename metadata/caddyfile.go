package metadata

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddymcp/caddymcp/internal/cfargs"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oauth_protected_resource", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("oauth_protected_resource", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oauth_protected_resource [<matcher>] {
//		resource <url>
//		authorization_servers <url...>
//		jwks_uri <url>
//		scopes_supported <scope...>
//		bearer_methods_supported <header|body|query...>
//		resource_signing_alg_values_supported <alg...>
//		resource_name <text>
//		resource_documentation <url>
//		resource_policy_uri <url>
//		resource_tos_uri <url>
//		tls_client_certificate_bound_access_tokens
//		authorization_details_types_supported <type...>
//		dpop_signing_alg_values_supported <alg...>
//		dpop_bound_access_tokens_required
//		field <name> <json value>
//		cors [<origin...>]
//		max_age <duration>
//	}
//
// List options, field (once per name) and cors may be repeated; their values
// accumulate. Any other option given twice is refused.
//
// What the gateway cannot honour is refused at load: a document without
// authorization_servers (MCP clients find the authorization server only
// here), bearer_methods_supported body or query (MCP clients send the token
// in the Authorization header, the only place mcp_auth reads it; MCP forbids
// it in the query string), and dpop_bound_access_tokens_required (nothing in
// caddymcp verifies DPoP). tls_client_certificate_bound_access_tokens and
// dpop_signing_alg_values_supported load with a warning: mcp_auth does not
// verify those bindings, a resource behind it may.
func (m *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := cfargs.Once{}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "resource", "jwks_uri", "resource_name", "resource_documentation",
			"resource_policy_uri", "resource_tos_uri":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			*m.stringField(opt) = v
		case "authorization_servers", "scopes_supported", "bearer_methods_supported",
			"resource_signing_alg_values_supported", "authorization_details_types_supported",
			"dpop_signing_alg_values_supported":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			f := m.listField(opt)
			*f = append(*f, args...)
		case "tls_client_certificate_bound_access_tokens":
			if err := once.Check(d); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			m.TLSClientCertificateBoundAccessTokens = true
		case "dpop_bound_access_tokens_required":
			if err := once.Check(d); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			m.DPoPBoundAccessTokensRequired = true
		case "field":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return d.ArgErr()
			}
			if !json.Valid([]byte(value)) {
				return d.Errf("field %s: value %q is not valid JSON (quote strings as JSON: `\"text\"`)", name, value)
			}
			if err := once.CheckKey(d, "field", name); err != nil {
				return err
			}
			if m.Fields == nil {
				m.Fields = make(map[string]json.RawMessage)
			}
			m.Fields[name] = json.RawMessage(value)
		case "cors":
			args := d.RemainingArgs()
			if len(args) == 0 {
				args = []string{"*"}
			}
			m.CORS = append(m.CORS, args...)
		case "max_age":
			if err := once.Check(d); err != nil {
				return err
			}
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("max_age: %v", err)
			}
			m.MaxAge = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized oauth_protected_resource option %q", opt)
		}
	}
	return nil
}

func (m *Handler) stringField(name string) *string {
	switch name {
	case "resource":
		return &m.Resource
	case "jwks_uri":
		return &m.JWKSURI
	case "resource_name":
		return &m.ResourceName
	case "resource_documentation":
		return &m.ResourceDocumentation
	case "resource_policy_uri":
		return &m.ResourcePolicyURI
	case "resource_tos_uri":
		return &m.ResourceTOSURI
	}
	panic(fmt.Sprintf("no string option %s", name))
}

func (m *Handler) listField(name string) *[]string {
	switch name {
	case "authorization_servers":
		return &m.AuthorizationServers
	case "scopes_supported":
		return &m.ScopesSupported
	case "bearer_methods_supported":
		return &m.BearerMethodsSupported
	case "resource_signing_alg_values_supported":
		return &m.ResourceSigningAlgValuesSupported
	case "authorization_details_types_supported":
		return &m.AuthorizationDetailsTypesSupported
	case "dpop_signing_alg_values_supported":
		return &m.DPoPSigningAlgValuesSupported
	}
	panic(fmt.Sprintf("no list option %s", name))
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
