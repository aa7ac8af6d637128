package loadgen

import (
	"bufio"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
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
