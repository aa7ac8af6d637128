package stdiobridge_test

// Regression tests for the security review (issue 10), through a real
// Caddy wherever the item is about HTTP. Each names its item.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// firstStreamID returns the stream id of an event id "<stream>_<seq>".
func firstStreamID(t *testing.T, evs []sseEvent) string {
	t.Helper()
	for _, e := range evs {
		if i := strings.LastIndexByte(e.id, '_'); i > 0 {
			return e.id[:i]
		}
	}
	t.Fatalf("no event id in %v", evs)
	return ""
}

// A Last-Event-ID past the stream (or past int64) is refused with
// 400 and freezes nothing: other sessions are served and Caddy stops.
func TestLastEventIDOverflow(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	evs := readEvents(t, cl.do("POST", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t"}}`, nil))
	stream := firstStreamID(t, evs)
	for _, seq := range []string{"9223372036854775808", "18446744073709551615", "18446744073709551614", "2", "99"} {
		status, body := cl.status("GET", "", func(r *http.Request) { r.Header.Set("Last-Event-ID", stream+"_"+seq) })
		if status != 400 || !strings.Contains(body, "Last-Event-ID") {
			t.Errorf("Last-Event-ID %s_%s: %d %s", stream, seq, status, body)
		}
	}
	// the valid ids still replay
	resp := cl.do("GET", "", func(r *http.Request) { r.Header.Set("Last-Event-ID", stream+"_0") })
	if msgs := messages(readEvents(t, resp)); len(msgs) != 1 || !strings.Contains(msgs[0], `"id":7`) {
		t.Fatalf("resume from _0: %v", msgs)
	}
	other := newClient(t, c.URL+"/mcp")
	other.initialize()
	if msgs := other.call("1", "ping", ""); len(msgs) != 1 {
		t.Fatalf("another session after the hostile ids: %v", msgs)
	}
	if msgs := cl.call("8", "ping", ""); len(msgs) != 1 {
		t.Fatalf("the same session after the hostile ids: %v", msgs)
	}
	stopWithin(t, c, time.Minute)
}

// stopWithin stops Caddy and fails the test if that hangs.
func stopWithin(t *testing.T, c *caddyrun.Caddy, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		c.Stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("caddy stop did not return within %s", d)
	}
}

// A child gets exactly stdin, stdout and stderr, even when Caddy
// holds descriptors without close-on-exec (socket activation, a pipe).
func TestChildInheritsNoDescriptors(t *testing.T) {
	marker, err := os.CreateTemp(t.TempDir(), "inherited-*")
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	fileFD, err := syscall.Dup(int(marker.Fd())) // dup: no close-on-exec
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fileFD)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	sockFD, err := syscall.Dup(int(lf.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(sockFD)
	sockTarget, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(sockFD))

	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "fds", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	msgs := cl.call("1", "tools/call", `{"name":"t"}`)
	if len(msgs) != 1 {
		t.Fatalf("fds: %v", msgs)
	}
	got := decode(t, msgs[0])
	text := got["result"].(map[string]any)["content"].([]any)[0].(map[string]any)["text"].(string)
	t.Logf("child's descriptors above 2: %q", text)
	if strings.Contains(text, marker.Name()) || strings.Contains(text, sockTarget) {
		t.Fatalf("the child inherited Caddy's descriptors: %q (file %s, socket %s)", text, marker.Name(), sockTarget)
	}
}

// A stateless child holds its max_sessions slot until it ends.
func TestStatelessRespectsMaxSessions(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "silent", "\n\t\tstateless\n\t\tmax_sessions 2\n\t\tmax_sessions_per_user 2"))
	call := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", c.URL+"/mcp",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		return http.DefaultClient.Do(req)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var held []*http.Response
	for i := 0; i < 2; i++ {
		resp, err := call(ctx) // a silent tool: the answer never comes
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("call %d: %v %v", i, err, resp)
		}
		held = append(held, resp)
	}
	for i := 0; i < 5; i++ {
		resp, err := call(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("call beyond max_sessions: %d", resp.StatusCode)
		}
	}
	if n := processesMatching(self(t)); n != 2 {
		t.Fatalf("%d children for max_sessions 2", n)
	}
	cancel() // the clients go away: their children end and give back the slots
	for _, r := range held {
		r.Body.Close()
	}
	waitNoProcesses(t, self(t), 30*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := call(ctx)
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			cancel()
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatal("slots never came back")
		}
	}
}

// One principal cannot take every slot, nor start sessions at any
// rate.
func TestPerUserLimits(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSiteWith(t, is, authOpts{Mode: "plain",
		Stdio: "\n\t\t\tmax_sessions 4\n\t\t\tmax_sessions_per_user 2",
		Site: `	mcp_stdio /anon {
		command ` + self(t) + `
		env CADDYMCP_FAKE_SERVER plain
		initialize_rate 1
		shutdown_timeout 500ms
	}
`}))
	aud := c.URL + "/mcp"
	client := func(sub string) *mcpClient {
		cl := newClient(t, aud)
		cl.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is.Claims(sub, aud, ""), nil))
		return cl
	}
	initBody := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	// alice's sessions hold GET streams (idle ones would be ended for a new one)
	for range 2 {
		a := client("alice")
		a.initialize()
		get := a.do("GET", "", nil)
		defer get.Body.Close()
	}
	resp := client("alice").do("POST", initBody, nil)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("alice's third session: %d", resp.StatusCode)
	}
	client("bob").initialize() // alice did not take bob's slots
	client("bob").initialize()
	// initialize_rate 1: a burst of 2, then refused
	anon := newClient(t, c.URL+"/anon")
	codes := []int{}
	for i := 0; i < 4; i++ {
		resp := anon.do("POST", initBody, nil)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if codes[0] != 200 || codes[1] != 200 || codes[3] != 429 {
		t.Fatalf("initialize at once, 4 times with initialize_rate 1: %v", codes)
	}
}

// A batch cannot outrun the stream's buffer: over 1000 messages it
// is refused with a clear error; up to that every request is answered.
func TestBatchLength(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", "\n\t\tmax_message_size 8MiB"))
	cl := newClient(t, c.URL+"/mcp")
	cl.version = "2025-03-26"
	cl.initialize()
	batch := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = `{"jsonrpc":"2.0","id":` + strconv.Itoa(i) + `,"method":"ping"}`
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	status, body := cl.status("POST", batch(80000), nil)
	if status != 400 || !strings.Contains(body, "batch of 80000 messages; at most 1000") {
		t.Fatalf("80 000 pings: %d %.200s", status, body)
	}
	msgs := messages(readEvents(t, cl.do("POST", batch(1000), nil)))
	if len(msgs) != 1000 {
		t.Fatalf("1000 pings: %d answers", len(msgs))
	}
}

// A client that stops reading (a zero receive window, in the
// middle of a message larger than every socket buffer) cannot hold up
// Caddy's stop. Caddy waits for active connections only when the process
// exits, so this runs the built binary (make test sets CADDYMCP_CADDY_BIN)
// and stops it with SIGINT.
func TestNonReadingClientDoesNotHoldUpStop(t *testing.T) {
	bin := builtCaddy(t)
	port := caddyrun.FreePort(t)
	dir := t.TempDir()
	cf := dir + "/Caddyfile"
	if err := os.WriteFile(cf, []byte(`{
	admin off
	auto_https off
}
:`+strconv.Itoa(port)+` {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER giant
		max_message_size 64MiB
		shutdown_timeout 500ms
	}
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp"
	awaitListen(t, port, func() string { return "" })
	cl := newClient(t, url)
	cl.initialize()
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := `{"jsonrpc":"2.0","id":"giant","method":"tools/call","params":{"name":"t"}}`
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"+
		"Mcp-Session-Id: %s\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s", cl.session, len(body), body)
	// read until the 32 MiB event has begun, so the handler is surely in
	// the middle of writing it, then stop reading
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if strings.HasPrefix(line, "id: ") && !strings.HasSuffix(strings.TrimSpace(line), "_0") {
			break // the id line of the giant event; its data follows
		}
	}
	if _, err := io.ReadFull(br, make([]byte, 64<<10)); err != nil {
		t.Fatalf("stream: %v", err)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(40 * time.Second):
		// each stream write has a 10 s deadline; without one, this client
		// held the stop for a minute and more
		t.Fatal("caddy did not stop within 40s: a client that does not read holds it up")
	}
}

// A grandchild that left the process group (setsid) does not
// survive its session.
func TestSetsidGrandchildEndsWithSession(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "setsid", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	deadline := time.Now().Add(10 * time.Second)
	for processesMatching("sleep 6124."+runTag) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the grandchild never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, _ := cl.status("DELETE", "", nil); status != 204 {
		t.Fatalf("DELETE: %d", status)
	}
	waitNoProcesses(t, "sleep 6124."+runTag, 30*time.Second)
}

// Sessions that end together (here: Caddy stops) are swept in a batch, one
// read of every process's environment per pass for all of them: every
// session's setsid grandchild is still found and ended.
func TestSetsidGrandchildrenEndWhenManySessionsEndTogether(t *testing.T) {
	const sessions = 12
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "setsid", "\n\t\tmax_sessions 50\n\t\tmax_sessions_per_user 50\n\t\tinitialize_rate 1000"))
	for range sessions {
		newClient(t, c.URL+"/mcp").initialize()
	}
	deadline := time.Now().Add(20 * time.Second)
	for processesMatching("sleep 6124."+runTag) < sessions {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d grandchildren started", processesMatching("sleep 6124."+runTag), sessions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Stop()
	waitNoProcesses(t, "sleep 6124."+runTag, 30*time.Second)
}

// Prewarm can be switched off by a reload, and a reload
// that Caddy rejects changes nothing of the running route.
func TestReloadPublishesSettingsOnlyWhenTheConfigRuns(t *testing.T) {
	site := func(extra string) string {
		return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env ` + mcpserver.FakeEnv + ` plain
		shutdown_timeout 500ms` + extra + `
	}
}
`
	}
	c := caddyrun.StartCaddyfile(t, "", site("\n\t\tprewarm 2\n\t\tmax_sessions 3\n\t\tmax_sessions_per_user 3"))
	first := newClient(t, c.URL+"/mcp")
	first.initialize() // the first connection warms the pool
	deadline := time.Now().Add(30 * time.Second)
	for processesMatching(self(t)) != 3 { // the session's child and 2 warm ones
		if time.Now().After(deadline) {
			t.Fatalf("%d processes, want 1 session + 2 prewarmed", processesMatching(self(t)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// a config that fails to load after provisioning this route with
	// max_sessions 1 and a 1ms idle timeout (a later handler is invalid)
	err := c.TryLoadCaddyfile("", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		mcp_stdio {
			command `+self(t)+`
			env `+mcpserver.FakeEnv+` plain
			shutdown_timeout 500ms
			max_sessions 1
			max_sessions_per_user 1
			session_idle_timeout 1ms
		}
		mcp_auth {
			issuer not-a-url
		}
	}
}
`)
	if err == nil || !strings.Contains(err.Error(), "issuer") {
		t.Fatalf("the broken config: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	// a negative check, so a sleep (kept): had the rejected config's 1ms
	// session_idle_timeout taken effect, the reaper (a pass every 10ms)
	// would have ended first's session by now; no event says it did not
	time.Sleep(100 * time.Millisecond)
	if msgs := first.call("4", "ping", ""); len(msgs) != 1 {
		t.Fatalf("first session after the failed reload: %v", msgs)
	}
	second := newClient(t, c.URL+"/mcp")
	second.initialize() // max_sessions is still 3
	// the same process config without prewarm: the warm children end
	c.LoadCaddyfile("", site("\n\t\tmax_sessions 3\n\t\tmax_sessions_per_user 3"))
	http.DefaultClient.CloseIdleConnections()
	third := newClient(t, c.URL+"/mcp")
	third.initialize()
	deadline = time.Now().Add(30 * time.Second)
	for processesMatching(self(t)) != 3 { // three sessions, no warm child
		if time.Now().After(deadline) {
			t.Fatalf("%d processes after prewarm was switched off, want the 3 sessions' only", processesMatching(self(t)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, cl := range []*mcpClient{first, second, third} {
		if msgs := cl.call("5", "ping", ""); len(msgs) != 1 {
			t.Fatalf("session after the reloads: %v", msgs)
		}
	}
}

// Initialize requests caught by reloads that change the
// route leave no child behind.
func TestReloadsDuringInitializeOrphanNothing(t *testing.T) {
	site := func(n int) string {
		return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env ` + mcpserver.FakeEnv + ` plain
		env GENERATION ` + strconv.Itoa(n) + `
		shutdown_timeout 500ms
		max_sessions_per_user 100
		initialize_rate 100000
	}
}
`
	}
	c := caddyrun.StartCaddyfile(t, "", site(0))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", c.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				resp, err := client.Do(req)
				if err != nil {
					continue // a reload closed the connection
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	for n := 1; n <= 30; n++ {
		c.LoadCaddyfile("", site(n))
	}
	close(stop)
	wg.Wait()
	t.Logf("initialize statuses during 30 changing reloads: %v", statuses)
	for code := range statuses {
		if code != 200 && code != 503 {
			t.Errorf("initialize answered %d", code)
		}
	}
	// the route goes away: every child must go with it
	c.LoadCaddyfile("", `
:{{PORT}} {
	bind 127.0.0.1
	respond "no route"
}
`)
	waitNoProcesses(t, self(t), 30*time.Second)
}

// An open stream ends when the token that opened it expires.
func TestStreamEndsWhenTokenExpires(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSiteWith(t, is, authOpts{Mode: "plain", Auth: "\n\t\t\tleeway 1s"}))
	aud := c.URL + "/mcp"
	// the session starts with a token of an hour; the GET stream carries
	// one of the same user that expires 2 s after the session is up (a
	// loaded machine may take seconds to start the child)
	cl := newClient(t, aud)
	cl.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is.Claims("carol", aud, ""), nil))
	cl.initialize()
	claims := is.Claims("carol", aud, "")
	claims["exp"] = time.Now().Add(2 * time.Second).Unix()
	cl.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, claims, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", aud, nil)
	req.Header = http.Header{"Accept": {"text/event-stream"}, "Mcp-Session-Id": {cl.session},
		"Mcp-Protocol-Version": {"2025-11-25"}, "Authorization": cl.header["Authorization"]}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET stream: %v %v", err, resp)
	}
	_, err = io.Copy(io.Discard, resp.Body) // returns when the bridge ends the stream
	resp.Body.Close()
	if err != nil || ctx.Err() != nil {
		t.Fatalf("the stream did not end at the token's expiry: %v (ctx %v)", err, ctx.Err())
	}
	if time.Now().Unix() < claims["exp"].(int64) {
		t.Fatalf("the stream ended before the token expired")
	}
}

// Duplicate and case-variant members are refused, so the child
// can never see the client's raw id beside the rewritten one.
func TestAmbiguousMembersRefused(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"ID":2,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"Method":"tools/call","method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"\u0069d":2,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","jſonrpc":"1.0"}`,
		`{"jsonrpc":"2.0","id":1,"method":"ping","params":{},"params":{"x":1}}`,
	} {
		status, resp := cl.status("POST", body, nil)
		if status != 400 || !strings.Contains(resp, "-32600") {
			t.Errorf("%s: %d %s", body, status, resp)
		}
	}
	if msgs := cl.call("9", "ping", ""); len(msgs) != 1 {
		t.Fatalf("session after refused messages: %v", msgs)
	}
}

// A spawn failure is logged; the client gets a generic error, not the
// server's paths.
func TestSpawnFailureIsGeneric(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command /does/not/exist/mcp-server
	}
}
`)
	cl := newClient(t, c.URL+"/mcp")
	status, body := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`, nil)
	if status != 500 || strings.Contains(body, "/does/not") || strings.Contains(body, "fork/exec") {
		t.Fatalf("%d %s", status, body)
	}
}

// A reply too large to relay is answered by an error naming the size, even
// when its id comes after the payload.
func TestOversizedReplyWithIDLast(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "hugelast", "\n\t\tmax_message_size 1MiB"))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	msgs := cl.call("42", "tools/call", `{"name":"t"}`)
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"id":42,"error":{"code":-32603,"message":"the server's response of`) {
		t.Fatalf("oversized answer: %v", truncateAll(msgs))
	}
}

// A request in flight when its route is removed gets an answer at once.
func TestInFlightRequestAnsweredWhenRouteRemoved(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "silent", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":"inflight","method":"tools/call","params":{"name":"t"}}`, nil)
	got := make(chan []string, 1)
	go func() { got <- messages(readEvents(t, resp)) }()
	c.LoadCaddyfile("", `
:{{PORT}} {
	bind 127.0.0.1
	respond "gone" 404
}
`)
	select {
	case msgs := <-got:
		if len(msgs) != 1 || !strings.Contains(msgs[0], `"id":"inflight","error"`) || !strings.Contains(msgs[0], "removed or changed") {
			t.Fatalf("in-flight request: %v", msgs)
		}
	case <-time.After(time.Minute):
		t.Fatal("the in-flight request got no answer")
	}
}

// inherit_env adds to the default set: PATH survives.
func TestInheritEnvKeepsDefaults(t *testing.T) {
	t.Setenv("NODE_EXTRA_CA_CERTS", "/tmp/ca.pem")
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "env", "\n\t\tinherit_env NODE_EXTRA_CA_CERTS"))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	env := strings.Join(cl.call("1", "tools/call", `{"name":"t"}`), "")
	if !strings.Contains(env, "NODE_EXTRA_CA_CERTS=/tmp/ca.pem") || !strings.Contains(env, "PATH=") {
		t.Fatalf("child env lacks NODE_EXTRA_CA_CERTS or PATH: %.500s", env)
	}
}

// nonLoopbackIP returns an IPv4 address of this machine that is not
// loopback, or "" (the test is then skipped).
func nonLoopbackIP() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// allowed_hosts protects listeners that are not loopback: the
// Host, and an Origin's host, must be listed.
func TestAllowedHostsOffLoopback(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == "" {
		t.Skip("no non-loopback address to listen on")
	}
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1 `+ip+`
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER plain
		allowed_hosts mcp.example.com *.tools.example.com
		shutdown_timeout 500ms
	}
}
`)
	url := "http://" + ip + ":" + strconv.Itoa(c.Port) + "/mcp"
	try := func(host, origin string) int {
		cl := newClient(t, url)
		status, _ := cl.status("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`,
			func(r *http.Request) {
				r.Host = host
				if origin != "" {
					r.Header.Set("Origin", origin)
				}
			})
		return status
	}
	for _, tc := range []struct {
		host, origin string
		want         int
	}{
		{"mcp.example.com", "", 200},
		{"MCP.example.com:443", "", 200},
		{"a.tools.example.com", "", 200},
		{"mcp.example.com", "http://mcp.example.com", 200},
		{"evil.example", "", 403},
		{"a.b.tools.example.com", "", 403},
		{"tools.example.com", "", 403},
		{ip, "", 403},
		{"mcp.example.com", "http://evil.example", 403},
		{"mcp.example.com", "null", 403},
	} {
		if got := try(tc.host, tc.origin); got != tc.want {
			t.Errorf("Host %q Origin %q: %d, want %d", tc.host, tc.origin, got, tc.want)
		}
	}
}

// Sessions are bound to issuer and subject, and identical
// mcp_stdio blocks on two sites keep their own sessions and limits.
func TestSessionsBoundToIssuerAndSubject(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is1 := jwkstest.NewIssuer(t, k)
	is2 := jwkstest.NewIssuer(t, k)
	block := func(is *jwkstest.Issuer, host string) string {
		return authSiteWith(t, is, authOpts{Host: host, Mode: "plain", Stdio: "\n\t\t\tmax_sessions 1"})
	}
	c := caddyrun.StartCaddyfile(t, "", block(is1, "127.0.0.1")+block(is2, "localhost"))
	port := strconv.Itoa(c.Port)
	one := newClient(t, "http://127.0.0.1:"+port+"/mcp")
	one.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is1.Claims("sam", "http://127.0.0.1:"+port+"/mcp", ""), nil))
	one.initialize()
	// the same sub from another issuer, on the other site: a session of its
	// own (its own max_sessions 1), and no access to the first one
	two := newClient(t, "http://localhost:"+port+"/mcp")
	two.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is2.Claims("sam", "http://localhost:"+port+"/mcp", ""), nil))
	two.initialize()
	two.session = one.session
	if status, _ := two.status("POST", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil); status != 404 {
		t.Fatalf("another issuer's sam used sam's session: %d", status)
	}
}

// A Caddy out of file descriptors (each session holds its child's pipes)
// answers initialize 503 with Retry-After, logs why, and serves again once
// sessions end: the limit of the machine is not the command's fault (500).
// Runs the built binary under a lowered descriptor limit.
func TestOutOfDescriptorsIs503(t *testing.T) {
	bin := builtCaddy(t)
	port := caddyrun.FreePort(t)
	dir := t.TempDir()
	cf := dir + "/Caddyfile"
	if err := os.WriteFile(cf, []byte(`{
	admin off
	auto_https off
	storage file_system `+dir+`/storage
}
:`+strconv.Itoa(port)+` {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER plain
		instance_id fd-test
		max_sessions 1000
		max_sessions_per_user 1000
		initialize_rate 1000000
		shutdown_timeout 500ms
	}
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// soft and hard (sh sets both): Go raises the soft limit to the hard one
	cmd := exec.Command("sh", "-c", `ulimit -n 96 && exec "$0" run --config "$1" --adapter caddyfile`, bin, cf)
	logFile, err := os.Create(dir + "/caddy.log") // a file: written by Caddy itself, read here
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	logs := func() string { b, _ := os.ReadFile(dir + "/caddy.log"); return string(b) }
	deadline := time.Now().Add(30 * time.Second) // listening, and sessions again later
	awaitListen(t, port, logs)
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp"
	var open []*mcpClient
	refused := false
	for i := 0; i < 60 && !refused; i++ {
		cl := newClient(t, url)
		resp := cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			cl.session = resp.Header.Get("Mcp-Session-Id")
			open = append(open, cl)
		case 503:
			if resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"code":-32011`) {
				t.Fatalf("503 without Retry-After or -32011: %s", b)
			}
			refused = true
		default:
			t.Fatalf("initialize %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if !refused || len(open) == 0 {
		t.Fatalf("%d sessions opened, refused: %v", len(open), refused)
	}
	if !strings.Contains(logs(), "out of descriptors") {
		t.Errorf("the log does not say why:\n%s", logs())
	}
	// sessions end: descriptors come back, a new session starts
	for _, cl := range open[:len(open)/2] {
		resp := cl.do("DELETE", "", nil)
		resp.Body.Close()
	}
	var status int
	for time.Now().Before(deadline) {
		resp := newClient(t, url).do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if status = resp.StatusCode; status == 200 {
			break
		}
		time.Sleep(50 * time.Millisecond) // a child's end is asynchronous: its pipes close as it exits
	}
	if status != 200 {
		t.Fatalf("after sessions ended, initialize: %d", status)
	}
	t.Logf("%d sessions under a limit of 96 descriptors, then 503", len(open))
}
