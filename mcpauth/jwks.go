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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// keySources holds remote JWKS by URL (or by issuer, when the URL is
// discovered), shared by every mcp_auth handler and across config reloads.
var keySources = caddy.NewUsagePool()

// fetchTimeout bounds one JWKS or issuer metadata request.
var fetchTimeout = 10 * time.Second // a variable so tests can shorten it

// keySource resolves a token's verification key from a JWKS. Remote sets
// are fetched lazily (never in Provision), refreshed periodically by keyfunc,
// and refreshed on an unknown kid at most once per minInterval; a request
// that arrives when that refresh is not allowed is rejected at once instead
// of waiting for the limiter.
type keySource struct {
	jwksURL     string // empty: discover from issuer
	issuer      string
	refresh     time.Duration
	minInterval time.Duration
	logger      *zap.Logger

	ctx    context.Context
	cancel context.CancelFunc
	client *http.Client
	limit  *rate.Limiter

	mu      sync.Mutex
	started bool
	ready   chan struct{} // closed when the first load attempt ends
	kf      keyfunc.Keyfunc
	store   jwkset.Storage // the fetched keys, readable without triggering a refresh
	keys    atomic.Pointer[versionedStore]

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
		client:      &http.Client{Timeout: fetchTimeout},
		limit:       rate.NewLimiter(rate.Every(minInterval), 1),
		ready:       make(chan struct{}),
	}
	ks.keys.Store(&versionedStore{}) // version 0 until loaded: nothing is cached
	return ks
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
	ready := make(chan struct{})
	close(ready)
	ks := &keySource{started: true, ready: ready, kf: kf, store: kf.Storage(), cancel: func() {}}
	ks.keys.Store(&versionedStore{})
	return ks, nil
}

// Destruct stops the background refresh; called when no config uses it.
func (s *keySource) Destruct() error {
	s.cancel()
	return nil
}

// start launches the first load in the background, once.
func (s *keySource) start() {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return
	}
	s.started = true
	s.mu.Unlock()
	go func() {
		defer close(s.ready)
		if err := s.load(); err != nil {
			s.logger.Warn("JWKS not available yet; tokens cannot be verified until it is",
				zap.String("issuer", s.issuer), zap.String("jwks_url", s.jwksURL), zap.Error(err))
		}
	}()
}

// load discovers the JWKS URL if needed and creates the refreshing storage.
func (s *keySource) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kf != nil {
		return nil
	}
	jwksURL := s.jwksURL
	if jwksURL == "" {
		u, err := s.discover()
		if err != nil {
			return err
		}
		jwksURL = u
	}
	keys := &versionedStore{MemoryJWKSet: jwkset.NewMemoryStorage()}
	store, err := jwkset.NewStorageFromHTTP(jwksURL, jwkset.HTTPClientStorageOptions{
		Storage:                   keys,
		Client:                    s.client,
		Ctx:                       s.ctx,
		HTTPTimeout:               fetchTimeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshInterval:           s.refresh,
		RefreshErrorHandler: func(_ context.Context, err error) {
			s.logger.Warn("JWKS refresh failed", zap.String("jwks_url", jwksURL), zap.Error(err))
		},
	})
	if err != nil {
		return err
	}
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{jwksURL: store},
		// The rate limit is enforced in key() without waiting; by the
		// time keyfunc asks, the refresh has already been allowed.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		return err
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: s.ctx, Storage: client})
	if err != nil {
		return err
	}
	s.kf, s.store = kf, store
	s.keys.Store(keys)
	return nil
}

// discover finds jwks_uri in the issuer's RFC 8414 metadata, falling back
// to OpenID Connect discovery, and checks that the metadata is the issuer's.
func (s *keySource) discover() (string, error) {
	iss, err := url.Parse(s.issuer)
	if err != nil {
		return "", err
	}
	path := strings.TrimSuffix(iss.Path, "/")
	base := iss.Scheme + "://" + iss.Host
	candidates := []string{
		base + "/.well-known/oauth-authorization-server" + path,
		base + "/.well-known/openid-configuration" + path,
		strings.TrimSuffix(s.issuer, "/") + "/.well-known/openid-configuration",
	}
	var errs []error
	for _, c := range candidates {
		u, err := s.fetchMetadata(c)
		if err == nil {
			s.logger.Debug("discovered JWKS from issuer metadata", zap.String("metadata", c), zap.String("jwks_uri", u))
			return u, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("discovering jwks_uri of issuer %s: %w", s.issuer, errors.Join(errs...))
}

func (s *keySource) fetchMetadata(metadataURL string) (string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
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
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&md); err != nil {
		return "", fmt.Errorf("%s: %v", metadataURL, err)
	}
	if md.Issuer != s.issuer {
		return "", fmt.Errorf("%s: metadata issuer %q does not match %q", metadataURL, md.Issuer, s.issuer)
	}
	if md.JWKSURI == "" {
		return "", fmt.Errorf("%s: no jwks_uri", metadataURL)
	}
	return md.JWKSURI, nil
}

// key is the jwt.Keyfunc: it finds the key for the token's kid (or, without
// a kid, every key whose alg fits) and never waits for the refresh limiter.
func (s *keySource) key(ctx context.Context, token *jwt.Token) (any, error) {
	alg, _ := token.Header["alg"].(string)
	kid, kidIsString := token.Header["kid"].(string)
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
	k, err := s.lookup(ctx, token)
	if err == nil && kidIsString {
		s.mu.Lock()
		store := s.store
		s.mu.Unlock()
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

// lookup resolves a key through keyfunc, loading and refreshing the JWKS
// as needed.
func (s *keySource) lookup(ctx context.Context, token *jwt.Token) (any, error) {
	s.start()
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, &keyError{"token signing keys are not available yet"}
	}
	s.mu.Lock()
	kf, store := s.kf, s.store
	s.mu.Unlock()
	if kf == nil {
		// discovery failed so far; retry at the rate unknown kids may
		if !s.limit.Allow() {
			return nil, &keyError{"token signing keys are not available"}
		}
		if err := s.load(); err != nil {
			s.logger.Warn("JWKS still not available", zap.String("issuer", s.issuer), zap.Error(err))
			return nil, &keyError{"token signing keys are not available"}
		}
		s.mu.Lock()
		kf, store = s.kf, s.store
		s.mu.Unlock()
	}

	alg, _ := token.Header["alg"].(string)
	kidValue, hasKid := token.Header["kid"]
	if !hasKid {
		return keysForAlg(ctx, store, alg)
	}
	kid, ok := kidValue.(string)
	if !ok {
		return nil, &keyError{"token kid header is not a string"}
	}
	if _, err := store.KeyRead(ctx, kid); err != nil {
		if s.jwksURL == "" && s.issuer == "" || !s.limit.Allow() {
			// a static set, or the refresh for unknown kids was spent recently
			return nil, &keyError{"token signing key (kid) is not in the JWKS"}
		}
		s.logger.Debug("unknown kid; refreshing JWKS", zap.String("issuer", s.issuer))
	}
	k, err := kf.KeyfuncCtx(ctx)(token)
	if err != nil {
		switch {
		case errors.Is(err, jwkset.ErrKeyNotFound):
			return nil, &keyError{"token signing key (kid) is not in the JWKS"}
		case strings.Contains(err.Error(), `"alg" parameter value`):
			return nil, &keyError{"token alg does not match the alg of its JWK"}
		}
		return nil, &keyError{"token signing key cannot be used"}
	}
	return k, nil
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
