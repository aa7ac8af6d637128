// Package metadata provides the oauth_protected_resource handler, which
// serves OAuth 2.0 Protected Resource Metadata (RFC 9728) so that MCP clients
// can discover the authorization server of a protected MCP endpoint.
//
// The Caddyfile syntax is documented on (*Handler).UnmarshalCaddyfile.
//
// What the gateway cannot honour is refused at load: a document without
// authorization_servers (MCP clients find the authorization server only
// here), bearer_methods_supported body or query (MCP clients send the token
// in the Authorization header, the only place mcp_auth reads it; MCP forbids
// it in the query string), and dpop_bound_access_tokens_required (nothing in
// caddymcp verifies DPoP). tls_client_certificate_bound_access_tokens and
// dpop_signing_alg_values_supported load with a warning: mcp_auth does not
// verify those bindings, a resource behind it may.
package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/wellknown"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler serves OAuth 2.0 Protected Resource Metadata (RFC 9728).
//
// It answers GET and HEAD requests whose path is the well-known path
// `/.well-known/oauth-protected-resource` or lies below it, with a JSON
// document whose members are the configured fields (members with zero values
// are omitted, RFC 9728 section 3.2). Requests for other paths are passed to
// the next handler, so the directive can be used without a matcher. OPTIONS
// requests are answered as CORS preflights with 204; other methods get 405.
//
// When `resource` is not configured it is derived from the request: the
// scheme and host the client used plus the path that follows the well-known
// prefix (RFC 9728 section 3.1), so one handler can describe many resources.
// X-Forwarded-Proto and X-Forwarded-Host are honoured only from the server's
// trusted proxies. Placeholders may be used in every string field.
type Handler struct {
	// The protected resource's resource identifier (RFC 9728 `resource`):
	// an absolute http(s) URL without a fragment. Default: derived from the
	// request URL by reversing RFC 9728 path insertion.
	Resource string `json:"resource,omitempty"`

	// Issuer identifiers of the OAuth authorization servers that can issue
	// tokens for this resource. Each must be an absolute http(s) URL.
	// Required: at least one (MCP clients find the authorization server
	// only here).
	AuthorizationServers []string `json:"authorization_servers,omitempty"`

	// URL of the resource's own JSON Web Key Set, if it signs responses.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// Scope values that are used in authorization requests for this resource.
	ScopesSupported []string `json:"scopes_supported,omitempty"`

	// Ways a bearer token may be presented (RFC 6750): only `header`, the
	// one way MCP allows and mcp_auth reads (`query` and `body` are
	// refused). Omitted when empty.
	BearerMethodsSupported []string `json:"bearer_methods_supported,omitempty"`

	// JWS algorithms the resource uses to sign responses. `none` is refused.
	ResourceSigningAlgValuesSupported []string `json:"resource_signing_alg_values_supported,omitempty"`

	// Human-readable name of the resource.
	ResourceName string `json:"resource_name,omitempty"`

	// URL of human-readable documentation for developers of clients.
	ResourceDocumentation string `json:"resource_documentation,omitempty"`

	// URL of the resource's policy on how client data is used.
	ResourcePolicyURI string `json:"resource_policy_uri,omitempty"`

	// URL of the resource's terms of service.
	ResourceTOSURI string `json:"resource_tos_uri,omitempty"`

	// Whether the resource supports mutual-TLS client certificate-bound
	// access tokens (RFC 8705). Omitted when false. mcp_auth does not check
	// the binding: a warning at provision says so.
	TLSClientCertificateBoundAccessTokens bool `json:"tls_client_certificate_bound_access_tokens,omitempty"`

	// Rich authorization request types supported (RFC 9396).
	AuthorizationDetailsTypesSupported []string `json:"authorization_details_types_supported,omitempty"`

	// JWS algorithms supported for DPoP proofs (RFC 9449). `none` is
	// refused. mcp_auth verifies no DPoP proof: a warning at provision says
	// so.
	DPoPSigningAlgValuesSupported []string `json:"dpop_signing_alg_values_supported,omitempty"`

	// Whether the resource always requires DPoP-bound access tokens.
	// Refused: nothing in caddymcp verifies DPoP proofs, so no route here
	// can require them.
	DPoPBoundAccessTokensRequired bool `json:"dpop_bound_access_tokens_required,omitempty"`

	// Any other members, by name, as raw JSON values: language-tagged
	// members such as `resource_name#de`, `signed_metadata`, or members
	// defined after RFC 9728. A name may not repeat a named member above.
	// Extra members follow the named ones, sorted by name.
	Fields map[string]json.RawMessage `json:"field,omitempty"`

	// Origins allowed to read the document from a browser. An origin in the
	// list is echoed in Access-Control-Allow-Origin; `*` allows every
	// origin. Default: `*`.
	CORS []string `json:"cors,omitempty"`

	// How long clients may cache the document (Cache-Control max-age).
	// Default: 1h. A negative value sends `Cache-Control: no-store`.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	fieldNames   []string
	cacheControl string
	logger       *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth_protected_resource",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults, and warns about advertised token bindings that
// mcp_auth does not verify.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.TLSClientCertificateBoundAccessTokens {
		h.logger.Warn("tls_client_certificate_bound_access_tokens advertises certificate-bound tokens, but mcp_auth does not check a token's binding (cnf x5t#S256) to the client certificate; keep it only if the resource behind checks it")
	}
	if len(h.DPoPSigningAlgValuesSupported) > 0 {
		h.logger.Warn("dpop_signing_alg_values_supported advertises DPoP, but mcp_auth accepts Bearer tokens only and verifies no DPoP proof; keep it only if the resource behind verifies DPoP")
	}
	if len(h.CORS) == 0 {
		h.CORS = []string{"*"}
	}
	switch {
	case h.MaxAge == 0:
		h.cacheControl = "public, max-age=3600"
	case h.MaxAge < 0:
		h.cacheControl = "no-store"
	default:
		h.cacheControl = "public, max-age=" + strconv.FormatInt(int64(time.Duration(h.MaxAge)/time.Second), 10)
	}
	h.fieldNames = h.fieldNames[:0]
	for name := range h.Fields {
		h.fieldNames = append(h.fieldNames, name)
	}
	slices.Sort(h.fieldNames)
	return nil
}

// Validate checks the configuration; every error names the offending field.
func (h *Handler) Validate() error {
	if h.Resource != "" {
		if err := wellknown.CheckURL(h.Resource, true); err != nil {
			return fmt.Errorf("resource: %w", err)
		}
	}
	for i, s := range h.AuthorizationServers {
		if err := wellknown.CheckURL(s, false); err != nil {
			return fmt.Errorf("authorization_servers[%d]: %w", i, err)
		}
	}
	for name, v := range map[string]string{
		"jwks_uri":               h.JWKSURI,
		"resource_documentation": h.ResourceDocumentation,
		"resource_policy_uri":    h.ResourcePolicyURI,
		"resource_tos_uri":       h.ResourceTOSURI,
	} {
		if v == "" {
			continue
		}
		if err := wellknown.CheckURL(v, false); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, m := range h.BearerMethodsSupported {
		switch m {
		case "header":
		case "query":
			return fmt.Errorf("bearer_methods_supported: %q: MCP forbids access tokens in the query string, and mcp_auth reads only the Authorization header", m)
		case "body":
			return fmt.Errorf("bearer_methods_supported: %q: MCP clients must send the token in the Authorization header, the only place mcp_auth reads it", m)
		default:
			return fmt.Errorf("bearer_methods_supported: %q is not one of header, body, query", m)
		}
	}
	if h.DPoPBoundAccessTokensRequired {
		return fmt.Errorf("dpop_bound_access_tokens_required: nothing in caddymcp verifies DPoP proofs (mcp_auth accepts Bearer tokens only)")
	}
	for _, s := range h.ScopesSupported {
		if !wellknown.ValidScope(s) {
			return fmt.Errorf("scopes_supported: %q is not a valid scope token", s)
		}
		if s == "offline_access" {
			return fmt.Errorf("scopes_supported: offline_access: MCP servers SHOULD NOT list it (refresh tokens are the client's to ask its authorization server for, not a scope of this resource)")
		}
	}
	for name, algs := range map[string][]string{
		"resource_signing_alg_values_supported": h.ResourceSigningAlgValuesSupported,
		"dpop_signing_alg_values_supported":     h.DPoPSigningAlgValuesSupported,
	} {
		for _, a := range algs {
			if a == "" || strings.EqualFold(a, "none") {
				return fmt.Errorf("%s: %q is not allowed as a signing algorithm", name, a)
			}
		}
	}
	for name, raw := range h.Fields {
		if name == "" {
			return fmt.Errorf("field: empty member name")
		}
		if slices.Contains(namedMembers, name) {
			return fmt.Errorf("field %s: duplicates the named member %q; set it with its own option", name, name)
		}
		if !json.Valid(raw) {
			return fmt.Errorf("field %s: value is not valid JSON", name)
		}
	}
	for _, o := range h.CORS {
		if o != "*" && !strings.Contains(o, "{") {
			if err := wellknown.CheckURL(o, false); err != nil {
				return fmt.Errorf("cors: origin %q: %w", o, err)
			}
		}
	}
	// last, so that a malformed value is named before a missing one
	if len(h.AuthorizationServers) == 0 {
		return fmt.Errorf("authorization_servers: at least one authorization server is required (RFC 9728 section 2; MCP clients find the authorization server only here)")
	}
	return nil
}

// ServeHTTP answers metadata requests and passes everything else on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !wellknown.IsUnder(r.URL.Path, wellknown.ProtectedResourcePrefix) {
		return next.ServeHTTP(w, r)
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}
	derived := h.Resource == "" || strings.Contains(h.Resource, "{")
	if h.Resource == "" {
		// a resource identifier has no dot segments and no fragment
		// (RFC 9728 section 1.2): no metadata for such a path, and
		// nothing derived from a Host that is not one
		if wellknown.HasDotSegment(r.URL.Path) || !wellknown.ValidHost(r.Host) {
			return caddyhttp.Error(http.StatusNotFound,
				fmt.Errorf("no protected resource at %q", r.URL.Path))
		}
	}
	hdr := w.Header()
	h.setCORS(hdr, r, repl)
	if derived {
		// the document depends on these; a shared cache must key on them
		hdr.Add("Vary", "Host, X-Forwarded-Host, X-Forwarded-Proto")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		hdr.Set("Allow", allowedMethods)
		if wellknown.IsCORSPreflight(r) {
			hdr.Set("Access-Control-Allow-Methods", allowedMethods)
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				hdr.Set("Access-Control-Allow-Headers", req)
			}
			hdr.Set("Access-Control-Max-Age", "86400")
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		hdr.Set("Allow", allowedMethods)
		return caddyhttp.Error(http.StatusMethodNotAllowed,
			fmt.Errorf("method %s not allowed on protected resource metadata", r.Method))
	}

	body := h.document(r, repl)
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	hdr.Set("Cache-Control", h.cacheControl)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(body)
	return err
}

const allowedMethods = "GET, HEAD, OPTIONS"

func (h *Handler) setCORS(hdr http.Header, r *http.Request, repl *caddy.Replacer) {
	origin := r.Header.Get("Origin")
	for _, o := range h.CORS {
		o = repl.ReplaceAll(o, "")
		if o == "*" {
			hdr.Set("Access-Control-Allow-Origin", "*")
			return
		}
		if origin != "" && strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			hdr.Set("Access-Control-Allow-Origin", origin)
			hdr.Add("Vary", "Origin")
			return
		}
	}
	hdr.Add("Vary", "Origin")
}

// namedMembers lists the RFC 9728 section 2 members in the order they are
// written, which is the order the RFC defines them in.
var namedMembers = []string{
	"resource",
	"authorization_servers",
	"jwks_uri",
	"scopes_supported",
	"bearer_methods_supported",
	"resource_signing_alg_values_supported",
	"resource_name",
	"resource_documentation",
	"resource_policy_uri",
	"resource_tos_uri",
	"tls_client_certificate_bound_access_tokens",
	"authorization_details_types_supported",
	"dpop_signing_alg_values_supported",
	"dpop_bound_access_tokens_required",
}

// document renders the metadata for one request, with a stable key order:
// the named members in RFC order, then the extra fields sorted by name.
func (h *Handler) document(r *http.Request, repl *caddy.Replacer) []byte {
	resource := repl.ReplaceAll(h.Resource, "")
	if resource == "" {
		resource = wellknown.ResourceFromMetadataRequest(r)
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	put := func(name string, v any) {
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		nb, _ := json.Marshal(name)
		buf.Write(nb)
		buf.WriteByte(':')
		vb, _ := json.Marshal(v) // strings, lists and validated raw JSON cannot fail
		buf.Write(vb)
	}
	str := func(name, v string) {
		if v = repl.ReplaceAll(v, ""); v != "" {
			put(name, v)
		}
	}
	list := func(name string, vs []string) {
		if len(vs) == 0 {
			return
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			out[i] = repl.ReplaceAll(v, "")
		}
		put(name, out)
	}
	flag := func(name string, v bool) {
		if v {
			put(name, true)
		}
	}
	put("resource", resource)
	list("authorization_servers", h.AuthorizationServers)
	str("jwks_uri", h.JWKSURI)
	list("scopes_supported", h.ScopesSupported)
	list("bearer_methods_supported", h.BearerMethodsSupported)
	list("resource_signing_alg_values_supported", h.ResourceSigningAlgValuesSupported)
	str("resource_name", h.ResourceName)
	str("resource_documentation", h.ResourceDocumentation)
	str("resource_policy_uri", h.ResourcePolicyURI)
	str("resource_tos_uri", h.ResourceTOSURI)
	flag("tls_client_certificate_bound_access_tokens", h.TLSClientCertificateBoundAccessTokens)
	list("authorization_details_types_supported", h.AuthorizationDetailsTypesSupported)
	list("dpop_signing_alg_values_supported", h.DPoPSigningAlgValuesSupported)
	flag("dpop_bound_access_tokens_required", h.DPoPBoundAccessTokensRequired)
	for _, name := range h.fieldNames {
		put(name, h.Fields[name])
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
