package mcpauth_test

import (
	"os"
	"testing"

	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// TestMain lets this test binary serve as the fake stdio MCP server.
func TestMain(m *testing.M) {
	mcpserver.RunFakeIfRequested()
	os.Exit(m.Run())
}
