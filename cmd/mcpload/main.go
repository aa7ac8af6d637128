// Command mcpload is the load generator behind `make bench`: it drives an
// MCP Streamable HTTP endpoint (sessions × tools/call), or, with -direct,
// spawns a stdio MCP server and initializes it the way a bridge must (the
// floor for session set-up). It prints one JSON result; failures make it
// exit 1.
//
//	mcpload -url http://127.0.0.1:3000/mcp -sessions 16 -calls 300
//	mcpload -url ... -sessions 200 -calls 0 -parallel 8      # set-up rate
//	mcpload -direct ./bin/everything-server -sessions 200 -parallel 8
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

func main() {
	url := flag.String("url", "", "MCP endpoint")
	sessions := flag.Int("sessions", 1, "sessions")
	calls := flag.Int("calls", 100, "tools/call per session (0: set-up only)")
	parallel := flag.Int("parallel", 0, "sessions at once (default: all)")
	tool := flag.String("tool", "test_simple_text", "tool to call")
	header := flag.String("header", "", "extra header, e.g. 'Authorization: Bearer …'")
	direct := flag.String("direct", "", "spawn this stdio server and initialize it instead of using -url")
	keep := flag.Bool("keep", false, "leave the sessions open (no DELETE)")
	modern := flag.Bool("modern", false, "MCP 2026-07-28 clients (no sessions) instead of 2025-11-25 sessions")
	flag.Parse()

	if *direct != "" {
		rate, p50, err := loadgen.Direct(*direct, *sessions, max(*parallel, 1))
		emit(map[string]any{"sessions_ok": *sessions, "setups_per_sec": rate, "setup_p50_ms": ms(p50)}, err)
		return
	}
	h := http.Header{}
	if name, value, ok := strings.Cut(*header, ":"); ok {
		h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	res := loadgen.Run(context.Background(), loadgen.Config{
		URL: *url, Sessions: *sessions, Calls: *calls, Parallel: *parallel, Tool: *tool, Header: h, SkipDelete: *keep, Modern: *modern,
	})
	var err error
	if res.Failures > 0 {
		err = fmt.Errorf("%d failures: %v", res.Failures, res.Errors)
	}
	emit(map[string]any{
		"calls": res.Calls, "failures": res.Failures, "seconds": res.Duration.Seconds(),
		"calls_per_sec": res.CallsPerSec, "p50_ms": ms(res.P50), "p90_ms": ms(res.P90), "p99_ms": ms(res.P99),
		"sessions_ok": res.SessionsOK, "setups_per_sec": res.SetupsPerSec, "setup_p50_ms": ms(res.SetupP50),
		"init_p50_ms": ms(res.InitP50),
	}, err)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func emit(v map[string]any, err error) {
	if err != nil {
		v["error"] = err.Error()
	}
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
	if err != nil {
		os.Exit(1)
	}
}
