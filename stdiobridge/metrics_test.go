package stdiobridge_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// scrape reads Prometheus text from url into "name{labels}" -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	// a connection accepted by the server a reload just replaced may end
	// with EOF (the listener is handed over): ask again, a few times
	resp, err := http.Get(url)
	for i := 0; err != nil && i < 3; i++ {
		http.DefaultClient.CloseIdleConnections()
		resp, err = http.Get(url)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// metricsRoute is metricsSite's route label: by default the route's own
// host and path, not the command's base name that every route of one
// program would share.
const metricsRoute = "127.0.0.1/mcp"

func metricsSite(t *testing.T, is *jwkstest.Issuer, extra string) string {
	return authSiteWith(t, is, authOpts{Mode: "mrtr", Era: "legacy",
		Auth:  "\n\t\t\ttool write_* scopes write:all",
		Stdio: "\n\t\t\tmetrics_max_tools 10" + extra,
		Site:  "\tmetrics /metrics\n"})
}

// Metrics after scripted traffic, value by value: decisions, operations by
// method, tool (only listed ones, at most metrics_max_tools, then other)
// and version, live sessions and children, child starts, rounds; then 100
// reloads with a session open: no registration error, gauges still right.
func TestMetricsValues(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", metricsSite(t, is, ""))
	base := "http://127.0.0.1:" + strconv.Itoa(c.Port)
	url := base + "/mcp"
	tok := jwkstest.Mint(t, k, is.Claims("sam", url, "read:all"), nil)
	ctx := context.Background()
	before := scrape(t, base+"/metrics")
	for i := 0; i < 3; i++ {
		modernPost(ctx, t, url, tok, i, "tools/call", `{"name":"echo","arguments":{}}`)
	}
	for i := 0; i < 2; i++ {
		if status, _ := modernPost(ctx, t, url, tok, 10+i, "tools/call", `{"name":"write_file","arguments":{}}`); status != 403 {
			t.Fatalf("write_file: %d", status)
		}
	}
	modernPost(ctx, t, url, tok, 20, "tools/call", `{"name":"ask","arguments":{}}`) // an input_required round
	for i := 0; i < 20; i++ {                                                       // names the server never listed: "other", however many
		modernPost(ctx, t, url, tok, 30+i, "tools/call", `{"name":"made_up_`+strconv.Itoa(i)+`","arguments":{}}`)
	}
	// invalid tokens, by reason: two expired, one for another audience
	expired := is.Claims("sam", url, "read:all")
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	elsewhere := is.Claims("sam", "https://elsewhere.example/mcp", "read:all")
	for i, bad := range []string{jwkstest.Mint(t, k, expired, nil), jwkstest.Mint(t, k, expired, nil), jwkstest.Mint(t, k, elsewhere, nil)} {
		if status, _ := modernPost(ctx, t, url, bad, 60+i, "tools/call", `{"name":"echo","arguments":{}}`); status != 401 {
			t.Fatalf("bad token %d: %d", i, status)
		}
	}
	noTok, _ := http.Post(url, "application/json", strings.NewReader(`{}`))
	io.Copy(io.Discard, noTok.Body)
	noTok.Body.Close()
	cl := newClient(t, url)
	cl.header.Set("Authorization", "Bearer "+tok)
	cl.initialize()
	cl.call("2", "tools/list", "")
	cl.call("3", "tools/call", `{"name":"echo","arguments":{}}`)

	m := scrape(t, base+"/metrics")
	delta := func(key string) float64 { return m[key] - before[key] }
	want := map[string]float64{
		`mcp_auth_decisions_total{reason="",result="insufficient_scope"}`:    2,
		`mcp_auth_decisions_total{reason="",result="no_token"}`:              1,
		`mcp_auth_decisions_total{reason="expired",result="invalid_token"}`:  2,
		`mcp_auth_decisions_total{reason="audience",result="invalid_token"}`: 1,
		// 3 echo + ask + 20 made up (2026), initialize, initialized, tools/list, echo (2025)
		`mcp_auth_decisions_total{reason="",result="ok"}`: 28,
		`mcp_server_operation_duration_seconds_count{error_type="",gen_ai_tool_name="echo",mcp_method_name="tools/call",mcp_protocol_version="2026-07-28",route="` + metricsRoute + `"}`: 3,
		// ask and the made-up names were never listed
		`mcp_server_operation_duration_seconds_count{error_type="",gen_ai_tool_name="other",mcp_method_name="tools/call",mcp_protocol_version="2026-07-28",route="` + metricsRoute + `"}`: 21,
		`mcp_server_operation_duration_seconds_count{error_type="",gen_ai_tool_name="echo",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",route="` + metricsRoute + `"}`:  1,
		`mcp_server_operation_duration_seconds_count{error_type="",gen_ai_tool_name="",mcp_method_name="tools/list",mcp_protocol_version="2025-11-25",route="` + metricsRoute + `"}`:      1,
		`mcp_stdio_input_required_rounds_total{route="` + metricsRoute + `"}`: 1,
	}
	for key, v := range want {
		if got := delta(key); got != v {
			t.Errorf("%s: %v, want %v", key, got, v)
		}
	}
	if got := m[`mcp_stdio_sessions{route="`+metricsRoute+`"}`]; got != 1 {
		t.Errorf("live sessions: %v, want 1", got)
	}
	// two pool children (the parked ask round holds the first one's asking
	// slot) and the session's child started and answered
	if got := delta(`mcp_stdio_child_start_seconds_count{route="` + metricsRoute + `"}`); got != 3 {
		t.Errorf("child start latencies: %v, want 3", got)
	}
	if got := delta(`mcp_stdio_child_starts_total{kind="pool",route="`+metricsRoute+`"}`) + delta(`mcp_stdio_child_starts_total{kind="session",route="`+metricsRoute+`"}`); got != 3 {
		t.Errorf("child starts: %v, want 3", got)
	}
	if got := delta(`mcp_auth_jwks_fetches_total{result="loaded",what="load"}`); got != 1 {
		t.Errorf("JWKS loads: %v, want 1", got)
	}
	if got := m[`mcp_stdio_children{route="`+metricsRoute+`"}`]; got < 2 {
		t.Errorf("live children: %v, want the session's and the pool's", got)
	}
	// the label sets this traffic added to: echo and other in 2026, echo in
	// 2025 (other tests in this process add their own)
	labels := 0
	for key := range m {
		if strings.HasPrefix(key, "mcp_server_operation_duration_seconds_count{") && strings.Contains(key, `mcp_method_name="tools/call"`) && delta(key) > 0 {
			labels++
		}
	}
	if labels != 3 {
		t.Errorf("%d tools/call label sets, want 3", labels)
	}
	// 100 reloads with the session open
	for i := 0; i < 100; i++ {
		c.LoadCaddyfile("", metricsSite(t, is, "\n\t\t\tinput_timeout "+strconv.Itoa(60+i)+"s"))
	}
	http.DefaultClient.CloseIdleConnections()
	m = scrape(t, base+"/metrics")
	if got := m[`mcp_stdio_sessions{route="`+metricsRoute+`"}`]; got != 1 {
		t.Errorf("live sessions after 100 reloads: %v, want 1", got)
	}
	cl.call("4", "tools/call", `{"name":"echo","arguments":{}}`) // the session lives on
}

// Label values a client chooses are bounded, with no token (no mcp_auth on
// the route): methods outside MCP's set are "other" in both eras, and so
// is a protocol version the child echoes from the client's initialize.
// Before, each invented method (1 KiB here) was a label value of its own, and
// /metrics grew by every one of them.
func TestMetricsLabelsBounded(t *testing.T) {
	route := "labels_bounded"
	c := caddyrun.StartCaddyfile(t, "", `
http://127.0.0.1:{{PORT}} {
	bind 127.0.0.1
	metrics /metrics
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER mrtr
		child_era legacy
		shutdown_timeout 500ms
		name `+route+`
	}
}
`)
	base := "http://127.0.0.1:" + strconv.Itoa(c.Port)
	url := base + "/mcp"
	ctx := context.Background()
	invented := func(i int) string { return "x/" + strconv.Itoa(i) + strings.Repeat("m", 1<<10) }
	for i := 0; i < 5; i++ { // 2026-07-28: the child answers -32601
		if status, m := modernPost(ctx, t, url, "", i, invented(i), ""); status != 404 || m["error"] == nil {
			t.Fatalf("invented method %d (2026): %d %v", i, status, m)
		}
	}
	// 2025: the fake echoes the client's protocolVersion in its answer
	cl := newClient(t, url)
	cl.version = "1999-01-" + strings.Repeat("v", 1000)
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+cl.version+`","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
		func(r *http.Request) { r.Header.Del("Mcp-Protocol-Version") })
	cl.session = resp.Header.Get("Mcp-Session-Id")
	if msgs := messages(readEvents(t, resp)); resp.StatusCode != 200 || cl.session == "" || len(msgs) != 1 || !strings.Contains(msgs[0], `"protocolVersion":"1999-01-v`) {
		t.Fatalf("initialize with an invented version: %d %q %v", resp.StatusCode, cl.session, msgs)
	}
	cl.version = ""
	if status, _ := cl.status("POST", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, nil); status != 202 {
		t.Fatalf("initialized: %d", status)
	}
	cl.call("2", "tools/list", "")
	for i := 0; i < 5; i++ {
		msgs := cl.call(strconv.Itoa(10+i), invented(10+i), "")
		if len(msgs) != 1 || !strings.Contains(msgs[0], `"code":-32601`) {
			t.Fatalf("invented method %d (2025): %v", i, msgs)
		}
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ours []string
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "mcp_server_operation_duration_seconds_count{") && strings.Contains(line, `route="`+route+`"`) {
			ours = append(ours, line)
		}
	}
	slices.Sort(ours)
	want := []string{
		`mcp_server_operation_duration_seconds_count{error_type="",gen_ai_tool_name="",mcp_method_name="tools/list",mcp_protocol_version="other",route="` + route + `"} 1`,
		`mcp_server_operation_duration_seconds_count{error_type="-32601",gen_ai_tool_name="",mcp_method_name="other",mcp_protocol_version="2026-07-28",route="` + route + `"} 5`,
		`mcp_server_operation_duration_seconds_count{error_type="-32601",gen_ai_tool_name="",mcp_method_name="other",mcp_protocol_version="other",route="` + route + `"} 5`,
	}
	if !slices.Equal(ours, want) {
		t.Errorf("operation label sets of the route (%d bytes of /metrics):\n%s\nwant:\n%s", len(raw), strings.Join(truncateAll(ours), "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(string(raw), "mmmmmmmm") || strings.Contains(string(raw), "vvvvvvvv") {
		t.Errorf("/metrics holds a client's string (%d bytes)", len(raw))
	}
}
