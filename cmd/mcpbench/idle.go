package main

// `mcpbench -idle N` (make bench-idle): Caddy's memory per idle 2025
// session. N sessions of a small child (cmd/tiny, a C stdio
// server of a few dozen lines) are opened through mcp_stdio and left idle;
// Caddy's RSS is read before and after, and the children's summed RSS and
// private (anonymous) memory. Each session holds four descriptors in Caddy
// (three pipes, a pidfd), so the process's descriptor limit bounds N: a
// larger N is lowered to what the limit allows, and the report says so.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

// statusKiB reads a "Name: N kB" line of /proc/pid/status.
func statusKiB(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// countFDs counts the descriptors pid holds.
func countFDs(pid int) int {
	e, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e)
}

func idle(dir, tiny string, n int) string {
	limit := descriptorLimit()
	// Caddy inherits this process's limit; a session holds four
	// descriptors there, and Caddy needs a few hundred of its own
	asked, capped := n, ""
	if most := (limit - 400) / 4; limit > 0 && n > most {
		n = most / 100 * 100
		capped = fmt.Sprintf(" (asked for %d; the descriptor limit allows about %d)", asked, most)
	}
	port := freePort()
	cf := filepath.Join(dir, "Caddyfile.idle")
	os.WriteFile(cf, []byte(fmt.Sprintf(`{
	admin off
	auto_https off
	log {
		level WARN
	}
}
:%d {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command %s
		child_era legacy
		max_sessions %d
		max_sessions_per_user %d
		initialize_rate 1000000
		session_idle_timeout 1h
	}
}
`, port, tiny, n+10, n+10)), 0o644)
	cd := start(dir, "caddy-idle", *caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	defer cd.kill()
	waitPort(port)
	url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
	check("idle warm-up", loadgen.Run(context.Background(), loadgen.Config{URL: url, Sessions: 4, Calls: 5, Tool: "echo"}))
	time.Sleep(time.Second)
	base := vmRSS(cd.pid)
	t0 := time.Now()
	res := loadgen.Run(context.Background(), loadgen.Config{URL: url, Sessions: n, Calls: 0, Parallel: 16, SkipDelete: true})
	opened := time.Since(t0)
	check("idle sessions", res)
	runtime.GC()
	time.Sleep(3 * time.Second)
	self, kids := rss(cd.pid)
	// the children's private memory: RssAnon, summed
	var anon, count int64
	for p, pp := range loadgen.Parents() {
		if pp == cd.pid {
			anon += statusKiB(p, "RssAnon")
			count++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Idle 2025 sessions (%s, %d CPUs, descriptor limit %d): %d sessions%s of a small C stdio server opened in %s (%.0f/s)\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), limit, res.SessionsOK, capped, opened.Round(time.Millisecond), float64(res.SessionsOK)/opened.Seconds())
	b.WriteString("| | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| Caddy RSS before → with the sessions open | %.1f → %.1f MiB |\n", float64(base)/1024, float64(self)/1024)
	fmt.Fprintf(&b, "| Caddy RSS per idle session | %.1f KiB |\n", float64(self-base)/float64(max(res.SessionsOK, 1)))
	fmt.Fprintf(&b, "| Caddy's threads, descriptors | %d, %d |\n", statusKiB(cd.pid, "Threads"), countFDs(cd.pid))
	fmt.Fprintf(&b, "| children | %d processes: RSS %.0f MiB in all (%.0f KiB each, shared pages counted in each), private %.0f KiB each |\n",
		count, float64(kids)/1024, float64(kids)/float64(max(count, 1)), float64(anon)/float64(max(count, 1)))
	loadgen.Delete(context.Background(), loadgen.Config{URL: url}, res.SessionIDs)
	return b.String()
}
