package mcplb

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/adapttest"
	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

func TestAdapt(t *testing.T) { adapttest.Run(t, "testdata") }

// The scale-out demo (make scale-demo), in full: 3 instances and a
// balancer, all real processes; 2 000 2025 sessions and 2 000 2026-07-28
// calls with an elicitation round: none lost or misrouted, all three
// instances used; then one instance killed mid-run: only its sessions and
// rounds fail, with the spec's errors, clients that start again succeed,
// none of its children survive it. The demo checks and reports; a failed
// check exits 1.
func TestSoakScaleOut(t *testing.T) {
	caddyrun.Soak(t, "the scale-out demo: 3 instances behind lb_policy mcp, 2000 sessions and rounds, one instance killed: nothing lost or misrouted but its own")
	bin := os.Getenv("CADDYMCP_CADDY_BIN")
	if bin == "" {
		t.Skip("CADDYMCP_CADDY_BIN not set; `make test` builds Caddy and sets it")
	}
	demo := filepath.Join(t.TempDir(), "scaledemo")
	if out, err := exec.Command("go", "build", "-o", demo, "../cmd/scaledemo").CombinedOutput(); err != nil {
		t.Fatalf("building the demo: %v\n%s", err, out)
	}
	out, err := exec.Command(demo, "-caddy", bin, "-server", mcpserver.Binary(t),
		"-sessions", "2000", "-calls", "2000", "-kill-clients", "32", "-compare-calls", "0").CombinedOutput()
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("scale demo: %v", err)
	}
	for _, want := range []string{"spread of sessions: i1 ", "spread of rounds: i1 ", "spread of tasks: i1 ", "tasks of the killed instance: 20 of 20 not found (-32602)", "processes left behind by i2's", "all checks passed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
