package mcpauth

// Token introspection (RFC 7662) for bearer tokens that are not JWTs (an
// opaque token, such as Ory Hydra issues by default). With
// introspection_url set, authenticate sends every such token there and
// treats the answer of an active token as the claims of a verified JWT:
// the same time and issuer checks (one jwt.Validator, built with the
// parser's options), then the same sub, audience, scope, rule and rate
// checks, placeholders and principal (iss + sub), on the same code path.
//
// Answers are cached by the token's SHA-256 (never the token itself): an
// active answer until the token's exp (plus leeway) or cache_ttl from now,
// whichever comes first; an inactive one for negative_ttl. Concurrent
// requests with one uncached token share one call (singleflight). The call
// runs on the handler's context with its own timeout, never on a client's,
// so one client leaving does not fail the others waiting on it, and no call
// outlives the config. An endpoint that fails (network, timeout, a status
// other than 200, an answer that is not a JSON object with a boolean
// "active", or one over maxIntrospectionBytes) is not an answer: nothing is
// cached, the request gets 503, and the failure is logged (Warn, once per
// call, never the token).

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// maxIntrospectionBytes caps an introspection answer; real ones are a few
// hundred bytes.
const maxIntrospectionBytes = 64 << 10

// Defaults of the introspection options.
const (
	defaultIntrospectionTimeout     = 5 * time.Second
	defaultIntrospectionCacheTTL    = time.Minute
	defaultIntrospectionNegativeTTL = 10 * time.Second
)

// Introspection methods of client authentication (RFC 7591 names).
const (
	clientSecretBasic = "client_secret_basic"
	clientSecretPost  = "client_secret_post"
)

// Test hooks, set only by tests (export_test.go): a skew added to the
// introspection clock, and a function called when a request has joined a
// call to the endpoint (its own or another request's).
var (
	introspectSkew atomic.Int64
	introspectJoin atomic.Pointer[func()]
)

// introspectNow is the clock of introspection: cache expiry and the checks
// of exp, nbf and iat in answers.
func introspectNow() time.Time {
	return time.Now().Add(time.Duration(introspectSkew.Load()))
}

// introspector asks the introspection endpoint about tokens and remembers
// the answers.
type introspector struct {
	url          string
	clientID     string // "": no client authentication
	clientSecret string
	post         bool // client_secret_post; else client_secret_basic
	timeout      time.Duration
	ttl          time.Duration // bound of an active answer's life in the cache
	negativeTTL  time.Duration
	leeway       time.Duration
	issuer       string
	validator    *jwt.Validator
	cache        *tokenCache // nil: off; version is always 0
	flights      singleflight.Group
	http         *http.Client
	transport    *http.Transport // its idle connections are closed on close; nil if shared
	ctx          context.Context // ends with close: so do calls in flight
	cancel       context.CancelFunc
	logger       *zap.Logger
}

// answer is the endpoint's word on a token: the claims of an active token,
// nil for an inactive one; err when the endpoint gave no usable answer.
type answer struct {
	claims jwt.MapClaims
	err    error
}

func (i *introspector) close() {
	i.cancel()
	if i.transport != nil {
		i.transport.CloseIdleConnections()
	}
}

// introspectionClient is bounded in time (each call also has its own
// deadline) and follows no redirect: the endpoint is configured, and a
// redirect would carry the token elsewhere.
func introspectionClient(timeout time.Duration) (*http.Client, *http.Transport) {
	rt := fetchTransport
	var own *http.Transport
	if t, ok := fetchTransport.(*http.Transport); ok {
		// a burst of distinct tokens makes concurrent calls: keep more
		// than Go's default 2 idle connections to the one host
		own = t.Clone()
		own.MaxIdleConnsPerHost = 64
		rt = own
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is then an unexpected status
		},
	}, own
}

// isJWS reports whether a token is a JWS in compact serialization (RFC
// 7515): three base64url segments, the first a JSON object (the protected
// header). Such a token is verified locally; any other is introspected.
func isJWS(token string) bool {
	header, rest, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || header == "" || payload == "" || strings.ContainsAny(token, "+/=~") {
		return false
	}
	if len(header) > 4096 {
		return false
	}
	var buf [3072]byte
	n, err := base64.RawURLEncoding.Decode(buf[:], []byte(header))
	if err != nil {
		return false
	}
	b := buf[:n]
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}

// check returns the claims of an active token, or why the request fails:
// invalid_token for an inactive token or one the checks refuse, 503 when
// the endpoint gives no answer.
func (i *introspector) check(ctx context.Context, raw string) (jwt.MapClaims, *failure) {
	key := sha256.Sum256([]byte(raw))
	if i.cache != nil {
		if claims, ok := i.cache.getKey(key, 0, introspectNow()); ok {
			countCacheHit(claims != nil)
			return i.accept(claims)
		}
	}
	ch := i.flights.DoChan(string(key[:]), func() (any, error) {
		return i.ask(raw, key), nil
	})
	if hook := introspectJoin.Load(); hook != nil {
		(*hook)()
	}
	select {
	case res := <-ch:
		a := res.Val.(answer)
		if a.err != nil {
			return nil, unavailable("the token could not be checked: the token introspection endpoint did not answer")
		}
		return i.accept(a.claims)
	case <-ctx.Done():
		// the client left; the call goes on for the others
		return nil, unavailable("the request ended while its token was being introspected")
	}
}

// accept applies the checks that the JWT parser makes of a verified
// token's claims to an introspection answer.
func (i *introspector) accept(claims jwt.MapClaims) (jwt.MapClaims, *failure) {
	if claims == nil {
		return nil, invalidToken("token is not active")
	}
	if err := i.validator.Validate(claims); err != nil {
		return nil, invalidToken(describe(err))
	}
	// a refresh token is active too (Hydra answers token_use
	// refresh_token), but it is no access token
	if use, ok := claims["token_use"].(string); ok && use != "access_token" {
		return nil, invalidToken("token is not an access token")
	}
	if typ, _ := claims["token_type"].(string); strings.EqualFold(typ, "refresh_token") {
		return nil, invalidToken("token is not an access token")
	}
	return claims, nil
}

// ask calls the endpoint once for every request waiting on raw and caches
// the answer. It runs in singleflight's goroutine, on the handler's
// context with the introspection timeout.
func (i *introspector) ask(raw string, key [32]byte) answer {
	if i.cache != nil {
		// a call that ended between this request's cache miss and its
		// flight has answered already
		if claims, ok := i.cache.getKey(key, 0, introspectNow()); ok {
			return answer{claims: claims}
		}
	}
	ctx, cancel := context.WithTimeout(i.ctx, i.timeout)
	defer cancel()
	claims, err := i.call(ctx, raw)
	if err != nil {
		countIntrospection("error")
		i.logger.Warn("token introspection failed; the request gets 503 and nothing is cached",
			zap.String("introspection_url", i.url), zap.Error(err))
		return answer{err: err}
	}
	now := introspectNow()
	if claims == nil {
		countIntrospection("inactive")
		if i.cache != nil {
			i.cache.putKey(key, nil, now.Add(i.negativeTTL), 0)
		}
		return answer{}
	}
	countIntrospection("active")
	if _, ok := claims["iss"]; !ok {
		// iss is optional in an answer (RFC 7662); the endpoint speaks for
		// the configured issuer, whose users these are
		claims["iss"] = i.issuer
	}
	if i.cache != nil {
		i.cache.putKey(key, claims, i.until(claims, now), 0)
	}
	return answer{claims: claims}
}

// until is how long an active answer is cached: cache_ttl, cut short by
// the token's exp (plus leeway). An answer for a token already past its
// exp (refused on every hit) is asked again after negative_ttl.
func (i *introspector) until(claims jwt.MapClaims, now time.Time) time.Time {
	until := now.Add(i.ttl)
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		if e := exp.Add(i.leeway); e.Before(until) {
			until = e
		}
	}
	if !until.After(now) {
		until = now.Add(i.negativeTTL)
	}
	return until
}

// call posts the token to the endpoint (RFC 7662 section 2.1) and returns
// the answer's members for an active token, nil for an inactive one, or
// why there is no answer. Errors never hold the token.
func (i *introspector) call(ctx context.Context, raw string) (jwt.MapClaims, error) {
	form := url.Values{"token": {raw}, "token_type_hint": {"access_token"}}
	if i.clientID != "" && i.post {
		form.Set("client_id", i.clientID)
		form.Set("client_secret", i.clientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, i.url, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if i.clientID != "" && !i.post {
		// RFC 6749 section 2.3.1: both form-encoded, then Basic
		req.SetBasicAuth(url.QueryEscape(i.clientID), url.QueryEscape(i.clientSecret))
	}
	resp, err := i.http.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is logged beside it
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(body) > maxIntrospectionBytes {
		return nil, fmt.Errorf("the answer is larger than %d bytes", maxIntrospectionBytes)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("HTTP %d: the endpoint refused mcp_auth as its client (introspection_client_id, introspection_client_secret, introspection_auth_method)", resp.StatusCode)
	default:
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return parseIntrospection(body)
}

// parseIntrospection reads an answer (RFC 7662 section 2.2): a JSON object
// with a boolean "active". It returns nil claims for an inactive token.
func parseIntrospection(body []byte) (jwt.MapClaims, error) {
	var claims jwt.MapClaims
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("the answer is not a JSON object: %v", err)
	}
	if claims == nil {
		return nil, errors.New("the answer is not a JSON object: null")
	}
	active, ok := claims["active"].(bool)
	if !ok {
		return nil, errors.New(`the answer has no boolean "active"`)
	}
	if !active {
		return nil, nil
	}
	return claims, nil
}

// plainOverNetwork reports whether an http URL leaves this machine, so
// that tokens and the client secret would cross a network in clear.
func plainOverNetwork(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" {
		return false
	}
	host := p.Hostname()
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
