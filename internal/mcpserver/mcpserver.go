// Package mcpserver builds and launches go-sdk's conformance
// everything-server (a go.mod tool dependency) for tests: over stdio as a
// child process, or in Streamable HTTP mode on a free port.
package mcpserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Package is the everything-server's import path.
const Package = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of the everything-server binary, building it once
// per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caddymcp-everything-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "everything-server")
		out, err := exec.Command("go", "build", "-o", binPath, Package).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", Package, err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// StartHTTP runs the server in Streamable HTTP mode (stateful unless
// stateless) and returns its base URL; it is killed when t ends.
func StartHTTP(t testing.TB, stateless bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	StartHTTPAt(t, addr, stateless)
	return "http://" + addr
}

// StartHTTPAt runs the server in Streamable HTTP mode at addr, and returns
// once it listens; stop kills it (and waits), as the end of t does.
func StartHTTPAt(t testing.TB, addr string, stateless bool) (stop func()) {
	t.Helper()
	cmd := exec.Command(Binary(t), "-http", addr, "-stateless="+strconv.FormatBool(stateless))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return stop
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("everything-server did not listen on %s", addr)
	return stop
}

// Self is the running test binary, which serves as the fake MCP server
// when its TestMain calls RunFakeIfRequested first.
func Self(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
