package mcpauth

import (
	"testing"
	"time"
)

// SkewIntrospectionClock lets a test move the introspection clock (cache
// expiry; exp, nbf and iat of answers) forward; it is put back when t ends.
func SkewIntrospectionClock(t testing.TB) (advance func(time.Duration)) {
	t.Cleanup(func() { introspectSkew.Store(0) })
	return func(d time.Duration) { introspectSkew.Add(int64(d)) }
}

// OnIntrospectionJoin calls f each time a request has joined a call to an
// introspection endpoint (its own or one in flight), until t ends.
func OnIntrospectionJoin(t testing.TB, f func()) {
	introspectJoin.Store(&f)
	t.Cleanup(func() { introspectJoin.Store(nil) })
}

// IntrospectionNow is the introspection clock, skew included.
func IntrospectionNow() time.Time { return introspectNow() }
