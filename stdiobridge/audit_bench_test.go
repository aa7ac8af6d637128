package stdiobridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// BenchmarkAuditEntry is one audit entry written to a file through a JSON
// zap core (what Caddy's `log { output file … }` does, minus its filters).
func BenchmarkAuditEntry(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(f), zap.InfoLevel))
	b.ReportAllocs()
	for b.Loop() {
		a := &auditRecord{logger: logger, iss: "https://issuer.example", sub: "alice", clientID: "client", remote: "127.0.0.1",
			route: "localhost/mcp", era: "2025", method: "tools/call", name: "test_simple_text", id: json.RawMessage(`17`),
			pid: 1234, started: time.Now(), outcome: "result"}
		a.write()
	}
}
