package stdiobridge

import "time"

// SetProbeTimeout lowers probeTimeout for one test; the returned func
// restores it.
func SetProbeTimeout(d time.Duration) (restore func()) {
	old := probeTimeout.Swap(int64(d))
	return func() { probeTimeout.Store(old) }
}

// SetDefaultCallTimeout lowers the default call_timeout for the routes
// provisioned during one test; the returned func restores it.
func SetDefaultCallTimeout(d time.Duration) (restore func()) {
	old := defaultCallTimeout
	defaultCallTimeout = d
	return func() { defaultCallTimeout = old }
}
