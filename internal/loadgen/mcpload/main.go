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
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
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
	flag.Parse()

	if *direct != "" {
		res, err := directSetup(*direct, *sessions, max(*parallel, 1))
		emit(res, err)
		return
	}
	h := http.Header{}
	if name, value, ok := strings.Cut(*header, ":"); ok {
		h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	res := loadgen.Run(context.Background(), loadgen.Config{
		URL: *url, Sessions: *sessions, Calls: *calls, Parallel: *parallel, Tool: *tool, Header: h,
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

// directSetup spawns the server n times (parallel at once), sends
// initialize, waits for the answer, sends initialized, closes stdin and
// waits for the exit: what a bridge does at minimum for a session.
func directSetup(bin string, n, parallel int) (map[string]any, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			err := spawnAndInit(bin)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			lat = append(lat, time.Since(t0))
		}()
	}
	wg.Wait()
	d := time.Since(start)
	slices.Sort(lat)
	return map[string]any{"sessions_ok": n, "seconds": d.Seconds(), "setups_per_sec": float64(n) / d.Seconds(),
		"setup_p50_ms": ms(lat[len(lat)/2])}, firstErr
}

func spawnAndInit(bin string) error {
	cmd := exec.Command(bin)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"direct","version":"1"}}}`)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	ok := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"id":1`) {
			ok = true
			break
		}
	}
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	stdin.Close()
	err := cmd.Wait()
	if !ok {
		return fmt.Errorf("no initialize answer (%v)", err)
	}
	return nil
}
