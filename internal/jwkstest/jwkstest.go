// Package jwkstest is a test issuer: real RSA, EC P-256 and Ed25519 keys, a
// JWKS served over real HTTP (with a fetch counter and fault switches), and
// a token minter.
package jwkstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Key is a signing key with its kid and JWS algorithm.
type Key struct {
	KID     string
	Alg     string
	Private crypto.Signer
	// JWKAlg, when set, is published as the JWK's alg instead of Alg.
	JWKAlg string
}

// NewKey generates a key for alg: RS256, PS256, ES256 or EdDSA.
func NewKey(t testing.TB, kid, alg string) *Key {
	t.Helper()
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case "RS256", "RS384", "RS512", "PS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("jwkstest: unsupported alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &Key{KID: kid, Alg: alg, Private: priv}
}

// Issuer serves a JWKS and mints tokens.
type Issuer struct {
	Server *httptest.Server
	// Fetches counts JWKS requests.
	Fetches atomic.Int64

	mu      sync.Mutex
	keys    []*Key
	fault   string // "", "down", "garbage", "empty", "slow"
	slowFor time.Duration
}

// NewIssuer starts a JWKS server publishing keys; its URL is the issuer.
// The JWKS is at /jwks.json and RFC 8414 metadata at the well-known path.
func NewIssuer(t testing.TB, keys ...*Key) *Issuer {
	t.Helper()
	is := NewIssuerNoCleanup(t, keys...)
	t.Cleanup(is.Server.Close)
	return is
}

// NewIssuerNoCleanup is NewIssuer for a server that lives as long as the
// process (a fuzz target's fixture).
func NewIssuerNoCleanup(t testing.TB, keys ...*Key) *Issuer {
	t.Helper()
	is := &Issuer{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks.json", is.serveJWKS)
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":   is.URL(),
			"jwks_uri": is.URL() + "/jwks.json",
		})
	})
	is.Server = httptest.NewServer(mux)
	return is
}

// URL is the issuer identifier.
func (is *Issuer) URL() string { return is.Server.URL }

// JWKSURL is where the key set is served.
func (is *Issuer) JWKSURL() string { return is.Server.URL + "/jwks.json" }

// SetKeys replaces the published keys (rotation, removal).
func (is *Issuer) SetKeys(keys ...*Key) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = keys
}

// SetFault makes the JWKS endpoint misbehave: "down" (503), "garbage"
// (not JSON), "empty" (no keys), "slow" (waits d first), or "" (healthy).
func (is *Issuer) SetFault(fault string, d time.Duration) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.fault, is.slowFor = fault, d
}

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.Fetches.Add(1)
	is.mu.Lock()
	fault, slow, keys := is.fault, is.slowFor, is.keys
	is.mu.Unlock()
	switch fault {
	case "down":
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	case "garbage":
		_, _ = w.Write([]byte("<html>not a jwks"))
		return
	case "empty":
		keys = nil
	case "slow":
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(JWKS(nil, keys...))
}

// JWKS renders the public keys as a JWK Set document.
// A nil t panics on failure instead.
func JWKS(t testing.TB, keys ...*Key) []byte {
	fail := func(format string, args ...any) {
		if t == nil {
			panic(fmt.Sprintf(format, args...))
		}
		t.Helper()
		t.Fatalf(format, args...)
	}
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		alg := k.Alg
		if k.JWKAlg != "" {
			alg = k.JWKAlg
		}
		jwk, err := jwkset.NewJWKFromKey(k.Private.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: k.KID, ALG: jwkset.ALG(alg), USE: jwkset.UseSig},
		})
		if err != nil {
			fail("jwkstest: JWK for %s: %v", k.KID, err)
		}
		set.Keys = append(set.Keys, jwk.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		fail("jwkstest: %v", err)
	}
	return b
}

// Claims returns standard claims for sub, valid for an hour.
func (is *Issuer) Claims(sub, aud, scope string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss":       is.URL(),
		"sub":       sub,
		"aud":       aud,
		"scope":     scope,
		"client_id": "test-client",
		"iat":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"jti":       rand.Text(),
	}
}

// Mint signs claims with k, putting k.KID in the header unless kid is
// overridden by the "kid" entry of header (nil value: no kid at all).
func Mint(t testing.TB, k *Key, claims jwt.MapClaims, header map[string]any) string {
	t.Helper()
	method := jwt.GetSigningMethod(k.Alg)
	if method == nil {
		t.Fatalf("jwkstest: unknown alg %s", k.Alg)
	}
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = k.KID
	for name, v := range header {
		if v == nil {
			delete(tok.Header, name)
			continue
		}
		tok.Header[name] = v
	}
	s, err := tok.SignedString(k.Private)
	if err != nil {
		t.Fatalf("jwkstest: signing: %v", err)
	}
	return s
}
