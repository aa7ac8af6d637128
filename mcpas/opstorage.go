package mcpas

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddymcp/caddymcp/internal/keyring"
)

// authRequest is an authorization request, from the authorize endpoint to
// the code's redemption (op.AuthRequest). Stored as "authreq" by id; its
// code maps to it as "code".
type authRequest struct {
	ID            string              `json:"id"`
	ClientID      string              `json:"client_id"`
	RedirectURI   string              `json:"redirect_uri"`
	State         string              `json:"state,omitempty"`
	Nonce         string              `json:"nonce,omitempty"`
	Requested     []string            `json:"requested,omitempty"` // the scopes the client asked for
	Granted       []string            `json:"granted,omitempty"`   // the scopes the user got
	Resource      string              `json:"resource"`
	Challenge     *oidc.CodeChallenge `json:"challenge"`
	Subject       string              `json:"sub,omitempty"`
	Email         string              `json:"email,omitempty"`
	Username      string              `json:"preferred_username,omitempty"`
	AuthTime      time.Time           `json:"auth_time,omitzero"`
	IsDone        bool                `json:"done,omitempty"`
	Code          string              `json:"code,omitempty"` // digest of the code, once issued
	CodeRedeemed  bool                `json:"redeemed,omitempty"`
	FamilyRevoked bool                `json:"-"`
}

func (a *authRequest) GetID() string                         { return a.ID }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return []string{"ext"} }
func (a *authRequest) GetAudience() []string                 { return []string{a.Resource} }
func (a *authRequest) GetAuthTime() time.Time                { return a.AuthTime }
func (a *authRequest) GetClientID() string                   { return a.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.Challenge }
func (a *authRequest) GetNonce() string                      { return a.Nonce }
func (a *authRequest) GetRedirectURI() string                { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return oidc.ResponseTypeCode }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return oidc.ResponseModeQuery }
func (a *authRequest) GetState() string                      { return a.State }
func (a *authRequest) GetSubject() string                    { return a.Subject }
func (a *authRequest) Done() bool                            { return a.IsDone }

// GetScopes is what op issues tokens for: the granted scopes, with
// offline_access (op issues a refresh token only then; every client of
// this server gets one) and openid (op always makes an ID token).
func (a *authRequest) GetScopes() []string {
	return append([]string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess}, a.Granted...)
}

// refreshRecord is a refresh token as stored (by digest of the token).
type refreshRecord struct {
	Family   string    `json:"family"` // the authorization request it descends from
	ClientID string    `json:"client_id"`
	Subject  string    `json:"sub"`
	Email    string    `json:"email,omitempty"`
	Username string    `json:"preferred_username,omitempty"`
	Scopes   []string  `json:"scopes"`
	Resource string    `json:"resource"`
	AuthTime time.Time `json:"auth_time"`
	Used     bool      `json:"used,omitempty"`
}

// refreshRequest is op's view of a refresh token being redeemed.
type refreshRequest struct {
	rec    *refreshRecord
	token  string
	scopes []string
}

func (r *refreshRequest) GetAMR() []string            { return []string{"ext"} }
func (r *refreshRequest) GetAudience() []string       { return []string{r.rec.Resource} }
func (r *refreshRequest) GetAuthTime() time.Time      { return r.rec.AuthTime }
func (r *refreshRequest) GetClientID() string         { return r.rec.ClientID }
func (r *refreshRequest) GetScopes() []string         { return r.scopes }
func (r *refreshRequest) GetSubject() string          { return r.rec.Subject }
func (r *refreshRequest) SetCurrentScopes(s []string) { r.scopes = s }

// opStorage is zitadel/oidc's op.Storage over the handler's store.
type opStorage struct{ h *Handler }

func (s opStorage) st() *store { return s.h.store }

// CreateAuthRequest keeps a request that op checked (client, redirect URI
// registered, response type), after the checks op does not make: PKCE
// S256 only, the redirect URI exactly as registered (op lets a native
// client's loopback port vary), the resource (RFC 8707), query mode only.
func (s opStorage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method S256 is required")
	}
	if req.ResponseMode != "" && req.ResponseMode != oidc.ResponseModeQuery {
		return nil, oidc.ErrInvalidRequest().WithDescription("only response_mode query is supported")
	}
	c, err := s.h.lookupClient(ctx, req.ClientID)
	if err != nil {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	if !slices.Contains(c.RedirectURIs, req.RedirectURI) {
		return nil, oidc.ErrInvalidRequest().WithDescription("redirect_uri must be exactly one the client registered")
	}
	resource, rerr := s.h.requestResource(ctx)
	if rerr != nil {
		return nil, rerr
	}
	a := &authRequest{ID: randomToken(24), ClientID: req.ClientID, RedirectURI: req.RedirectURI, State: req.State, Nonce: req.Nonce,
		Requested: requestedScopes(ctx, req.Scopes), Resource: resource,
		Challenge: &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: oidc.CodeChallengeMethodS256}}
	if err := s.st().putData(ctx, "authreq", a.ID, a, stateLifetime); err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	return a, nil
}

func (s opStorage) authRequest(ctx context.Context, id string) (*authRequest, error) {
	var a authRequest
	if err := s.st().getData(ctx, "authreq", id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

func (s opStorage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	a, err := s.authRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// AuthRequestByCode redeems a code, once across instances (under the
// request's storage lock): a second redemption fails, and revokes the
// refresh tokens the first one got (OAuth 2.1 section 4.1.3).
func (s opStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	var id string
	if err := s.st().getData(ctx, "code", code, &id); err != nil {
		return nil, err
	}
	var out *authRequest
	err := s.st().locked(ctx, "authreq", id, func() error {
		a, err := s.authRequest(ctx, id)
		if err != nil {
			return err
		}
		if a.Code != digest(code) {
			return errNotFound
		}
		if hasResource(ctx) {
			if res, rerr := s.h.requestResource(ctx); rerr != nil || res != a.Resource {
				return errors.New("the token request names another resource than the authorization request")
			}
		}
		if a.CodeRedeemed {
			_ = s.revokeFamily(ctx, a.ID)
			return errors.New("authorization code already redeemed: its tokens are revoked")
		}
		a.CodeRedeemed = true
		if err := s.st().putData(ctx, "authreq", a.ID, a, codeLifetime); err != nil {
			return err
		}
		out = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s opStorage) SaveAuthCode(ctx context.Context, id, code string) error {
	return s.st().locked(ctx, "authreq", id, func() error {
		a, err := s.authRequest(ctx, id)
		if err != nil {
			return err
		}
		if a.Code != "" || !a.IsDone {
			return errors.New("a code was already issued for this request")
		}
		a.Code = digest(code)
		if err := s.st().putData(ctx, "code", code, id, codeLifetime); err != nil {
			return err
		}
		return s.st().putData(ctx, "authreq", id, a, codeLifetime)
	})
}

// DeleteAuthRequest is called once the code's tokens are issued: the
// request is kept (redeemed) until the code expires, so that a replay is
// recognised as one.
func (s opStorage) DeleteAuthRequest(context.Context, string) error { return nil }

func (s opStorage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return randomToken(16), time.Now().Add(time.Duration(s.h.AccessTokenLifetime)), nil
}

// CreateAccessAndRefreshTokens issues a refresh token: a new family for a
// code, the next of its family for a refresh token (which is marked used,
// once: a concurrent second use loses, and a later one revokes the
// family).
func (s opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	rec := &refreshRecord{}
	switch r := req.(type) {
	case *authRequest:
		*rec = refreshRecord{Family: r.ID, ClientID: r.ClientID, Subject: r.Subject, Email: r.Email, Username: r.Username,
			Scopes: r.Granted, Resource: r.Resource, AuthTime: r.AuthTime}
	case *refreshRequest:
		err := s.st().locked(ctx, "refresh", current, func() error {
			var old refreshRecord
			if err := s.st().getData(ctx, "refresh", current, &old); err != nil {
				return err
			}
			if old.Used {
				return errors.New("refresh token already used")
			}
			old.Used = true
			return s.st().putData(ctx, "refresh", current, &old, time.Duration(s.h.RefreshTokenLifetime))
		})
		if err != nil {
			if errors.Is(err, errStorage) {
				return "", "", time.Time{}, oidc.ErrServerError().WithParent(err)
			}
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the refresh token was already used")
		}
		*rec = *r.rec
		rec.Used = false
		rec.Scopes = grantable(r.scopes, r.rec.Scopes)
	default:
		return "", "", time.Time{}, oidc.ErrServerError().WithDescription("unexpected token request")
	}
	token := randomToken(32)
	if err := s.st().putData(ctx, "refresh", token, rec, time.Duration(s.h.RefreshTokenLifetime)); err != nil {
		return "", "", time.Time{}, oidc.ErrServerError().WithParent(err)
	}
	return randomToken(16), token, time.Now().Add(time.Duration(s.h.AccessTokenLifetime)), nil
}

// TokenRequestByRefreshToken finds a refresh token. A used one revokes its
// family: every token descending from the same login stops working.
func (s opStorage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	var rec refreshRecord
	if err := s.st().getData(ctx, "refresh", token, &rec); err != nil {
		return nil, err
	}
	if s.familyRevoked(ctx, rec.Family) {
		return nil, errors.New("the refresh token's family was revoked")
	}
	if rec.Used {
		_ = s.revokeFamily(ctx, rec.Family)
		s.h.logger.Warn("refresh token reused: its family is revoked (a stolen token, or a client that retried)")
		return nil, errors.New("refresh token reused: its family is revoked")
	}
	if hasResource(ctx) {
		if resource, err := s.h.requestResource(ctx); err != nil || resource != rec.Resource {
			return nil, oidc.ErrInvalidTarget().WithDescription("the refresh token was granted for another resource")
		}
	}
	return &refreshRequest{rec: &rec, token: token, scopes: append([]string{oidc.ScopeOpenID, oidc.ScopeOfflineAccess}, rec.Scopes...)}, nil
}

func (s opStorage) revokeFamily(ctx context.Context, family string) error {
	return s.st().putData(ctx, "revoked", family, true, time.Duration(s.h.RefreshTokenLifetime))
}

func (s opStorage) familyRevoked(ctx context.Context, family string) bool {
	var v bool
	err := s.st().getData(ctx, "revoked", family, &v)
	return err == nil || !errors.Is(err, errNotFound) // a storage fault revokes: fail closed
}

func (s opStorage) TerminateSession(context.Context, string, string) error { return nil }

// RevokeToken revokes a refresh token's family (RFC 7009); access tokens
// are JWTs that live their short lifetime.
func (s opStorage) RevokeToken(ctx context.Context, token, _, clientID string) *oidc.Error {
	var rec refreshRecord
	if err := s.st().getData(ctx, "refresh", token, &rec); err != nil {
		return nil // unknown tokens are revoked already (RFC 7009 section 2.2)
	}
	if rec.ClientID != clientID {
		return oidc.ErrInvalidClient().WithDescription("the token was issued to another client")
	}
	if err := s.revokeFamily(ctx, rec.Family); err != nil {
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

func (s opStorage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	var rec refreshRecord
	if err := s.st().getData(ctx, "refresh", token, &rec); err != nil || rec.ClientID != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rec.Subject, token, nil
}

// signingKey is op's view of a ring key's ES256 key.
type signingKey struct{ jwk *jose.JSONWebKey }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k signingKey) Key() any                                    { return k.jwk.Key }
func (k signingKey) ID() string                                  { return k.jwk.KeyID }

type publicKey struct{ jwk jose.JSONWebKey }

func (k publicKey) ID() string                         { return k.jwk.KeyID }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.jwk.Key }

func (s opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.h.signingKey(s.h.ring.Current())}, nil
}

func (s opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (s opStorage) KeySet(context.Context) ([]op.Key, error) {
	var out []op.Key
	for _, k := range s.h.ring.All() {
		out = append(out, publicKey{s.h.signingKey(k).Public()})
	}
	return out, nil
}

func (s opStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.h.lookupClient(ctx, id)
	if err != nil {
		if errors.Is(err, errStorage) {
			return nil, oidc.ErrServerError().WithParent(err)
		}
		return nil, err
	}
	return &opClient{c: c, h: s.h}, nil
}

func (s opStorage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	c, err := s.h.lookupClient(ctx, id)
	if err != nil {
		return err
	}
	if len(c.SecretHash) == 0 || bcrypt.CompareHashAndPassword(c.SecretHash, []byte(secret)) != nil {
		return errors.New("invalid client secret")
	}
	return nil
}

func (s opStorage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s opStorage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errors.New("userinfo is not served")
}

func (s opStorage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not served")
}

func (s opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetPrivateClaimsFromRequest gives the access token its scope (RFC 9068:
// the granted scopes, space-separated) and the user's verified email and
// name as the upstream said them.
func (s opStorage) GetPrivateClaimsFromRequest(_ context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	claims := map[string]any{}
	var scopes []string
	switch r := req.(type) {
	case *authRequest:
		scopes = r.Granted
		if r.Email != "" {
			claims["email"] = r.Email
		}
		if r.Username != "" {
			claims["preferred_username"] = r.Username
		}
	case *refreshRequest:
		scopes = grantable(r.scopes, r.rec.Scopes)
		if r.rec.Email != "" {
			claims["email"] = r.rec.Email
		}
		if r.rec.Username != "" {
			claims["preferred_username"] = r.rec.Username
		}
	}
	claims["scope"] = strings.Join(scopes, " ")
	return claims, nil
}

func (s opStorage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT profile grants are not accepted")
}

func (s opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("JWT profile grants are not accepted")
}

func (s opStorage) Health(context.Context) error { return nil }

// opClient is op's view of a client.
type opClient struct {
	c *client
	h *Handler
}

func (c *opClient) GetID() string                    { return c.c.ID }
func (c *opClient) RedirectURIs() []string           { return c.c.RedirectURIs }
func (c *opClient) PostLogoutRedirectURIs() []string { return nil }

// ApplicationType: native lets op accept the loopback and private-use
// redirect URIs of desktop clients; exact matching is CreateAuthRequest's.
func (c *opClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c *opClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethod(c.c.AuthMethod) }
func (c *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *opClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}
func (c *opClient) LoginURL(id string) string           { return c.h.base + "/login?id=" + id }
func (c *opClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c *opClient) IDTokenLifetime() time.Duration      { return 5 * time.Minute }
func (c *opClient) DevMode() bool                       { return false }
func (c *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *opClient) IsScopeAllowed(s string) bool         { return slices.Contains(c.c.Scopes, s) }
func (c *opClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *opClient) ClockSkew() time.Duration             { return 0 }

var (
	_ op.Storage                        = opStorage{}
	_ op.CanGetPrivateClaimsFromRequest = opStorage{}
	_ op.Client                         = (*opClient)(nil)
	_ op.AuthRequest                    = (*authRequest)(nil)
	_ op.RefreshTokenRequest            = (*refreshRequest)(nil)
	_                                   = keyring.Retain
)
