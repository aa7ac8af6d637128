package main

// `mcpbench -sandbox N` (make bench-sandbox): what the sandbox costs. Two
// Caddys run side by side with the same mcp_stdio route in front of
// go-sdk's everything-server; one confines it with the recommended profile
// (Caddyfile.example). Rounds alternate which goes first, so that drift on
// a busy machine falls on both. Each round measures the child's start (the
// initialize request that starts it, p50, and session set-ups per second,
// one at a time) and calls/s with 1 and -sessions sessions.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

func sandboxCaddyfile(port int, server, box string) string {
	return fmt.Sprintf(`{
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
		max_sessions 10000
		max_sessions_per_user 10000
		initialize_rate 1000000
%s	}
}
`, port, server, box)
}

type boxVariant struct {
	name      string
	url       string
	init      []time.Duration // initialize p50 per round
	setups    []float64
	one, many []float64
}

func sandboxCost(dir, server string, rounds int) string {
	profile := "\t\tsandbox {\n\t\t\tmemory 1GiB\n\t\t\topen_files 1024\n\t\t\tfile_size 64MiB\n\t\t}\n"
	return compareCost(dir, rounds, "Sandbox cost (mcp_stdio + go-sdk everything-server", "sandbox/without",
		[2]string{"without the sandbox", "sandbox (recommended profile)"},
		[2]func(port int) string{
			func(port int) string { return sandboxCaddyfile(port, server, "") },
			func(port int) string { return sandboxCaddyfile(port, server, profile) },
		})
}

// compareCost runs two Caddys (configs[i] for a port) side by side, in
// alternating rounds, and tables what the second costs against the first:
// the child's start (initialize p50, set-ups/s one at a time) and calls/s
// with 1 and -sessions sessions.
func compareCost(dir string, rounds int, title, ratioName string, names [2]string, configs [2]func(port int) string) string {
	vs := []*boxVariant{{name: names[0]}, {name: names[1]}}
	for i, v := range vs {
		port := freePort()
		cf := filepath.Join(dir, fmt.Sprintf("Caddyfile.compare%d", i))
		os.WriteFile(cf, []byte(configs[i](port)), 0o644)
		p := start(dir, fmt.Sprintf("caddy-compare%d", i), *caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
		defer p.kill()
		waitPort(port)
		v.url = fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		check(v.name+" warm-up", loadgen.Run(context.Background(), loadgen.Config{URL: v.url, Sessions: 4, Calls: 100}))
	}
	ctx := context.Background()
	for r := 0; r < rounds; r++ {
		order := vs
		if r%2 == 1 {
			order = []*boxVariant{vs[1], vs[0]}
		}
		for _, v := range order {
			setups := loadgen.Run(ctx, loadgen.Config{URL: v.url, Sessions: *setups / 4, Calls: 0, Parallel: 1})
			check(v.name+" set-ups", setups)
			one := loadgen.Run(ctx, loadgen.Config{URL: v.url, Sessions: 1, Calls: *calls1 / 2})
			check(v.name, one)
			many := loadgen.Run(ctx, loadgen.Config{URL: v.url, Sessions: *sessions16, Calls: *calls16 / 2})
			check(v.name, many)
			v.init = append(v.init, setups.InitP50)
			v.setups = append(v.setups, setups.SetupsPerSec)
			v.one = append(v.one, one.CallsPerSec)
			v.many = append(v.many, many.CallsPerSec)
		}
		fmt.Fprintf(os.Stderr, "%s round %d/%d\n", ratioName, r+1, rounds)
	}
	medianD := func(x []time.Duration) time.Duration {
		x = slices.Clone(x)
		slices.Sort(x)
		return x[len(x)/2]
	}
	durs := func(x []time.Duration) []float64 {
		out := make([]float64, len(x))
		for i, d := range x {
			out[i] = float64(d)
		}
		return out
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d alternating rounds, %s, %d CPUs):\n\n", title, rounds, time.Now().Format("2006-01-02"), runtime.NumCPU())
	fmt.Fprintf(&b, "| | child start: initialize p50 | session set-ups/s (one at a time) | 1 session calls/s | %d sessions calls/s |\n|---|---|---|---|---|\n", *sessions16)
	for _, v := range vs {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %.0f |\n", v.name, medianD(v.init).Round(10*time.Microsecond), median(v.setups), median(v.one), median(v.many))
	}
	fmt.Fprintf(&b, "| %s, median of the rounds' ratios | %.2f× | %.3f | %.3f | %.3f |\n", ratioName,
		median(ratios(durs(vs[1].init), durs(vs[0].init))), median(ratios(vs[1].setups, vs[0].setups)),
		median(ratios(vs[1].one, vs[0].one)), median(ratios(vs[1].many, vs[0].many)))
	return b.String()
}

// aggregateCost (mcpbench -aggregate N): mcp_aggregate with one backend (the
// same mcp_stdio route as its one backend, prefix never) against that
// mcp_stdio route alone.
func aggregateCost(dir, server string, rounds int) string {
	aggregated := func(port int) string {
		return fmt.Sprintf(`{
	admin off
	auto_https off
	log {
		level WARN
	}
}
:%d {
	bind 127.0.0.1
	route /mcp {
		mcp_aggregate {
			prefix never
			max_sessions 100000
			backend every {
				mcp_stdio {
					command %s
					max_sessions 10000
					max_sessions_per_user 10000
					initialize_rate 1000000
				}
			}
		}
	}
}
`, port, server)
	}
	return compareCost(dir, rounds, "mcp_aggregate cost (one backend: mcp_stdio + go-sdk everything-server", "aggregate/mcp_stdio",
		[2]string{"mcp_stdio alone", "mcp_aggregate, one backend"},
		[2]func(port int) string{func(port int) string { return sandboxCaddyfile(port, server, "") }, aggregated})
}
