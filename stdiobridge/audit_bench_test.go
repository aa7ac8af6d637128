package stdiobridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// How an answer ended, read in place.
func TestOutcomeOf(t *testing.T) {
	for answer, want := range map[string]struct {
		outcome string
		code    int
	}{
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`:                               {"result", 0},
		`{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}`:                {"tool_error", 0},
		`{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"}}`:              {"input_required", 0},
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}`:                 {"error", -32602},
		`{"jsonrpc":"2.0","id":1,"error":{"message":"x","code":  -32001 }}`:              {"error", -32001},
		`{"jsonrpc":"2.0","id":1,"\u0065rror":{"code":-32600,"message":"escaped name"}}`: {"error", -32600},
		`{"jsonrpc":"2.0","id":1}`:                                                       {"error", codeInternalError},
		`not json`:                                                                       {"error", codeInternalError},
	} {
		outcome, code := outcomeOf([]byte(answer))
		if outcome != want.outcome || code != want.code {
			t.Errorf("%s: %s %d, want %s %d", answer, outcome, code, want.outcome, want.code)
		}
	}
}

// What the metrics cost a request: one histogram observation with its five
// labels (tool label lookup included), as every served request makes.
func BenchmarkObserve(b *testing.B) {
	initBridgeMetrics(prometheus.NewRegistry())
	h := &Handler{table: &table{}, cmdLabel: "everything-server", observers: new(sync.Map)}
	h.table.tools.max = 100
	h.table.tools.learn([]string{"test_simple_text", "echo"})
	started := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		h.observe("tools/call", "test_simple_text", "2025-11-25", 0, false, started)
	}
}

// The same from every core at once: what a shared lock would cost.
func BenchmarkObserveParallel(b *testing.B) {
	initBridgeMetrics(prometheus.NewRegistry())
	h := &Handler{table: &table{}, cmdLabel: "everything-server", observers: new(sync.Map)}
	h.table.tools.max = 100
	h.table.tools.learn([]string{"test_simple_text", "echo"})
	started := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.observe("tools/call", "test_simple_text", "2025-11-25", 0, false, started)
		}
	})
}
