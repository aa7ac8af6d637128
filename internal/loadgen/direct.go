package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Direct is the floor for a bridge's session set-up: it spawns the stdio
// server n times (parallel at once), sends initialize, waits for the
// answer, sends initialized, closes stdin and waits for the exit. It
// returns set-ups per second and the p50 of one set-up.
func Direct(bin string, n, parallel int) (float64, time.Duration, error) {
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
	return float64(n) / d.Seconds(), pct(lat, 50), firstErr
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

// DirectCalls is the limit a stdio bridge with one child per session
// cannot pass: the same load as Run (cfg.Sessions at once, cfg.Calls
// sequential tools/call each, every answer checked) made on the stdio server
// itself by go-sdk's client, with no HTTP at all: each session spawns bin,
// connects to it over its stdin and stdout (initialize), makes its calls and
// closes. The run includes those spawns, as a 2025 session through the
// bridge does. cfg.URL, Header and Modern are not used.
func DirectCalls(bin string, cfg Config) Result {
	if cfg.Tool == "" {
		cfg.Tool = "test_simple_text"
	}
	r := &runner{cfg: cfg}
	return r.result(r.sessions(func(n int) error { return r.direct(bin, n) }))
}

// direct runs one session of DirectCalls.
func (r *runner) direct(bin string, n int) error {
	timeout := r.cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.Command(bin)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	start := cmd.Start
	if r.cfg.Start != nil {
		start = func() error { return r.cfg.Start(cmd) }
	}
	if err := start(); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	client := mcp.NewClient(&mcp.Implementation{Name: "loadgen", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.IOTransport{Reader: stdout, Writer: stdin}, nil)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	defer cs.Close()
	args := r.cfg.Args
	if args == nil {
		args = map[string]any{}
	}
	for i := 1; i <= r.cfg.Calls; i++ {
		t0 := time.Now()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: r.cfg.Tool, Arguments: args})
		d := time.Since(t0)
		r.calls.Add(1)
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if res.IsError {
			r.failure(fmt.Sprintf("session %d call %d: the tool failed: %v", n, i, res.Content))
			continue
		}
		r.mu.Lock()
		r.lat = append(r.lat, d)
		r.mu.Unlock()
	}
	r.ok.Add(1)
	return nil
}
