package stdiobridge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// modernMeta is the _meta envelope of a 2026-07-28 request.
const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",` +
	`"io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},"io.modelcontextprotocol/clientInfo":{"name":"test","version":"1"}}`

// modernPost sends one 2026-07-28 request and returns the status and the
// final JSON-RPC message (JSON, or the last event of an SSE stream).
func modernPost(ctx context.Context, t *testing.T, url, token string, id any, method, params string) (int, map[string]any) {
	t.Helper()
	if params == "" {
		params = "{" + modernMeta + "}"
	} else if !strings.Contains(params, `"_meta"`) {
		params = strings.TrimSuffix(params, "}") + "," + modernMeta + "}"
		params = strings.Replace(params, "{,", "{", 1)
	}
	var p struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	}
	_ = json.Unmarshal([]byte(params), &p)
	name := p.Name
	if name == "" {
		name = p.URI
	}
	return modernPostNamed(ctx, t, url, token, id, method, params, name)
}

// resp0Header is the header of a 2026-07-28 POST.
func resp0Header(method, name, token string) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	h.Set("MCP-Protocol-Version", "2026-07-28")
	h.Set("Mcp-Method", method)
	if name != "" {
		h.Set("Mcp-Name", name)
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

// modernPostHeader is modernPost with params as given and Mcp-Name name.
func modernPostHeader(t *testing.T, url, token string, id any, method, params, name string) (int, map[string]any) {
	t.Helper()
	return modernPostNamed(context.Background(), t, url, token, id, method, params, name)
}

func modernPostNamed(ctx context.Context, t *testing.T, url, token string, id any, method, params, name string) (int, map[string]any) {
	t.Helper()
	idJSON, _ := json.Marshal(id)
	body := `{"jsonrpc":"2.0","id":` + string(idJSON) + `,"method":"` + method + `","params":` + params + `}`
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header = resp0Header(method, name, token)
	resp, err := http.DefaultClient.Do(req)
	for i := 0; err != nil && i < 3 && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)); i++ {
		// a connection that the server a reload just replaced accepted
		// may be reset before it read the request: sent again
		http.DefaultClient.CloseIdleConnections()
		req, _ = http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
		req.Header = resp0Header(method, name, token)
		resp, err = http.DefaultClient.Do(req)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		t.Errorf("%s: %v", method, err)
		return 0, nil
	}
	defer resp.Body.Close()
	var last string
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				last = d
			}
		}
	} else {
		b, _ := io.ReadAll(resp.Body)
		last = string(b)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil {
		if ctx.Err() == nil {
			t.Errorf("%s: status %d, not JSON: %q", method, resp.StatusCode, last)
		}
		return resp.StatusCode, nil
	}
	return resp.StatusCode, m
}

func resultOf(m map[string]any) map[string]any {
	r, _ := m["result"].(map[string]any)
	return r
}

// textOf is the first text content of a tools/call result.
func textOf(m map[string]any) string {
	c, _ := resultOf(m)["content"].([]any)
	if len(c) == 0 {
		return ""
	}
	s, _ := c[0].(map[string]any)["text"].(string)
	return s
}

// authSite is mcp_auth + mcp_stdio (the fake in mode mrtr) at /mcp, the
// child's environment naming its principal when perUser.
func authSite(t *testing.T, is *jwkstest.Issuer, perUser bool, extra string) string {
	if perUser {
		extra = "\n\t\t\tenv CADDYMCP_FAKE_USER {http.auth.user.id}" + extra
	}
	return authSiteWith(t, is, authOpts{Mode: "mrtr", Era: "legacy", Stdio: extra})
}

func TestModernTwoPrincipalsNeverShare(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	for _, perUser := range []bool{true, false} {
		t.Run(fmt.Sprintf("per-user=%v", perUser), func(t *testing.T) {
			c := caddyrun.StartCaddyfile(t, "", authSite(t, is, perUser, ""))
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			ann := jwkstest.Mint(t, k, is.Claims("ann", url, ""), nil)
			bob := jwkstest.Mint(t, k, is.Claims("bob", url, ""), nil)
			ctx := context.Background()
			_, a := modernPost(ctx, t, url, ann, 1, "tools/call", `{"name":"whoami","arguments":{}}`)
			_, b := modernPost(ctx, t, url, bob, 1, "tools/call", `{"name":"whoami","arguments":{}}`)
			if perUser {
				if !strings.HasSuffix(textOf(a), "user=ann") || !strings.HasSuffix(textOf(b), "user=bob") {
					t.Fatalf("children do not run as their principals: %q %q", textOf(a), textOf(b))
				}
				if strings.Fields(textOf(a))[0] == strings.Fields(textOf(b))[0] {
					t.Fatalf("two principals share a child: %q %q", textOf(a), textOf(b))
				}
			}
			// ann's round: bob may not continue it, ann may
			status, r := modernPost(ctx, t, url, ann, 2, "tools/call", `{"name":"ask","arguments":{}}`)
			res := resultOf(r)
			if status != 200 || res["resultType"] != "input_required" {
				t.Fatalf("ask: %d %v", status, r)
			}
			state, _ := res["requestState"].(string)
			var key string
			for k := range res["inputRequests"].(map[string]any) {
				key = k
			}
			retry := `{"name":"ask","arguments":{},"inputResponses":{"` + key + `":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + state + `"}`
			if status, r := modernPost(ctx, t, url, bob, 3, "tools/call", retry); status != 400 || r["error"].(map[string]any)["code"].(float64) != -32602 {
				t.Fatalf("bob continued ann's round: %d %v", status, r)
			}
			// the last two characters changed (to others: "AA" would leave a
			// state that ends so unchanged)
			end := "AA"
			if strings.HasSuffix(state, end) {
				end = "BB"
			}
			tampered := strings.Replace(retry, state, state[:len(state)-2]+end, 1)
			if status, _ := modernPost(ctx, t, url, ann, 4, "tools/call", tampered); status != 400 {
				t.Fatalf("a tampered requestState was accepted: %d", status)
			}
			if _, r := modernPost(ctx, t, url, ann, 5, "tools/call", retry); !strings.Contains(textOf(r), `"name":"Ann"`) {
				t.Fatalf("ann's retry: %v", r)
			}
			if status, _ := modernPost(ctx, t, url, ann, 6, "tools/call", retry); status != 400 {
				t.Fatalf("a round was answered twice: %d", status)
			}
		})
	}
}

// fakeLog is a file the fake servers append what they see to.
func fakeLog(t *testing.T) (path string, read func() string) {
	path = filepath.Join(t.TempDir(), "fake.log")
	return path, func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}
}

// plainModernSite is mcp_stdio (fake, mode mrtr) without authentication.
func plainModernSite(t *testing.T, log, extra string) string {
	return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env CADDYMCP_FAKE_SERVER mrtr
		env CADDYMCP_FAKE_LOG ` + log + `
		child_era legacy
		shutdown_timeout 500ms` + extra + `
	}
}
`
}

// askRound starts an "ask" call and returns the retry body that answers it.
func askRound(t *testing.T, url string, id int) string {
	t.Helper()
	status, r := modernPost(context.Background(), t, url, "", id, "tools/call", `{"name":"ask","arguments":{}}`)
	res := resultOf(r)
	if status != 200 || res["resultType"] != "input_required" {
		t.Fatalf("ask: %d %v", status, r)
	}
	var key string
	for k := range res["inputRequests"].(map[string]any) {
		key = k
	}
	return `{"name":"ask","arguments":{},"inputResponses":{"` + key + `":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + res["requestState"].(string) + `"}`
}

func TestModernRetryAfterReload(t *testing.T) {
	log, _ := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	retry := askRound(t, url, 1)
	// another generation: the process config is unchanged, so the table, its
	// children and its parked rounds carry over
	c.LoadCaddyfile("", plainModernSite(t, log, "\n\t\tinput_timeout 10m"))
	http.DefaultClient.CloseIdleConnections() // the old server closed them
	if _, r := modernPost(context.Background(), t, url, "", 2, "tools/call", retry); !strings.Contains(textOf(r), `"name":"Ann"`) {
		t.Fatalf("retry after reload: %v", r)
	}
}

func TestModernInputTimeout(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, "\n\t\tinput_timeout 300ms"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	retry := askRound(t, url, 1)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(read(), "answer \"q1\" error") || !strings.Contains(read(), "cancelled") {
		if time.Now().After(deadline) {
			t.Fatalf("the child's question was not answered after input_timeout; it saw:\n%s", read())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(read(), "input_timeout") {
		t.Fatalf("the error does not say why: %s", read())
	}
	if status, r := modernPost(context.Background(), t, url, "", 2, "tools/call", retry); status != 400 || !strings.Contains(fmt.Sprint(r), "expired") {
		t.Fatalf("a retry after input_timeout: %d %v", status, r)
	}
	// a client that did not declare elicitation never gets that round: it
	// is told what it lacks (-32021), the child's question is answered with
	// an error and its call cancelled
	noCaps := `{"name":"ask","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}`
	if status, r := modernPost(context.Background(), t, url, "", 5, "tools/call", noCaps); status != 400 ||
		!strings.Contains(fmt.Sprint(r), "code:-32021 data:map[requiredCapabilities:map[elicitation:") {
		t.Fatalf("ask without the elicitation capability: %d %v", status, r)
	}
	// the child's asking slot is free again: the next round works on it
	retry = askRound(t, url, 3)
	if _, r := modernPost(context.Background(), t, url, "", 4, "tools/call", retry); !strings.Contains(textOf(r), "Ann") {
		t.Fatalf("the next round: %v", r)
	}
}

func TestModernClientDisconnects(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		modernPost(ctx, t, url, "", 1, "tools/call", `{"name":"hold","arguments":{}}`)
	}()
	waitLog(t, read, "holding")
	cancel()
	<-done
	waitLog(t, read, "cancelled") // the child was told that the request was cancelled
	// mid-round: the client answers the child's question, and goes away
	// while the call goes on after the answer
	status, r := modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"askhold","arguments":{}}`)
	res := resultOf(r)
	if status != 200 || res["resultType"] != "input_required" {
		t.Fatalf("askhold: %d %v", status, r)
	}
	var key string
	for k := range res["inputRequests"].(map[string]any) {
		key = k
	}
	retry := `{"name":"askhold","arguments":{},"inputResponses":{"` + key + `":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + res["requestState"].(string) + `"}`
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() {
		defer close(done)
		modernPost(ctx, t, url, "", 3, "tools/call", retry)
	}()
	caddyrun.WaitFor(t, 30*time.Second, func() bool { return strings.Count(read(), "holding") >= 2 }, "the child holds the retried call")
	cancel()
	<-done
	caddyrun.WaitFor(t, 30*time.Second, func() bool { return strings.Count(read(), "cancelled") >= 2 },
		"the child was told that the call was cancelled mid-round")
	// the child is usable afterwards
	if _, r := modernPost(context.Background(), t, url, "", 4, "tools/call", `{"name":"whoami","arguments":{}}`); !strings.HasPrefix(textOf(r), "pid=") {
		t.Fatalf("after disconnects: %v", r)
	}
}

func TestModernIdleChildrenEnd(t *testing.T) {
	marker := "sleep 6125." + runTag
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command sh -c "`+marker+` & exec $0" `+self(t)+`
		env CADDYMCP_FAKE_SERVER mrtr
		child_era legacy
		session_idle_timeout 300ms
		shutdown_timeout 500ms
	}
}
`)
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	if _, r := modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"whoami","arguments":{}}`); !strings.HasPrefix(textOf(r), "pid=") {
		t.Fatalf("whoami: %v", r)
	}
	if n := processesMatching(marker); n != 1 {
		t.Fatalf("%d pool children, want 1", n)
	}
	// no request for longer than session_idle_timeout: the child ends
	waitNoProcesses(t, marker, 30*time.Second)
	if _, r := modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"whoami","arguments":{}}`); !strings.HasPrefix(textOf(r), "pid=") {
		t.Fatalf("a new child after the idle one ended: %v", r)
	}
}

func TestModernReloadWithRequestsInFlight(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	const n = 5
	var wg sync.WaitGroup
	results := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := modernPost(context.Background(), t, url, "", i, "tools/call", `{"name":"hold","arguments":{}}`)
			results <- status
		}()
	}
	caddyrun.WaitFor(t, 30*time.Second, func() bool { return strings.Count(read(), "holding") >= n }, "the child holds every call")
	done := make(chan struct{})
	go func() {
		c.LoadCaddyfile("", plainModernSite(t, log, "\n\t\tinput_timeout 1m"))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reload hung on modern requests in flight")
	}
	wg.Wait()
	http.DefaultClient.CloseIdleConnections()
	close(results)
	for s := range results {
		if s != http.StatusServiceUnavailable {
			t.Errorf("a request in flight across the reload got %d, want 503 (retry)", s)
		}
	}
	// a keep-alive connection of the old server may still be in the
	// default client's pool, and the old server closes it when it finds it
	// idle (a reset for the next request): the check after the reload uses
	// connections of its own
	old := http.DefaultClient
	http.DefaultClient = &http.Client{Transport: &http.Transport{}}
	defer func() { http.DefaultClient = old }()
	if _, r := modernPost(context.Background(), t, url, "", 99, "tools/call", `{"name":"whoami","arguments":{}}`); !strings.HasPrefix(textOf(r), "pid=") {
		t.Fatalf("after the reload: %v", r)
	}
}

// 1000 2026-07-28 calls from 50 principals, 64 at a time, through
// mcp_auth + mcp_stdio with a child per principal: each answer reaches the
// request that asked, with its principal's identity.
func TestSoakModern1000RequestsFrom50Principals(t *testing.T) {
	caddyrun.Soak(t, "1000 concurrent calls from 50 principals: none lost, none answered with another's child")
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSite(t, is, true, "\n\t\t\tmax_sessions 200\n\t\t\tinitialize_rate 1000"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	tokens := make([]string, 50)
	for i := range tokens {
		tokens[i] = jwkstest.Mint(t, k, is.Claims("user"+strconv.Itoa(i), url, ""), nil)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	sem := make(chan struct{}, 64)
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u := i % 50
			status, r := modernPost(context.Background(), t, url, tokens[u], "req-"+strconv.Itoa(i), "tools/call",
				`{"name":"echo","arguments":{"n":`+strconv.Itoa(i)+`}}`)
			want := `echo={"n":` + strconv.Itoa(i) + `} user=user` + strconv.Itoa(u)
			if status != 200 || textOf(r) != want || r["id"] != "req-"+strconv.Itoa(i) {
				mu.Lock()
				bad++
				if bad < 5 {
					t.Errorf("request %d: %d %v, want %q", i, status, r, want)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of 1000 requests lost or misrouted", bad)
	}
}

// One principal cannot fill a shared pool: its children and parked rounds
// count against max_sessions_per_user, and another principal still gets a
// child while the first waits for one of its own to free up.
func TestModernSharedPoolIsShared(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	c := caddyrun.StartCaddyfile(t, "", authSite(t, is, false, "\n\t\t\tmax_sessions_per_user 2\n\t\t\tpool shared"))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ann := jwkstest.Mint(t, k, is.Claims("ann", url, ""), nil)
	bob := jwkstest.Mint(t, k, is.Claims("bob", url, ""), nil)
	for i := 1; i <= 2; i++ {
		if _, r := modernPost(context.Background(), t, url, ann, i, "tools/call", `{"name":"ask","arguments":{}}`); resultOf(r)["resultType"] != "input_required" {
			t.Fatalf("ann's round %d: %v", i, r)
		}
	}
	// ann's third call waits (both her slots hold parked rounds) until she
	// gives up; it never gets a child of the pool's others
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if status, _ := modernPost(ctx, t, url, ann, 3, "tools/call", `{"name":"ask","arguments":{}}`); status != 0 {
		t.Fatalf("ann's third call got %d while her slots were held", status)
	}
	if _, r := modernPost(context.Background(), t, url, bob, 1, "tools/call", `{"name":"ask","arguments":{}}`); resultOf(r)["resultType"] != "input_required" {
		t.Fatalf("bob got no child while ann held hers: %v", r)
	}
}

// subscriptions/listen on a 2025 server: the acknowledgement first, then
// only what the listener opted into, tagged with its subscription id; the
// child is subscribed to each named resource and unsubscribed when the
// listener goes away.
func TestModernListenOnLegacyServer(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	listen := func(ctx context.Context, id, filter string) <-chan map[string]any {
		body := `{"jsonrpc":"2.0","id":"` + id + `","method":"subscriptions/listen","params":{"notifications":` + filter + `,` + modernMeta + `}}`
		req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "subscriptions/listen")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out := make(chan map[string]any, 16)
		go func() {
			defer resp.Body.Close()
			defer close(out)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var m map[string]any
					_ = json.Unmarshal([]byte(d), &m)
					out <- m
				}
			}
		}()
		return out
	}
	next := func(ch <-chan map[string]any) map[string]any {
		select {
		case m := <-ch:
			return m
		case <-time.After(30 * time.Second):
			t.Fatal("no message on the listen stream")
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := listen(ctx, "L1", `{"resourceSubscriptions":["file:///a"]}`)
	tools := listen(ctx, "L2", `{"toolsListChanged":true}`)
	for _, ch := range []<-chan map[string]any{res, tools} {
		if m := next(ch); m["method"] != "notifications/subscriptions/acknowledged" {
			t.Fatalf("first message: %v", m)
		}
	}
	if !strings.Contains(read(), "resources/subscribe file:///a") {
		t.Fatalf("the child was not subscribed: %s", read())
	}
	modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"touch","arguments":{"uri":"file:///b"}}`)
	modernPost(context.Background(), t, url, "", 2, "tools/call", `{"name":"touch","arguments":{"uri":"file:///a"}}`)
	m := next(res)
	p, _ := m["params"].(map[string]any)
	meta, _ := p["_meta"].(map[string]any)
	if m["method"] != "notifications/resources/updated" || p["uri"] != "file:///a" || meta["io.modelcontextprotocol/subscriptionId"] != "L1" {
		t.Fatalf("resource listener got %v (want only file:///a's update, tagged L1)", m)
	}
	for i := 0; i < 2; i++ {
		m = next(tools)
		meta, _ = m["params"].(map[string]any)["_meta"].(map[string]any)
		if m["method"] != "notifications/tools/list_changed" || meta["io.modelcontextprotocol/subscriptionId"] != "L2" {
			t.Fatalf("tools listener got %v", m)
		}
	}
	cancel()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(read(), "resources/unsubscribe file:///a") {
		if time.Now().After(deadline) {
			t.Fatalf("the child was not unsubscribed when the listener left: %s", read())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With Caddy's tracing on the route, the child gets the trace context of
// the request's span in _meta (traceparent: same trace as the incoming
// request, Caddy's span as parent), in both eras.
func TestTraceContextReachesTheChild(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	tracing {
		span mcp
	}
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER mrtr
		child_era legacy
		shutdown_timeout 500ms
	}
}
`)
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	incoming := "00-" + traceID + "-00f067aa0ba902b7-01"
	check := func(era, text string) {
		t.Helper()
		var meta map[string]any
		if err := json.Unmarshal([]byte(strings.TrimPrefix(text, "meta=")), &meta); err != nil {
			t.Fatalf("%s: the child's _meta: %q", era, text)
		}
		tp, _ := meta["traceparent"].(string)
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != traceID || parts[2] == "00f067aa0ba902b7" {
			t.Fatalf("%s: the child got traceparent %q; want trace %s under Caddy's span", era, tp, traceID)
		}
	}
	// 2026-07-28
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"meta","arguments":{},` + modernMeta + `}}`
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "meta", "traceparent": incoming} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	check("2026-07-28", textOf(m))
	// 2025 session
	cl := newClient(t, url)
	cl.header.Set("traceparent", incoming)
	cl.initialize()
	msgs := cl.call("2", "tools/call", `{"name":"meta","arguments":{}}`)
	var ans map[string]any
	_ = json.Unmarshal([]byte(msgs[len(msgs)-1]), &ans)
	check("2025-11-25", textOf(ans))
}
