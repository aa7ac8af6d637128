package mcpauth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkTokenCacheSharedToken is the token cache's hit path when every
// request carries the same token (one shard, all cores): run with -cpu to
// see whether hits queue on the shard's lock.
func BenchmarkTokenCacheSharedToken(b *testing.B) {
	c := newTokenCache(defaultTokenCache)
	const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZWFtIn0.c2lnbmF0dXJl"
	now := time.Now()
	c.put(token, jwt.MapClaims{"sub": "team"}, now.Add(time.Hour), 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := c.get(token, 1, now); !ok {
				b.Fatal("miss")
			}
		}
	})
}
