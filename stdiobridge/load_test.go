package stdiobridge_test

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/loadgen"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// TestSoakLoadThroughAuthAndBridge runs 200 sessions × 200 tools/call through
// mcp_auth + mcp_stdio (go-sdk's everything-server as the child) with a
// caddy reload in the middle, and checks that no answer is lost or
// mismatched, that no child survives, and that goroutines and heap return
// to where they were.
func TestSoakLoadThroughAuthAndBridge(t *testing.T) {
	caddyrun.Soak(t, "200 sessions × 200 calls through mcp_auth + mcp_stdio, with a reload, lose or mismatch no answer and leak no child, goroutine or heap")
	sessions, calls := 200, 200
	bin := mcpserver.Binary(t)
	k := jwkstest.NewKey(t, "k", "ES256")
	is := jwkstest.NewIssuer(t, k)
	site := func(extra string) string {
		return authSiteWith(t, is, authOpts{Command: bin, Site: extra,
			Stdio: "\n\t\t\tmax_sessions 1000\n\t\t\tmax_sessions_per_user 1000\n\t\t\tinitialize_rate 1000000"})
	}
	c := caddyrun.StartCaddyfile(t, "", site(""))
	// warm up the JWKS and the first child, then take the baseline
	tok := jwkstest.Mint(t, k, is.Claims("load", c.URL+"/mcp", ""), nil)
	hdr := http.Header{"Authorization": {"Bearer " + tok}}
	loadgen.Run(context.Background(), loadgen.Config{URL: c.URL + "/mcp", Sessions: 1, Calls: 1, Header: hdr})
	waitNoProcesses(t, bin, 10*time.Second)
	goroutines, heap := settle()

	var reloadOnce sync.Once
	reloaded := make(chan struct{})
	half := int64(sessions * calls / 2)
	res := loadgen.Run(context.Background(), loadgen.Config{
		URL: c.URL + "/mcp", Sessions: sessions, Calls: calls, Header: hdr,
		OnProgress: func(done int64) {
			if done >= half {
				reloadOnce.Do(func() {
					go func() {
						// same mcp_stdio route, another site block: sessions must survive
						c.LoadCaddyfile("", site("\trespond /other \"other\"\n"))
						close(reloaded)
					}()
				})
			}
		},
	})
	t.Logf("load: %s", res)
	select {
	case <-reloaded:
	case <-time.After(30 * time.Second):
		t.Fatal("the reload did not finish")
	}
	if res.Failures != 0 || res.Calls != int64(sessions*calls) || res.SessionsOK != int64(sessions) {
		t.Fatalf("%d failures, %d calls, %d sessions ok: %v", res.Failures, res.Calls, res.SessionsOK, res.Errors)
	}
	waitNoProcesses(t, bin, 15*time.Second)
	g, h := settle()
	t.Logf("goroutines %d -> %d, heap in use %d KiB -> %d KiB", goroutines, g, heap>>10, h>>10)
	if g > goroutines+10 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines grew from %d to %d:\n%s", goroutines, g, buf[:runtime.Stack(buf, true)])
	}
	if h > heap*2+32<<20 {
		t.Errorf("heap in use grew from %d KiB to %d KiB", heap>>10, h>>10)
	}
}

// settle waits for background work to finish and returns the goroutine
// count and heap in use. Its sleeps are kept: they let finalizers and
// exiting goroutines run between collections before a measurement, and no
// event says a process is quiet.
func settle() (int, uint64) {
	var m runtime.MemStats
	for i := 0; i < 20; i++ {
		time.Sleep(50 * time.Millisecond)
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	return runtime.NumGoroutine(), m.HeapInuse
}
