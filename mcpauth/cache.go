package mcpauth

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenCache remembers tokens whose signature, issuer and times were
// verified, keyed by the SHA-256 of the token, so that a client sending the
// same token again skips the signature check. An entry never outlives the
// token's exp, and every entry is dropped when the JWKS changes (a removed
// key must stop working at once). Audience and scopes are checked on every
// request. On by default (defaultTokenCache entries); `token_cache off`
// turns it off.
//
// The cache is split into shards by the first byte of the key, each with
// its own lock (a leaf), so that requests on many cores do not queue on one
// mutex; each shard holds at most max/shards entries. A hit takes its
// shard's lock for reading only: the clients of one shared token (a team's
// service token) read the same entry at once without queueing.
type tokenCache struct {
	shards [cacheShards]cacheShard
}

const cacheShards = 16

type cacheShard struct {
	max     int
	mu      sync.RWMutex
	entries map[[32]byte]cacheEntry
	order   [][32]byte // insertion order, for eviction
	_       [64]byte   // keeps shards' locks off each other's cache lines
}

type cacheEntry struct {
	claims  jwt.MapClaims
	expires time.Time // exp (plus leeway)
	version uint64    // JWKS version it was verified against
}

// maxTokenCache bounds token_cache: a token costs about 1 KiB here.
const maxTokenCache = 1_000_000

// defaultTokenCache is token_cache when none is configured: 4096 tokens,
// about 4 MiB at most.
const defaultTokenCache = 4096

// newTokenCache makes an empty cache; it grows with use, so a large max
// costs nothing until that many tokens are seen.
func newTokenCache(limit int) *tokenCache {
	c := &tokenCache{}
	for i := range c.shards {
		c.shards[i] = cacheShard{max: max(1, (limit+cacheShards-1)/cacheShards), entries: map[[32]byte]cacheEntry{}}
	}
	return c
}

func (c *tokenCache) get(token string, version uint64, now time.Time) (jwt.MapClaims, bool) {
	return c.getKey(sha256.Sum256([]byte(token)), version, now)
}

func (c *tokenCache) put(token string, claims jwt.MapClaims, expires time.Time, version uint64) {
	c.putKey(sha256.Sum256([]byte(token)), claims, expires, version)
}

// getKey and putKey take the token's SHA-256, for callers that need it
// besides (introspection coalesces requests by it).
func (c *tokenCache) getKey(key [32]byte, version uint64, now time.Time) (jwt.MapClaims, bool) {
	return c.shards[key[0]%cacheShards].get(key, version, now)
}

func (c *tokenCache) putKey(key [32]byte, claims jwt.MapClaims, expires time.Time, version uint64) {
	c.shards[key[0]%cacheShards].put(key, claims, expires, version)
}

// len is the number of entries, all shards.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += len(c.shards[i].entries)
		c.shards[i].mu.Unlock()
	}
	return n
}

func (c *cacheShard) get(key [32]byte, version uint64, now time.Time) (jwt.MapClaims, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	if e.version != version || !now.Before(e.expires) {
		c.mu.Lock()
		// another request may have put a fresh entry since
		if cur, ok := c.entries[key]; ok && (cur.version != version || !now.Before(cur.expires)) {
			delete(c.entries, key)
		}
		c.mu.Unlock()
		return nil, false
	}
	return e.claims, true
}

func (c *cacheShard) put(key [32]byte, claims jwt.MapClaims, expires time.Time, version uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok {
		for len(c.entries) >= c.max && len(c.order) > 0 {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, key)
	}
	c.entries[key] = cacheEntry{claims: claims, expires: expires, version: version}
	if len(c.order) > 2*c.max { // entries removed on expiry leave stale keys here
		live := c.order[:0]
		for _, k := range c.order {
			if _, ok := c.entries[k]; ok {
				live = append(live, k)
			}
		}
		c.order = live
	}
}
