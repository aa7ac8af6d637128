package loadgen

import (
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// DirectCalls drives go-sdk's everything-server over its stdio, spawning
// one per session, and counts every call.
func TestDirectCalls(t *testing.T) {
	var started atomic.Int32
	res := DirectCalls(mcpserver.Binary(t), Config{Sessions: 3, Calls: 20, Start: func(c *exec.Cmd) error {
		started.Add(1)
		return c.Start()
	}})
	if res.Failures != 0 || res.Calls != 60 || res.SessionsOK != 3 || res.P50 <= 0 || res.CallsPerSec <= 0 {
		t.Fatalf("%+v", res)
	}
	if n := started.Load(); n != 3 {
		t.Fatalf("Start called %d times, want 3", n)
	}
}

// A server that ends at once, or never answers, is a failure, not a hang
// and not a success.
func TestDirectCallsFailures(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for name, script := range map[string]string{
		"exits":         "exit 0",
		"never answers": `while read l; do echo '{"jsonrpc":"2.0","id":999,"result":{}}'; done`,
	} {
		t.Run(name, func(t *testing.T) {
			res := directScript(t, sh, script)
			if res.SessionsOK != 0 || res.Failures != 2 || len(res.Errors) != 2 {
				t.Fatalf("%+v", res)
			}
			if !strings.Contains(res.Errors[0], "initialize") {
				t.Fatalf("errors: %q", res.Errors)
			}
		})
	}
}

func directScript(t *testing.T, sh, script string) Result {
	t.Helper()
	// a second is what "never" means here: a hang would be minutes
	return DirectCalls(sh, Config{Sessions: 2, Calls: 5, Timeout: time.Second, Start: func(c *exec.Cmd) error {
		c.Args = append(c.Args, "-c", script)
		return c.Start()
	}})
}
