package main

// `mcpbench -overhead N` (make bench-overhead): what the audit log costs.
// Two Caddys run side by side with the same mcp_auth + mcp_stdio route;
// one writes the audit log to a file. Rounds alternate which one goes
// first, so that drift on a busy machine falls on both; each round runs 1
// session and `-sessions` sessions against each, and reads Caddy's CPU
// time (utime + stime from /proc) around each run. The table gives the
// median calls/s of each, their ratio, and Caddy's CPU per call.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

func overheadCaddyfile(port int, issuer, server, auditFile string) string {
	audit := ""
	if auditFile != "" {
		audit = "\n\tlog audit {\n\t\toutput file " + auditFile + "\n\t\tinclude http.handlers.mcp_stdio.audit http.handlers.mcp_auth.audit\n\t}"
	}
	return fmt.Sprintf(`{
	admin off
	auto_https off
	log {
		level WARN
	}`+audit+`
}
:%d {
	bind 127.0.0.1
	route /mcp {
		mcp_auth {
			issuer %s
			audience http://127.0.0.1:%d/mcp
		}
		mcp_stdio {
			command %s
			max_sessions 10000
			max_sessions_per_user 10000
			initialize_rate 1000000
		}
	}
}
`, port, issuer, port, server)
}

// cpuTicks is the process's user + system CPU time in clock ticks.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // field 3 on
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

type variant struct {
	name  string
	url   string
	hdr   http.Header
	pid   int
	one   []float64 // calls/s per round
	many  []float64
	ticks int64
	calls int64
}

func overhead(dir, server, issuer string, rounds int) string {
	vs := []*variant{{name: "audit log off"}, {name: "audit log to a file"}}
	for i, v := range vs {
		port := freePort()
		auditFile := ""
		if i == 1 {
			auditFile = filepath.Join(dir, "audit.log")
		}
		cf := filepath.Join(dir, fmt.Sprintf("Caddyfile.overhead%d", i))
		os.WriteFile(cf, []byte(overheadCaddyfile(port, issuer, server, auditFile)), 0o644)
		p := start(dir, fmt.Sprintf("caddy-overhead%d", i), *caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
		defer p.kill()
		waitPort(port)
		v.url = fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		v.hdr = http.Header{"Authorization": {"Bearer " + token(issuer, v.url)}}
		v.pid = p.pid
		check(v.name+" warm-up", loadgen.Run(context.Background(), loadgen.Config{URL: v.url, Sessions: 4, Calls: 100, Header: v.hdr}))
	}
	ctx := context.Background()
	for r := 0; r < rounds; r++ {
		order := vs
		if r%2 == 1 {
			order = []*variant{vs[1], vs[0]}
		}
		for _, v := range order {
			t0 := cpuTicks(v.pid)
			one := loadgen.Run(ctx, loadgen.Config{URL: v.url, Sessions: 1, Calls: *calls1 / 2, Header: v.hdr})
			check(v.name, one)
			many := loadgen.Run(ctx, loadgen.Config{URL: v.url, Sessions: *sessions16, Calls: *calls16 / 2, Header: v.hdr})
			check(v.name, many)
			v.ticks += cpuTicks(v.pid) - t0
			v.calls += one.Calls + many.Calls
			v.one = append(v.one, one.CallsPerSec)
			v.many = append(v.many, many.CallsPerSec)
		}
		fmt.Fprintf(os.Stderr, "overhead round %d/%d\n", r+1, rounds)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "audit.log")); err == nil {
		n := strings.Count(string(b), "\n")
		fmt.Fprintf(os.Stderr, "audit log: %d entries\n", n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Audit log overhead (mcp_auth + mcp_stdio, %d alternating rounds, %s, %d CPUs):\n\n", rounds, time.Now().Format("2006-01-02"), runtime.NumCPU())
	fmt.Fprintf(&b, "| | 1 session calls/s (median) | %d sessions calls/s (median) | Caddy CPU per call |\n|---|---|---|---|\n", *sessions16)
	for _, v := range vs {
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f µs |\n", v.name, median(v.one), median(v.many),
			float64(v.ticks)*1e6/100/float64(max(v.calls, 1)))
	}
	fmt.Fprintf(&b, "| on/off, median of the rounds' ratios | %.3f | %.3f | |\n",
		median(ratios(vs[1].one, vs[0].one)), median(ratios(vs[1].many, vs[0].many)))
	return b.String()
}

// ratios divides the rounds of a by those of b, round by round.
func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}
