// Command fakeserver is the test fake (mcpserver.RunFakeIfRequested) as a
// program of its own, built without the race detector: the sandbox tests
// run it under a memory limit that a race-instrumented binary's shadow
// memory would not fit in. Its mode is CADDYMCP_FAKE_SERVER, as for a test
// binary.
package main

import (
	"fmt"
	"os"

	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

func main() {
	mcpserver.RunFakeIfRequested()
	fmt.Fprintln(os.Stderr, "fakeserver: set "+mcpserver.FakeEnv+" to a mode")
	os.Exit(2)
}
