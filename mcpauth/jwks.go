package mcpauth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"

	"github.com/caddymcp/caddymcp/internal/localissuer"
	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/caddymcp/caddymcp/internal/wellknown"
)

// keySources holds remote JWKS by URL (or by issuer, when the URL is
// discovered), shared by every mcp_auth handler and across config reloads.
var keySources = caddy.NewUsagePool()

// fetchTimeout bounds one JWKS or issuer metadata request; discovery as a
// whole (every candidate metadata URL) gets twice that.
var fetchTimeout = 10 * time.Second // a variable so tests can shorten it

// keyWait bounds how long a request waits for a JWKS fetch already in
// flight (the first load, or an unknown-kid refresh) before it is answered
// 401 at once. A variable so tests can change it.
var keyWait = 2 * time.Second

// fetchTransport carries JWKS and metadata requests (tests swap it to
// trust their TLS servers).
var fetchTransport http.RoundTripper = http.DefaultTransport

// maxFetchBytes caps a JWKS or metadata document.
const maxFetchBytes = 1 << 20

// keySource resolves a token's verification key from a JWKS. Remote sets
// are fetched lazily (never in Provision) by one background fetch at a time;
// requests never fetch themselves and wait for a fetch in flight at most
// keyWait (and never past their own context). Keyfunc refreshes the set
// periodically; an unknown kid triggers a refresh at most once per
// minInterval, and a request arriving when that refresh is not allowed is
// rejected at once.
type keySource struct {
	jwksURL     string // empty: discover from issuer
	issuer      string
	refresh     time.Duration
	minInterval time.Duration
	logger      *zap.Logger

	ctx    context.Context // ends with Destruct
	cancel context.CancelFunc
	http   *http.Client
	limit  *rate.Limiter // load retries and unknown-kid refreshes

	// mu guards the fields below. It is never held across I/O: fetches run
	// in their own goroutine and publish their result under mu.
	mu        sync.Mutex
	kf        keyfunc.Keyfunc
	store     jwkset.Storage // the fetched keys, readable without triggering a refresh
	refresher jwkset.Storage // reading an unknown kid through it refreshes the set
	fetching  chan struct{}  // non-nil while a fetch runs; closed when it ends
	reason    string         // why keys are unavailable ("" before the first try and once loaded)

	keys atomic.Pointer[versionedStore]

	// cache holds resolved keys by kid for the current JWKS version, so
	// the hot path is one map lookup instead of a JWKS scan and alg checks.
	cache sync.Map // kid -> cachedKey
}

// cachedKey is a resolved verification key.
type cachedKey struct {
	key     any
	alg     string // the JWK's own alg, "" if it has none
	version uint64
}

// versionedStore is the in-memory JWKS that keyfunc refreshes; every
// replacement bumps its version, which invalidates the key cache.
type versionedStore struct {
	*jwkset.MemoryJWKSet
	version atomic.Uint64
}

func (v *versionedStore) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	err := v.MemoryJWKSet.KeyReplaceAll(ctx, given)
	v.version.Add(1)
	return err
}

// keySourceKey identifies a shareable remote key source.
func keySourceKey(jwksURL, issuer string, refresh, minInterval time.Duration) string {
	return fmt.Sprintf("jwks=%s issuer=%s refresh=%s min=%s", jwksURL, issuer, refresh, minInterval)
}

func newRemoteKeySource(jwksURL, issuer string, refresh, minInterval time.Duration, logger *zap.Logger) *keySource {
	ctx, cancel := context.WithCancel(context.Background())
	ks := &keySource{
		jwksURL:     jwksURL,
		issuer:      issuer,
		refresh:     refresh,
		minInterval: minInterval,
		logger:      logger,
		ctx:         ctx,
		cancel:      cancel,
		http:        fetchClient(),
		limit:       rate.NewLimiter(rate.Every(minInterval), 1),
	}
	ks.keys.Store(&versionedStore{}) // version 0 until loaded: nothing is cached
	return ks
}

// fetchClient is the HTTP client for JWKS and metadata: bounded in time and
// size, and it follows no redirect (a JWKS location is configured or named
// by the issuer's own metadata, never by a redirect).
func fetchClient() *http.Client {
	return &http.Client{
		Timeout:   fetchTimeout,
		Transport: limitedTransport{fetchTransport},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is then an unexpected status
		},
	}
}

// limitedTransport fails a response body beyond maxFetchBytes.
type limitedTransport struct{ next http.RoundTripper }

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxFetchBytes {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: response of %d bytes is larger than %d", r.URL.Redacted(), resp.ContentLength, maxFetchBytes)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxFetchBytes}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

var errTooLarge = fmt.Errorf("response is larger than %d bytes", maxFetchBytes)

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// one byte more tells a body that ends here from one that does not
		var one [1]byte
		if n, _ := b.ReadCloser.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// newStaticKeySource serves keys from a JWKS document held in memory.
func newStaticKeySource(raw []byte) (*keySource, error) {
	kf, err := keyfunc.NewJWKSetJSON(raw)
	if err != nil {
		return nil, err
	}
	keys, err := kf.Storage().KeyReadAll(context.Background())
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("the JWKS holds no usable keys")
	}
	ks := &keySource{kf: kf, store: kf.Storage(), cancel: func() {}}
	ks.keys.Store(&versionedStore{})
	return ks, nil
}

// Destruct stops the background refresh; called when no config uses it.
func (s *keySource) Destruct() error {
	s.cancel()
	return nil
}

// startFetchLocked runs fn in the background unless a fetch is already
// running, and returns the channel closed when the running fetch ends.
// Caller holds s.mu.
func (s *keySource) startFetchLocked(what string, fn func(ctx context.Context)) chan struct{} {
	if s.fetching != nil {
		return s.fetching
	}
	done := make(chan struct{})
	s.fetching = done
	go func() {
		defer func() {
			s.mu.Lock()
			s.fetching = nil
			s.mu.Unlock()
			close(done)
		}()
		ctx, cancel := context.WithTimeout(s.ctx, 2*fetchTimeout)
		defer cancel()
		if c := s.logger.Check(zap.DebugLevel, "JWKS fetch"); c != nil {
			c.Write(zap.String("what", what), zap.String("issuer", s.issuer))
		}
		fn(ctx)
		if authMetrics.fetches != nil {
			s.mu.Lock()
			result := "loaded"
			if s.reason != "" {
				result = "failed"
			}
			s.mu.Unlock()
			authMetrics.fetches.WithLabelValues(what, result).Inc()
		}
	}()
	return done
}

// await waits for a fetch in flight, at most keyWait and never past ctx.
func await(ctx context.Context, done chan struct{}) {
	t := time.NewTimer(keyWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// ready returns keyfunc and the stores once the JWKS is loaded. If it is
// not, it starts a load (the first at once, retries at the unknown-kid
// rate), waits for a load in flight within keyWait, and otherwise says why
// the keys are not available.
func (s *keySource) ready(ctx context.Context) (keyfunc.Keyfunc, jwkset.Storage, jwkset.Storage, error) {
	s.mu.Lock()
	if s.kf != nil {
		defer s.mu.Unlock()
		return s.kf, s.store, s.refresher, nil
	}
	done := s.fetching
	if done == nil && (s.reason == "" || s.limit.Allow()) {
		done = s.startFetchLocked("load", s.load)
	}
	s.mu.Unlock()
	if done != nil {
		await(ctx, done)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kf != nil {
		return s.kf, s.store, s.refresher, nil
	}
	reason := s.reason
	if reason == "" {
		reason = "the JWKS is still being fetched"
	}
	return nil, nil, nil, &keyError{"token signing keys are not available: " + reason}
}

// load discovers the JWKS URL if needed, fetches the set and publishes the
// refreshing storage; on failure it records why (for clients) and logs it.
func (s *keySource) load(ctx context.Context) {
	kf, store, refresher, keys, reason, err := s.fetchSet(ctx)
	s.mu.Lock()
	if err != nil {
		s.reason = reason
	} else {
		s.kf, s.store, s.refresher, s.reason = kf, store, refresher, ""
		s.keys.Store(keys)
	}
	s.mu.Unlock()
	if err != nil {
		s.logger.Warn("JWKS not available; tokens cannot be verified until it is",
			zap.String("issuer", s.issuer), zap.String("jwks_url", s.jwksURL), zap.Error(err))
	}
}

// fetchSet does the I/O of load; reason is the client-safe cause.
func (s *keySource) fetchSet(ctx context.Context) (kf keyfunc.Keyfunc, store, refresher jwkset.Storage, keys *versionedStore, reason string, err error) {
	jwksURL := s.jwksURL
	if jwksURL == "" {
		u, reason, err := s.discover(ctx)
		if err != nil {
			return nil, nil, nil, nil, reason, err
		}
		jwksURL = u
	}
	keys = &versionedStore{MemoryJWKSet: jwkset.NewMemoryStorage()}
	// the storage's refresh goroutine lives with the key source, unless
	// the first fetch fails (then it is stopped here)
	storeCtx, stop := context.WithCancel(s.ctx)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	store, err = jwkset.NewStorageFromHTTP(jwksURL, jwkset.HTTPClientStorageOptions{
		Storage:         keys,
		Client:          s.http,
		Ctx:             storeCtx,
		HTTPTimeout:     fetchTimeout,
		RefreshInterval: s.refresh,
		RefreshErrorHandler: func(_ context.Context, err error) {
			s.logger.Warn("JWKS refresh failed", zap.String("jwks_url", jwksURL), zap.Error(err))
		},
	})
	if err != nil {
		return nil, nil, nil, nil, "the JWKS could not be fetched", err
	}
	refresher, err = jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{jwksURL: store},
		// the rate limit is enforced in lookup() without waiting; by the
		// time the refresher is asked, the refresh has been allowed
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err == nil {
		kf, err = keyfunc.New(keyfunc.Options{Ctx: s.ctx, Storage: refresher})
	}
	if err != nil {
		return nil, nil, nil, nil, "the JWKS cannot be used", err
	}
	return kf, store, refresher, keys, "", nil
}

// discover finds jwks_uri in the issuer's RFC 8414 metadata, falling back
// to OpenID Connect discovery, and checks that the metadata is the issuer's
// and that an https issuer names an https JWKS. reason is client-safe.
func (s *keySource) discover(ctx context.Context) (jwksURL, reason string, err error) {
	iss, err := url.Parse(s.issuer)
	if err != nil {
		return "", "the issuer is not a URL", err
	}
	path := strings.TrimSuffix(iss.Path, "/")
	base := iss.Scheme + "://" + iss.Host
	var candidates []string
	for _, c := range []string{
		base + "/.well-known/oauth-authorization-server" + path,
		base + "/.well-known/openid-configuration" + path,
		strings.TrimSuffix(s.issuer, "/") + "/.well-known/openid-configuration",
	} {
		if !slices.Contains(candidates, c) {
			candidates = append(candidates, c)
		}
	}
	var errs []error
	mismatch := false
	for _, c := range candidates {
		u, err := s.fetchMetadata(ctx, c)
		if err == nil {
			if iss.Scheme == "https" && !strings.HasPrefix(strings.ToLower(u), "https://") {
				return "", "the issuer's metadata names a jwks_uri that is not https",
					fmt.Errorf("%s: jwks_uri %q is not https although the issuer is", c, u)
			}
			if c := s.logger.Check(zap.DebugLevel, "discovered JWKS from issuer metadata"); c != nil {
				c.Write(zap.String("jwks_uri", u))
			}
			return u, "", nil
		}
		if errors.Is(err, errIssuerMismatch) {
			mismatch = true
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	reason = "the issuer's metadata could not be fetched"
	if mismatch {
		reason = "the issuer's metadata names a different issuer"
	}
	return "", reason, fmt.Errorf("discovering jwks_uri of issuer %s: %w", s.issuer, errors.Join(errs...))
}

var errIssuerMismatch = errors.New("metadata issuer does not match")

func (s *keySource) fetchMetadata(ctx context.Context, metadataURL string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", metadataURL, resp.StatusCode)
	}
	var md struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		return "", fmt.Errorf("%s: %v", metadataURL, err)
	}
	if md.Issuer != s.issuer {
		return "", fmt.Errorf("%s: %w: %q, not %q", metadataURL, errIssuerMismatch, md.Issuer, s.issuer)
	}
	if md.JWKSURI == "" {
		return "", fmt.Errorf("%s: no jwks_uri", metadataURL)
	}
	if err := wellknown.CheckURL(md.JWKSURI, false); err != nil {
		return "", fmt.Errorf("%s: jwks_uri: %w", metadataURL, err)
	}
	return md.JWKSURI, nil
}

// key is the jwt.Keyfunc: it finds the key for the token's kid (or, without
// a kid, every key whose alg fits) and never waits for the refresh limiter.
func (s *keySource) key(ctx context.Context, token *jwt.Token) (any, error) {
	alg, _ := token.Header["alg"].(string)
	kid, kidIsString := token.Header["kid"].(string)
	// an authorization server in this process (mcp_authorization_server)
	// answers for its own keys: no network hop to ourselves
	if s.issuer != "" && kidIsString {
		if local := localissuer.Lookup(s.issuer); local != nil {
			if k, kalg, ok := local(kid); ok {
				if kalg != alg {
					return nil, &keyError{"token alg does not match the alg of its JWK"}
				}
				return k, nil
			}
		}
	}
	if kidIsString {
		if v, ok := s.cache.Load(kid); ok {
			if ck := v.(cachedKey); ck.version == s.keys.Load().version.Load() {
				if ck.alg != "" && ck.alg != alg {
					return nil, &keyError{"token alg does not match the alg of its JWK"}
				}
				return ck.key, nil
			}
		}
	}
	k, store, err := s.lookup(ctx, token)
	if err == nil && kidIsString {
		keys := s.keys.Load()
		// cache what the store holds now, under the version read before:
		// a refresh in between leaves a stale entry, never a wrong one
		version := keys.version.Load()
		if jwk, rerr := store.KeyRead(ctx, kid); rerr == nil {
			s.cache.Store(kid, cachedKey{key: verificationKey(jwk), alg: jwk.Marshal().ALG.String(), version: version})
		}
	}
	return k, err
}

// lookup resolves a key through keyfunc. An unknown kid starts a refresh
// in the background (at most once per minInterval) that the request waits
// for within keyWait; the key is then looked up in what was fetched.
func (s *keySource) lookup(ctx context.Context, token *jwt.Token) (any, jwkset.Storage, error) {
	kf, store, refresher, err := s.ready(ctx)
	if err != nil {
		return nil, nil, err
	}
	alg, _ := token.Header["alg"].(string)
	kidValue, hasKid := token.Header["kid"]
	if !hasKid {
		k, err := keysForAlg(ctx, store, alg)
		return k, store, err
	}
	kid, ok := kidValue.(string)
	if !ok {
		return nil, nil, &keyError{"token kid header is not a string"}
	}
	if _, err := store.KeyRead(ctx, kid); err != nil {
		if refresher == nil {
			return nil, nil, &keyError{"token signing key (kid) is not in the JWKS"}
		}
		s.mu.Lock()
		done := s.fetching
		if done == nil && s.limit.Allow() {
			done = s.startFetchLocked("unknown kid", func(ctx context.Context) {
				// reading through the refresher refreshes the set
				_, _ = refresher.KeyRead(ctx, kid)
			})
		}
		s.mu.Unlock()
		if done == nil {
			// the refresh for unknown kids was spent recently
			return nil, nil, &keyError{"token signing key (kid) is not in the JWKS"}
		}
		await(ctx, done)
		if _, err := store.KeyRead(ctx, kid); err != nil {
			return nil, nil, &keyError{"token signing key (kid) is not in the JWKS"}
		}
	}
	// the kid is in the set now: keyfunc only reads the store (its own
	// refresh-on-unknown-kid cannot trigger)
	k, err := kf.KeyfuncCtx(ctx)(token)
	if err != nil {
		switch {
		case errors.Is(err, jwkset.ErrKeyNotFound):
			return nil, nil, &keyError{"token signing key (kid) is not in the JWKS"}
		case strings.Contains(err.Error(), `"alg" parameter value`):
			return nil, nil, &keyError{"token alg does not match the alg of its JWK"}
		}
		return nil, nil, &keyError{"token signing key cannot be used"}
	}
	return k, store, nil
}

// keysForAlg returns every key that may verify a token without kid: keys
// whose JWK alg is unset or equals the token's.
func keysForAlg(ctx context.Context, store jwkset.Storage, alg string) (any, error) {
	all, err := store.KeyReadAll(ctx)
	if err != nil {
		return nil, &keyError{"token signing keys are not available"}
	}
	var set jwt.VerificationKeySet
	for _, j := range all {
		if a := j.Marshal().ALG.String(); a != "" && a != alg {
			continue
		}
		set.Keys = append(set.Keys, verificationKey(j))
	}
	if len(set.Keys) == 0 {
		return nil, &keyError{"no key in the JWKS matches the token (no kid)"}
	}
	return set, nil
}

// verificationKey is a JWK's public key (a JWKS may carry private keys).
func verificationKey(j jwkset.JWK) any {
	key := j.Key()
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		return pk.Public()
	}
	return key
}
