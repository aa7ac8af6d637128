package stdiobridge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// poolSite is mcp_auth + mcp_stdio running the fake in mode (mrtr, or
// modern,mrtr with child_era modern) at /mcp.
func poolSite(t *testing.T, is *jwkstest.Issuer, mode, extra string) string {
	era := "legacy"
	if strings.Contains(mode, "modern") {
		era = "modern"
	}
	return authSiteWith(t, is, authOpts{Mode: mode, Era: era, Stdio: extra})
}

// sessionWith is a 2025 session of the holder of token.
func sessionWith(t *testing.T, url, token string) *mcpClient {
	c := newClient(t, url)
	c.header.Set("Authorization", "Bearer "+token)
	c.initialize()
	return c
}

// toolText is the text of a 2025 tools/call result among a stream's messages.
func toolText(t *testing.T, msgs []string) string {
	t.Helper()
	for _, m := range msgs {
		var r struct {
			Result struct {
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"result"`
		}
		if json.Unmarshal([]byte(m), &r) == nil && len(r.Result.Content) > 0 {
			return r.Result.Content[0].Text
		}
	}
	t.Fatalf("no tool result in %v", msgs)
	return ""
}

// Two principals against a server that remembers what it is told and tells
// it back: in 2025 sessions and in 2026-07-28 requests (to a 2025 child,
// translated, and to a 2026 child, passed through), with the default pool,
// `pool per_user` and `pool shared`. Only `pool shared` lets bob hear what
// alice said, and only in 2026-07-28 (sessions never share a child): that
// is what the setting is for, and what the README says it costs.
func TestPoolIsolation(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	for _, mode := range []string{"mrtr", "modern,mrtr"} {
		for _, pool := range []string{"", "per_user", "shared"} {
			extra := ""
			if pool != "" {
				extra = "\n\t\t\tpool " + pool
			}
			t.Run(mode+"/pool="+pool, func(t *testing.T) {
				c := caddyrun.StartCaddyfile(t, "", poolSite(t, is, mode, extra))
				url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
				alice := jwkstest.Mint(t, k, is.Claims("alice", url, ""), nil)
				bob := jwkstest.Mint(t, k, is.Claims("bob", url, ""), nil)
				ctx := context.Background()

				// 2026-07-28
				_, r := modernPost(ctx, t, url, alice, 1, "tools/call", `{"name":"remember","arguments":{"note":"alice-secret"}}`)
				if got := textOf(r); got != "notes=alice-secret" {
					t.Fatalf("alice remember: %q (%v)", got, r)
				}
				_, r = modernPost(ctx, t, url, bob, 2, "tools/call", `{"name":"remember","arguments":{"note":"bob-note"}}`)
				bobHeard := textOf(r)
				_, r = modernPost(ctx, t, url, bob, 3, "tools/call", `{"name":"recall","arguments":{}}`)
				bobRecall := textOf(r)
				_, r = modernPost(ctx, t, url, alice, 4, "tools/call", `{"name":"recall","arguments":{}}`)
				aliceRecall := textOf(r)
				if pool == "shared" {
					if !strings.Contains(bobRecall, "alice-secret") || !strings.Contains(aliceRecall, "bob-note") {
						t.Fatalf("pool shared: one child serves both, so each hears the other: bob %q, alice %q", bobRecall, aliceRecall)
					}
				} else {
					if strings.Contains(bobHeard, "alice") || strings.Contains(bobRecall, "alice") {
						t.Fatalf("2026: bob heard alice's note: %q / %q", bobHeard, bobRecall)
					}
					if bobRecall != "notes=bob-note" || aliceRecall != "notes=alice-secret" {
						t.Fatalf("2026: each remembers only their own: bob %q, alice %q", bobRecall, aliceRecall)
					}
				}

				// 2025-11-25: a child per session, whatever pool says
				as := sessionWith(t, url, alice)
				bs := sessionWith(t, url, bob)
				if got := toolText(t, as.call("2", "tools/call", `{"name":"remember","arguments":{"note":"alice-2025"}}`)); got != "notes=alice-2025" {
					t.Fatalf("2025 alice: %q", got)
				}
				if got := toolText(t, bs.call("2", "tools/call", `{"name":"recall","arguments":{}}`)); got != "notes=" {
					t.Fatalf("2025: bob's session heard %q", got)
				}
			})
		}
	}
}

// A pooled child runs with the environment its own request resolves to:
// env with a placeholder of a request header keys the pool by the
// resolved value, so one principal's two tokens never share a child.
func TestPoolKeyedByResolvedEnv(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	for _, pool := range []string{"", "shared"} {
		t.Run("pool="+pool, func(t *testing.T) {
			extra := "\n\t\t\tenv CADDYMCP_FAKE_USER {http.request.header.X-User-Token}"
			if pool != "" {
				extra += "\n\t\t\tpool " + pool
			}
			c := caddyrun.StartCaddyfile(t, "", poolSite(t, is, "mrtr", extra))
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			alice := jwkstest.Mint(t, k, is.Claims("alice", url, ""), nil)
			bob := jwkstest.Mint(t, k, is.Claims("bob", url, ""), nil)
			call := func(token, userToken string, id int) string {
				body := `{"jsonrpc":"2.0","id":` + strconv.Itoa(id) + `,"method":"tools/call","params":{"name":"whoami","arguments":{},` + modernMeta + `}}`
				req, _ := http.NewRequest("POST", url, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("MCP-Protocol-Version", "2026-07-28")
				req.Header.Set("Mcp-Method", "tools/call")
				req.Header.Set("Mcp-Name", "whoami")
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("X-User-Token", userToken)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var m map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&m)
				return textOf(m)
			}
			for i, x := range []struct{ token, value string }{{alice, "tok-A"}, {alice, "tok-B"}, {bob, "tok-C"}, {alice, "tok-A"}, {bob, "tok-A"}} {
				if got := call(x.token, x.value, i+1); !strings.HasSuffix(got, "user="+x.value) {
					t.Fatalf("request %d with X-User-Token %s ran in a child with %q", i+1, x.value, got)
				}
			}
		})
	}
}

// listenStream opens a subscriptions/listen stream and returns its
// messages as they come.
func listenStream(t *testing.T, ctx context.Context, url, token, id, filter string) <-chan map[string]any {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":"` + id + `","method":"subscriptions/listen","params":{"notifications":` + filter + `,` + modernMeta + `}}`
	req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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

func nextMessage(t *testing.T, ch <-chan map[string]any) map[string]any {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the listen stream ended")
		}
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no message on the listen stream")
		return nil
	}
}

// Listeners that name the same resource share the child's subscription:
// one leaving does not unsubscribe the other. The acknowledgement lists
// what the bridge will honour: not prompts (the server declares no
// listChanged for them), not a URI the server refused to subscribe.
func TestListenSubscriptionsShared(t *testing.T) {
	log, read := fakeLog(t)
	c := caddyrun.StartCaddyfile(t, "", plainModernSite(t, log, ""))
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	l1 := listenStream(t, ctx1, url, "", "L1", `{"resourceSubscriptions":["file:///a","file:///only-L1"]}`)
	if m := nextMessage(t, l1); m["method"] != "notifications/subscriptions/acknowledged" {
		t.Fatalf("L1 first message: %v", m)
	}
	l2 := listenStream(t, ctx2, url, "", "L2", `{"toolsListChanged":true,"promptsListChanged":true,"resourceSubscriptions":["file:///a","file:///refused"]}`)
	ack := nextMessage(t, l2)
	got, _ := json.Marshal(ack["params"].(map[string]any)["notifications"])
	if string(got) != `{"resourceSubscriptions":["file:///a"],"toolsListChanged":true}` {
		t.Fatalf("L2 acknowledged %s; want only what will be honoured (tools, file:///a)", got)
	}
	cancel1() // L1 leaves: file:///only-L1 is unsubscribed, file:///a (L2's too) is not
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(read(), "resources/unsubscribe file:///only-L1") {
		if time.Now().After(deadline) {
			t.Fatalf("L1's own subscription was not ended when it left:\n%s", read())
		}
		time.Sleep(10 * time.Millisecond) // polling the fake's log file
	}
	if strings.Contains(read(), "resources/unsubscribe file:///a") {
		t.Fatalf("L1 leaving unsubscribed the child from a resource L2 still listens to:\n%s", read())
	}
	modernPost(context.Background(), t, url, "", 1, "tools/call", `{"name":"touch","arguments":{"uri":"file:///a"}}`)
	for i := 0; i < 2; i++ {
		m := nextMessage(t, l2)
		if m["method"] == "notifications/resources/updated" {
			break
		}
		if m["method"] != "notifications/tools/list_changed" || i == 1 {
			t.Fatalf("L2 got %v, want file:///a's update", m)
		}
	}
	cancel2()
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(read(), "resources/unsubscribe file:///a") {
		if time.Now().After(deadline) {
			t.Fatalf("the child was not unsubscribed when the last listener left:\n%s", read())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A listen stream that the route tears down (reload, stop) ends with the
// graceful closure result, on a 2025 server and on a 2026 one.
func TestListenClosedGracefully(t *testing.T) {
	for _, mode := range []string{"mrtr", "modern,mrtr"} {
		t.Run(mode, func(t *testing.T) {
			era := "legacy"
			if strings.Contains(mode, "modern") {
				era = "modern"
			}
			site := func(extra string) string {
				return `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env CADDYMCP_FAKE_SERVER ` + mode + `
		child_era ` + era + `
		shutdown_timeout 500ms` + extra + `
	}
}
`
			}
			c := caddyrun.StartCaddyfile(t, "", site(""))
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			l := listenStream(t, context.Background(), url, "", "L", `{"toolsListChanged":true}`)
			if m := nextMessage(t, l); m["method"] != "notifications/subscriptions/acknowledged" {
				t.Fatalf("first message: %v", m)
			}
			c.LoadCaddyfile("", site("\n\t\tenv CHANGED 1")) // the route changes: its streams end
			m := nextMessage(t, l)
			res, _ := m["result"].(map[string]any)
			meta, _ := res["_meta"].(map[string]any)
			if m["id"] != "L" || res["resultType"] != "complete" || meta["io.modelcontextprotocol/subscriptionId"] != "L" {
				t.Fatalf("the stream ended with %v, not the closing result", m)
			}
		})
	}
}

// A 2026-07-28 child's log messages reach the request that asked for them
// (the only call in flight on its child), as a 2025 child's do.
func TestModernChildLogMessages(t *testing.T) {
	for _, mode := range []string{"mrtr", "modern,mrtr"} {
		t.Run(mode, func(t *testing.T) {
			era := "legacy"
			if strings.Contains(mode, "modern") {
				era = "modern"
			}
			c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+self(t)+`
		env CADDYMCP_FAKE_SERVER `+mode+`
		child_era `+era+`
		shutdown_timeout 500ms
	}
}
`)
			url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
			meta := strings.Replace(modernMeta, `"_meta":{`, `"_meta":{"io.modelcontextprotocol/logLevel":"debug",`, 1)
			// n messages come just before the answer: they are queued
			// before it, and every one must go out before it (a select
			// over both could pick the answer first and lose them)
			for _, n := range []int{1, 12} {
				args := `{"n":` + strconv.Itoa(n) + `}`
				body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"log","arguments":` + args + `,` + meta + `}}`
				req, _ := http.NewRequest("POST", url, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				req.Header.Set("MCP-Protocol-Version", "2026-07-28")
				req.Header.Set("Mcp-Method", "tools/call")
				req.Header.Set("Mcp-Name", "log")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				logs, answered := 0, false
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if strings.Contains(sc.Text(), `"notifications/message"`) && strings.Contains(sc.Text(), `log of {\"n\":`+strconv.Itoa(n)+`}`) {
						if answered {
							t.Errorf("n=%d: a log message came after the answer", n)
						}
						logs++
					}
					if strings.Contains(sc.Text(), `"result"`) {
						answered = true
					}
				}
				resp.Body.Close()
				if logs != n || !answered {
					t.Fatalf("%d log messages reached the request that asked for %d (answered: %v)", logs, n, answered)
				}
			}
		})
	}
}
