package mcpagg_test

import (
	"context"
	"os"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/loadgen"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// TestProfileCalls is for profiling only (CADDYMCP_PROFILE_AGG=1 go test
// -run TestProfileCalls -cpuprofile …): calls through the aggregate to a
// real mcp_stdio backend, in this process.
func TestProfileCalls(t *testing.T) {
	if os.Getenv("CADDYMCP_PROFILE_AGG") == "" {
		t.Skip("for profiling: set CADDYMCP_PROFILE_AGG")
	}
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			prefix never
			backend every {
				mcp_stdio {
					command `+mcpserver.Binary(t)+`
				}
			}
		}
	}
}
`)
	res := loadgen.Run(context.Background(), loadgen.Config{URL: c.URL + "/mcp", Sessions: 1, Calls: 3000})
	t.Logf("%.0f calls/s, %d failures", res.CallsPerSec, res.Failures)
}
