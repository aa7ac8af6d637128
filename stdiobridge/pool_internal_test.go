package stdiobridge

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/mcpserver"
)

// pools counts the pools of the live tables labelled route.
func pools(route string) int {
	n := 0
	liveTables.Range(func(k, v any) bool {
		if v.(string) == route {
			t := k.(*table)
			t.poolsMu.Lock()
			n += len(t.pools)
			t.poolsMu.Unlock()
		}
		return true
	})
	return n
}

// A route keeps no pool that has no child, no listener and no request:
// thirty principals (Caddy's basic_auth gives each an id), most of them
// refused for max_sessions, leave nothing behind once the children that
// served the others have gone idle and ended.
func TestPoolsAreFreed(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	var users strings.Builder
	for i := range 30 {
		users.WriteString("\t\t\tu" + strconv.Itoa(i) + " " + string(hash) + "\n")
	}
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	route /mcp {
		basic_auth {
`+users.String()+`		}
		mcp_stdio {
			command `+exe+`
			env `+mcpserver.FakeEnv+` mrtr
			env CADDYMCP_FAKE_USER {http.auth.user.id}
			child_era legacy
			name pools-freed
			max_sessions 4
			max_sessions_per_user 1
			session_idle_timeout 300ms
			shutdown_timeout 500ms
		}
	}
}
`)
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	// all at once: the first to reserve one of max_sessions' 4 slots are
	// served, the rest refused while those children start and work,
	// however slow the machine (one by one, a loaded machine let each
	// child go idle and end before the next request, and served all 30)
	var (
		mu     sync.Mutex
		served int
		wg     sync.WaitGroup
	)
	errs := make(chan string, 30)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},"_meta":{` +
				`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2026-07-28")
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header.Set("Mcp-Name", "whoami")
			req.SetBasicAuth("u"+strconv.Itoa(i), "pw")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 200:
				mu.Lock()
				served++
				mu.Unlock()
			case 503:
			default:
				errs <- "user " + strconv.Itoa(i) + ": " + resp.Status
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if served == 0 || served == 30 {
		t.Fatalf("%d of 30 served: the test needs some served and some refused", served)
	}
	deadline := time.Now().Add(20 * time.Second)
	for pools("pools-freed") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d pools kept after every child ended (%d principals served, %d refused)", pools("pools-freed"), served, 30-served)
		}
		time.Sleep(20 * time.Millisecond) // polling the reaper's work
	}
}

// What a child says without naming a request goes only where it is certain
// whose it is: a log message to the only client call in flight, a question
// to the asker when no other principal's call is in flight beside it.
func TestUnaddressedMessagesAttributed(t *testing.T) {
	started := make(chan struct{})
	close(started)
	newChild := func() *poolChild {
		return &poolChild{calls: map[uint64]*call{}, tokens: map[string]*call{}, started: started, logger: zap.NewNop()}
	}
	newCall := func(c *poolChild, id uint64, owner, method string, asking bool) *call {
		cl := &call{child: c, id: id, owner: owner, method: method, logLevel: 0, events: make(chan []byte, 4), final: make(chan []byte, 1)}
		if asking {
			cl.asks, cl.open = make(chan []byte, 4), map[string]ask{}
			c.asker = cl
		}
		c.calls[id] = cl
		return cl
	}
	logLine := []byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`)
	askLine := []byte(`{"jsonrpc":"2.0","id":"q1","method":"elicitation/create","params":{"message":"?"}}`)

	// one client call (and a listen stream, and a bridge call): it gets the log
	c := newChild()
	alice := newCall(c, 1, "alice", "tools/call", true)
	newCall(c, 2, "alice", "subscriptions/listen", false).subID = json.RawMessage(`"L"`)
	newCall(c, 3, "", "resources/subscribe", false)
	c.ChildMessage(logLine)
	if len(alice.events) != 1 {
		t.Fatalf("the only client call got %d log messages, want 1", len(alice.events))
	}
	c.ChildMessage(askLine)
	if len(alice.asks) != 1 {
		t.Fatal("the asker, alone, did not get its question")
	}

	// alice's asker beside bob's call: the log goes to no one, nor does the question
	c = newChild()
	alice = newCall(c, 1, "alice", "tools/call", true)
	bob := newCall(c, 2, "bob", "tools/list", false)
	c.ChildMessage(logLine)
	if len(alice.events)+len(bob.events) != 0 {
		t.Fatal("a log message with two calls in flight was delivered")
	}
	c.ChildMessage(askLine)
	if len(alice.asks) != 0 {
		t.Fatal("a question was delivered while another principal's call was in flight")
	}

	// two calls of alice's: the question is hers (certain), the log is not
	c = newChild()
	alice = newCall(c, 1, "alice", "tools/call", true)
	alice2 := newCall(c, 2, "alice", "tools/list", false)
	c.ChildMessage(logLine)
	if len(alice.events)+len(alice2.events) != 0 {
		t.Fatal("a log message with two calls in flight was delivered")
	}
	c.ChildMessage(askLine)
	if len(alice.asks) != 1 {
		t.Fatal("alice's asker did not get the question while only her calls were in flight")
	}
}

// children counts the pool children of the live tables labelled route.
func children(route string) int {
	n := 0
	liveTables.Range(func(k, v any) bool {
		if v.(string) == route {
			for _, p := range k.(*table).poolList() {
				n += len(p.snapshot())
			}
		}
		return true
	})
	return n
}

// A call the client abandons is forgotten once the child is told: a server
// that honours notifications/cancelled never answers it (here a 2026
// server's subscriptions/listen), and a call kept waiting for that answer
// would count as load on its child for ever and keep it from going idle.
func TestCancelledCallsAreForgotten(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := caddyrun.StartCaddyfile(t, "", `
:{{PORT}} {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command `+exe+`
		env `+mcpserver.FakeEnv+` modern,mrtr
		child_era modern
		name cancelled-forgotten
		session_idle_timeout 300ms
		shutdown_timeout 500ms
	}
}
`)
	url := "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/mcp"
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a lost acknowledgement fails, never hangs
		body := `{"jsonrpc":"2.0","id":"L` + strconv.Itoa(i) + `","method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},"_meta":{` +
			`"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
		req, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2026-07-28")
		req.Header.Set("Mcp-Method", "subscriptions/listen")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		acked := false
		for !acked && sc.Scan() {
			acked = strings.Contains(sc.Text(), "notifications/subscriptions/acknowledged")
		}
		cancel()
		if !acked {
			t.Fatalf("listen %d: no acknowledgement", i)
		}
		resp.Body.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for children("cancelled-forgotten") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d children still live: the abandoned listen calls keep them busy", children("cancelled-forgotten"))
		}
		time.Sleep(20 * time.Millisecond) // polling the reaper's work
	}
}
