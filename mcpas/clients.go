package mcpas

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddymcp/caddymcp/internal/cimd"
)

// client is a registered client (RFC 7591) as stored.
type client struct {
	ID           string    `json:"client_id"`
	SecretHash   []byte    `json:"secret_hash,omitempty"`
	Name         string    `json:"client_name,omitempty"`
	URI          string    `json:"client_uri,omitempty"`
	RedirectURIs []string  `json:"redirect_uris"`
	AuthMethod   string    `json:"token_endpoint_auth_method"`
	GrantTypes   []string  `json:"grant_types"`
	Scopes       []string  `json:"scopes"`
	Audience     []string  `json:"audience"`
	Created      time.Time `json:"created"`
	// metadata is true for a client named by its metadata document (CIMD)
	Metadata bool `json:"metadata,omitempty"`
}

// displayName is how the consent page names the client: its name and
// where it says it comes from are its own claims, so the page shows the
// redirect URI's host beside them.
func (c *client) displayName() string {
	if c.Name != "" {
		return c.Name
	}
	return "an unnamed client"
}

// maxRegistrationBytes bounds a registration request.
const maxRegistrationBytes = 16 << 10

// registration is the RFC 7591 request (the members the server honours).
type registration struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	Scope                   string   `json:"scope"`
}

// validRedirectURI: https, or http on a loopback host (RFC 8252 native
// clients), absolute, without a fragment or credentials; or a private-use
// scheme of a native app (com.example.app:/callback) with a dot in it.
func validRedirectURI(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Fragment != "" || u.User != nil || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	switch u.Scheme {
	case "https":
		return u.Host != ""
	case "http":
		h := u.Hostname()
		return h == "localhost" || h == "127.0.0.1" || h == "::1"
	case "":
		return false
	}
	// a private-use URI scheme (RFC 8252 section 7.1): reverse domain
	// name, never one a browser would run (javascript:, data:, file:)
	return strings.Contains(u.Scheme, ".") && u.Opaque == "" && u.Host == ""
}

func registrationError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// register is the registration endpoint (RFC 7591).
func (h *Handler) register(w http.ResponseWriter, r *http.Request) {
	// browser-based clients register from their own origin (no cookies or
	// credentials are involved: any origin may)
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization, MCP-Protocol-Version")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		registrationError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
		return
	}
	if !h.limit(w, r, h.registerRate) {
		count(asMetrics.registrations, "limited")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		registrationError(w, http.StatusBadRequest, "invalid_client_metadata", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRegistrationBytes+1))
	if err != nil || len(body) > maxRegistrationBytes {
		registrationError(w, http.StatusBadRequest, "invalid_client_metadata", "registration request unreadable or larger than 16 KiB")
		return
	}
	var reg registration
	if err := json.Unmarshal(body, &reg); err != nil {
		registrationError(w, http.StatusBadRequest, "invalid_client_metadata", "registration request is not a JSON object of client metadata: "+err.Error())
		return
	}
	c, err := h.newClient(reg)
	if err != nil {
		code := "invalid_client_metadata"
		if strings.HasPrefix(err.Error(), "redirect_uris") {
			code = "invalid_redirect_uri"
		}
		count(asMetrics.registrations, "invalid")
		registrationError(w, http.StatusBadRequest, code, err.Error())
		return
	}
	if n := h.rt.clientCount.Load(); n >= int64(h.MaxClients) {
		h.logger.Warn("client registration refused: max_clients reached (raise it, or lower client_lifetime)", zap.Int64("clients", n))
		count(asMetrics.registrations, "full")
		w.Header().Set("Retry-After", "3600")
		registrationError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the server has as many registered clients as it keeps")
		return
	}
	var secret string
	if c.AuthMethod != "none" {
		secret = randomToken(32)
		if c.SecretHash, err = bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost); err != nil {
			h.serverError(w, r, "hashing a client secret", err)
			return
		}
	}
	if err := h.store.putData(r.Context(), "client", c.ID, c, time.Duration(h.ClientLifetime)); err != nil {
		h.storageError(w, r, "registering a client", err)
		return
	}
	h.rt.clientCount.Add(1)
	count(asMetrics.registrations, "ok")
	resp := map[string]any{
		"client_id": c.ID, "client_id_issued_at": c.Created.Unix(),
		"redirect_uris": c.RedirectURIs, "token_endpoint_auth_method": c.AuthMethod,
		"grant_types": c.GrantTypes, "response_types": []string{"code"},
		"scope": strings.Join(c.Scopes, " "),
	}
	if c.Name != "" {
		resp["client_name"] = c.Name
	}
	if c.URI != "" {
		resp["client_uri"] = c.URI
	}
	if secret != "" {
		resp["client_secret"] = secret
		resp["client_secret_expires_at"] = c.Created.Add(time.Duration(h.ClientLifetime)).Unix()
	}
	h.logger.Info("client registered", zap.String("client_id", c.ID), zap.String("client_name", c.Name),
		zap.Strings("redirect_uris", c.RedirectURIs), zap.String("remote_ip", clientIP(r)))
	writeJSON(w, http.StatusCreated, resp)
}

// newClient checks a registration and makes the client it asks for.
func (h *Handler) newClient(reg registration) (*client, error) {
	if len(reg.RedirectURIs) == 0 || len(reg.RedirectURIs) > 10 {
		return nil, errors.New("redirect_uris: one to ten are required")
	}
	for _, u := range reg.RedirectURIs {
		if !validRedirectURI(u) {
			return nil, fmt.Errorf("redirect_uris: %q is not an https URL, an http URL on a loopback host, or a private-use scheme, without fragment", u)
		}
	}
	c := &client{ID: randomToken(24), RedirectURIs: slices.Clone(reg.RedirectURIs), Created: time.Now().UTC(),
		Name: truncate(reg.ClientName, 100), Audience: h.Resources}
	if reg.ClientURI != "" {
		if u, err := url.Parse(reg.ClientURI); err == nil && u.Scheme == "https" {
			c.URI = reg.ClientURI
		}
	}
	switch reg.TokenEndpointAuthMethod {
	case "", "none":
		c.AuthMethod = "none"
	case "client_secret_basic", "client_secret_post":
		c.AuthMethod = reg.TokenEndpointAuthMethod
	default:
		return nil, fmt.Errorf("token_endpoint_auth_method %q is not supported (none, client_secret_basic, client_secret_post)", reg.TokenEndpointAuthMethod)
	}
	c.GrantTypes = []string{"authorization_code", "refresh_token"}
	for _, g := range reg.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, fmt.Errorf("grant_types: %q is not supported (authorization_code, refresh_token)", g)
		}
	}
	for _, t := range reg.ResponseTypes {
		if t != "code" {
			return nil, fmt.Errorf("response_types: %q is not supported (code)", t)
		}
	}
	c.Scopes = h.Scopes
	if reg.Scope != "" {
		c.Scopes = nil
		for _, s := range strings.Fields(reg.Scope) {
			if !slices.Contains(h.Scopes, s) {
				return nil, fmt.Errorf("scope %q is not one this server grants (%s)", s, strings.Join(h.Scopes, " "))
			}
			c.Scopes = append(c.Scopes, s)
		}
	}
	return c, nil
}

// lookupClient finds a client: registered (storage) or named by a
// metadata document URL (fetched, cached).
func (h *Handler) lookupClient(ctx context.Context, id string) (*client, error) {
	if id == "" || len(id) > 2048 {
		return nil, errNotFound
	}
	if isMetadataClientID(id) {
		return h.metadataClient(ctx, id)
	}
	var c client
	if err := h.store.getData(ctx, "client", id, &c); err != nil {
		return nil, err
	}
	if c.ID != id {
		return nil, errNotFound
	}
	return &c, nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// isMetadataClientID reports whether id names a client metadata document.
func isMetadataClientID(id string) bool { return cimd.IsClientID(id) }

// metadataClient is the client a metadata document describes (public:
// PKCE, no secret), for every resource and scope of this server.
func (h *Handler) metadataClient(ctx context.Context, id string) (*client, error) {
	doc, err := h.cimd.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: the client metadata document was refused: %v", errNotFound, err)
	}
	grants := []string{"authorization_code", "refresh_token"}
	return &client{ID: id, Name: truncate(doc.ClientName, 100), URI: doc.ClientURI, RedirectURIs: doc.RedirectURIs,
		AuthMethod: "none", GrantTypes: grants, Scopes: h.Scopes, Audience: h.Resources, Metadata: true}, nil
}
