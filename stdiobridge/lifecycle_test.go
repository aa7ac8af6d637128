package stdiobridge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

func TestCancelWhenClientGoesAway(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "silent", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.version = "2025-06-18" // cannot resume: cancelled at once
	cl.initialize()
	get := cl.do("GET", "", nil)
	defer get.Body.Close()
	// the GET stream, line by line, until the child's report of the
	// cancellation (a notifications/message on the standalone stream)
	reported := make(chan string, 1)
	go func() {
		var seen strings.Builder
		sc := bufio.NewScanner(get.Body)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"data":"cancelled `) {
				reported <- ""
				return
			}
			seen.WriteString(sc.Text() + "\n")
		}
		reported <- seen.String()
	}()

	ctx, cancel := context.WithCancel(context.Background())
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":"never","method":"tools/call","params":{"name":"t"}}`, func(r *http.Request) {
		*r = *r.WithContext(ctx)
	})
	if resp.StatusCode != 200 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	// the headers come after the call was written to the child, so the
	// notifications/cancelled that the client's going away causes follows
	// it on the child's stdin
	cancel()
	resp.Body.Close()

	select {
	case got := <-reported:
		if got != "" {
			t.Fatalf("the server was not told about the cancellation; GET stream: %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server was not told about the cancellation within 5s")
	}
	cl.status("DELETE", "", nil)
}

func TestResumeWithLastEventID(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "slow", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"t"}}`, nil)
	buf := make([]byte, 256)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close() // the stream breaks right after the priming event
	first := string(buf[:n])
	if !strings.HasPrefix(first, "id: ") {
		t.Fatalf("no priming event: %q", first)
	}
	lastID := strings.TrimSpace(strings.SplitN(first[4:], "\n", 2)[0])
	resumed := cl.do("GET", "", func(r *http.Request) { r.Header.Set("Last-Event-ID", lastID) })
	msgs := messages(readEvents(t, resumed))
	if len(msgs) != 1 || !strings.Contains(msgs[0], `"id":42,`) || decode(t, msgs[0])["result"] == nil || !strings.Contains(msgs[0], "slow ok") {
		t.Fatalf("resumed stream: %v", msgs)
	}
}

func TestSessionBoundToUser(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "ES256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSiteWith(t, is, authOpts{Mode: "env", Stdio: "\n\t\t\tenv MCP_USER {http.auth.user.id}"}))
	aud := c.URL + "/mcp"
	alice := newClient(t, aud)
	alice.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is.Claims("alice", aud, ""), nil))
	alice.initialize()
	env := strings.Join(alice.call("1", "tools/call", `{"name":"t"}`), "")
	if !strings.Contains(env, "MCP_USER=alice") {
		t.Fatalf("child of alice's session lacks MCP_USER=alice")
	}
	if strings.Contains(env, "Bearer") || strings.Contains(env, alice.header.Get("Authorization")[7:]) {
		t.Fatal("the client's token reached the child's environment")
	}
	bob := newClient(t, aud)
	bob.header.Set("Authorization", "Bearer "+jwkstest.Mint(t, k, is.Claims("bob", aud, ""), nil))
	bob.session = alice.session
	for _, m := range []string{"POST", "GET", "DELETE"} {
		body := ""
		if m == "POST" {
			body = `{"jsonrpc":"2.0","id":2,"method":"ping"}`
		}
		if status, _ := bob.status(m, body, nil); status != 404 {
			t.Fatalf("bob's %s with alice's session: %d, want 404", m, status)
		}
	}
	if msgs := alice.call("3", "ping", ""); len(msgs) != 1 {
		t.Fatalf("alice after bob's attempts: %v", msgs)
	}
}

func TestReloadKeepsOrEndsSessions(t *testing.T) {
	site := func(mode, extra string) string { return fakeSite(t, mode, "") + extra }
	c := caddyrun.StartCaddyfile(t, "", site("plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()

	// an open GET stream must not hold up the reload
	get := cl.do("GET", "", nil)
	streamEnded := make(chan struct{})
	go func() { io.Copy(io.Discard, get.Body); get.Body.Close(); close(streamEnded) }()

	start := time.Now()
	c.LoadCaddyfile("", site("plain", "\nhttp://127.0.0.1:{{PORT}}/other {\n\trespond other\n}\n"))
	// bounds against a hang, not a speed test: a busy machine is slow
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("reload took %s with a GET stream open", d)
	}
	select {
	case <-streamEnded:
	case <-time.After(30 * time.Second):
		t.Fatal("GET stream of the old config did not end on reload")
	}
	// a request on a connection the old server accepted is served by the
	// old config, whose streams end at its shutdown (a client resumes them
	// with Last-Event-ID): the next call goes to the new server
	http.DefaultClient.CloseIdleConnections()
	if msgs := cl.call("2", "tools/call", `{"name":"t"}`); len(msgs) != 1 || !strings.Contains(msgs[0], `"text":"ok"`) {
		t.Fatalf("session after reload with the route unchanged: %v", msgs)
	}
	if n := processesMatching(self(t)); n != 1 {
		t.Fatalf("%d server processes after reload, want the same 1", n)
	}

	c.LoadCaddyfile("", site("plain,changed", ""))
	http.DefaultClient.CloseIdleConnections() // the old server closed them
	if status, _ := cl.status("POST", `{"jsonrpc":"2.0","id":3,"method":"ping"}`, nil); status != 404 {
		t.Fatalf("session after its route changed: %d, want 404", status)
	}
	waitNoProcesses(t, self(t), 30*time.Second) // the old session's child ended
	cl.session = ""
	cl.initialize()
	start = time.Now()
	get = cl.do("GET", "", nil)
	defer get.Body.Close()
	c.Stop()
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("stop took %s with a GET stream open", d)
	}
	waitNoProcesses(t, self(t), 30*time.Second)
}

// 200 sessions, each child with a grandchild in its process group: all
// of them start, they hold no OS thread each, and none is left when half
// end by DELETE and the rest when Caddy stops.
func TestSoakNoProcessLeftBehind(t *testing.T) {
	caddyrun.Soak(t, "200 sessions' children and grandchildren all end (DELETE, stop), without an OS thread per child")
	const sessions = 200
	marker := "sleep 6123." + runTag
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command sh -c "`+marker+` & exec $0" `+self(t)+`
		env CADDYMCP_FAKE_SERVER plain
		shutdown_timeout 1s
		max_sessions 400
		max_sessions_per_user 400
		initialize_rate 1000000
	}
}
`)
	threadsBefore := threads(t)
	clients := make([]*mcpClient, sessions)
	var wg sync.WaitGroup
	errs := make(chan string, sessions)
	sem := make(chan struct{}, 16)
	for i := range clients {
		clients[i] = newClient(t, c.URL+"/mcp")
		wg.Add(1)
		go func(cl *mcpClient, i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			resp := cl.do("POST", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`, nil)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cl.session = resp.Header.Get("Mcp-Session-Id")
			if resp.StatusCode != 200 || cl.session == "" {
				errs <- fmt.Sprintf("session %d: %d", i, resp.StatusCode)
			}
		}(clients[i], i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if n := processesMatching(marker); n != sessions {
		t.Fatalf("%d grandchildren running, want %d", n, sessions)
	}
	// a live child holds no OS thread (it is reaped through its pidfd, in
	// the netpoller): os/exec's Wait held one per child, so Go's limit of
	// 10 000 threads would have ended Caddy near 10 000 children
	if runtime.GOOS == "linux" {
		if grew := threads(t) - threadsBefore; grew >= sessions/2 {
			t.Fatalf("%d sessions added %d OS threads", sessions, grew)
		} else {
			t.Logf("%d sessions added %d OS threads", sessions, grew)
		}
	}
	// half end by DELETE, the rest when Caddy stops
	for _, cl := range clients[:sessions/2] {
		if status, _ := cl.status("DELETE", "", nil); status != 204 {
			t.Fatalf("DELETE: %d", status)
		}
	}
	c.Stop()
	waitNoProcesses(t, marker, 10*time.Second)
	waitNoProcesses(t, self(t), 10*time.Second)
}

// threads is this process's OS thread count (/proc/self/status).
func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// A POST's stream waits briefly (firstEventWait) for its answer so that a
// quick answer leaves with the headers in one write; a slow answer must not
// keep the client waiting without headers: its stream opens first (chunked,
// with the priming event), and the answer follows.
func TestSlowAnswerOpensTheStreamFirst(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "slow", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	resp := cl.do("POST", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","arguments":{}}}`, nil)
	if resp.StatusCode != 200 || resp.ContentLength != -1 {
		t.Fatalf("a call answered after 500 ms: status %d, Content-Length %d; want 200 and a stream opened before the answer",
			resp.StatusCode, resp.ContentLength)
	}
	evs := readEvents(t, resp)
	if len(evs) != 2 || evs[0].id == "" || evs[0].data != "" || !strings.Contains(evs[1].data, `"result"`) {
		t.Fatalf("events %+v; want the priming event, then the answer", evs)
	}
}
