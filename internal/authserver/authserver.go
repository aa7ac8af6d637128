// Package authserver is a small OAuth 2.1 authorization server for
// development and tests: RFC 8414 metadata, a JWKS, dynamic client
// registration (RFC 7591), an auto-approving /authorize with PKCE S256 and
// resource indicators (RFC 8707), and /token for authorization_code,
// refresh_token and client_credentials. Access tokens are RS256 JWTs.
//
// FOR DEVELOPMENT ONLY: it approves every authorization request without
// asking anyone, keeps everything in memory and generates a new signing key
// at every start.
package authserver

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"

	"github.com/caddymcp/caddymcp/internal/cimd"
	"github.com/golang-jwt/jwt/v5"
)

// Options configure a Server.
type Options struct {
	// Issuer is the server's public base URL, e.g. http://localhost:9000.
	Issuer string
	// Scopes the server knows; requests for others fail with invalid_scope.
	Scopes []string
	// DefaultAudience is the aud of tokens requested without `resource`.
	DefaultAudience string
	// User is the sub of tokens from the authorization code flow (the
	// auto-approved "logged-in" user). Default "dev-user".
	User string
	// TokenTTL is the access token lifetime. Default 1h.
	TokenTTL time.Duration
	// Clients are pre-registered confidential clients, id → secret, usable
	// for client_credentials (e.g. to get a token with curl).
	Clients map[string]string
	// Logf, if set, logs each grant.
	Logf func(format string, args ...any)
	// StateFile, if set, keeps the signing key and the registered clients
	// across restarts, so that clients which cached a registration or a
	// token (the MCP Inspector does) keep working. Written 0600.
	StateFile string
	// Resources are the resource indicators (RFC 8707) tokens may be
	// issued for; empty: any absolute URI.
	Resources []string
	// CORSOrigins are the browser origins allowed to call the endpoints
	// (the MCP Inspector's); no other origin gets CORS headers.
	CORSOrigins []string
	// AllowPrivateCIMD lets client metadata documents be fetched from
	// loopback and private addresses (development and tests only).
	AllowPrivateCIMD bool
	// CIMDClient, if set, fetches client metadata documents instead of the
	// guarded default (tests: one that trusts a test certificate).
	CIMDClient *http.Client
}

// state is what StateFile holds.
type state struct {
	KeyPEM  string             `json:"signing_key_pem"`
	KID     string             `json:"kid"`
	Clients map[string]*client `json:"clients"`
}

// Server is the authorization server; it is an http.Handler.
type Server struct {
	opts Options
	key  *rsa.PrivateKey
	kid  string
	jwks []byte
	mux  *http.ServeMux

	mu          sync.Mutex
	clients     map[string]*client
	codes       map[string]*grant
	refresh     map[string]*grant
	usedRefresh map[string]string // rotated refresh token -> its family (reuse revokes the family)
	cimd        *cimd.Cache
}

type client struct {
	ID           string   `json:"client_id"`
	Secret       string   `json:"client_secret,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	Name         string   `json:"client_name,omitempty"`
	AppType      string   `json:"application_type,omitempty"`
	AuthMethod   string   `json:"token_endpoint_auth_method"`
	GrantTypes   []string `json:"grant_types"`
	IssuedAt     int64    `json:"client_id_issued_at"`
}

type grant struct {
	clientID    string
	redirectURI string
	challenge   string
	scope       string
	resource    string
	sub         string
	expires     time.Time
	family      string // refresh tokens issued from one authorization
}

// New creates a server with a fresh RSA signing key.
func New(opts Options) (*Server, error) {
	if opts.Issuer == "" {
		return nil, fmt.Errorf("authserver: Issuer is required")
	}
	opts.Issuer = strings.TrimSuffix(opts.Issuer, "/")
	if opts.User == "" {
		opts.User = "dev-user"
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Server{opts: opts, clients: map[string]*client{}, codes: map[string]*grant{}, refresh: map[string]*grant{},
		usedRefresh: map[string]string{}}
	s.cimd = &cimd.Cache{HTTP: opts.CIMDClient, ValidRedirect: validRedirectURI,
		Refused: func(id string, err error) { s.opts.Logf("client metadata document %s refused: %v", id, err) }}
	if s.cimd.HTTP == nil {
		s.cimd.HTTP = cimd.HTTPClient(opts.AllowPrivateCIMD)
	}
	if err := s.loadState(); err != nil {
		return nil, err
	}
	if s.key == nil {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		s.key, s.kid = key, "dev-"+rand.Text()[:8]
		if err := s.saveState(); err != nil {
			return nil, err
		}
	}
	key := s.key
	jwk, err := jwkset.NewJWKFromKey(key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: s.kid, ALG: jwkset.AlgRS256, USE: jwkset.UseSig},
	})
	if err != nil {
		return nil, err
	}
	s.jwks, _ = json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
	for id, secret := range opts.Clients {
		s.clients[id] = &client{ID: id, Secret: secret, AuthMethod: "client_secret_post",
			GrantTypes: []string{"client_credentials"}, IssuedAt: time.Now().Unix()}
	}

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	s.mux.HandleFunc("GET /.well-known/openid-configuration", s.metadata)
	s.mux.HandleFunc("GET /jwks.json", s.serveJWKS)
	s.mux.HandleFunc("POST /register", s.register)
	s.mux.HandleFunc("GET /authorize", s.authorize)
	s.mux.HandleFunc("POST /token", s.token)
	s.mux.HandleFunc("GET /{$}", s.home)
	return s, nil
}

// ServeHTTP serves the endpoints, with CORS for the configured browser
// origins only (any web page could otherwise register clients and fetch
// tokens through a visitor's browser).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Add("Vary", "Origin")
	if o := r.Header.Get("Origin"); o != "" && slices.Contains(s.opts.CORSOrigins, o) {
		h.Set("Access-Control-Allow-Origin", o)
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Mcp-Protocol-Version")
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Mint issues an access token directly, for tests and tooling.
func (s *Server) Mint(sub, clientID, aud, scope string) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": s.opts.Issuer, "sub": sub, "aud": aud, "client_id": clientID,
		"iat": now.Unix(), "exp": now.Add(s.opts.TokenTTL).Unix(), "jti": rand.Text(),
	}
	if scope != "" {
		claims["scope"] = scope
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	return tok.SignedString(s.key)
}

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "caddymcp example authorization server - FOR DEVELOPMENT ONLY: it approves every request.\n"+
		"metadata: %s/.well-known/oauth-authorization-server\n", s.opts.Issuer)
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         s.opts.Issuer,
		"authorization_endpoint":                         s.opts.Issuer + "/authorize",
		"token_endpoint":                                 s.opts.Issuer + "/token",
		"registration_endpoint":                          s.opts.Issuer + "/register",
		"jwks_uri":                                       s.opts.Issuer + "/jwks.json",
		"scopes_supported":                               s.opts.Scopes,
		"response_types_supported":                       []string{"code"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token", "client_credentials"},
		"token_endpoint_auth_methods_supported":          []string{"none", "client_secret_post", "client_secret_basic"},
		"code_challenge_methods_supported":               []string{"S256"},
		"authorization_response_iss_parameter_supported": true,
		"client_id_metadata_document_supported":          true,
	})
}

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.jwks)
}

// register implements RFC 7591 dynamic client registration.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RedirectURIs []string `json:"redirect_uris"`
		Name         string   `json:"client_name"`
		AppType      string   `json:"application_type"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
		GrantTypes   []string `json:"grant_types"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "body is not JSON client metadata")
		return
	}
	if len(req.RedirectURIs) == 0 {
		oauthError(w, http.StatusBadRequest, "invalid_redirect_uri", "redirect_uris is required")
		return
	}
	for _, u := range req.RedirectURIs {
		if !validRedirectURI(u) {
			oauthError(w, http.StatusBadRequest, "invalid_redirect_uri", "redirect URI "+u+" must be https, or http on a loopback host, without fragment")
			return
		}
	}
	switch req.AppType {
	case "":
		req.AppType = "web" // OpenID Connect Registration's default
	case "web", "native":
	default:
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "application_type must be web or native")
		return
	}
	if req.AuthMethod == "" {
		req.AuthMethod = "client_secret_basic"
	}
	if !slices.Contains([]string{"none", "client_secret_post", "client_secret_basic"}, req.AuthMethod) {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "unsupported token_endpoint_auth_method")
		return
	}
	if len(req.GrantTypes) == 0 {
		req.GrantTypes = []string{"authorization_code", "refresh_token"}
	}
	for _, g := range req.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			// client_credentials only for pre-registered clients: a
			// self-registered client acts for a user, never on its own
			oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "grant type "+g+" cannot be registered")
			return
		}
	}
	c := &client{ID: "client-" + rand.Text()[:16], RedirectURIs: req.RedirectURIs, Name: req.Name, AppType: req.AppType,
		AuthMethod: req.AuthMethod, GrantTypes: req.GrantTypes, IssuedAt: time.Now().Unix()}
	if c.AuthMethod != "none" {
		c.Secret = rand.Text()
	}
	s.mu.Lock()
	s.clients[c.ID] = c
	err := s.saveStateLocked()
	s.mu.Unlock()
	if err != nil {
		s.opts.Logf("saving state: %v", err)
	}
	s.opts.Logf("registered client %s (%q)", c.ID, c.Name)
	writeJSON(w, http.StatusCreated, c)
}

// authorize approves every valid request at once (development only).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c, err := s.lookupClient(r.Context(), q.Get("client_id"))
	if err != nil {
		http.Error(w, "client_id: "+err.Error(), http.StatusBadRequest)
		return
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" && len(c.RedirectURIs) == 1 {
		redirectURI = c.RedirectURIs[0]
	}
	if !slices.Contains(c.RedirectURIs, redirectURI) {
		http.Error(w, "redirect_uri is not registered for this client", http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(redirectURI)
	fail := func(code, desc string) {
		v := back.Query()
		v.Set("error", code)
		v.Set("error_description", desc)
		v.Set("state", q.Get("state"))
		v.Set("iss", s.opts.Issuer)
		back.RawQuery = v.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	}
	if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" {
		fail("invalid_request", "PKCE with code_challenge_method=S256 is required")
		return
	}
	scope, err := s.checkScope(q.Get("scope"))
	if err != nil {
		fail("invalid_scope", err.Error())
		return
	}
	if !slices.Contains(c.GrantTypes, "authorization_code") {
		fail("unauthorized_client", "the client is not registered for authorization_code")
		return
	}
	resource := q.Get("resource")
	if err := s.checkResource(resource); err != nil {
		fail("invalid_target", err.Error())
		return
	}
	code := rand.Text()
	s.mu.Lock()
	s.codes[code] = &grant{clientID: c.ID, redirectURI: redirectURI, challenge: q.Get("code_challenge"),
		scope: scope, resource: resource, sub: s.opts.User, expires: time.Now().Add(time.Minute)}
	s.mu.Unlock()
	v := back.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	v.Set("iss", s.opts.Issuer)
	back.RawQuery = v.Encode()
	s.opts.Logf("approved authorization for client %s, scope %q, resource %q", c.ID, scope, resource)
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// checkResource accepts an absolute URI without fragment among the
// configured resources ("" is no resource).
func (s *Server) checkResource(resource string) error {
	if resource == "" {
		return nil
	}
	if u, err := url.Parse(resource); err != nil || !u.IsAbs() || u.Fragment != "" {
		return fmt.Errorf("resource must be an absolute URI without fragment")
	}
	if len(s.opts.Resources) > 0 && !slices.Contains(s.opts.Resources, resource) {
		return fmt.Errorf("resource %s is not served by this authorization server", resource)
	}
	return nil
}

// validRedirectURI accepts https, and http on a loopback host (RFC 8252
// native apps, the Inspector): never javascript:, data: or other schemes.
func validRedirectURI(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Fragment != "" || strings.Contains(u, "#") || p.Host == "" || p.User != nil {
		return false
	}
	switch p.Scheme {
	case "https":
		return true
	case "http":
		h := p.Hostname()
		return h == "localhost" || h == "127.0.0.1" || h == "::1"
	}
	return false
}

// validVerifier checks RFC 7636 section 4.1: 43 to 128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

func (s *Server) checkScope(requested string) (string, error) {
	scopes := strings.Fields(requested)
	for _, sc := range scopes {
		if sc == "offline_access" {
			continue
		}
		if len(s.opts.Scopes) > 0 && !slices.Contains(s.opts.Scopes, sc) {
			return "", fmt.Errorf("unknown scope %q", sc)
		}
	}
	return strings.Join(scopes, " "), nil
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "body must be application/x-www-form-urlencoded")
		return
	}
	c, ok := s.authenticateClient(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	var g *grant
	grantType := r.PostForm.Get("grant_type")
	if !slices.Contains([]string{"authorization_code", "refresh_token", "client_credentials"}, grantType) {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code, refresh_token or client_credentials")
		return
	}
	if !slices.Contains(c.GrantTypes, grantType) {
		oauthError(w, http.StatusBadRequest, "unauthorized_client", "the client is not registered for "+grantType)
		return
	}
	switch grantType {
	case "authorization_code":
		s.mu.Lock()
		g = s.codes[r.PostForm.Get("code")]
		delete(s.codes, r.PostForm.Get("code")) // one use only
		s.mu.Unlock()
		if g == nil || time.Now().After(g.expires) || g.clientID != c.ID {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "authorization code is unknown, used or expired")
			return
		}
		if ru := r.PostForm.Get("redirect_uri"); ru != "" && ru != g.redirectURI {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
			return
		}
		if !validVerifier(r.PostForm.Get("code_verifier")) {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)")
			return
		}
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1 {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
			return
		}
		// the audience was fixed at /authorize
		if res := r.PostForm.Get("resource"); res != "" && res != g.resource {
			oauthError(w, http.StatusBadRequest, "invalid_target", "resource differs from the authorization request")
			return
		}
		g.family = rand.Text()
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		s.mu.Lock()
		g = s.refresh[rt]
		delete(s.refresh, rt) // rotated
		if g != nil {
			s.usedRefresh[rt] = g.family
		} else if family, reused := s.usedRefresh[rt]; reused {
			// a rotated token came back: it leaked; end its whole family
			for k, other := range s.refresh {
				if other.family == family {
					delete(s.refresh, k)
				}
			}
			s.opts.Logf("refresh token reused: revoked its family")
		}
		s.mu.Unlock()
		if g == nil || g.clientID != c.ID {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "refresh token is unknown or already used")
			return
		}
		if res := r.PostForm.Get("resource"); res != "" && res != g.resource {
			oauthError(w, http.StatusBadRequest, "invalid_target", "resource differs from the authorization request")
			return
		}
	case "client_credentials":
		if c.Secret == "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "client_credentials needs a confidential client")
			return
		}
		scope, err := s.checkScope(r.PostForm.Get("scope"))
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_scope", err.Error())
			return
		}
		if err := s.checkResource(r.PostForm.Get("resource")); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_target", err.Error())
			return
		}
		g = &grant{clientID: c.ID, scope: scope, resource: r.PostForm.Get("resource"), sub: c.ID}
	}
	aud := g.resource
	if aud == "" {
		aud = s.opts.DefaultAudience
	}
	access, err := s.Mint(g.sub, g.clientID, aud, g.scope)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", "signing failed")
		return
	}
	resp := map[string]any{
		"access_token": access, "token_type": "Bearer",
		"expires_in": int(s.opts.TokenTTL / time.Second), "scope": g.scope,
	}
	if grantType != "client_credentials" {
		rt := rand.Text()
		s.mu.Lock()
		s.refresh[rt] = g
		s.mu.Unlock()
		resp["refresh_token"] = rt
	}
	s.opts.Logf("issued token: grant %s, client %s, sub %s, aud %q, scope %q",
		r.PostForm.Get("grant_type"), g.clientID, g.sub, aud, g.scope)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

// authenticateClient checks client_secret_basic, client_secret_post or a
// public client (none).
func (s *Server) authenticateClient(r *http.Request) (*client, bool) {
	id, secret, basic := r.BasicAuth()
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	c, err := s.lookupClient(r.Context(), id)
	if err != nil {
		return nil, false
	}
	if c.Secret == "" {
		return c, secret == ""
	}
	return c, subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) == 1
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("authserver: writing response: %v", err)
	}
}

func (s *Server) loadState() error {
	if s.opts.StateFile == "" {
		return nil
	}
	raw, err := os.ReadFile(s.opts.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("authserver: state file %s: %w", s.opts.StateFile, err)
	}
	block, _ := pem.Decode([]byte(st.KeyPEM))
	if block == nil {
		return fmt.Errorf("authserver: state file %s holds no PEM key", s.opts.StateFile)
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("authserver: state file %s: %w", s.opts.StateFile, err)
	}
	s.key, s.kid = key, st.KID
	for id, c := range st.Clients {
		s.clients[id] = c
	}
	return nil
}

func (s *Server) saveState() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveStateLocked()
}

func (s *Server) saveStateLocked() error {
	if s.opts.StateFile == "" {
		return nil
	}
	st := state{
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s.key)})),
		KID:     s.kid,
		Clients: s.clients,
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	// a fresh file (whatever was there before, and whatever the umask),
	// 0600, renamed over the state file
	tmp := s.opts.StateFile + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, s.opts.StateFile)
}
