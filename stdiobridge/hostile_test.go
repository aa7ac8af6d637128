package stdiobridge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

func TestResponseForAnIDNeverSent(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":"never-sent","result":{}}`,
		`{"jsonrpc":"2.0","id":99999999999999999999,"error":{"code":-1,"message":"x"}}`,
	} {
		if status, b := cl.status("POST", body, nil); status != 202 {
			t.Fatalf("%s: %d %s", body, status, b)
		}
	}
	if msgs := cl.call("1", "ping", ""); len(msgs) != 1 {
		t.Fatalf("session after stray responses: %v", msgs)
	}
}

func TestSessionIDsAreUnguessable(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	seen := map[string]bool{}
	// the instance, the key, 160 bits from crypto/rand (base32), and the
	// MAC that authenticates the three (internal/instanceid)
	format := regexp.MustCompile(`^[A-Za-z0-9._:-]{1,100}~[A-Z2-7]{8}~[A-Z2-7]{32}~[A-Z2-7]{16}$`)
	for i := 0; i < 20; i++ {
		cl := newClient(t, c.URL+"/mcp")
		cl.initialize()
		if !format.MatchString(cl.session) || seen[cl.session] {
			t.Fatalf("session id %q (seen before: %v)", cl.session, seen[cl.session])
		}
		seen[cl.session] = true
		cl.status("DELETE", "", nil)
	}
}

func TestSlowlorisPOST(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "plain", ""))
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(c.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"slow","version":"1"}}}`
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n", len(body))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int32
	wg.Add(1)
	go func() { // one byte every 50ms, never the whole body
		defer wg.Done()
		for i := 0; i < len(body)-1; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{body[i]}); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	// the slow POST is under way (a few bytes of its body sent) before the
	// normal client starts
	caddyrun.WaitFor(t, 10*time.Second, func() bool { return sent.Load() >= 3 }, "the slow POST sent 3 bytes of its body")
	cl := newClient(t, c.URL+"/mcp")
	start := time.Now()
	cl.initialize()
	for i := 0; i < 5; i++ {
		cl.call(strconv.Itoa(i+2), "tools/call", `{"name":"t"}`)
	}
	// the calls completed while the slow POST still holds its connection
	// (its writer never sends the last byte): it blocked nobody
	t.Logf("6 calls beside a slowloris POST: %s", time.Since(start))
	if n := processesMatching(self(t)); n != 1 {
		t.Fatalf("%d server processes; the unfinished POST must not spawn one", n)
	}
	close(stop)
	wg.Wait()
}

func TestClientThatNeverReadsItsStream(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", fakeSite(t, "flood", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	_, heapBefore := settle()

	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(c.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096)
	}
	body := `{"jsonrpc":"2.0","id":"flood","method":"tools/call","params":{"name":"t"}}`
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"+
		"Mcp-Session-Id: %s\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s", cl.session, len(body), body)
	// the child writes ~20 MiB for a client that reads nothing; the bridge
	// must keep reading it (so the session stays responsive) with bounded memory.
	// A sleep, kept: nothing outside the bridge shows that the flood has
	// begun short of reading the stream, which this client must not do; it
	// gives the child time to start, so the ping below meets the flood.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	ping := cl.do("POST", `{"jsonrpc":"2.0","id":"p","method":"ping"}`, nil)
	got := false
	sc := bufio.NewScanner(ping.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"id":"p",`) && strings.Contains(sc.Text(), `"result"`) {
			got = true
			break
		}
	}
	ping.Body.Close()
	if !got {
		t.Fatal("no answer to ping while another stream is not read")
	}
	t.Logf("ping answered after %s", time.Since(start))
	_, heapAfter := settle()
	t.Logf("heap in use %d KiB -> %d KiB", heapBefore>>10, heapAfter>>10)
	if heapAfter > heapBefore+48<<20 {
		t.Fatalf("heap grew by %d MiB for one unread stream", (heapAfter-heapBefore)>>20)
	}
}

// children counts live child processes of this test process named comm.
func children(comm string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open || s[open+1:close] != comm {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) > 1 && fields[1] == me {
			n++
		}
	}
	return n
}

func openFDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

// 5000 sessions opened and abandoned (never DELETEd) are all reclaimed at
// session_idle_timeout: no child, descriptor or goroutine is left.
func TestSoakAbandonedSessionsAreReclaimed(t *testing.T) {
	caddyrun.Soak(t, "5000 abandoned sessions are reclaimed at session_idle_timeout, leaking no child, descriptor or goroutine")
	total := 5000
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command cat
		session_idle_timeout 1s
		max_sessions 5000
		max_sessions_per_user 5000
		initialize_rate 1000000
		shutdown_timeout 200ms
	}
}
`)
	fds := openFDs()
	goroutines, _ := settle()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	opened, refused := 0, 0
	peak := 0
	start := time.Now()
	for i := 0; i < total; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// a guard against a hang only: under load an initialize may
			// take long, and this test is about what is left afterwards
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", c.URL+"/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.CopyN(io.Discard, resp.Body, 64) // the priming event, then walk away
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case resp.StatusCode == 200 && resp.Header.Get("Mcp-Session-Id") != "":
				opened++
			case resp.StatusCode == 503:
				refused++
			default:
				t.Errorf("initialize: %d", resp.StatusCode)
			}
			if opened%500 == 0 {
				peak = max(peak, children("cat"))
			}
		}()
	}
	wg.Wait()
	t.Logf("%d sessions opened (%d refused at max_sessions) in %s; up to %d children at once", opened, refused, time.Since(start), peak)
	if opened+refused != total || opened < total/2 {
		t.Fatalf("opened %d, refused %d of %d", opened, refused, total)
	}
	deadline := time.Now().Add(30 * time.Second)
	for children("cat") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d children still running 30s after the last session was abandoned", children("cat"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	g, _ := settle()
	t.Logf("open fds %d -> %d, goroutines %d -> %d", fds, openFDs(), goroutines, g)
	if openFDs() > fds+16 {
		t.Errorf("file descriptors leaked: %d -> %d", fds, openFDs())
	}
	if g > goroutines+10 {
		t.Errorf("goroutines leaked: %d -> %d", goroutines, g)
	}
}

func TestStderrIsBoundedInTheLog(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	c := caddyrun.StartCaddyfile(t, "log {\n\t\toutput file "+logFile+"\n\t}", fakeSite(t, "stderr", ""))
	cl := newClient(t, c.URL+"/mcp")
	cl.initialize()
	// A sleep, kept: the child wrote its 5002 stderr lines before it
	// answered initialize, but up to a pipe's worth (64 KiB, most of them)
	// may still be unread by the bridge, and nothing shows when the limiter
	// has read them all; stopping earlier would log fewer.
	time.Sleep(500 * time.Millisecond)
	c.Stop()
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	longest, stderrLines, dropped := 0, 0, false
	for _, line := range strings.Split(string(raw), "\n") {
		longest = max(longest, len(line))
		if strings.Contains(line, `"msg":"server stderr"`) {
			stderrLines++
		}
		if strings.Contains(line, "server stderr lines dropped") {
			dropped = true
		}
	}
	t.Logf("%d stderr lines logged, longest log line %d bytes", stderrLines, longest)
	if longest > 4096 {
		t.Errorf("a log line of %d bytes: stderr lines must be bounded", longest)
	}
	if stderrLines == 0 || stderrLines > 400 || !dropped {
		t.Errorf("%d stderr lines logged of 5002, dropped reported: %v; want rate-limited", stderrLines, dropped)
	}
}
