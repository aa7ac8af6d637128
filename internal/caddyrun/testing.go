package caddyrun

import (
	"strings"
	"testing"
	"time"
)

// This file holds the two helpers every package's tests share, whether or
// not they start Caddy.

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
