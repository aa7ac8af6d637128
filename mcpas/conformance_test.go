package mcpas_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// TestConformanceAuthorization runs the MCP conformance suite's
// authorization-server scenarios (authorization-server-metadata-endpoint
// and authorization-code-grant) against the module: the suite prints the
// authorization URL, and this test is the browser that consents and logs
// in upstream. Every check must pass, with no warning. It runs where
// CADDYMCP_CONFORMANCE_CLI names the suite's dist/index.js (make
// conformance sets it) and skips otherwise.
func TestConformanceAuthorization(t *testing.T) {
	cli := os.Getenv("CADDYMCP_CONFORMANCE_CLI")
	if cli == "" {
		t.Skip("CADDYMCP_CONFORMANCE_CLI is not set (make conformance runs this test)")
	}
	s := startSite(t, "")
	port := caddyrun.FreePort(t)
	redirect := "http://127.0.0.1:" + strconv.Itoa(port) + "/callback"
	clientID := s.register(t, redirect)
	out := t.TempDir()
	if dir := os.Getenv("CONFORMANCE_OUT"); dir != "" {
		out = filepath.Join(dir, "authorization-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", cli, "authorization", "--url", s.issuer, "--client-id", clientID,
		"--resource", s.resource, "-p", strconv.Itoa(port), "-o", out)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stdout)
	authorize := ""
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		if strings.HasPrefix(line, s.issuer+"/authorize?") {
			authorize = line
			break
		}
	}
	if authorize == "" {
		_ = cmd.Wait()
		t.Fatalf("the suite printed no authorization URL:\n%s", log.String())
	}
	// the suite prints the URL before its callback server listens (it
	// binds after an asynchronous lookup of 127.0.0.1): the browser starts
	// once it does
	caddyrun.WaitFor(t, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the suite's callback server listening")
	// the browser: consent, upstream login, and the redirect followed to
	// the suite's callback
	b := newBrowser(t, "no-stop://")
	resp, page := s.loginUntil(t, b, mustQuery(t, authorize), "test-user2")
	if resp.StatusCode != 200 {
		t.Errorf("the suite's callback answered %d: %s", resp.StatusCode, page)
	}
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
	}
	err := cmd.Wait()
	t.Logf("conformance suite:\n%s", log.String())
	if err != nil {
		t.Fatalf("the suite failed: %v", err)
	}
	// every check of every scenario succeeded (a WARNING fails this test)
	n := 0
	_ = filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Name() != "checks.json" {
			return nil
		}
		b, _ := os.ReadFile(p)
		var checks []struct{ ID, Status, ErrorMessage string }
		if json.Unmarshal(b, &checks) != nil {
			t.Errorf("%s: not a list of checks", p)
		}
		for _, c := range checks {
			n++
			if c.Status != "SUCCESS" {
				t.Errorf("%s: %s %s %s", p, c.ID, c.Status, c.ErrorMessage)
			}
		}
		return nil
	})
	if n < 3 {
		t.Errorf("%d checks found in %s, want the 3 of both scenarios", n, out)
	}
}
