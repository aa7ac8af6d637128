// Command mcpbench is `make bench`: it runs the same load against go-sdk's
// everything-server served natively over HTTP, through mcp_stdio, through
// mcp_auth + mcp_stdio, and through supergateway (if it can be installed),
// measures session set-up against the direct floor (spawn + initialize over
// stdio) and prewarm, samples memory, and prints one Markdown table with
// the ratios that the performance targets are stated in.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/caddymcp/caddymcp/internal/loadgen"
)

var (
	caddyBin       = flag.String("caddy", "./caddy", "Caddy built with the plugin")
	serverBin      = flag.String("server", "bin/everything-server", "stdio MCP server (go-sdk everything-server)")
	authBin        = flag.String("authserver", "bin/authserver", "example authorization server")
	supergateway   = flag.String("supergateway", "", "command that runs supergateway (empty: skipped)")
	out            = flag.String("out", ".ci/artifacts/bench.md", "where to write the table")
	calls1         = flag.Int("calls1", 2000, "calls for the 1-session run")
	sessions16     = flag.Int("sessions", 16, "sessions for the concurrent run")
	calls16        = flag.Int("calls16", 300, "calls per session for the concurrent run")
	setups         = flag.Int("setups", 200, "session set-ups per set-up run")
	idleSessions   = flag.Int("idle", 0, "only measure Caddy's memory with this many idle sessions of -tiny")
	tinyBin        = flag.String("tiny", "bin/tiny", "a small stdio MCP server (cmd/tiny) for -idle")
	rounds         = flag.Int("rounds", 5, "alternating rounds of the by-concurrency table")
	levelsFlag     = flag.String("levels", envOr("BENCH_SESSIONS", "1,16,64"), "session counts of the by-concurrency table (BENCH_SESSIONS)")
	overheadRounds = flag.Int("overhead", 0, "only measure what the audit log costs, in this many alternating rounds")
	auditFile      = flag.String("audit", "", "write the audit log (http.handlers.mcp_*.audit) to this file, to measure its cost")
	levelsOnly     = flag.Bool("levels-only", false, "only the by-concurrency table (BENCH_LEVELS_ONLY=1 in make bench)")
	sandboxRounds  = flag.Int("sandbox", 0, "only measure what the sandbox costs (child start, calls/s), in this many alternating rounds")
	aggRounds      = flag.Int("aggregate", 0, "only measure what mcp_aggregate with one backend costs against mcp_stdio alone, in this many alternating rounds")
)

// modernRow is the 2026-07-28 load: clients without sessions.
type modernRow struct {
	name      string
	one, many loadgen.Result
}

func measureModern(name, url string, hdr http.Header) modernRow {
	fmt.Fprintf(os.Stderr, "measuring %s (2026-07-28)\n", name)
	ctx := context.Background()
	check(name+" warm-up", loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: *sessions16, Calls: 20, Header: hdr, Modern: true}))
	r := modernRow{name: name}
	r.one = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: 1, Calls: *calls1, Header: hdr, Modern: true})
	check(name, r.one)
	r.many = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: *sessions16, Calls: *calls16, Header: hdr, Modern: true})
	check(name, r.many)
	return r
}

type row struct {
	name               string
	one, many          loadgen.Result
	setupSeq, setupPar loadgen.Result
	rssPerSession      float64 // KiB, the server process only
	rssChildren        float64 // KiB per session, children
	rssBase, rssOpen   int64   // KiB of the server process
	rssAfter           int64   // KiB after the sessions ended
	note               string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// levels are the session counts of the by-concurrency table.
func levels() []int {
	var out []int
	for _, f := range strings.Split(*levelsFlag, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func main() {
	flag.Parse()
	dir, _ := os.MkdirTemp("", "mcpbench-")
	defer os.RemoveAll(dir)
	server, _ := filepath.Abs(*serverBin)
	var rows []row
	var modern []modernRow
	if *sandboxRounds > 0 {
		t := sandboxCost(dir, server, *sandboxRounds)
		fmt.Print(t)
		sb := filepath.Join(filepath.Dir(*out), "bench-sandbox.md")
		os.MkdirAll(filepath.Dir(sb), 0o755)
		os.WriteFile(sb, []byte(t), 0o644)
		return
	}
	if *aggRounds > 0 {
		t := aggregateCost(dir, server, *aggRounds)
		fmt.Print(t)
		ab := filepath.Join(filepath.Dir(*out), "bench-aggregate.md")
		os.MkdirAll(filepath.Dir(ab), 0o755)
		os.WriteFile(ab, []byte(t), 0o644)
		return
	}
	if *idleSessions > 0 {
		tiny, _ := filepath.Abs(*tinyBin)
		fmt.Print(idle(dir, tiny, *idleSessions))
		return
	}

	if !*levelsOnly {
		// native, 2026-07-28: go-sdk serves it in its stateless mode
		port0 := freePort()
		stop0 := start(dir, "native-stateless", server, "-http", "127.0.0.1:"+strconv.Itoa(port0))
		waitPort(port0)
		modern = append(modern, measureModern("server's own HTTP mode (native, stateless)", fmt.Sprintf("http://127.0.0.1:%d/mcp", port0), nil))
		stop0.kill()

		// native: the server's own HTTP mode
		port := freePort()
		stop := start(dir, "native", server, "-http", "127.0.0.1:"+strconv.Itoa(port), "-stateless=false")
		waitPort(port)
		rows = append(rows, measure("server's own HTTP mode (native)", fmt.Sprintf("http://127.0.0.1:%d/mcp", port), nil, stop.pid))
		stop.kill()
	}

	// the bridge, alone, behind mcp_auth, and with prewarm
	bport, aport, pport, cport, lport := freePort(), freePort(), freePort(), freePort(), freePort()
	asPort := freePort()
	issuer := fmt.Sprintf("http://127.0.0.1:%d", asPort)
	as := start(dir, "authserver", *authBin, "-addr", "127.0.0.1:"+strconv.Itoa(asPort), "-issuer", issuer, "-resources", "")
	defer as.kill()
	waitPort(asPort)
	if *overheadRounds > 0 {
		t := overhead(dir, server, issuer, *overheadRounds)
		fmt.Print(t)
		as.kill()
		return
	}
	// one principal opens sessions as fast as it can: the per-user limits
	// that protect a shared gateway are lifted
	auditLog := ""
	if *auditFile != "" {
		auditLog = "\n\tlog audit {\n\t\toutput file " + *auditFile + "\n\t\tinclude http.handlers.mcp_stdio.audit http.handlers.mcp_auth.audit\n\t}"
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	log {
		level WARN
	}`+auditLog+`
}
(unlimited) {
	max_sessions 10000
	max_sessions_per_user 10000
	initialize_rate 1000000
}
:%d {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command %s
		import unlimited
	}
}
:%d {
	bind 127.0.0.1
	route /mcp {
		mcp_auth {
			issuer %s
			audience http://127.0.0.1:%d/mcp
			token_cache off
		}
		mcp_stdio {
			command %s
			env ROUTE auth
			import unlimited
		}
	}
}
:%d {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command %s
		env ROUTE prewarm
		prewarm 4
		import unlimited
	}
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
			env ROUTE auth-cache
			import unlimited
		}
	}
}
:%d {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command %s
		env ROUTE translated
		child_era legacy
		import unlimited
	}
}
`, bport, server, aport, issuer, aport, server, pport, server, cport, issuer, cport, server, lport, server)
	cf := filepath.Join(dir, "Caddyfile")
	os.WriteFile(cf, []byte(caddyfile), 0o644)
	cd := start(dir, "caddy", *caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	defer cd.kill()
	waitPort(bport)
	waitPort(aport)
	waitPort(pport)
	waitPort(cport)
	waitPort(lport)
	tok := token(issuer, fmt.Sprintf("http://127.0.0.1:%d/mcp", aport))
	ctok := token(issuer, fmt.Sprintf("http://127.0.0.1:%d/mcp", cport))
	if !*levelsOnly {
		rows = append(rows, measure("mcp_stdio", fmt.Sprintf("http://127.0.0.1:%d/mcp", bport), nil, cd.pid))
		modern = append(modern, measureModern("mcp_stdio (server answers server/discover: passed through)", fmt.Sprintf("http://127.0.0.1:%d/mcp", bport), nil))
		modern = append(modern, measureModern("mcp_stdio, `child_era legacy` (2025 child, translated)", fmt.Sprintf("http://127.0.0.1:%d/mcp", lport), nil))
		rows = append(rows, measure("mcp_auth (token_cache off) + mcp_stdio", fmt.Sprintf("http://127.0.0.1:%d/mcp", aport),
			http.Header{"Authorization": {"Bearer " + tok}}, cd.pid))
		rows = append(rows, measure("mcp_auth (default: token_cache 4096) + mcp_stdio", fmt.Sprintf("http://127.0.0.1:%d/mcp", cport),
			http.Header{"Authorization": {"Bearer " + ctok}}, cd.pid))
	}

	// by concurrency: every setup at every level, in alternating rounds,
	// with the native servers running beside Caddy
	nport, nsport := freePort(), freePort()
	nat := start(dir, "native-levels", server, "-http", "127.0.0.1:"+strconv.Itoa(nport), "-stateless=false")
	nats := start(dir, "native-stateless-levels", server, "-http", "127.0.0.1:"+strconv.Itoa(nsport))
	waitPort(nport)
	waitPort(nsport)
	pin, err := serverStart(os.Getenv("BENCH_SERVER_CPUS"))
	if err != nil {
		fail("%v", err)
	}
	levelsMD := byConcurrency([]setup{
		{name: "server's own HTTP mode (native)", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", nport)},
		{name: directName, direct: server, start: pin},
		{name: "mcp_stdio", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", bport)},
		{name: "mcp_auth (token_cache off) + mcp_stdio", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", aport), hdr: http.Header{"Authorization": {"Bearer " + tok}}},
		{name: "mcp_auth (default: token_cache 4096) + mcp_stdio", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", cport), hdr: http.Header{"Authorization": {"Bearer " + ctok}}},
		{name: "2026-07-28: native (stateless)", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", nsport), modern: true},
		{name: "2026-07-28: mcp_stdio (passed through)", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", bport), modern: true},
		{name: "2026-07-28: mcp_stdio, child_era legacy", url: fmt.Sprintf("http://127.0.0.1:%d/mcp", lport), modern: true},
	})
	nat.kill()
	nats.kill()
	if *levelsOnly {
		cd.kill()
		emit(levelsMD)
		return
	}
	prewarm := loadgen.Run(context.Background(), loadgen.Config{URL: fmt.Sprintf("http://127.0.0.1:%d/mcp", pport), Sessions: *setups, Parallel: 1})
	check("prewarm", prewarm)
	cd.kill()

	// supergateway
	if *supergateway != "" {
		sport := freePort()
		args := append(strings.Fields(*supergateway), "--stdio", server, "--outputTransport", "streamableHttp", "--stateful",
			"--port", strconv.Itoa(sport), "--logLevel", "none")
		sg := start(dir, "supergateway", args[0], args[1:]...)
		if loadgen.WaitPort(sport, 30*time.Second) == nil {
			rows = append(rows, measure("supergateway 4.0.0 (stateful)", fmt.Sprintf("http://127.0.0.1:%d/mcp", sport), nil, sg.pid))
		} else {
			fmt.Fprintln(os.Stderr, "supergateway did not start; skipped")
		}
		sg.kill()
	} else {
		fmt.Fprintln(os.Stderr, "supergateway not installed; skipped")
	}

	dseqRate, dseqP50, err1 := loadgen.Direct(server, *setups, 1)
	dparRate, _, err2 := loadgen.Direct(server, *setups, 8)
	if err1 != nil || err2 != nil {
		fail("direct set-up: %v %v", err1, err2)
	}

	emit(table(rows, dseqRate, dseqP50, dparRate, prewarm) + "\n" + levelsMD + "\n" + modernTable(modern, rows))
}

// emit prints the tables and writes them to -out.
func emit(md string) {
	fmt.Print(md)
	os.MkdirAll(filepath.Dir(*out), 0o755)
	os.WriteFile(*out, []byte(md), 0o644)
}

func measure(name, url string, hdr http.Header, pid int) row {
	fmt.Fprintf(os.Stderr, "measuring %s\n", name)
	ctx := context.Background()
	warm := loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: 2, Calls: 50, Header: hdr})
	check(name+" warm-up", warm)
	r := row{name: name}

	// memory first, before load has grown the heap: open sessions against
	// the baseline, then end them
	const openSessions = 64
	time.Sleep(300 * time.Millisecond)
	self0, kids0 := rss(pid)
	cfg := loadgen.Config{URL: url, Sessions: openSessions, Calls: 1, Header: hdr, SkipDelete: true, Parallel: 8}
	open := loadgen.Run(ctx, cfg)
	check(name, open)
	time.Sleep(500 * time.Millisecond)
	self1, kids1 := rss(pid)
	r.rssPerSession = float64(self1-self0) / openSessions
	r.rssChildren = float64(kids1-kids0) / openSessions
	r.rssBase, r.rssOpen = self0, self1
	loadgen.Delete(ctx, cfg, open.SessionIDs)
	time.Sleep(3 * time.Second)
	r.rssAfter, _ = rss(pid)

	r.one = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: 1, Calls: *calls1, Header: hdr})
	check(name, r.one)
	r.many = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: *sessions16, Calls: *calls16, Header: hdr})
	check(name, r.many)
	r.setupSeq = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: *setups, Parallel: 1, Header: hdr})
	check(name, r.setupSeq)
	r.setupPar = loadgen.Run(ctx, loadgen.Config{URL: url, Sessions: *setups, Parallel: 8, Header: hdr})
	check(name, r.setupPar)
	return r
}

func check(name string, r loadgen.Result) {
	if r.Failures > 0 {
		fail("%s: %d failures: %v", name, r.Failures, r.Errors)
	}
}

func table(rows []row, dseq float64, dseqP50 time.Duration, dpar float64, prewarm loadgen.Result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Measured %s on %s (%d CPUs, %s/%s), load generator on the same machine; go-sdk everything-server, `tools/call test_simple_text`, Streamable HTTP, stateful.\n\n",
		time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "| setup | 1 session × %d calls | %d sessions × %d calls | set-up (init+initialized+DELETE), sequential | set-up, 8-way | memory per open session (64 open): server process, children; server RSS base → open → after DELETE |\n", *calls1, *sessions16, *calls16)
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, r := range rows {
		mem := fmt.Sprintf("%.0f KiB, %.0f KiB; %.1f → %.1f → %.1f MiB", r.rssPerSession, r.rssChildren,
			float64(r.rssBase)/1024, float64(r.rssOpen)/1024, float64(r.rssAfter)/1024)
		fmt.Fprintf(&b, "| %s | %.0f calls/s, p50 %.2f ms | %.0f calls/s, p99 %.1f ms | %.0f/s | %.0f/s | %s |\n",
			r.name, r.one.CallsPerSec, loadgen.Ms(r.one.P50), r.many.CallsPerSec, loadgen.Ms(r.many.P99),
			r.setupSeq.SetupsPerSec, r.setupPar.SetupsPerSec, mem)
	}
	fmt.Fprintf(&b, "| direct (spawn + initialize over stdio, no HTTP) | | | %.0f/s (p50 %.2f ms) | %.0f/s | |\n\n", dseq, loadgen.Ms(dseqP50), dpar)

	find := func(prefix string) *row {
		for i := range rows {
			if strings.HasPrefix(rows[i].name, prefix) {
				return &rows[i]
			}
		}
		return nil
	}
	native, bridge, auth, sg := find("server's own"), find("mcp_stdio"), find("mcp_auth (token_cache off)"), find("supergateway")
	cached := find("mcp_auth (default")
	b.WriteString("| target | measured | met |\n|---|---|---|\n")
	target := func(what string, value float64, min float64, unit string) {
		met := "yes"
		if value < min {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s ≥ %.2g%s | %.2f%s | %s |\n", what, min, unit, value, unit, met)
	}
	targetMax := func(what string, value float64, maxv float64, unit string) {
		met := "yes"
		if value > maxv {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s ≤ %.3g%s | %.2f%s | %s |\n", what, maxv, unit, value, unit, met)
	}
	if native != nil && bridge != nil {
		target("bridge / native, 1 session", bridge.one.CallsPerSec/native.one.CallsPerSec, 0.7, "×")
		target("bridge / native, 16 sessions", bridge.many.CallsPerSec/native.many.CallsPerSec, 0.7, "×")
		targetMax("bridge p99 / native p99, 16 sessions", float64(bridge.many.P99)/float64(native.many.P99), 1.5, "×")
		target("bridge set-up / direct, sequential", bridge.setupSeq.SetupsPerSec/dseq, 0.8, "×")
		target("bridge set-up / direct, 8-way", bridge.setupPar.SetupsPerSec/dpar, 0.8, "×")
		targetMax("bridge memory per open session (Caddy RSS growth / sessions)", bridge.rssPerSession, 256, " KiB")
	}
	if sg != nil && bridge != nil {
		target("bridge / supergateway, 1 session", bridge.one.CallsPerSec/sg.one.CallsPerSec, 2.5, "×")
		target("bridge / supergateway, 16 sessions", bridge.many.CallsPerSec/sg.many.CallsPerSec, 2.5, "×")
		target("bridge set-up / supergateway, sequential", bridge.setupSeq.SetupsPerSec/sg.setupSeq.SetupsPerSec, 1.5, "×")
		target("bridge set-up / supergateway, 8-way", bridge.setupPar.SetupsPerSec/sg.setupPar.SetupsPerSec, 1.5, "×")
	} else {
		b.WriteString("| bridge / supergateway | supergateway not installed: skipped | |\n")
	}
	if auth != nil && bridge != nil {
		target("mcp_auth (token_cache off) + bridge / bridge, 1 session", auth.one.CallsPerSec/bridge.one.CallsPerSec, 0.9, "×")
		target("mcp_auth (token_cache off) + bridge / bridge, 16 sessions", auth.many.CallsPerSec/bridge.many.CallsPerSec, 0.9, "×")
	}
	if cached != nil && bridge != nil {
		target("mcp_auth (default) + bridge / bridge, 1 session", cached.one.CallsPerSec/bridge.one.CallsPerSec, 0.9, "×")
		target("mcp_auth (default) + bridge / bridge, 16 sessions", cached.many.CallsPerSec/bridge.many.CallsPerSec, 0.9, "×")
	}
	if bridge != nil {
		fmt.Fprintf(&b, "| initialize p50, sequential: without prewarm → with `prewarm 4` | %.2f ms → %.2f ms | |\n",
			loadgen.Ms(bridge.setupSeq.InitP50), loadgen.Ms(prewarm.InitP50))
		fmt.Fprintf(&b, "| bridge's own share of set-up: bridge set-up p50 − direct p50 (< 1 ms) | %.2f ms | %s |\n",
			loadgen.Ms(bridge.setupSeq.SetupP50-dseqP50), map[bool]string{true: "yes", false: "**no**"}[bridge.setupSeq.SetupP50-dseqP50 < time.Millisecond])
	}
	return b.String()
}

func modernTable(modern []modernRow, rows []row) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nMCP 2026-07-28 (no sessions: each client sends its calls in turn, every call with its `_meta` envelope), same server and tool:\n\n")
	fmt.Fprintf(&b, "| setup | 1 client × %d calls | %d clients × %d calls |\n|---|---|---|\n", *calls1, *sessions16, *calls16)
	for _, r := range modern {
		fmt.Fprintf(&b, "| %s | %.0f calls/s, p50 %.2f ms, p99 %.2f ms | %.0f calls/s, p50 %.2f ms, p99 %.1f ms |\n", r.name,
			r.one.CallsPerSec, loadgen.Ms(r.one.P50), loadgen.Ms(r.one.P99), r.many.CallsPerSec, loadgen.Ms(r.many.P50), loadgen.Ms(r.many.P99))
	}
	var bridge *row
	for i := range rows {
		if rows[i].name == "mcp_stdio" {
			bridge = &rows[i]
		}
	}
	if bridge != nil && len(modern) > 1 {
		fmt.Fprintf(&b, "| mcp_stdio, 2025-11-25 sessions (from the table above) | %.0f calls/s, p50 %.2f ms, p99 %.2f ms | %.0f calls/s, p50 %.2f ms, p99 %.1f ms |\n\n",
			bridge.one.CallsPerSec, loadgen.Ms(bridge.one.P50), loadgen.Ms(bridge.one.P99), bridge.many.CallsPerSec, loadgen.Ms(bridge.many.P50), loadgen.Ms(bridge.many.P99))
		b.WriteString("| target | measured | met |\n|---|---|---|\n")
		for _, m := range modern[1:] {
			for _, c := range []struct {
				what        string
				modern, old float64
			}{{"1 client", m.one.CallsPerSec, bridge.one.CallsPerSec}, {"16 clients", m.many.CallsPerSec, bridge.many.CallsPerSec}} {
				met := "yes"
				if c.modern < c.old {
					met = "**no**"
				}
				fmt.Fprintf(&b, "| %s, %s: 2026 path / 2025 path ≥ 1 | %.2f× | %s |\n", m.name, c.what, c.modern/c.old, met)
			}
		}
	}
	return b.String()
}

// rss returns the resident memory of pid and of its descendants, in KiB.
func rss(pid int) (self, children int64) {
	self = vmRSS(pid)
	kids := map[int]bool{pid: true}
	ppids := loadgen.Parents()
	for changed := true; changed; {
		changed = false
		for p, pp := range ppids {
			if kids[pp] && !kids[p] {
				kids[p] = true
				changed = true
			}
		}
	}
	for p := range kids {
		if p != pid {
			children += vmRSS(p)
		}
	}
	return self, children
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

type proc struct {
	cmd *exec.Cmd
	pid int
}

func (p proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
		}
	}
}

// started lists every process the bench started, so that a failure does
// not leave any behind.
var started []proc

func start(dir, name, bin string, args ...string) proc {
	cmd := exec.Command(bin, args...)
	if cpus := os.Getenv("BENCH_SERVER_CPUS"); cpus != "" {
		// servers (and their children) on their own cores, apart from the
		// load generator (bench.sh pins this process to the others)
		cmd = exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	log, _ := os.Create(filepath.Join(dir, name+".log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		fail("starting %s: %v", name, err)
	}
	p := proc{cmd: cmd, pid: cmd.Process.Pid}
	started = append(started, p)
	return p
}

func token(issuer, resource string) string {
	resp, err := http.PostForm(issuer+"/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {"demo"},
		"client_secret": {"demo-secret"}, "resource": {resource}})
	if err != nil {
		fail("token: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &m) != nil || m["access_token"] == nil {
		fail("token: %s", b)
	}
	return m["access_token"].(string)
}

func freePort() int {
	p, err := loadgen.FreePort()
	if err != nil {
		fail("%v", err)
	}
	return p
}

func waitPort(p int) {
	if err := loadgen.WaitPort(p, 20*time.Second); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mcpbench: "+format+"\n", args...)
	for _, p := range started {
		p.kill()
	}
	os.Exit(1)
}
