// Package mcpauth provides the mcp_auth handler: bearer-token middleware
// that follows the MCP authorization specification (2025-06-18,
// 2025-11-25): JWTs verified locally, other tokens by RFC 7662 token
// introspection (introspect.go).
//
// The Caddyfile syntax is documented on (*Handler).UnmarshalCaddyfile.
package mcpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddymcp/caddymcp/internal/mcpreq"
	"github.com/caddymcp/caddymcp/internal/rpcstream"
	"github.com/caddymcp/caddymcp/internal/wellknown"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler authenticates requests with OAuth 2.0 bearer JWTs (RFC 6750,
// RFC 9068) the way MCP clients expect.
//
// A request without a token is answered 401 with a `WWW-Authenticate:
// Bearer resource_metadata="…"` challenge that points at the resource's RFC
// 9728 metadata; a bad token gets 401 `error="invalid_token"`; a valid
// token lacking a required scope gets 403 `error="insufficient_scope"` with
// the scopes to ask for (MCP step-up). Only CORS preflights (OPTIONS with
// Origin and Access-Control-Request-Method) pass without a token; no path is
// exempt (serve metadata with oauth_protected_resource, which Caddy's
// directive order runs first). A token without `sub` is refused (RFC 9068).
//
// Tokens are verified against a JWKS (`jwks_url`, `jwks_file`, or the
// `jwks_uri` of the issuer's RFC 8414 / OpenID metadata): signature with an
// allowed asymmetric algorithm, `iss`, `aud` (RFC 8707), `exp`, `nbf`, `iat`.
// With `introspection_url`, a token that is not a JWT (an opaque token) is
// sent to the authorization server's RFC 7662 introspection endpoint and
// the answer for an active token is checked as a JWT's claims are (`iss`,
// `aud`, `exp`, `nbf`, `iat`, `sub`, scopes, rules); JWTs are still
// verified locally, so both kinds may share a route.
//
// After a valid token the handler sets these placeholders:
// `{http.auth.user.id}` (sub), `{http.auth.user.scope}`,
// `{http.auth.user.client_id}`, `{http.auth.user.iss}` and
// `{http.auth.claims.<name>}` for every top-level claim. The Authorization
// header is removed before the next handler unless `pass_token` is set: MCP
// forbids passing the client's token through to upstream servers.
type Handler struct {
	// The issuer whose tokens are accepted; `iss` must equal it exactly.
	// Required.
	Issuer string `json:"issuer,omitempty"`

	// Accepted audiences; the token's `aud` (a string or an array) must
	// contain one of them. URLs are compared in canonical form (scheme and
	// host case-insensitive, default port and trailing slash ignored).
	// Required unless `mode` is permissive.
	Audience []string `json:"audience,omitempty"`

	// URL of the issuer's JSON Web Key Set. Without it and without
	// `jwks_file`, the URL is discovered from the issuer's metadata.
	JWKSURL string `json:"jwks_url,omitempty"`

	// Path of a local JWKS file, read when the config is loaded.
	JWKSFile string `json:"jwks_file,omitempty"`

	// How often a remote JWKS is refreshed. Default: 1h.
	JWKSRefreshInterval caddy.Duration `json:"jwks_refresh_interval,omitempty"`

	// A token whose `kid` is not in the JWKS triggers a refresh at most once
	// per this interval; a request arriving while the refresh is not
	// allowed is rejected at once, never held. Default: 10s.
	JWKSRefreshMinInterval caddy.Duration `json:"jwks_refresh_min_interval,omitempty"`

	// Scopes a token must all grant (from `scope` or `scp`). A valid token
	// without them gets 403 insufficient_scope.
	Scopes []string `json:"scopes,omitempty"`

	// Accepted signing algorithms. Default: RS256, RS384, RS512, PS256,
	// PS384, PS512, ES256, ES384, ES512, EdDSA. `none` and the HMAC
	// algorithms are refused.
	Algorithms []string `json:"algorithms,omitempty"`

	// Allowed clock skew for `exp`, `nbf` and `iat`. Default: 30s.
	Leeway caddy.Duration `json:"leeway,omitempty"`

	// `strict` (default) requires a valid token; `optional` lets requests
	// without a token through but rejects bad tokens; `permissive` never
	// rejects and only sets placeholders for valid tokens.
	Mode string `json:"mode,omitempty"`

	// URL of the protected resource metadata named in challenges. Default:
	// the request URL with `/.well-known/oauth-protected-resource` inserted
	// before its path (RFC 9728 section 3.1). Placeholders allowed.
	ResourceMetadata string `json:"resource_metadata,omitempty"`

	// Keep the Authorization header for the next handler. Default: false,
	// the header is removed.
	PassToken bool `json:"pass_token,omitempty"`

	// Scope hierarchies: each granted scope named here implies the scopes
	// it lists, transitively (Caddyfile: `scope_implies admin read:all
	// write:all`), wherever a scope is required: the route's `scopes`, the
	// rules, list filtering and batch errors (MCP basic/authorization:
	// servers MUST account for scope hierarchies). The token and
	// {http.auth.user.scope} keep the scopes it was granted.
	ScopeImplies map[string][]string `json:"scope_implies,omitempty"`

	// Per-operation scope rules (`tool|prompt|resource <glob...> scopes
	// <scope...>`): calls on what a rule matches need its scopes too (403
	// insufficient_scope naming all the scopes needed), and list results
	// are filtered to what the token may use.
	Rules []ScopeRule `json:"rules,omitempty"`

	// Rate limits per principal (`rate <n>/<window>`), or per principal and
	// tool (`rate <n>/<window> tool <glob...>`): beyond them, 429 with
	// Retry-After and a JSON-RPC error. The principal is the token's iss and
	// sub (the client IP for requests that pass unauthenticated). Each
	// message of a batch counts; a request is charged all or nothing, and
	// only for what the scope rules let through. Counts start afresh when
	// the config is reloaded.
	Rates []RateLimit `json:"rates,omitempty"`

	// Remember up to this many verified tokens (by their SHA-256), so that
	// a repeated token skips the signature check, as Caddy's basic_auth
	// remembers verified passwords. An entry never outlives the token's exp
	// and every entry is dropped whenever the JWKS changes (a removed key
	// stops working at once); audience and scopes are still checked on
	// every request. Kept in 16 shards of n/16 (rounded up) entries each,
	// evicted oldest first; a token costs about 1 KiB. At most 1000000.
	// Default: 4096; -1 turns it off (every request verifies its token).
	TokenCache int `json:"token_cache,omitempty"`

	// URL of the authorization server's token introspection endpoint (RFC
	// 7662), e.g. Ory Hydra's admin `/admin/oauth2/introspect`. With it, a
	// bearer token that is not a JWT (three base64url segments, the first
	// a JSON object) is posted there, and an active token's answer is
	// checked like a verified JWT's claims: `iss` (taken as `issuer` when
	// the answer has none), `exp`, `nbf` and `iat` with `leeway`, `sub`,
	// `aud`, `scope`, the rules and the rates. An inactive token gets 401
	// invalid_token; an endpoint that does not answer (network, timeout,
	// a status other than 200, not a JSON object with a boolean `active`,
	// over 64 KiB) gets 503 and is not cached. JWTs are still verified
	// locally. Default: none, and every token must be a JWT.
	IntrospectionURL string `json:"introspection_url,omitempty"`

	// The client id mcp_auth authenticates with at the introspection
	// endpoint. Default: none, and no client authentication is sent (as
	// Hydra's admin endpoint expects). Global placeholders ({env.*},
	// {file.*}) are resolved when the config loads.
	IntrospectionClientID string `json:"introspection_client_id,omitempty"`

	// The client secret that goes with `introspection_client_id`. Global
	// placeholders ({env.*}, {file.*}) are resolved when the config loads.
	IntrospectionClientSecret string `json:"introspection_client_secret,omitempty"`

	// How the client authenticates at the introspection endpoint:
	// `client_secret_basic` (default; HTTP Basic, RFC 6749 section 2.3.1)
	// or `client_secret_post` (client_id and client_secret in the form).
	IntrospectionAuthMethod string `json:"introspection_auth_method,omitempty"`

	// How long one call to the introspection endpoint may take; requests
	// with the same token wait for the same call. Default: 5s.
	IntrospectionTimeout caddy.Duration `json:"introspection_timeout,omitempty"`

	// Remember up to this many introspection answers (by the token's
	// SHA-256), in 16 shards of n/16 (rounded up) entries each, evicted
	// oldest first. At most 1000000. Default: 4096; -1 turns it off (every
	// request is introspected; concurrent requests with one token still
	// share a call).
	IntrospectionCache int `json:"introspection_cache,omitempty"`

	// Upper bound of an active answer's life in the cache: an entry lives
	// until the token's `exp` (plus `leeway`) or this long, whichever comes
	// first. A revoked token is refused within this bound. Default: 1m.
	IntrospectionCacheTTL caddy.Duration `json:"introspection_cache_ttl,omitempty"`

	// How long an inactive answer is cached. Default: 10s.
	IntrospectionNegativeTTL caddy.Duration `json:"introspection_negative_ttl,omitempty"`

	keys       *keySource
	cache      *tokenCache
	introspect *introspector // nil without introspection_url
	limiters   []*limiter
	audit      *zap.Logger
	poolKey    string
	parser     *jwt.Parser
	audiences  []string
	scope      string
	implied    map[string][]string // ScopeImplies, closed transitively
	logger     *zap.Logger
}

var defaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_auth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets defaults and prepares the key source. It does not contact
// the issuer: keys are fetched on first use.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.audit = h.logger.Named("audit")
	initAuthMetrics(ctx.GetMetricsRegistry())
	if h.Mode == "" {
		h.Mode = "strict"
	}
	if len(h.Algorithms) == 0 {
		h.Algorithms = defaultAlgorithms
	}
	if h.Leeway == 0 {
		h.Leeway = caddy.Duration(30 * time.Second)
	}
	if h.JWKSRefreshInterval == 0 {
		h.JWKSRefreshInterval = caddy.Duration(time.Hour)
	}
	if h.JWKSRefreshMinInterval == 0 {
		h.JWKSRefreshMinInterval = caddy.Duration(10 * time.Second)
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if h.PassToken {
		h.logger.Warn("pass_token keeps the client's access token for the next handler: the MCP authorization spec forbids token passthrough " +
			"(an MCP server MUST NOT pass through the token it received from the MCP client; the security best practices call it an anti-pattern); " +
			"use it only where the next handler is the token's own audience, never to forward the token to another service")
	}
	h.audiences = make([]string, len(h.Audience))
	for i, a := range h.Audience {
		h.audiences[i] = canonicalURI(a)
	}
	h.scope = challengeScope(h.Scopes)
	if slices.Contains(h.Scopes, offlineAccess) {
		h.logger.Warn("scopes: offline_access is required of tokens but not named in challenges (MCP: it SHOULD NOT be; a client asks for it only if it wants refresh tokens)")
	}
	h.implied = closeImplies(h.ScopeImplies)
	for _, rl := range h.Rates {
		h.limiters = append(h.limiters, newLimiter(rl))
	}
	if h.TokenCache == 0 {
		h.TokenCache = defaultTokenCache
	}
	if h.TokenCache > 0 {
		h.cache = newTokenCache(h.TokenCache)
	}
	// the claim checks of a JWT, and of an introspection answer (which
	// may lack exp: the endpoint is asked again within the cache bound)
	claimChecks := []jwt.ParserOption{
		jwt.WithIssuer(h.Issuer),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(time.Duration(h.Leeway)),
	}
	h.parser = jwt.NewParser(append([]jwt.ParserOption{
		// one spelling per token: base64url with unused trailing bits set
		// is refused, not read as the token it would decode to (else each
		// respelling of one token is a new token_cache entry, verified
		// again)
		jwt.WithStrictDecoding(),
		jwt.WithValidMethods(h.Algorithms),
		jwt.WithExpirationRequired(),
	}, claimChecks...)...)
	if h.IntrospectionURL != "" {
		h.provisionIntrospection(ctx, claimChecks)
	}

	if h.JWKSFile != "" {
		raw, err := os.ReadFile(h.JWKSFile)
		if err != nil {
			return fmt.Errorf("jwks_file: %w", err)
		}
		ks, err := newStaticKeySource(raw)
		if err != nil {
			return fmt.Errorf("jwks_file %s: %w", h.JWKSFile, err)
		}
		h.keys = ks
		return nil
	}
	h.poolKey = keySourceKey(h.JWKSURL, h.Issuer, time.Duration(h.JWKSRefreshInterval), time.Duration(h.JWKSRefreshMinInterval))
	logger := ctx.Logger().Named("jwks")
	val, _, err := keySources.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return newRemoteKeySource(h.JWKSURL, h.Issuer, time.Duration(h.JWKSRefreshInterval),
			time.Duration(h.JWKSRefreshMinInterval), logger), nil
	})
	if err != nil {
		return err
	}
	h.keys = val.(*keySource)
	return nil
}

// provisionIntrospection sets the introspection defaults and prepares the
// introspector; like the key source, it contacts nobody until a request
// needs it.
func (h *Handler) provisionIntrospection(ctx caddy.Context, claimChecks []jwt.ParserOption) {
	if h.IntrospectionAuthMethod == "" {
		h.IntrospectionAuthMethod = clientSecretBasic
	}
	if h.IntrospectionTimeout == 0 {
		h.IntrospectionTimeout = caddy.Duration(defaultIntrospectionTimeout)
	}
	if h.IntrospectionCacheTTL == 0 {
		h.IntrospectionCacheTTL = caddy.Duration(defaultIntrospectionCacheTTL)
	}
	if h.IntrospectionNegativeTTL == 0 {
		h.IntrospectionNegativeTTL = caddy.Duration(defaultIntrospectionNegativeTTL)
	}
	if h.IntrospectionCache == 0 {
		h.IntrospectionCache = defaultTokenCache
	}
	repl := caddy.NewReplacer()
	flightCtx, cancel := context.WithCancel(ctx)
	client, transport := introspectionClient(time.Duration(h.IntrospectionTimeout))
	i := &introspector{
		url:          h.IntrospectionURL,
		clientID:     repl.ReplaceKnown(h.IntrospectionClientID, ""),
		clientSecret: repl.ReplaceKnown(h.IntrospectionClientSecret, ""),
		post:         h.IntrospectionAuthMethod == clientSecretPost,
		timeout:      time.Duration(h.IntrospectionTimeout),
		ttl:          time.Duration(h.IntrospectionCacheTTL),
		negativeTTL:  time.Duration(h.IntrospectionNegativeTTL),
		leeway:       time.Duration(h.Leeway),
		issuer:       h.Issuer,
		validator:    jwt.NewValidator(append(claimChecks, jwt.WithTimeFunc(introspectNow))...),
		http:         client,
		transport:    transport,
		ctx:          flightCtx,
		cancel:       cancel,
		logger:       h.logger.Named("introspection"),
	}
	if h.IntrospectionCache > 0 {
		i.cache = newTokenCache(h.IntrospectionCache)
	}
	if plainOverNetwork(h.IntrospectionURL) {
		h.logger.Warn("introspection_url is plain http to another host: every opaque token (and the client secret) crosses the network unencrypted; use https",
			zap.String("introspection_url", h.IntrospectionURL))
	}
	h.introspect = i
}

// Validate checks the configuration; every error names the offending field.
func (h *Handler) Validate() error {
	for _, rl := range h.Rates {
		if rl.Requests < 1 || rl.Window <= 0 {
			return fmt.Errorf("rates: %d per %s: requests and window must be positive", rl.Requests, time.Duration(rl.Window))
		}
	}
	for _, rule := range h.Rules {
		if rule.Kind != "tool" && rule.Kind != "prompt" && rule.Kind != "resource" {
			return fmt.Errorf("rules: kind %q is not tool, prompt or resource", rule.Kind)
		}
		if len(rule.Names) == 0 || len(rule.Scopes) == 0 {
			return fmt.Errorf("rules: a %s rule needs names and scopes", rule.Kind)
		}
		for _, sc := range rule.Scopes {
			if sc == "" || strings.ContainsAny(sc, "\" \t\r\n\\") {
				return fmt.Errorf("rules: %q is not a scope token (RFC 6749 section 3.3)", sc)
			}
		}
	}
	for broad, narrow := range h.ScopeImplies {
		if !wellknown.ValidScope(broad) || len(narrow) == 0 {
			return fmt.Errorf("scope_implies: %q must be a scope token implying at least one scope", broad)
		}
		for _, s := range narrow {
			if !wellknown.ValidScope(s) {
				return fmt.Errorf("scope_implies %s: %q is not a valid scope token", broad, s)
			}
		}
	}
	if h.Issuer == "" {
		return fmt.Errorf("issuer: required")
	}
	if err := wellknown.CheckURL(h.Issuer, true); err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	switch h.Mode {
	case "", "strict", "optional", "permissive":
	default:
		return fmt.Errorf("mode: %q is not one of strict, optional, permissive", h.Mode)
	}
	if len(h.Audience) == 0 && h.Mode != "permissive" {
		return fmt.Errorf("audience: required (the resource URL this server is, e.g. https://mcp.example.com/mcp; RFC 8707)")
	}
	for i, a := range h.Audience {
		if strings.TrimSpace(a) == "" {
			return fmt.Errorf("audience[%d]: empty", i)
		}
	}
	if h.JWKSURL != "" && h.JWKSFile != "" {
		return fmt.Errorf("jwks_url and jwks_file: set at most one")
	}
	if h.JWKSURL != "" {
		if err := wellknown.CheckURL(h.JWKSURL, false); err != nil {
			return fmt.Errorf("jwks_url: %w", err)
		}
	}
	if h.ResourceMetadata != "" {
		if err := wellknown.CheckURL(h.ResourceMetadata, false); err != nil {
			return fmt.Errorf("resource_metadata: %w", err)
		}
	}
	for _, a := range h.Algorithms {
		if !slices.Contains(defaultAlgorithms, a) {
			return fmt.Errorf("algorithms: %q is not allowed; use asymmetric algorithms only (%s)", a, strings.Join(defaultAlgorithms, ", "))
		}
	}
	for _, s := range h.Scopes {
		if !wellknown.ValidScope(s) {
			return fmt.Errorf("scopes: %q is not a valid scope token", s)
		}
	}
	if h.Leeway < 0 {
		return fmt.Errorf("leeway: must not be negative")
	}
	if h.TokenCache < -1 || h.TokenCache > maxTokenCache {
		return fmt.Errorf("token_cache: must be between 1 and %d entries, or -1 (off)", maxTokenCache)
	}
	if h.JWKSRefreshInterval < 0 || h.JWKSRefreshMinInterval < 0 {
		return fmt.Errorf("jwks_refresh_interval, jwks_refresh_min_interval: must not be negative")
	}
	return h.validateIntrospection()
}

func (h *Handler) validateIntrospection() error {
	if h.IntrospectionURL == "" {
		for _, o := range []struct {
			name string
			set  bool
		}{
			{"introspection_client_id", h.IntrospectionClientID != ""},
			{"introspection_client_secret", h.IntrospectionClientSecret != ""},
			{"introspection_auth_method", h.IntrospectionAuthMethod != ""},
			{"introspection_timeout", h.IntrospectionTimeout != 0},
			{"introspection_cache", h.IntrospectionCache != 0},
			{"introspection_cache_ttl", h.IntrospectionCacheTTL != 0},
			{"introspection_negative_ttl", h.IntrospectionNegativeTTL != 0},
		} {
			if o.set {
				return fmt.Errorf("%s: needs introspection_url", o.name)
			}
		}
		return nil
	}
	if err := wellknown.CheckURL(h.IntrospectionURL, true); err != nil {
		return fmt.Errorf("introspection_url: %w", err)
	}
	if h.IntrospectionClientSecret != "" && h.IntrospectionClientID == "" {
		return fmt.Errorf("introspection_client_secret: needs introspection_client_id")
	}
	switch h.IntrospectionAuthMethod {
	case "", clientSecretBasic, clientSecretPost:
	default:
		return fmt.Errorf("introspection_auth_method: %q is not %s or %s", h.IntrospectionAuthMethod, clientSecretBasic, clientSecretPost)
	}
	if h.IntrospectionAuthMethod == clientSecretPost && h.IntrospectionClientID == "" {
		return fmt.Errorf("introspection_auth_method: %s needs introspection_client_id", clientSecretPost)
	}
	if h.IntrospectionTimeout < 0 || h.IntrospectionCacheTTL < 0 || h.IntrospectionNegativeTTL < 0 {
		return fmt.Errorf("introspection_timeout, introspection_cache_ttl, introspection_negative_ttl: must not be negative")
	}
	if h.IntrospectionCache < -1 || h.IntrospectionCache > maxTokenCache {
		return fmt.Errorf("introspection_cache: must be between 1 and %d entries, or -1 (off)", maxTokenCache)
	}
	return nil
}

// Cleanup ends introspection calls in flight and releases the shared key
// source.
func (h *Handler) Cleanup() error {
	if h.introspect != nil {
		h.introspect.close()
	}
	if h.poolKey != "" {
		_, err := keySources.Delete(h.poolKey)
		return err
	}
	return nil
}

// ServeHTTP authenticates the request and calls next, or answers with the
// RFC 6750 challenge. No path is exempt: a request reaches next only with a
// valid token (or in the modes that allow otherwise), whatever its path, so
// the path a matcher judged and the path checked here can never disagree.
// Only a real CORS preflight passes without a token (it carries none).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// a CORS preflight carries no credentials; any other OPTIONS request
	// is authenticated like every other method
	if wellknown.IsCORSPreflight(r) {
		h.stripToken(r)
		return next.ServeHTTP(w, r)
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	mcpreq.ProvidePlaceholders(r, mcpreq.DefaultMaxBytes)

	claims, fail := h.authenticate(r.Context(), r)
	h.stripToken(r)
	if fail != nil {
		if h.Mode == "permissive" || (h.Mode == "optional" && fail.code == "") {
			if c := h.logger.Check(zap.DebugLevel, "request passes without authentication"); c != nil {
				c.Write(zap.String("mode", h.Mode), zap.String("reason", fail.Error()))
			}
			// unauthenticated: no scopes, so the rules still apply
			return h.serveWithRules(w, r, repl, nil, next)
		}
		if repl != nil {
			repl.Set("http.auth.error", fail.Error())
		}
		if c := h.logger.Check(zap.DebugLevel, "request rejected"); c != nil {
			c.Write(zap.Int("status", fail.status), zap.String("error", fail.code),
				zap.String("reason", fail.description), zap.String("remote_ip", r.RemoteAddr),
				zap.String("uri", wellknown.RedactURI(r.RequestURI)))
		}
		if r.Method == http.MethodPost {
			h.auditRefused(r, nil, nil, nil, fail.Error())
		}
		result, reason := fail.code, ""
		switch result {
		case "":
			result = "no_token"
		case "invalid_token":
			reason = invalidReason(fail.description)
		case "temporarily_unavailable":
			result = "unavailable"
		}
		countDecision(result, reason)
		writeChallenge(w, fail, h.metadataURL(r, repl), h.scope)
		return nil
	}
	if repl != nil {
		setPlaceholders(repl, claims)
	}
	return h.serveWithRules(w, r, repl, claims, next)
}

// serveWithRules applies the scope rules (if any) and calls next.
func (h *Handler) serveWithRules(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, claims jwt.MapClaims, next caddyhttp.Handler) error {
	if len(h.Rules) == 0 && len(h.limiters) == 0 {
		countDecision("ok", "")
		return next.ServeHTTP(w, r)
	}
	// rules: what the token may call, and which lists it sees whole
	q := mcpreq.Get(r, mcpreq.DefaultMaxBytes)
	if q.Err != nil && r.Method == http.MethodPost {
		// a body the rules cannot read is one they cannot vouch for
		h.refuseUnreadable(w, r, q, q.Err)
		return nil
	}
	if why := h.ambiguousName(q); why != "" {
		h.refuseUnreadable(w, r, q, fmt.Errorf("%w: %s", mcpreq.ErrAmbiguous, why))
		return nil
	}
	granted := h.granted(claims)
	var batch *batchErrors
	if q.Batch && len(h.Rules) > 0 {
		// a batch's forbidden messages are answered one by one; a batch
		// of nothing else gets the challenge below
		if errs, taken, ok := h.splitBatch(r, q, granted); ok && taken {
			for _, m := range q.Messages {
				if miss := h.missing(m, granted); len(miss) > 0 {
					h.auditRefused(r, claims, q, &m, "insufficient_scope: lacks "+strings.Join(miss, " "))
				}
			}
			batch = &batchErrors{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, h: h, errs: errs}
			w = batch
			defer batch.finish()
			q = &mcpreq.Request{Messages: slices.DeleteFunc(slices.Clone(q.Messages), func(m mcpreq.Message) bool {
				return len(h.missing(m, granted)) > 0
			}), Batch: true}
		}
	}
	if fail, scope := h.checkRules(q, granted); fail != nil {
		if c := h.logger.Check(zap.DebugLevel, "request refused by a scope rule"); c != nil {
			c.Write(zap.String("method", q.First().Method), zap.String("name", q.First().Name), zap.String("reason", fail.description))
		}
		h.auditRefused(r, claims, q, nil, fail.Error())
		countDecision("insufficient_scope", "")
		writeChallenge(w, fail, h.metadataURL(r, repl), scope)
		return nil
	}
	// rates last: a request the rules refuse spends no tokens
	if len(h.limiters) > 0 && !h.checkRates(w, q, ratePrincipal(r, claims)) {
		h.auditRefused(r, claims, q, nil, "rate limit exceeded")
		countDecision("rate_limited", "")
		return nil
	}
	countDecision("ok", "")
	filter, streamsOnly := h.filtersFor(r, q, granted)
	if !filter {
		return next.ServeHTTP(w, r)
	}
	// identity, so that the filter can read the answer: encode after
	// mcp_auth (Caddy's order puts a site's encode there) then leaves it
	// alone, and reverse_proxy's transport decodes what an upstream
	// compresses anyway; whatever still arrives encoded gets 502
	r.Header.Del("Accept-Encoding")
	f := newListFilter(w, h, granted, streamsOnly)
	err := next.ServeHTTP(f, r)
	f.Finish()
	if f.Refused() {
		// answered (502, logged); the producer stopped because its writes
		// failed, or for a reason of its own
		if err != nil && !errors.Is(err, rpcstream.ErrWithheld) {
			h.logger.Debug("the handler after mcp_auth failed on a withheld response", zap.Error(err))
		}
		return nil
	}
	return err
}

// refuseUnreadable answers a request the rules cannot decide on (its body
// is no MCP message, or one that servers could read otherwise) with 400
// and a JSON-RPC error that says why.
func (h *Handler) refuseUnreadable(w http.ResponseWriter, r *http.Request, q *mcpreq.Request, why error) {
	if c := h.logger.Check(zap.DebugLevel, "request refused: its body is not an MCP message the rules can read unambiguously"); c != nil {
		c.Write(zap.Error(why))
	}
	countDecision("unreadable", "")
	h.audit.Info("mcp request refused", zap.String("decision", "refused"), zap.String("reason", why.Error()),
		zap.String("route", r.Host+r.URL.Path), zap.ByteString("request_id", q.ID))
	code := -32600
	if errors.Is(why, mcpreq.ErrMismatch) {
		code = -32020 // HeaderMismatch (MCP 2026-07-28)
	}
	id := json.RawMessage("null")
	if len(q.ID) > 0 {
		id = q.ID
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{
		"code": code, "message": why.Error()}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write(body)
}

// ratePrincipal is whom a request counts against: the token's issuer and
// subject, else the client's IP (mcpreq.LimitKey, as mcp_stdio counts).
func ratePrincipal(r *http.Request, claims jwt.MapClaims) string {
	sub, _ := claims["sub"].(string)
	iss, _ := claims["iss"].(string)
	return mcpreq.LimitKey(r, mcpreq.Principal(iss, sub))
}

// metadataURL is where a challenge points the client (RFC 9728).
func (h *Handler) metadataURL(r *http.Request, repl *caddy.Replacer) string {
	u := h.ResourceMetadata
	if u != "" && repl != nil {
		u = repl.ReplaceAll(u, "")
	}
	if u == "" {
		u = wellknown.MetadataURLForRequest(r)
	}
	return u
}

// stripToken removes the client's credential before the next handler, in
// every mode, unless pass_token asks to keep it: MCP forbids passing the
// client's token through to upstream servers.
func (h *Handler) stripToken(r *http.Request) {
	if !h.PassToken {
		r.Header.Del("Authorization")
	}
}

// authenticate returns the verified claims, or why the request fails. A
// JWT's claims come from verify, an opaque token's from introspection;
// from there on both take the same checks.
func (h *Handler) authenticate(ctx context.Context, r *http.Request) (jwt.MapClaims, *failure) {
	raw, fail := bearerToken(r)
	if fail != nil {
		return nil, fail
	}
	if raw == "" {
		return nil, missingToken()
	}
	var claims jwt.MapClaims
	if h.introspect != nil && !isJWS(raw) {
		claims, fail = h.introspect.check(ctx, raw)
	} else {
		claims, fail = h.verify(ctx, raw)
	}
	if fail != nil {
		return nil, fail
	}
	if sub, _ := claims["sub"].(string); sub == "" {
		// RFC 9068 requires sub; sessions are bound to iss + sub, so a
		// token without one must not share the anonymous principal
		return nil, invalidToken("token has no subject (sub)")
	}
	if len(h.audiences) > 0 {
		aud, err := claims.GetAudience()
		if err != nil {
			return nil, invalidToken("token aud claim is malformed")
		}
		if !h.audienceMatches(aud) {
			if len(aud) == 0 {
				return nil, invalidToken("token has no audience (aud)")
			}
			return nil, invalidToken("token audience (aud) does not include this resource")
		}
	}
	if len(h.Scopes) > 0 {
		granted := h.granted(claims)
		var missing []string
		for _, s := range h.Scopes {
			if !slices.Contains(granted, s) {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			return nil, insufficientScope("token lacks required scope: " + strings.Join(missing, " "))
		}
	}
	return claims, nil
}

// verify checks signature, issuer and times, through the token cache if
// one is configured.
func (h *Handler) verify(ctx context.Context, raw string) (jwt.MapClaims, *failure) {
	var version uint64
	if h.cache != nil {
		version = h.keys.keys.Load().version.Load()
		if claims, ok := h.cache.get(raw, version, time.Now()); ok {
			return claims, nil
		}
	}
	claims := jwt.MapClaims{}
	if _, err := h.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		return h.keys.key(ctx, t)
	}); err != nil {
		return nil, invalidToken(describe(err))
	}
	if h.cache != nil {
		if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
			h.cache.put(raw, claims, exp.Add(time.Duration(h.Leeway)), version)
		}
	}
	return claims, nil
}

func (h *Handler) audienceMatches(aud []string) bool {
	for _, a := range aud {
		// the common case, an exact match, needs no URL parsing
		if slices.Contains(h.Audience, a) || slices.Contains(h.audiences, a) {
			return true
		}
	}
	for _, a := range aud {
		if slices.Contains(h.audiences, canonicalURI(a)) {
			return true
		}
	}
	return false
}

// setPlaceholders exposes the token's claims to later handlers and logs.
// The user id is set at once (the access log reads it); everything else is
// resolved only when a placeholder asks for it.
func setPlaceholders(repl *caddy.Replacer, claims jwt.MapClaims) {
	sub, _ := claims["sub"].(string)
	iss, _ := claims["iss"].(string)
	repl.Set("http.auth.user.id", sub)
	repl.Set("http.auth.user.iss", iss)
	repl.Map(func(key string) (any, bool) {
		rest, ok := strings.CutPrefix(key, "http.auth.")
		if !ok {
			return nil, false
		}
		switch rest {
		case "user.scope":
			return strings.Join(scopesOf(claims), " "), true
		case "user.client_id":
			clientID, _ := claims["client_id"].(string)
			if clientID == "" {
				clientID, _ = claims["azp"].(string)
			}
			return clientID, true
		}
		if name, ok := strings.CutPrefix(rest, "claims."); ok {
			if v, ok := claims[name]; ok {
				return claimString(v), true
			}
		}
		return nil, false
	})
}

func claimString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
