// Package cimd reads Client ID Metadata Documents (the MCP 2025-11-25 and
// 2026-07-28 way for a client to identify itself without registering): a
// client_id that is an https URL names a JSON document, fetched by the
// authorization server, that describes the client.
//
// The fetch is an SSRF risk, so it is bounded: https only, no redirects, at
// most 64 KiB in 5 s, and (unless private addresses are allowed) never to
// a loopback, private, link-local or otherwise non-public address, checked
// on the address actually dialed (a name that resolves to one is refused
// too). Documents are cached for their Cache-Control max-age, between 1
// minute and 1 hour (5 minutes without one); a refused document for a
// minute. Both caddymcp's authorization servers use it: the
// mcp_authorization_server module and the development example.
package cimd

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
	"sync"
	"syscall"
	"time"
)

// MaxBytes bounds a client metadata document.
const MaxBytes = 64 << 10

// maxCached bounds the cache.
const maxCached = 1000

// Document is what a metadata document says about its client (the members
// an authorization server acts on).
type Document struct {
	ClientID     string   `json:"client_id"`
	ClientName   string   `json:"client_name"`
	ClientURI    string   `json:"client_uri"`
	RedirectURIs []string `json:"redirect_uris"`
	AuthMethod   string   `json:"token_endpoint_auth_method"`
	GrantTypes   []string `json:"grant_types"`
	Secret       *string  `json:"client_secret"`
}

// IsClientID reports whether id names a metadata document: an https URL
// with a path, no fragment, no credentials.
func IsClientID(id string) bool {
	u, err := url.Parse(id)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.Path != "" && u.Path != "/" &&
		u.Fragment == "" && u.User == nil
}

// HTTPClient is the client that fetches documents: no redirects, a dial
// guard against non-public addresses (unless allowPrivate), bounded in
// time and size of headers.
func HTTPClient(allowPrivate bool) *http.Client {
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

// Fetch reads and checks the document id names: its client_id is its URL,
// it has redirect URIs (each accepted by validRedirect), no secret, and
// asks only for a public client's grants. ttl is how long it may be
// cached.
func Fetch(ctx context.Context, hc *http.Client, id string, validRedirect func(string) bool) (doc *Document, ttl time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetching: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("fetching: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading: %w", err)
	}
	if len(body) > MaxBytes {
		return nil, 0, fmt.Errorf("larger than %d bytes", MaxBytes)
	}
	doc = new(Document)
	if err := json.Unmarshal(body, doc); err != nil {
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
		if !validRedirect(u) {
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
	doc.AuthMethod = "none"
	return doc, CacheTTL(resp.Header.Get("Cache-Control")), nil
}

// CacheTTL reads max-age, bounded to [1m, 1h]; 5m without one.
func CacheTTL(cc string) time.Duration {
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

// Cache holds fetched documents (and refusals) for their time, at most
// 1000 of them.
type Cache struct {
	HTTP          *http.Client
	ValidRedirect func(string) bool
	// Refused, if set, hears of each document refused (for the log).
	Refused func(id string, err error)

	mu      sync.Mutex
	entries map[string]entry
}

type entry struct {
	doc     *Document
	err     error
	expires time.Time
}

// Get returns the document id names, fetched or cached.
func (c *Cache) Get(ctx context.Context, id string) (*Document, error) {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.doc, e.err
	}
	doc, ttl, err := Fetch(ctx, c.HTTP, id, c.ValidRedirect)
	if err != nil {
		ttl = time.Minute // a failing document is not fetched again at once
	}
	c.mu.Lock()
	if c.entries == nil {
		c.entries = map[string]entry{}
	}
	if len(c.entries) >= maxCached {
		for k, v := range c.entries {
			if now.After(v.expires) {
				delete(c.entries, k)
			}
		}
	}
	if len(c.entries) < maxCached {
		c.entries[id] = entry{doc, err, now.Add(ttl)}
	}
	c.mu.Unlock()
	if err != nil && c.Refused != nil {
		c.Refused(id, err)
	}
	return doc, err
}
