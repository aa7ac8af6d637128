package stdiobridge

import "time"

// SetStreamWriteTimeout shortens the per-write deadline of SSE streams for
// a test and returns a function that restores it.
func SetStreamWriteTimeout(d time.Duration) (restore func()) {
	saved := streamWriteTimeout
	streamWriteTimeout = d
	return func() { streamWriteTimeout = saved }
}
