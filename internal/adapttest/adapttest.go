// Package adapttest runs Caddyfile → JSON golden tests. Each file in a
// testdata directory holds a Caddyfile, a line of dashes, and the JSON that
// `caddy adapt` must produce for it. Run `go test -run Adapt -update` to
// rewrite the JSON halves after an intended change, then review the diff.
package adapttest

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite adapt golden files")

const separator = "----------"

// Run checks every *.caddyfiletest file in dir.
func Run(t *testing.T, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*.caddyfiletest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in %s (%v)", dir, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.SplitN(string(raw), "\n"+separator+"\n", 2)
			if len(parts) != 2 {
				t.Fatalf("%s: missing %q separator line", f, separator)
			}
			got, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(parts[0]+"\n"), map[string]any{"filename": f})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w.String())
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "\t"); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			if *update {
				if err := os.WriteFile(f, []byte(parts[0]+"\n"+separator+"\n"+pretty.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if strings.TrimSpace(pretty.String()) != strings.TrimSpace(parts[1]) {
				t.Errorf("adapted JSON differs from golden file.\ngot:\n%s\nwant:\n%s", pretty.String(), parts[1])
			}
		})
	}
}
