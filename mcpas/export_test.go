package mcpas

import "time"

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
