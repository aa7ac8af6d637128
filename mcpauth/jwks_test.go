package mcpauth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// hostileIssuer serves issuer metadata and a JWKS whose behaviour a test
// scripts, and counts requests per path.
type hostileIssuer struct {
	srv   *httptest.Server
	mu    sync.Mutex
	count map[string]int
	serve func(w http.ResponseWriter, r *http.Request) bool // true: handled
	keys  []*jwkstest.Key
}

func newHostileIssuer(t *testing.T, tls bool, keys ...*jwkstest.Key) *hostileIssuer {
	hi := &hostileIssuer{count: map[string]int{}, keys: keys}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hi.mu.Lock()
		hi.count[r.URL.Path]++
		serve := hi.serve
		hi.mu.Unlock()
		if serve != nil && serve(w, r) {
			return
		}
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": hi.srv.URL, "jwks_uri": hi.srv.URL + "/jwks.json"})
		case "/jwks.json":
			_, _ = w.Write(jwkstest.JWKS(t, hi.keys...))
		default:
			http.NotFound(w, r)
		}
	})
	if tls {
		hi.srv = httptest.NewTLSServer(h)
		saved := fetchTransport
		fetchTransport = hi.srv.Client().Transport
		t.Cleanup(func() { fetchTransport = saved })
	} else {
		hi.srv = httptest.NewServer(h)
	}
	t.Cleanup(hi.srv.Close)
	return hi
}

func (hi *hostileIssuer) set(f func(w http.ResponseWriter, r *http.Request) bool) {
	hi.mu.Lock()
	hi.serve = f
	hi.mu.Unlock()
}

func (hi *hostileIssuer) requests(path string) int {
	hi.mu.Lock()
	defer hi.mu.Unlock()
	return hi.count[path]
}

func (hi *hostileIssuer) token(t *testing.T, k *jwkstest.Key) string {
	c := (&jwkstest.Issuer{Server: hi.srv}).Claims("u", testAudience, "")
	return jwkstest.Mint(t, k, c, nil)
}

// A slow issuer (one that hangs) holds no request beyond keyWait, and only
// one fetch runs however many requests arrive; the lock guarding the key
// source is never held across the fetch.
func TestSlowDiscoveryHoldsNoRequest(t *testing.T) {
	saved := keyWait
	keyWait = 50 * time.Millisecond
	t.Cleanup(func() { keyWait = saved })
	k := jwkstest.NewKey(t, "k", "RS256")
	hi := newHostileIssuer(t, false, k)
	release := make(chan struct{})
	hi.set(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/.well-known/") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	h := provision(t, &Handler{Issuer: hi.srv.URL, Audience: []string{testAudience},
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	tok := hi.token(t, k)
	var wg sync.WaitGroup
	var rejected atomic.Int32
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := serve(t, h, "POST", "http://e/mcp", bearer(tok))
			if r.status == 401 && strings.Contains(r.challenge, "token signing keys are not available: the JWKS is still being fetched") {
				rejected.Add(1)
			}
		}()
	}
	wg.Wait() // every request was answered while the issuer still hangs
	if n := rejected.Load(); n != 20 {
		t.Fatalf("%d of 20 requests got the 401 for keys still being fetched", n)
	}
	if n := hi.requests("/.well-known/oauth-authorization-server"); n != 1 {
		t.Fatalf("%d metadata fetches for 20 requests, want 1 (one fetch at a time)", n)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for serve(t, h, "POST", "http://e/mcp", bearer(tok)).status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("keys never became available after the issuer answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Discovery of a root-path issuer asks each metadata URL once, and says
// why it failed.
func TestDiscoveryFetchesEachURLOnce(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	hi := newHostileIssuer(t, false, k)
	hi.set(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "no", http.StatusNotFound)
		return true
	})
	h := provision(t, &Handler{Issuer: hi.srv.URL, Audience: []string{testAudience},
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	r := serve(t, h, "POST", "http://e/mcp", bearer(hi.token(t, k)))
	if r.status != 401 || !strings.Contains(r.challenge, "token signing keys are not available: the issuer's metadata could not be fetched") {
		t.Fatalf("got %d %q", r.status, r.challenge)
	}
	for _, p := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		if n := hi.requests(p); n != 1 {
			t.Errorf("%s fetched %d times, want 1", p, n)
		}
	}
}

// JWKS fetches follow no redirect, read at most 1 MiB, and an https issuer
// must name an https JWKS.
func TestJWKSFetchHardening(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	tests := []struct {
		name   string
		tls    bool
		serve  func(hi *hostileIssuer) func(w http.ResponseWriter, r *http.Request) bool
		reason string
	}{
		{"redirect", false, func(hi *hostileIssuer) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				switch r.URL.Path {
				case "/jwks.json":
					http.Redirect(w, r, "/real-jwks.json", http.StatusFound)
				case "/real-jwks.json":
					_, _ = w.Write(jwkstest.JWKS(t, k))
				default:
					return false
				}
				return true
			}
		}, "the JWKS could not be fetched"},
		{"2 MiB JWKS", false, func(hi *hostileIssuer) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/jwks.json" {
					return false
				}
				// valid JSON with the key, padded past the cap, sent chunked
				w.(http.Flusher).Flush()
				jwks := string(jwkstest.JWKS(t, k))
				_, _ = w.Write([]byte(jwks[:len(jwks)-1] + `,"pad":"` + strings.Repeat("p", 2<<20) + `"}`))
				return true
			}
		}, "the JWKS could not be fetched"},
		{"https issuer naming an http JWKS", true, func(hi *hostileIssuer) func(w http.ResponseWriter, r *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/.well-known/oauth-authorization-server" {
					return false
				}
				_ = json.NewEncoder(w).Encode(map[string]string{"issuer": hi.srv.URL,
					"jwks_uri": strings.Replace(hi.srv.URL, "https:", "http:", 1) + "/jwks.json"})
				return true
			}
		}, "the issuer's metadata names a jwks_uri that is not https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hi := newHostileIssuer(t, tt.tls, k)
			hi.set(tt.serve(hi))
			jwksURL := hi.srv.URL + "/jwks.json"
			if tt.tls {
				jwksURL = "" // discovered
			}
			h := provision(t, &Handler{Issuer: hi.srv.URL, Audience: []string{testAudience}, JWKSURL: jwksURL,
				JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
			r := serve(t, h, "POST", "http://e/mcp", bearer(hi.token(t, k)))
			if r.status != 401 || !strings.Contains(r.challenge, "token signing keys are not available: "+tt.reason) {
				t.Fatalf("got %d %q", r.status, r.challenge)
			}
			if n := hi.requests("/real-jwks.json"); n != 0 {
				t.Fatalf("the redirect was followed")
			}
		})
	}
	// under the cap, the same shapes work
	hi := newHostileIssuer(t, true, k)
	h := provision(t, &Handler{Issuer: hi.srv.URL, Audience: []string{testAudience}})
	if r := serve(t, h, "POST", "http://e/mcp", bearer(hi.token(t, k))); r.status != 200 {
		t.Fatalf("https issuer with https JWKS: %d %q", r.status, r.challenge)
	}
}

// Metadata that names another issuer is refused, and the client is told so
// (not that the key is unknown).
func TestDiscoveryIssuerMismatch(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	hi := newHostileIssuer(t, false, k)
	hi.set(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/.well-known/") {
			return false
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": "https://evil.example", "jwks_uri": hi.srv.URL + "/jwks.json"})
		return true
	})
	h := provision(t, &Handler{Issuer: hi.srv.URL, Audience: []string{testAudience},
		JWKSRefreshMinInterval: caddy.Duration(time.Hour)})
	r := serve(t, h, "POST", "http://e/mcp", bearer(hi.token(t, k)))
	if r.status != 401 || !strings.Contains(r.challenge, "token signing keys are not available: the issuer's metadata names a different issuer") {
		t.Fatalf("got %d %q", r.status, r.challenge)
	}
	if n := hi.requests("/jwks.json"); n != 0 {
		t.Fatalf("the JWKS of a mismatching issuer was fetched %d times", n)
	}
}

// mcp_auth's token_cache is capped and costs nothing until used.
func TestTokenCacheBoundedAndLazy(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuer: "https://i.example", Audience: []string{"a"}, JWKSURL: "https://i.example/jwks", TokenCache: 10_000_000}
	if err := h.Provision(ctx); err == nil || !strings.Contains(err.Error(), "token_cache") {
		t.Fatalf("token_cache 10000000: %v", err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h = provision(t, &Handler{Issuer: "https://i.example", Audience: []string{"a"}, JWKSURL: "https://i.example/jwks", TokenCache: maxTokenCache})
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Fatalf("token_cache %d took %d MiB at provision", maxTokenCache, grew>>20)
	}
	_ = h
}
