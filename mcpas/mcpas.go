// Package mcpas is the mcp_authorization_server handler: an OAuth 2.1
// authorization server for MCP clients that logs users in with the
// identity provider a team already has (any OpenID Connect provider by
// issuer URL, or GitHub), and issues its own short-lived JWT access tokens
// (RFC 9068) for the MCP resources it is configured with (RFC 8707).
//
// MCP clients connect by themselves: RFC 8414 metadata (and OpenID
// discovery), Dynamic Client Registration (RFC 7591), Client ID Metadata
// Documents, PKCE S256, RFC 9207 iss. Before a user is sent to the
// upstream provider, the server shows its own consent page naming the
// client, its redirect URI and the scopes (the MCP security best
// practices' defence against a confused deputy), and decides who may log
// in and which scopes they get by rules over the upstream identity; deny
// by default.
//
// The OAuth protocol (authorize and token endpoints, codes, PKCE,
// refresh, revocation, JWKS) is zitadel/oidc's OpenID provider (pkg/op),
// with what it lacks added around it (intercept.go: RFC 8707 resource,
// RFC 9207 iss, at+jwt, S256 only); the upstream login is
// golang.org/x/oauth2 with coreos/go-oidc for ID tokens. Everything
// it keeps (clients, consents, codes, refresh tokens, signing keys) is in
// Caddy's storage, so instances behind a balancer on shared storage issue
// and verify the same tokens.
//
// Lock order: Handler.mu (the rate limiters' map) is a leaf; storage locks
// (store.locked) are never taken under it.
package mcpas

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/go-jose/go-jose/v4"
	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/op"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddymcp/caddymcp/internal/cimd"
	"github.com/caddymcp/caddymcp/internal/keyring"
	"github.com/caddymcp/caddymcp/internal/localissuer"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// codeLifetime is how long an authorization code lives.
var codeLifetime = 2 * time.Minute

// metadataHTTPClient fetches client metadata documents (a test trusts its
// own TLS server's certificate through it; the address guard stays).
var metadataHTTPClient = cimd.HTTPClient

// stateLifetime is how long a user may take between consent and the
// upstream's callback (the state, the pending request).
const stateLifetime = 10 * time.Minute

// Handler is the mcp_authorization_server module.
type Handler struct {
	// Issuer is the authorization server's issuer identifier, exactly as
	// tokens carry it and clients compare it: an https URL (http only for a
	// loopback host) without query or fragment. Its path is where the
	// endpoints live: {issuer}/authorize, /token, /register, /jwks,
	// /revoke, /consent, /callback/<upstream>; metadata at
	// /.well-known/oauth-authorization-server{path} and
	// /.well-known/openid-configuration{path}. Required.
	Issuer string `json:"issuer"`
	// Resources are the MCP servers (RFC 8707 resource indicators) tokens
	// may be issued for: a token's aud is the one requested. A request
	// naming another is refused (invalid_target); one naming none gets the
	// only one, if there is only one. Required.
	Resources []string `json:"resources"`
	// Scopes are the scopes this server grants (scopes_supported).
	Scopes []string `json:"scopes,omitempty"`
	// Upstreams are the identity providers users log in with (one at
	// least; with more, the consent page offers each).
	Upstreams []*Upstream `json:"upstreams"`
	// Allow lists who may log in: a user matching any rule (all of its
	// conditions) may; nobody else. Required: deny by default.
	Allow []*Rule `json:"allow"`
	// Grants say which scopes users get: the scopes of every grant whose
	// rule the user matches. Without any grant, a user who may log in may
	// get every scope of Scopes.
	Grants []*Grant `json:"grants,omitempty"`
	// AccessTokenLifetime is how long an access token lives (default 10m).
	AccessTokenLifetime caddy.Duration `json:"access_token_lifetime,omitempty"`
	// RefreshTokenLifetime is how long a refresh token lives unused
	// (default 336h, 14 days; at most 672h, the signing secrets' life).
	RefreshTokenLifetime caddy.Duration `json:"refresh_token_lifetime,omitempty"`
	// ConsentLifetime is how long a user's consent to a client is
	// remembered (default 720h; 0 after parsing means the default).
	ConsentLifetime caddy.Duration `json:"consent_lifetime,omitempty"`
	// SessionLifetime is how long the browser session that identifies a
	// user at the consent page lasts (default 12h).
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`
	// ClientLifetime is how long a dynamically registered client is kept
	// (default 720h; its client_secret expires with it).
	ClientLifetime caddy.Duration `json:"client_lifetime,omitempty"`
	// MaxClients bounds the registered clients (default 10000).
	MaxClients int `json:"max_clients,omitempty"`
	// Registration enables Dynamic Client Registration (default true).
	Registration *bool `json:"registration,omitempty"`
	// RegisterRate bounds registrations per client IP, as "<n>/<window>"
	// (default 10/1m).
	RegisterRate string `json:"register_rate,omitempty"`
	// TokenRate bounds token, authorize and consent requests per client IP
	// (default 60/1m).
	TokenRate string `json:"token_rate,omitempty"`
	// AllowPrivateMetadata lets client metadata documents be fetched from
	// loopback and private addresses (tests only: it opens SSRF).
	AllowPrivateMetadata bool `json:"allow_private_metadata,omitempty"`

	logger    *zap.Logger
	issuerURL *url.URL
	base      string // the issuer's path, without a trailing slash
	ring      *keyring.Ring
	store     *store
	provider  *op.Provider
	upstreams map[string]*upstream
	cimd      *cimd.Cache

	registerRate, tokenRate limitSpec
	rt                      *runtimeState

	cancel context.CancelFunc
}

// runtimeState is what the handler changes while it serves.
type runtimeState struct {
	clientCount atomic.Int64 // registered clients (as of the last sweep, plus those since)
	mu          sync.Mutex   // guards limiters (a leaf)
	limiters    map[string]*rate.Limiter
	keys        sync.Map // ring key id -> *jose.JSONWebKey (signingKey)
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_authorization_server",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.rt = &runtimeState{limiters: map[string]*rate.Limiter{}}
	initMetrics(ctx.GetMetricsRegistry())
	if err := h.defaults(); err != nil {
		return err
	}
	var err error
	if h.ring, err = keyring.For(ctx, ctx.Storage(), h.logger); err != nil {
		return fmt.Errorf("the signing keys' ring in storage: %w", err)
	}
	h.store = &store{st: ctx.Storage(), prefix: "caddymcp/authorization_server/" + digest(h.Issuer) + "/"}
	h.cimd = &cimd.Cache{HTTP: metadataHTTPClient(h.AllowPrivateMetadata), ValidRedirect: validRedirectURI,
		Refused: func(id string, err error) {
			h.logger.Info("client metadata document refused", zap.String("client_id", id), zap.Error(err))
		}}
	h.upstreams = map[string]*upstream{}
	for _, u := range h.Upstreams {
		up, err := newUpstream(ctx, u, h.Issuer+"/callback/"+u.Name)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		h.upstreams[u.Name] = up
	}
	if err := h.setupOAuth(); err != nil {
		return fmt.Errorf("the OpenID provider: %w", err)
	}
	// mcp_auth in this process verifies this server's tokens without
	// fetching its keys over the network
	unregister := localissuer.Register(h.Issuer, func(kid string) (any, string, bool) {
		if k := h.keyByID(kid); k != nil {
			return k.Public().Key, string(jose.ES256), true
		}
		return nil, "", false
	})
	sctx, cancel := context.WithCancel(context.Background())
	h.cancel = func() { cancel(); unregister() }
	go h.sweepLoop(sctx)
	return nil
}

// defaults checks the configuration and fills in defaults.
func (h *Handler) defaults() error {
	u, err := url.Parse(h.Issuer)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
		(u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		return fmt.Errorf("issuer %q: an https URL (http only on a loopback host) without query or fragment is required", h.Issuer)
	}
	h.Issuer = strings.TrimSuffix(h.Issuer, "/")
	h.issuerURL, _ = url.Parse(h.Issuer)
	h.base = strings.TrimSuffix(h.issuerURL.Path, "/")
	if len(h.Resources) == 0 {
		return errors.New("resource: at least one MCP server URL is required (the audience of the tokens)")
	}
	for _, r := range h.Resources {
		if ru, err := url.Parse(r); err != nil || !ru.IsAbs() || ru.Fragment != "" {
			return fmt.Errorf("resource %q: an absolute URL without fragment is required", r)
		}
	}
	if len(h.Upstreams) == 0 {
		return errors.New("upstream: at least one identity provider is required")
	}
	seen := map[string]bool{}
	for _, up := range h.Upstreams {
		if up.Name == "" || strings.ContainsAny(up.Name, "/?#% ") || seen[up.Name] {
			return fmt.Errorf("upstream name %q: a unique name without /, ?, #, %% or spaces is required", up.Name)
		}
		seen[up.Name] = true
	}
	if len(h.Allow) == 0 {
		return errors.New("allow: no rule says who may log in (deny by default: add e.g. `allow email_domain example.com`)")
	}
	for _, r := range append(slices.Clone(h.Allow), grantRules(h.Grants)...) {
		if err := r.check(seen); err != nil {
			return err
		}
	}
	for _, g := range h.Grants {
		for _, s := range g.Scopes {
			if !slices.Contains(h.Scopes, s) {
				return fmt.Errorf("grant: scope %q is not in scopes", s)
			}
		}
	}
	def := func(d *caddy.Duration, v time.Duration) {
		if *d <= 0 {
			*d = caddy.Duration(v)
		}
	}
	def(&h.AccessTokenLifetime, 10*time.Minute)
	def(&h.RefreshTokenLifetime, 14*24*time.Hour)
	def(&h.ConsentLifetime, 30*24*time.Hour)
	def(&h.SessionLifetime, 12*time.Hour)
	def(&h.ClientLifetime, 30*24*time.Hour)
	// refresh tokens are HMACs under the key ring's secrets, which live
	// Retain × Rotation
	if max := time.Duration(keyring.Retain) * keyring.Rotation; time.Duration(h.RefreshTokenLifetime) > max {
		return fmt.Errorf("refresh_token_lifetime: at most %s (the signing secrets' life)", max)
	}
	if h.MaxClients <= 0 {
		h.MaxClients = 10000
	}
	if h.registerRate, err = parseLimit(h.RegisterRate, "10/1m"); err != nil {
		return fmt.Errorf("register_rate: %w", err)
	}
	if h.tokenRate, err = parseLimit(h.TokenRate, "60/1m"); err != nil {
		return fmt.Errorf("token_rate: %w", err)
	}
	return nil
}

// Cleanup stops the sweeper.
func (h *Handler) Cleanup() error {
	if h.cancel != nil {
		h.cancel()
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) setupOAuth() error {
	conf := &op.Config{CodeMethodS256: true, AuthMethodPost: true, GrantTypeRefreshToken: true, SupportedScopes: h.Scopes}
	// codes are JWEs under this key: every instance derives the same one
	copy(conf.CryptoKey[:], h.ring.DerivedFor(h.ring.Current(), "mcp_authorization_server codes "+h.Issuer))
	opts := []op.Option{op.WithHttpInterceptors(h.intercept),
		op.WithCORSOptions(&cors.Options{AllowedOrigins: []string{"*"}, AllowedMethods: []string{"GET", "POST", "OPTIONS"},
			AllowedHeaders: []string{"Authorization", "Content-Type", "MCP-Protocol-Version"}})}
	if h.issuerURL.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	p, err := op.NewProvider(conf, opStorage{h}, op.StaticIssuer(h.Issuer), opts...)
	if err != nil {
		return err
	}
	h.provider = p
	return nil
}

// signingKey is the ES256 key derived from a ring key: every instance on
// the same storage derives the same one, and it rotates with the ring.
func (h *Handler) signingKey(k *keyring.Key) *jose.JSONWebKey {
	// derived once per ring key: every token issued, every JWKS answer and
	// every in-process verification by mcp_auth ask for it
	if v, ok := h.rt.keys.Load(k.ID); ok {
		return v.(*jose.JSONWebKey)
	}
	seed := h.ring.DerivedFor(k, "mcp_authorization_server signing "+h.Issuer)
	var priv *ecdsa.PrivateKey
	for i := uint32(0); priv == nil; i++ {
		m := hmac.New(sha256.New, seed)
		_ = binary.Write(m, binary.BigEndian, i)
		if p, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), m.Sum(nil)); err == nil {
			priv = p
		}
	}
	jwk := &jose.JSONWebKey{Key: priv, KeyID: k.ID, Algorithm: string(jose.ES256), Use: "sig"}
	h.rt.keys.Store(k.ID, jwk)
	return jwk
}

// keyByID is the signing key of the ring key kid names, nil if the ring
// has none such.
func (h *Handler) keyByID(kid string) *jose.JSONWebKey {
	for _, k := range h.ring.All() {
		if k.ID == kid {
			return h.signingKey(k)
		}
	}
	return nil
}

// ServeHTTP serves the endpoints under the issuer's path and passes every
// other request on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	p := r.URL.Path
	switch p {
	case "/.well-known/oauth-authorization-server" + h.base, "/.well-known/openid-configuration" + h.base,
		h.base + "/.well-known/openid-configuration", h.base + "/.well-known/oauth-authorization-server":
		h.metadata(w, r)
		return nil
	}
	rest, ok := strings.CutPrefix(p, h.base+"/")
	if !ok {
		return next.ServeHTTP(w, r)
	}
	switch {
	case rest == "login":
		h.login(w, r)
	case rest == "consent":
		h.consent(w, r)
	case strings.HasPrefix(rest, "callback/"):
		h.callback(w, r, strings.TrimPrefix(rest, "callback/"))
	case rest == "register" && h.registrationEnabled():
		h.register(w, r)
	case rest == "authorize" || rest == "authorize/callback" || rest == "oauth/token" || rest == "revoke" || rest == "keys":
		// zitadel/oidc's provider, at the paths it routes
		if rest != "keys" && !h.limit(w, r, h.tokenRate) {
			return nil
		}
		ctx, fault := withFaultFlag(r.Context())
		r2 := r.Clone(ctx)
		r2.URL.Path = "/" + rest
		r2.URL.RawPath = ""
		h.provider.ServeHTTP(&faultWriter{ResponseWriter: w, fault: fault, h: h, r: r}, r2)
	default:
		return next.ServeHTTP(w, r)
	}
	return nil
}

func (h *Handler) registrationEnabled() bool { return h.Registration == nil || *h.Registration }

// metadata serves RFC 8414 authorization server metadata (also at the
// OpenID discovery paths: clients try both).
func (h *Handler) metadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	m := map[string]any{
		"issuer":                                         h.Issuer,
		"authorization_endpoint":                         h.Issuer + "/authorize",
		"token_endpoint":                                 h.Issuer + "/oauth/token",
		"jwks_uri":                                       h.Issuer + "/keys",
		"revocation_endpoint":                            h.Issuer + "/revoke",
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"none", "client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     []string{"none", "client_secret_basic", "client_secret_post"},
		"authorization_response_iss_parameter_supported": true,
		"client_id_metadata_document_supported":          true,
		"scopes_supported":                               h.Scopes,
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          []string{"ES256"},
		"access_token_signing_alg_values_supported":      []string{"ES256"},
		"resource_indicators_supported":                  true,
	}
	if h.Scopes == nil {
		m["scopes_supported"] = []string{}
	}
	if h.registrationEnabled() {
		m["registration_endpoint"] = h.Issuer + "/register"
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeJSON(w, http.StatusOK, m)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if w.Header().Get("Cache-Control") == "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serverError answers 500 with the cause in the log only.
func (h *Handler) serverError(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.logger.Error(what+" failed; answered 500", zap.String("path", r.URL.Path), zap.Error(err))
	writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error", "error_description": what + " failed"})
}

// storageError answers a storage fault: 503 temporarily_unavailable.
func (h *Handler) storageError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if !errors.Is(err, errStorage) {
		h.serverError(w, r, what, err)
		return
	}
	h.logger.Error(what+": storage unavailable; answered 503", zap.String("path", r.URL.Path), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable", "error_description": "the server's storage is unavailable; try again"})
}

// faultWriter turns the provider's refusal of a request during which storage
// failed into 503 temporarily_unavailable with Retry-After (and a log
// line): the request was fine, the storage was not.
type faultWriter struct {
	http.ResponseWriter
	fault   *atomic.Bool
	h       *Handler
	r       *http.Request
	swallow bool
}

func (f *faultWriter) WriteHeader(status int) {
	if status >= 300 && f.fault.Load() {
		f.swallow = true
		f.h.storageError(f.ResponseWriter, f.r, "a request to the OpenID provider", errStorage)
		return
	}
	f.ResponseWriter.WriteHeader(status)
}

func (f *faultWriter) Write(b []byte) (int, error) {
	if f.swallow {
		return len(b), nil
	}
	return f.ResponseWriter.Write(b)
}

// sweepLoop deletes expired records every ten minutes (and counts the
// registered clients for max_clients).
func (h *Handler) sweepLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		left, err := h.store.sweep(ctx)
		if err == nil {
			h.rt.clientCount.Store(int64(left["client"]))
		} else if ctx.Err() == nil {
			h.logger.Warn("sweeping expired records failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
