package main

// The by-concurrency table: every setup at every level of BENCH_SESSIONS
// (sessions opened as the run starts, so a 2025 row includes their starts),
// measured in alternating rounds (each round runs every setup once, in an
// order rotated from round to round) so that a machine's drift falls on all
// of them alike; a cell is the median of its rounds, a ratio the median of
// the rounds' ratios (each taken between runs minutes apart at most).

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

type setup struct {
	name   string
	url    string
	hdr    http.Header
	modern bool
	// direct, if set, is a stdio server driven with no HTTP at all
	// (loadgen.DirectCalls): the limit for a bridge with one child per
	// session
	direct string
	start  func(*exec.Cmd) error
}

// run makes one run of a setup.
func (su setup) run(ctx context.Context, cfg loadgen.Config) loadgen.Result {
	if su.direct != "" {
		cfg.Start = su.start
		return loadgen.DirectCalls(su.direct, cfg)
	}
	cfg.URL, cfg.Header, cfg.Modern = su.url, su.hdr, su.modern
	return loadgen.Run(ctx, cfg)
}

// directName is the by-concurrency row of loadgen.DirectCalls.
const directName = "direct stdio (no HTTP: go-sdk's client spawns and drives the server itself)"

func median(x []float64) float64 {
	x = slices.Clone(x)
	slices.Sort(x)
	if len(x) == 0 {
		return 0
	}
	return x[len(x)/2]
}

func byConcurrency(setups []setup) string {
	ls := levels()
	ctx := context.Background()
	type cell struct{ rate, p99 []float64 }
	cells := map[string]map[int]*cell{}
	for _, su := range setups {
		cells[su.name] = map[int]*cell{}
		for _, l := range ls {
			cells[su.name][l] = &cell{}
		}
		check(su.name+" warm-up", su.run(ctx, loadgen.Config{Sessions: 4, Calls: 25}))
	}
	for _, l := range ls {
		// at least 100 calls per session: a 2025 session's start (a
		// process spawned and initialized) is then a small part of a run,
		// as it is of a real session
		calls := max(100, 4800/l)
		for r := 0; r < *rounds; r++ {
			fmt.Fprintf(os.Stderr, "by concurrency: %d sessions, round %d/%d\n", l, r+1, *rounds)
			for i := range setups {
				su := setups[(i+r)%len(setups)]
				res := su.run(ctx, loadgen.Config{Sessions: l, Calls: calls, Parallel: l})
				check(fmt.Sprintf("%s, %d sessions", su.name, l), res)
				c := cells[su.name][l]
				c.rate = append(c.rate, res.CallsPerSec)
				c.p99 = append(c.p99, loadgen.Ms(res.P99))
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "By concurrency (%s): every session at once, max(100, 4 800 / sessions) calls per session, %d alternating rounds; a cell is the median of its rounds:\n\n| setup |", time.Now().UTC().Format("2006-01-02"), *rounds)
	for _, l := range ls {
		fmt.Fprintf(&b, " %d sessions |", l)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(ls)) + "\n")
	for _, su := range setups {
		fmt.Fprintf(&b, "| %s |", su.name)
		for _, l := range ls {
			c := cells[su.name][l]
			fmt.Fprintf(&b, " %.0f calls/s, p99 %.1f ms |", median(c.rate), median(c.p99))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n| ratio (median of the rounds' ratios) |")
	for _, l := range ls {
		fmt.Fprintf(&b, " %d sessions |", l)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(ls)) + "\n")
	// ratioOf writes a row of a/c, calls/s (at least target) or, with p99,
	// the 99th percentiles (at most target)
	ratioOf := func(what, a, c string, target float64, p99 bool) {
		if cells[a] == nil || cells[c] == nil {
			return
		}
		bound := "≥"
		if p99 {
			bound = "≤"
		}
		fmt.Fprintf(&b, "| %s (target %s %.2g) |", what, bound, target)
		for _, l := range ls {
			x, y := cells[a][l].rate, cells[c][l].rate
			if p99 {
				x, y = cells[a][l].p99, cells[c][l].p99
			}
			rs := make([]float64, min(len(x), len(y)))
			for i := range rs {
				rs[i] = x[i] / y[i]
			}
			v := median(rs)
			met := ""
			if (!p99 && v < target) || (p99 && v > target) {
				met = " **no**"
			}
			fmt.Fprintf(&b, " %.3f×%s |", v, met)
		}
		b.WriteString("\n")
	}
	ratio := func(what, a, c string, target float64) { ratioOf(what, a, c, target, false) }
	ratio("mcp_stdio / native", "mcp_stdio", "server's own HTTP mode (native)", 0.8)
	ratio("mcp_stdio / direct stdio (the limit; the target is for 16 cores, pinned)", "mcp_stdio", directName, 0.9)
	ratio("mcp_auth (default) + mcp_stdio / mcp_stdio", "mcp_auth (default: token_cache 4096) + mcp_stdio", "mcp_stdio", 0.9)
	ratio("mcp_auth (token_cache off) + mcp_stdio / mcp_stdio", "mcp_auth (token_cache off) + mcp_stdio", "mcp_stdio", 0.9)
	ratio("2026 path / 2025 path, passed through", "2026-07-28: mcp_stdio (passed through)", "mcp_stdio", 1)
	ratio("2026 path / 2025 path, child_era legacy", "2026-07-28: mcp_stdio, child_era legacy", "mcp_stdio", 1)
	ratio("2026 mcp_stdio (passed through) / 2026 native", "2026-07-28: mcp_stdio (passed through)", "2026-07-28: native (stateless)", 1)
	ratioOf("2026 mcp_stdio (passed through) p99 / 2026 native p99", "2026-07-28: mcp_stdio (passed through)", "2026-07-28: native (stateless)", 1.2, true)
	ratio("2026 mcp_stdio (legacy child) / 2026 native", "2026-07-28: mcp_stdio, child_era legacy", "2026-07-28: native (stateless)", 1)
	return b.String()
}
