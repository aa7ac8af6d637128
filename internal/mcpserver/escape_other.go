//go:build !linux

package mcpserver

import (
	"fmt"
	"os"
)

// runEscape: the escape server tries to get out of a sandbox, which exists
// on Linux only.
func runEscape() {
	fmt.Fprintln(os.Stderr, "the escape server runs on Linux only")
	os.Exit(2)
}

func runOrphan() { os.Exit(2) }
