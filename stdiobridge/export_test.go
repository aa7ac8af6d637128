package stdiobridge

import "time"

// SetProbeTimeout lowers probeTimeout for one test; the returned func
// restores it.
func SetProbeTimeout(d time.Duration) (restore func()) {
	old := probeTimeout
	probeTimeout = d
	return func() { probeTimeout = old }
}
