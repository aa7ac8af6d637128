package mcpas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Upstream is an identity provider users log in with.
type Upstream struct {
	// Name names it in the callback URL ({issuer}/callback/<name>, the
	// redirect URI to register with the provider), in rules, on the
	// consent page and in the sub of tokens (<name>:<its subject>).
	Name string `json:"name"`
	// Kind is oidc (any OpenID Connect provider, by Issuer) or github.
	Kind string `json:"kind"`
	// Issuer is the OpenID Connect provider's issuer URL (its discovery
	// document is read on first use).
	Issuer string `json:"issuer,omitempty"`
	// ClientID and ClientSecret are this server's client at the provider.
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	// Scopes asked of the provider (oidc: openid email profile; github:
	// read:user user:email read:org).
	Scopes []string `json:"scopes,omitempty"`
	// Label is what the consent page's button says (default: the name).
	Label string `json:"label,omitempty"`
	// GitHub endpoints, for GitHub Enterprise Server (defaults: github.com
	// and api.github.com).
	AuthURL  string `json:"auth_url,omitempty"`
	TokenURL string `json:"token_url,omitempty"`
	APIURL   string `json:"api_url,omitempty"`
}

// upstream is a provisioned Upstream.
type upstream struct {
	cfg         *Upstream
	redirectURI string
	http        *http.Client

	mu        sync.Mutex // guards the discovered provider (never held across I/O)
	provider  *oidc.Provider
	lastTried time.Time
}

func newUpstream(_ caddy.Context, u *Upstream, redirectURI string) (*upstream, error) {
	switch u.Kind {
	case "oidc":
		if u.Issuer == "" {
			return nil, errors.New("oidc needs the provider's issuer URL")
		}
		if len(u.Scopes) == 0 {
			u.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
		}
	case "github":
		if len(u.Scopes) == 0 {
			u.Scopes = []string{"read:user", "user:email", "read:org"}
		}
		if u.AuthURL == "" {
			u.AuthURL = "https://github.com/login/oauth/authorize"
		}
		if u.TokenURL == "" {
			u.TokenURL = "https://github.com/login/oauth/access_token"
		}
		if u.APIURL == "" {
			u.APIURL = "https://api.github.com"
		}
		u.APIURL = strings.TrimSuffix(u.APIURL, "/")
	default:
		return nil, fmt.Errorf("kind %q: oidc or github", u.Kind)
	}
	if u.ClientID == "" {
		return nil, errors.New("client_id is required")
	}
	return &upstream{cfg: u, redirectURI: redirectURI, http: &http.Client{Timeout: 10 * time.Second}}, nil
}

func (u *upstream) label() string {
	if u.cfg.Label != "" {
		return u.cfg.Label
	}
	return u.cfg.Name
}

// discover reads the OIDC provider's discovery document, once (again
// after a failure, at most every 10 s).
func (u *upstream) discover(ctx context.Context) (*oidc.Provider, error) {
	u.mu.Lock()
	if p := u.provider; p != nil {
		u.mu.Unlock()
		return p, nil
	}
	if time.Since(u.lastTried) < 10*time.Second {
		u.mu.Unlock()
		return nil, fmt.Errorf("the provider's discovery document at %s failed less than 10 s ago", u.cfg.Issuer)
	}
	u.lastTried = time.Now()
	u.mu.Unlock()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, u.http), u.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering %s: %w", u.cfg.Issuer, err)
	}
	u.mu.Lock()
	u.provider = p
	u.mu.Unlock()
	return p, nil
}

func (u *upstream) oauth(ctx context.Context) (*oauth2.Config, error) {
	c := &oauth2.Config{ClientID: u.cfg.ClientID, ClientSecret: u.cfg.ClientSecret, RedirectURL: u.redirectURI, Scopes: u.cfg.Scopes}
	if u.cfg.Kind == "github" {
		c.Endpoint = oauth2.Endpoint{AuthURL: u.cfg.AuthURL, TokenURL: u.cfg.TokenURL, AuthStyle: oauth2.AuthStyleInParams}
		return c, nil
	}
	p, err := u.discover(ctx)
	if err != nil {
		return nil, err
	}
	c.Endpoint = p.Endpoint()
	return c, nil
}

// authURL is where the user is sent: with state, PKCE (S256) and, for
// OIDC, a nonce.
func (u *upstream) authURL(ctx context.Context, state, nonce, verifier string) (string, error) {
	c, err := u.oauth(ctx)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	if u.cfg.Kind == "oidc" {
		opts = append(opts, oidc.Nonce(nonce))
	}
	return c.AuthCodeURL(state, opts...), nil
}

// identify redeems the upstream's code and says who logged in.
func (u *upstream) identify(ctx context.Context, code, nonce, verifier string) (*identity, error) {
	c, err := u.oauth(ctx)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, u.http)
	tok, err := c.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("redeeming the provider's code: %w", err)
	}
	if u.cfg.Kind == "github" {
		return u.github(ctx, tok)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("the provider's token response has no id_token")
	}
	p, err := u.discover(ctx)
	if err != nil {
		return nil, err
	}
	idt, err := p.VerifierContext(oidc.ClientContext(ctx, u.http), &oidc.Config{ClientID: u.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verifying the ID token: %w", err)
	}
	if idt.Nonce != nonce {
		return nil, errors.New("the ID token's nonce is not the one sent")
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return nil, fmt.Errorf("reading the ID token's claims: %w", err)
	}
	if _, ok := all["email"]; !ok && p.UserInfoEndpoint() != "" {
		// providers that keep the email out of the ID token (Hydra, some
		// Keycloak setups) give it at userinfo
		if ui, err := p.UserInfo(oidc.ClientContext(ctx, u.http), oauth2.StaticTokenSource(tok)); err == nil {
			var extra map[string]any
			if ui.Claims(&extra) == nil && extra["sub"] == idt.Subject {
				for k, v := range extra {
					if _, ok := all[k]; !ok {
						all[k] = v
					}
				}
			}
		}
	}
	id := &identity{Upstream: u.cfg.Name, Subject: idt.Subject, Claims: claimSet{}}
	for k, v := range all {
		switch v := v.(type) {
		case string:
			id.Claims[k] = []string{v}
		case bool:
			id.Claims[k] = []string{strconv.FormatBool(v)}
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					id.Claims[k] = append(id.Claims[k], s)
				}
			}
		}
	}
	id.Email, _ = all["email"].(string)
	switch v := all["email_verified"].(type) {
	case bool:
		id.EmailVerified = v
	case string: // some providers (older Cognito, some Azure B2C) send a string
		id.EmailVerified = v == "true"
	}
	id.Name, _ = all["name"].(string)
	id.Username, _ = all["preferred_username"].(string)
	return id, nil
}

// maxAPIBytes bounds a GitHub API answer.
const maxAPIBytes = 1 << 20

func (u *upstream) api(ctx context.Context, tok *oauth2.Token, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.cfg.APIURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	resp, err := u.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return json.Unmarshal(body, v)
}

// github reads the user, its verified primary email, organisations and
// teams from GitHub's API.
func (u *upstream) github(ctx context.Context, tok *oauth2.Token) (*identity, error) {
	var user struct {
		ID    int64  `json:"id"`
		Login string `json:"login"`
		Name  string `json:"name"`
	}
	if err := u.api(ctx, tok, "/user", &user); err != nil {
		return nil, fmt.Errorf("reading the GitHub user: %w", err)
	}
	if user.ID == 0 {
		return nil, errors.New("the GitHub user has no id")
	}
	id := &identity{Upstream: u.cfg.Name, Subject: strconv.FormatInt(user.ID, 10), Name: user.Name, Username: user.Login,
		Claims: claimSet{"login": {user.Login}}}
	var emails []struct {
		Email    string `json:"email"`
		Primary  bool   `json:"primary"`
		Verified bool   `json:"verified"`
	}
	if err := u.api(ctx, tok, "/user/emails", &emails); err == nil {
		for _, e := range emails {
			if e.Primary {
				id.Email, id.EmailVerified = e.Email, e.Verified
			}
		}
	}
	var orgs []struct {
		Login string `json:"login"`
	}
	if err := u.api(ctx, tok, "/user/orgs?per_page=100", &orgs); err == nil {
		for _, o := range orgs {
			id.Orgs = append(id.Orgs, o.Login)
		}
	}
	var teams []struct {
		Slug         string `json:"slug"`
		Organization struct {
			Login string `json:"login"`
		} `json:"organization"`
	}
	if err := u.api(ctx, tok, "/user/teams?per_page=100", &teams); err == nil {
		for _, t := range teams {
			id.Teams = append(id.Teams, t.Organization.Login+"/"+t.Slug)
		}
	}
	return id, nil
}
