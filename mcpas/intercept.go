package mcpas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"go.uber.org/zap"
)

// What zitadel/oidc's provider does not do, added around it:
//   - RFC 8707 resource: read from the authorize and token requests,
//     checked against the configured resources, and handed to the storage
//     through the request's context (the provider's form decoder drops it);
//   - scopes: the provider refuses a request without scope, and issues a
//     refresh token only for offline_access; a client's scopes are kept
//     aside and the provider sees openid and offline_access besides;
//   - RFC 9207 iss on every authorization response redirect;
//   - RFC 9068: the access token's JOSE type is at+jwt (the provider signs
//     "JWT"; the token is signed again with the same key and claims), and
//     the ID token the provider always adds is left out;
//   - grants: only authorization_code and refresh_token reach it.

type ctxKey int

const (
	resourceKey ctxKey = iota
	scopesKey
)

// resourceValue is what the interceptor found: the canonical resource,
// or why the request's is refused.
type resourceValue struct {
	resource string
	given    bool
	err      *oidc.Error
}

func (h *Handler) intercept(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/authorize":
			if err := r.ParseForm(); err != nil {
				page(w, http.StatusBadRequest, "The authorization request could not be read.")
				return
			}
			// a parameter given twice could be read one way here and another
			// by the provider's decoder: refused
			for _, k := range []string{"client_id", "redirect_uri", "response_type", "state", "code_challenge", "code_challenge_method", "scope", "response_mode"} {
				if len(r.Form[k]) > 1 {
					page(w, http.StatusBadRequest, "The authorization request gives "+k+" more than once.")
					return
				}
			}
			// the redirect URI exactly as registered, before the provider
			// (which lets a native client's loopback port and host vary, and
			// would send its refusal there)
			if c, err := h.lookupClient(r.Context(), r.Form.Get("client_id")); err != nil || !slices.Contains(c.RedirectURIs, r.Form.Get("redirect_uri")) {
				if errors.Is(err, errStorage) {
					h.storageError(w, r, "looking up a client", err)
					return
				}
				page(w, http.StatusBadRequest, "The client is unknown, or the redirect_uri is not exactly one it registered.")
				return
			}
			ctx := h.withResource(r.Context(), r.Form["resource"])
			scopes := strings.Fields(r.Form.Get("scope"))
			ctx = context.WithValue(ctx, scopesKey, scopes)
			seen := append([]string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess}, scopes...)
			r.Form.Set("scope", strings.Join(slices.Compact(seen), " "))
			r = r.WithContext(ctx)
			next.ServeHTTP(&issWriter{ResponseWriter: w, iss: h.Issuer}, r)
		case "/authorize/callback":
			next.ServeHTTP(&issWriter{ResponseWriter: w, iss: h.Issuer}, r)
		case "/oauth/token":
			if r.Method != http.MethodPost {
				next.ServeHTTP(w, r) // CORS preflights, and the provider's own 405
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if err := r.ParseForm(); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the token request could not be read"})
				return
			}
			if g := r.PostForm.Get("grant_type"); g != "authorization_code" && g != "refresh_token" {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type", "error_description": "grant_type must be authorization_code or refresh_token"})
				return
			}
			// a token request may leave resource out (the code or refresh
			// token names one); one it names must be a configured one
			ctx := h.withResource(r.Context(), r.PostForm["resource"])
			if v := ctx.Value(resourceKey).(resourceValue); v.given && v.err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_target", "error_description": v.err.Description})
				return
			}
			r = r.WithContext(ctx)
			tw := &tokenWriter{header: http.Header{}}
			next.ServeHTTP(tw, r)
			h.finishToken(w, tw, r.PostForm.Get("grant_type"))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// withResource checks the requested resources and puts the verdict in
// the context.
func (h *Handler) withResource(ctx context.Context, values []string) context.Context {
	v := resourceValue{given: len(values) > 0}
	v.resource, v.err = h.canonicalResource(values)
	return context.WithValue(ctx, resourceKey, v)
}

// requestResource is the request's resource (the only configured one if
// it named none), or its refusal.
func (h *Handler) requestResource(ctx context.Context) (string, *oidc.Error) {
	v, ok := ctx.Value(resourceKey).(resourceValue)
	if !ok {
		return "", oidc.ErrServerError().WithDescription("no resource verdict")
	}
	return v.resource, v.err
}

// hasResource reports whether the request named a resource.
func hasResource(ctx context.Context) bool {
	v, _ := ctx.Value(resourceKey).(resourceValue)
	return v.given
}

// requestedScopes is what the client asked for (before the interceptor
// added openid and offline_access for the provider).
func requestedScopes(ctx context.Context, seen []string) []string {
	if s, ok := ctx.Value(scopesKey).([]string); ok {
		return s
	}
	return seen
}

// canonicalResource finds the configured resource a requested one names
// (scheme and host compared without case, RFC 3986 section 6.2.2.1).
func (h *Handler) canonicalResource(values []string) (string, *oidc.Error) {
	switch len(values) {
	case 0:
		if len(h.Resources) == 1 {
			return h.Resources[0], nil
		}
		return "", oidc.ErrInvalidTarget().WithDescription("resource is required: this server issues tokens for more than one MCP server")
	case 1:
	default:
		return "", oidc.ErrInvalidTarget().WithDescription("one resource per token")
	}
	want, err := url.Parse(values[0])
	if err != nil || !want.IsAbs() || want.Fragment != "" {
		return "", oidc.ErrInvalidTarget().WithDescription("resource is not an absolute URL without fragment")
	}
	for _, res := range h.Resources {
		have, _ := url.Parse(res)
		if strings.EqualFold(have.Scheme, want.Scheme) && strings.EqualFold(have.Host, want.Host) &&
			have.EscapedPath() == want.EscapedPath() && have.RawQuery == want.RawQuery {
			return res, nil
		}
	}
	return "", oidc.ErrInvalidTarget().WithDescription("resource %s is not a server this authorization server issues tokens for", values[0])
}

// tokenWriter holds the provider's token response.
type tokenWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (t *tokenWriter) Header() http.Header { return t.header }
func (t *tokenWriter) WriteHeader(s int) {
	if t.status == 0 {
		t.status = s
	}
}
func (t *tokenWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	return t.body.Write(b)
}

// finishToken writes the provider's token response with the access token
// typed at+jwt and without the ID token.
func (h *Handler) finishToken(w http.ResponseWriter, t *tokenWriter, grant string) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	body := t.body.Bytes()
	if t.status == http.StatusOK {
		var resp map[string]any
		if err := json.Unmarshal(body, &resp); err == nil {
			if at, ok := resp["access_token"].(string); ok {
				retyped, payload, err := h.retype(at)
				if err != nil {
					h.logger.Error("re-signing an access token as at+jwt failed; answered 500", zap.Error(err))
					writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
					return
				}
				resp["access_token"] = retyped
				delete(resp, "id_token")
				count(asMetrics.tokens, grant)
				if c := h.logger.Check(zap.InfoLevel, "token issued"); c != nil {
					var claims struct {
						Sub      string `json:"sub"`
						ClientID string `json:"client_id"`
						Scope    string `json:"scope"`
					}
					_ = json.Unmarshal(payload, &claims)
					c.Write(zap.String("grant_type", grant), zap.String("client_id", claims.ClientID), zap.String("sub", claims.Sub), zap.String("scope", claims.Scope))
				}
				if sc, ok := resp["scope"].(string); ok {
					// the provider's scopes include the two it was shown
					var out []string
					for _, s := range strings.Fields(sc) {
						if s != oidc.ScopeOpenID && s != oidc.ScopeOfflineAccess {
							out = append(out, s)
						}
					}
					resp["scope"] = strings.Join(out, " ")
				}
				body, _ = json.Marshal(resp)
			}
		}
	}
	for k, v := range t.header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(t.status)
	_, _ = w.Write(body)
}

// retype signs the provider's access token again, with the same key and
// claims, under the JOSE type at+jwt (RFC 9068 section 2.1); payload is
// the claims.
func (h *Handler) retype(at string) (token string, payload []byte, err error) {
	jws, err := jose.ParseSigned(at, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return "", nil, err
	}
	key := h.keyByID(jws.Signatures[0].Header.KeyID)
	if key == nil {
		return "", nil, errUnknownKey
	}
	payload, err = jws.Verify(key.Public())
	if err != nil {
		return "", nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return "", nil, err
	}
	out, err := signer.Sign(payload)
	if err != nil {
		return "", nil, err
	}
	token, err = out.CompactSerialize()
	return token, payload, err
}

var errUnknownKey = errors.New("the access token names a key this server does not have")
