package caddyrun

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file holds the helpers every package's tests share, whether or
// not they start Caddy in-process.

// Soak marks a soak, load or scale test: one that runs many sessions,
// processes or calls for long enough to find leaks and races, and takes
// seconds to minutes. Under -short (`go test -short ./...`, the edit-test
// loop) it is skipped, saying what it guards; `make test` runs it with the
// rest and `make soak` runs such tests alone, selecting them by name. So
// that no soak test is left out of both, Soak fails a test whose name does
// not begin with TestSoak.
func Soak(t testing.TB, guards string) {
	t.Helper()
	if name := t.Name(); !strings.HasPrefix(name, "TestSoak") {
		t.Fatalf("%s calls caddyrun.Soak but is not named TestSoak…: `make soak` (go test -run '^TestSoak') would not run it", name)
	}
	if testing.Short() {
		t.Skipf("soak test, skipped under -short (make soak runs it): %s", guards)
	}
}

// WaitFor polls cond until it holds, failing the test with what when it
// still does not after within. It stands in for a sleep that hopes
// something has happened by then: a loaded machine is slow, and an idle
// one need not wait the full time.
func WaitFor(t testing.TB, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still not: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // the poll interval
	}
}

// RunProcess runs bin (a Caddy built with the plugin: CADDYMCP_CADDY_BIN)
// as a process of its own with the Caddyfile cfg, its output in a log file
// that Fatal-ing tests can read, until t ends; it returns once port
// (127.0.0.1) accepts connections.
func RunProcess(t testing.TB, bin, cfg string, port int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	logf, err := os.Create(filepath.Join(t.TempDir(), "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	WaitFor(t, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the Caddy process listening on "+strconv.Itoa(port))
}
