// Package loadgen drives an MCP Streamable HTTP endpoint with raw HTTP:
// S sessions, each initializing, making C sequential tools/call requests and
// ending with DELETE. Answers may be JSON or SSE; an SSE stream that ends
// before its answer is resumed with Last-Event-ID, as a client would after a
// server restart or reload. Every answer is checked: an error, a missing
// answer or an answer to another id counts as a failure.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one run.
type Config struct {
	URL      string
	Sessions int
	Calls    int // tools/call per session
	Tool     string
	Args     map[string]any
	// Header adds headers to every request (e.g. Authorization).
	Header http.Header
	// Version is the MCP-Protocol-Version; default 2025-11-25.
	Version string
	// SkipDelete leaves sessions open at the end.
	SkipDelete bool
	// Client is the HTTP client; default: one with enough idle connections.
	Client *http.Client
	// OnProgress, if set, is called after each completed call.
	OnProgress func(done int64)
	// Parallel bounds how many sessions run at once; default: all.
	Parallel int
	// Modern speaks MCP 2026-07-28: no initialize, no session, no DELETE;
	// each call carries the _meta envelope and the Mcp-Method/Mcp-Name
	// headers. A "session" is then one client making its calls in turn.
	Modern bool
	// Start starts a DirectCalls child (default: cmd.Start); the bench
	// uses it to put the children on the servers' CPUs.
	Start func(*exec.Cmd) error
	// Timeout bounds one DirectCalls session (default 5 minutes).
	Timeout time.Duration
}

// Result summarizes a run.
type Result struct {
	Calls        int64
	Failures     int64
	Resumed      int64 // streams resumed with Last-Event-ID
	Errors       []string
	Duration     time.Duration
	CallsPerSec  float64
	P50, P90     time.Duration
	P99          time.Duration
	SetupP50     time.Duration
	InitP50      time.Duration // the initialize request alone
	SessionsOK   int64
	SessionIDs   []string // with SkipDelete: the sessions left open
	SetupsPerSec float64  // initialize+initialized+DELETE cycles per second (Calls == 0)
}

func (r Result) String() string {
	return fmt.Sprintf("%d calls in %s: %.0f calls/s, p50 %s, p90 %s, p99 %s, setup p50 %s, %d failures, %d resumed",
		r.Calls, r.Duration.Round(time.Millisecond), r.CallsPerSec, r.P50, r.P90, r.P99, r.SetupP50, r.Failures, r.Resumed)
}

// Ms renders a duration in milliseconds with microsecond precision.
func Ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

type runner struct {
	cfg     Config
	client  *http.Client
	mu      sync.Mutex
	lat     []time.Duration
	setup   []time.Duration
	inits   []time.Duration
	errs    []string
	fail    atomic.Int64
	calls   atomic.Int64
	resumed atomic.Int64
	ok      atomic.Int64
	open    []string
}

// Run executes the load and returns when every session has finished.
func Run(ctx context.Context, cfg Config) Result {
	if cfg.Version == "" {
		cfg.Version = "2025-11-25"
	}
	if cfg.Tool == "" {
		cfg.Tool = "test_simple_text"
	}
	r := &runner{cfg: cfg, client: cfg.Client}
	if r.client == nil {
		r.client = &http.Client{Transport: &http.Transport{
			MaxIdleConns: cfg.Sessions * 2, MaxIdleConnsPerHost: cfg.Sessions * 2, IdleConnTimeout: time.Minute,
		}}
	}
	d := r.sessions(func(n int) error { return r.session(ctx, n) })
	if cfg.Client == nil {
		r.client.CloseIdleConnections()
	}
	res := r.result(d)
	if cfg.Calls == 0 {
		res.SetupsPerSec = float64(res.SessionsOK) / res.Duration.Seconds()
	}
	slices.Sort(r.setup)
	slices.Sort(r.inits)
	res.InitP50 = pct(r.inits, 50)
	res.SetupP50 = pct(r.setup, 50)
	return res
}

// sessions runs session for cfg.Sessions sessions, at most cfg.Parallel
// at once (default: all), an error being that session's failure, and
// returns how long they took together.
func (r *runner) sessions(session func(n int) error) time.Duration {
	parallel := r.cfg.Parallel
	if parallel <= 0 {
		parallel = r.cfg.Sessions
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < r.cfg.Sessions; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(n int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := session(n); err != nil {
				r.failure(fmt.Sprintf("session %d: %v", n, err))
			}
		}(i)
	}
	wg.Wait()
	return time.Since(start)
}

// result is what every run reports of its sessions, which took d.
func (r *runner) result(d time.Duration) Result {
	res := Result{Calls: r.calls.Load(), Failures: r.fail.Load(), Resumed: r.resumed.Load(),
		Duration: d, SessionsOK: r.ok.Load(), Errors: r.errs, SessionIDs: r.open}
	res.CallsPerSec = float64(res.Calls) / res.Duration.Seconds()
	slices.Sort(r.lat)
	res.P50, res.P90, res.P99 = pct(r.lat, 50), pct(r.lat, 90), pct(r.lat, 99)
	return res
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	if i > 0 {
		i--
	}
	return d[i]
}

func (r *runner) failure(msg string) {
	r.fail.Add(1)
	r.mu.Lock()
	if len(r.errs) < 20 {
		r.errs = append(r.errs, msg)
	}
	r.mu.Unlock()
}

// modernMeta is the _meta envelope of a 2026-07-28 request.
const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},` +
	`"io.modelcontextprotocol/clientInfo":{"name":"loadgen","version":"1"}}`

func (r *runner) session(ctx context.Context, n int) error {
	if r.cfg.Modern {
		return r.modernClient(ctx, n)
	}
	t0 := time.Now()
	init := fmt.Sprintf(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":%q,"capabilities":{},"clientInfo":{"name":"loadgen","version":"1"}}}`, r.cfg.Version)
	sid, resp, err := r.exchange(ctx, "", init, "0")
	initTime := time.Since(t0)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	if sid == "" {
		return errors.New("initialize: no Mcp-Session-Id")
	}
	if !bytes.Contains(resp, []byte(`"result"`)) {
		return fmt.Errorf("initialize: %s", trunc(resp))
	}
	if err := r.notify(ctx, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		return err
	}
	args, _ := json.Marshal(r.cfg.Args)
	if r.cfg.Args == nil {
		args = []byte("{}")
	}
	for i := 1; i <= r.cfg.Calls; i++ {
		id := strconv.Itoa(n*1_000_000 + i)
		body := `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + r.cfg.Tool + `","arguments":` + string(args) + `}}`
		start := time.Now()
		_, answer, err := r.exchange(ctx, sid, body, id)
		d := time.Since(start)
		r.calls.Add(1)
		if err != nil {
			r.failure(fmt.Sprintf("session %d call %d: %v", n, i, err))
			continue
		}
		if !bytes.Contains(answer, []byte(`"result"`)) || bytes.Contains(answer, []byte(`"isError":true`)) {
			r.failure(fmt.Sprintf("session %d call %d: %s", n, i, trunc(answer)))
			continue
		}
		r.mu.Lock()
		r.lat = append(r.lat, d)
		r.mu.Unlock()
		if r.cfg.OnProgress != nil {
			r.cfg.OnProgress(r.calls.Load())
		}
	}
	if r.cfg.SkipDelete {
		r.mu.Lock()
		r.open = append(r.open, sid)
		r.mu.Unlock()
	} else {
		req, _ := http.NewRequestWithContext(ctx, "DELETE", r.cfg.URL, nil)
		r.headers(req, sid)
		resp, err := r.client.Do(req)
		if err != nil {
			return fmt.Errorf("DELETE: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("DELETE: %d", resp.StatusCode)
		}
	}
	r.mu.Lock()
	r.setup = append(r.setup, time.Since(t0))
	r.inits = append(r.inits, initTime)
	r.mu.Unlock()
	r.ok.Add(1)
	return nil
}

// modernClient makes the calls of one 2026-07-28 client.
func (r *runner) modernClient(ctx context.Context, n int) error {
	args, _ := json.Marshal(r.cfg.Args)
	if r.cfg.Args == nil {
		args = []byte("{}")
	}
	for i := 1; i <= r.cfg.Calls; i++ {
		id := strconv.Itoa(n*1_000_000 + i)
		body := `{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":"` + r.cfg.Tool + `","arguments":` + string(args) + `,` + modernMeta + `}}`
		start := time.Now()
		_, answer, err := r.exchange(ctx, "", body, id)
		d := time.Since(start)
		r.calls.Add(1)
		if err != nil {
			r.failure(fmt.Sprintf("client %d call %d: %v", n, i, err))
			continue
		}
		if !bytes.Contains(answer, []byte(`"resultType":"complete"`)) || bytes.Contains(answer, []byte(`"isError":true`)) {
			r.failure(fmt.Sprintf("client %d call %d: %s", n, i, trunc(answer)))
			continue
		}
		r.mu.Lock()
		r.lat = append(r.lat, d)
		r.mu.Unlock()
	}
	r.ok.Add(1)
	return nil
}

func (r *runner) headers(req *http.Request, sid string) {
	for k, v := range r.cfg.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", r.cfg.Version)
	if r.cfg.Modern {
		req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "tools/call")
		req.Header.Set("Mcp-Name", r.cfg.Tool)
	}
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
}

func (r *runner) notify(ctx context.Context, sid, body string) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", r.cfg.URL, strings.NewReader(body))
	r.headers(req, sid)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("notification: status %d", resp.StatusCode)
	}
	return nil
}

// exchange POSTs a request and returns the session id header and the
// answer with the given id, following the stream (and resuming it) as
// needed.
func (r *runner) exchange(ctx context.Context, sid, body, id string) (string, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, "POST", r.cfg.URL, strings.NewReader(body))
	r.headers(req, sid)
	req.Header.Set("Content-Type", "application/json")
	// Lets Go's transport resend the request if a reused keep-alive
	// connection turns out to be closed before any answer arrived (a server
	// closing idle connections on reload races with a new request on
	// them); the JSON-RPC id makes the request identifiable.
	req.Header.Set("Idempotency-Key", sid+"/"+id)
	resp, err := r.client.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	newSID := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		sid = newSID
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return newSID, nil, fmt.Errorf("status %d: %s", resp.StatusCode, trunc(b))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return newSID, nil, err
		}
		if err := checkID(b, id); err != nil {
			return newSID, nil, err
		}
		return newSID, b, nil
	}
	answer, lastID, err := readUntil(resp.Body, id)
	for attempt := 0; answer == nil && err == nil && lastID != "" && attempt < 5; attempt++ {
		// the stream ended early (reload, restart): resume it
		r.resumed.Add(1)
		answer, lastID, err = r.resume(ctx, sid, lastID, id)
	}
	if err != nil {
		return newSID, nil, err
	}
	if answer == nil {
		return newSID, nil, errors.New("stream ended without the answer")
	}
	return newSID, answer, nil
}

func (r *runner) resume(ctx context.Context, sid, lastID, id string) ([]byte, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", r.cfg.URL, nil)
	r.headers(req, sid)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, "", fmt.Errorf("resume: status %d: %s", resp.StatusCode, trunc(b))
	}
	answer, newLast, err := readUntil(resp.Body, id)
	if newLast == "" {
		newLast = lastID
	}
	return answer, newLast, err
}

// readUntil reads SSE events until the answer with id; it returns the last
// event id seen.
func readUntil(body io.Reader, id string) ([]byte, string, error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var lastID string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				if isAnswer(data, id) {
					if err := checkID(data, id); err != nil {
						return nil, lastID, err
					}
					return data, lastID, nil
				}
				data = data[:0]
			}
		case bytes.HasPrefix(line, []byte("id: ")):
			lastID = string(line[4:])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[6:]...)
		}
	}
	return nil, lastID, nil
}

// isAnswer reports whether a message is a response (not a request or
// notification from the server) to id.
func isAnswer(msg []byte, id string) bool {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Method != "" || m.ID == nil {
		return false
	}
	return true
}

func checkID(msg []byte, id string) error {
	var m struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		return fmt.Errorf("answer is not JSON: %s", trunc(msg))
	}
	if string(m.ID) != id {
		return fmt.Errorf("MISMATCH: answer for id %s on the stream of id %s", m.ID, id)
	}
	return nil
}

func trunc(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// Delete ends sessions left open with SkipDelete.
func Delete(ctx context.Context, cfg Config, ids []string) error {
	client := cfg.Client
	if client == nil {
		client = http.DefaultClient
	}
	for _, sid := range ids {
		req, _ := http.NewRequestWithContext(ctx, "DELETE", cfg.URL, nil)
		for k, v := range cfg.Header {
			req.Header[k] = v
		}
		req.Header.Set("Mcp-Session-Id", sid)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil
}
