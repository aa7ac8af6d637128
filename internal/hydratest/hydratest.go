// Package hydratest runs a real Ory Hydra v2.3.0 for tests: the binary that
// CADDYMCP_HYDRA_BIN names (make test builds it into bin/hydra), in memory,
// on two free loopback ports, with its default (opaque) access tokens
// unless env says otherwise. A test without the binary is skipped.
package hydratest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

// Start runs Hydra with env added to its environment (URLS_LOGIN,
// URLS_CONSENT, STRATEGIES_ACCESS_TOKEN…), waits until both ports answer
// /health/ready, and stops it at cleanup (printing its log if t failed).
// public is the issuer as Hydra names itself, with a trailing slash.
func Start(t testing.TB, why string, env ...string) (public, admin string) {
	t.Helper()
	bin := os.Getenv("CADDYMCP_HYDRA_BIN")
	if bin == "" {
		t.Skip("CADDYMCP_HYDRA_BIN is not set: " + why + " against a real Ory Hydra v2.3.0 " +
			"(`make bin/hydra` builds one into bin/hydra; `make test` builds it and sets the variable)")
	}
	pub, adm := caddyrun.FreePort(t), caddyrun.FreePort(t)
	for pub == adm {
		adm = caddyrun.FreePort(t)
	}
	public, admin = "http://127.0.0.1:"+strconv.Itoa(pub)+"/", "http://127.0.0.1:"+strconv.Itoa(adm)
	cmd := exec.Command(bin, "serve", "all", "--dev")
	for _, kv := range os.Environ() {
		// what the test does not set stays Hydra's default
		if !strings.HasPrefix(kv, "STRATEGIES_") && !strings.HasPrefix(kv, "DSN=") && !strings.HasPrefix(kv, "URLS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "DSN=memory", "URLS_SELF_ISSUER="+public, "SECRETS_SYSTEM=caddymcp-hydra-test-secret-0123456789",
		"SERVE_PUBLIC_PORT="+strconv.Itoa(pub), "SERVE_ADMIN_PORT="+strconv.Itoa(adm),
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_ADMIN_HOST=127.0.0.1", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	logPath := filepath.Join(t.TempDir(), "hydra.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("hydra's log:\n%s", b)
		}
	})
	ready := func(u string) func() bool {
		return func() bool {
			resp, err := http.Get(u + "health/ready")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}
	}
	caddyrun.WaitFor(t, 60*time.Second, ready(admin+"/"), "hydra's admin port answers /health/ready")
	caddyrun.WaitFor(t, 60*time.Second, ready(public), "hydra's public port answers /health/ready")
	return public, admin
}
