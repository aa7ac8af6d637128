package authserver

// Client ID Metadata Documents (the MCP 2026-07-28 way for a client to
// identify itself without registering): a client_id that is an https URL
// names a JSON document, fetched by the server, that describes the client.
// The fetch is an SSRF risk, so it is bounded: https only, no redirects, at
// most 64 KiB in 5 s, and (unless AllowPrivateCIMD) never to a loopback,
// private, link-local or otherwise non-public address, checked on the
// address actually dialed (a name that resolves to one is refused too).
// Documents are cached for their Cache-Control max-age, between 1 minute
// and 1 hour (5 minutes without one).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxCIMDBytes bounds a client metadata document.
const maxCIMDBytes = 64 << 10

type cimdEntry struct {
	c       *client
	err     error
	expires time.Time
}

// isCIMDClientID reports whether id names a metadata document: an https URL
// with a path, no fragment, no credentials.
func isCIMDClientID(id string) bool {
	u, err := url.Parse(id)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.Path != "" && u.Path != "/" &&
		u.Fragment == "" && u.User == nil
}

// cimdHTTPClient is the client that fetches documents: no redirects, a dial
// guard against non-public addresses, bounded in time.
func cimdHTTPClient(allowPrivate bool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
		if allowPrivate {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		if a := ap.Addr().Unmap(); !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("client metadata document host resolves to a non-public address %s", a)
		}
		return nil
	}}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 5 * time.Second,
			ResponseHeaderTimeout: 5 * time.Second, MaxResponseHeaderBytes: 16 << 10, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("redirects are not followed") },
	}
}

// cimdClient returns the client a metadata document describes, fetching it
// (or using the cached copy).
func (s *Server) cimdClient(ctx context.Context, id string) (*client, error) {
	now := time.Now()
	s.mu.Lock()
	e := s.cimd[id]
	s.mu.Unlock()
	if e != nil && now.Before(e.expires) {
		return e.c, e.err
	}
	c, ttl, err := s.fetchCIMD(ctx, id)
	if err != nil {
		ttl = time.Minute // a failing document is not fetched again at once
	}
	s.mu.Lock()
	if len(s.cimd) >= 1000 {
		for k, v := range s.cimd {
			if now.After(v.expires) {
				delete(s.cimd, k)
			}
		}
	}
	if len(s.cimd) < 1000 {
		s.cimd[id] = &cimdEntry{c: c, err: err, expires: now.Add(ttl)}
	}
	s.mu.Unlock()
	if err != nil {
		s.opts.Logf("client metadata document %s refused: %v", id, err)
	}
	return c, err
}

func (s *Server) fetchCIMD(ctx context.Context, id string) (*client, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.cimdHTTP.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetching: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCIMDBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading: %w", err)
	}
	if len(body) > maxCIMDBytes {
		return nil, 0, fmt.Errorf("larger than %d bytes", maxCIMDBytes)
	}
	var doc struct {
		ClientID     string   `json:"client_id"`
		ClientName   string   `json:"client_name"`
		RedirectURIs []string `json:"redirect_uris"`
		AuthMethod   string   `json:"token_endpoint_auth_method"`
		GrantTypes   []string `json:"grant_types"`
		Secret       *string  `json:"client_secret"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, 0, fmt.Errorf("not JSON client metadata: %w", err)
	}
	switch {
	case doc.ClientID != id:
		return nil, 0, fmt.Errorf("its client_id %q is not its URL", doc.ClientID)
	case doc.Secret != nil:
		return nil, 0, errors.New("it carries a client_secret (a document is public)")
	case len(doc.RedirectURIs) == 0:
		return nil, 0, errors.New("no redirect_uris")
	case doc.AuthMethod != "" && doc.AuthMethod != "none":
		return nil, 0, fmt.Errorf("token_endpoint_auth_method %q: only none (PKCE) is supported", doc.AuthMethod)
	}
	for _, u := range doc.RedirectURIs {
		if !validRedirectURI(u) {
			return nil, 0, fmt.Errorf("redirect URI %s must be https, or http on a loopback host, without fragment", u)
		}
	}
	if len(doc.GrantTypes) == 0 {
		doc.GrantTypes = []string{"authorization_code"}
	}
	for _, g := range doc.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return nil, 0, fmt.Errorf("grant type %s is not for a public client", g)
		}
	}
	return &client{ID: id, Name: doc.ClientName, RedirectURIs: doc.RedirectURIs, AuthMethod: "none",
		GrantTypes: doc.GrantTypes}, cacheTTL(resp.Header.Get("Cache-Control")), nil
}

// cacheTTL reads max-age, bounded to [1m, 1h]; 5m without one.
func cacheTTL(cc string) time.Duration {
	ttl := 5 * time.Minute
	for _, part := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "max-age="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				ttl = time.Duration(n) * time.Second
			}
		}
		if strings.TrimSpace(part) == "no-store" || strings.TrimSpace(part) == "no-cache" {
			ttl = 0
		}
	}
	return min(max(ttl, time.Minute), time.Hour)
}

// lookupClient finds a registered client, or the one a metadata document
// describes.
func (s *Server) lookupClient(ctx context.Context, id string) (*client, error) {
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c != nil {
		return c, nil
	}
	if isCIMDClientID(id) {
		return s.cimdClient(ctx, id)
	}
	return nil, errors.New("unknown client_id")
}
