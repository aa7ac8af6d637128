package mcpas

import (
	"crypto/tls"
	"net/http"
	"time"

	"github.com/caddymcp/caddymcp/internal/cimd"
)

// SetCodeLifetime shortens how long codes live, for a test (restored at
// cleanup by the caller).
func SetCodeLifetime(d time.Duration) (restore func()) {
	old := codeLifetime
	codeLifetime = d
	return func() { codeLifetime = old }
}

// SetStorageTimeout shortens the bound of one storage call, for a test.
func SetStorageTimeout(d time.Duration) (restore func()) {
	old := storageTimeout
	storageTimeout = d
	return func() { storageTimeout = old }
}

// TrustForMetadata makes client metadata documents be fetched with tls
// (a test server's certificate), the SSRF guard unchanged.
func TrustForMetadata(tc *tls.Config) (restore func()) {
	old := metadataHTTPClient
	metadataHTTPClient = func(allowPrivate bool) *http.Client {
		c := cimd.HTTPClient(allowPrivate)
		c.Transport.(*http.Transport).TLSClientConfig = tc
		return c
	}
	return func() { metadataHTTPClient = old }
}
