package stdiobridge

import (
	"sync/atomic"
	"time"
)

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

// PathMark does nothing: `.ci/request-path.sh` traces the functions a
// request visits between two marks (TestRequestPath).
//
//go:noinline
func PathMark(what string) { pathMarks.Add(1) }

var pathMarks atomic.Int64

// TaskTotals sums the tasks of every live route: held (running or kept),
// finished and kept, and the bytes of their kept results.
func TaskTotals() (held, finished int, bytes int64) {
	liveTables.Range(func(k, _ any) bool {
		t := k.(*table)
		n, b := t.taskCounts()
		t.tasksMu.Lock()
		finished += len(t.finished)
		t.tasksMu.Unlock()
		held += n
		bytes += b
		return true
	})
	return held, finished, bytes
}
