package stdiobridge_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
	"github.com/caddymcp/caddymcp/internal/jwkstest"
)

// A 2026-07-28 child's own input_required round: the client gets the
// child's requestState sealed inside the bridge's, bound to the route and
// the principal and good for one retry, as the bridge's own rounds are.
// The retry gives the child its state as it was; another principal,
// another route or a second presentation is refused with 400 -32602
// before anything reaches a child.
func TestModernPassThroughStateBound(t *testing.T) {
	k := jwkstest.NewKey(t, "k", "RS256")
	is := jwkstest.NewIssuer(t, k)
	logA, readA := fakeLog(t)
	logB, readB := fakeLog(t)
	route := func(path, log string) string {
		return authRoute(t, is, authOpts{Path: path, Mode: "modern", Era: "modern", Stdio: "\n\t\t\tenv CADDYMCP_FAKE_LOG " + log})
	}
	c := caddyrun.StartCaddyfile(t, "", "http://127.0.0.1:{{PORT}} {\n\tbind 127.0.0.1"+route("/a", logA)+route("/b", logB)+"\n}\n")
	base := "http://127.0.0.1:" + strconv.Itoa(c.Port)
	ann := jwkstest.Mint(t, k, is.Claims("ann", base+"/mcp", ""), nil)
	bob := jwkstest.Mint(t, k, is.Claims("bob", base+"/mcp", ""), nil)
	ctx := context.Background()

	status, r := modernPost(ctx, t, base+"/a", ann, 1, "tools/call", `{"name":"ask","arguments":{}}`)
	res := resultOf(r)
	state, _ := res["requestState"].(string)
	if status != 200 || res["resultType"] != "input_required" || res["inputRequests"].(map[string]any)["name"] == nil {
		t.Fatalf("ask: %d %v", status, r)
	}
	if state == "" || strings.Contains(state, "child-state") {
		t.Fatalf("the child's requestState reached the client unsealed: %q", state)
	}
	retry := `{"name":"ask","arguments":{},"inputResponses":{"name":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + state + `"}`
	refused := func(what, url, token, message string) {
		t.Helper()
		status, r := modernPost(ctx, t, url, token, 2, "tools/call", retry)
		e, _ := r["error"].(map[string]any)
		if status != 400 || e == nil || e["code"] != float64(-32602) || !strings.Contains(e["message"].(string), message) {
			t.Errorf("%s: %d %v, want 400 -32602 %q", what, status, r, message)
		}
	}
	refused("another principal", base+"/a", bob, "another user")
	refused("another route", base+"/b", ann, "another route")
	status, r = modernPost(ctx, t, base+"/a", ann, 3, "tools/call", retry)
	if want := `state=child-state-1 responses={"name":{"action":"accept","content":{"name":"Ann"}}}`; status != 200 || textOf(r) != want {
		t.Fatalf("the retry: %d %v, want the text %q", status, r, want)
	}
	// the same message as for a replayed round of the bridge's own
	refused("a replay", base+"/a", ann, "the round expired or was already answered")
	if got := strings.Count(readA(), "state child-state-1\n"); got != 1 {
		t.Errorf("route /a's child got its state %d times, want once:\n%s", got, readA())
	}
	if got := readB(); strings.Contains(got, "state ") {
		t.Errorf("route /b's child got a state:\n%s", got)
	}
}

// The balancer (lb_policy mcp) takes a wrapped requestState home: the
// retry of a round that instance b issued reaches b, although the
// fallback would send it to a (b is drained on the route the retry
// takes: requests naming it still reach it). Elsewhere it would be lost.
func TestModernPassThroughStateRoutedHome(t *testing.T) {
	portA, portB := caddyrun.FreePort(t), caddyrun.FreePort(t)
	instance := func(id string, port int) string {
		return `
http://127.0.0.1:` + strconv.Itoa(port) + ` {
	bind 127.0.0.1
	mcp_stdio /mcp {
		command ` + self(t) + `
		env CADDYMCP_FAKE_SERVER modern
		child_era modern
		instance_id ` + id + `
		shutdown_timeout 500ms
	}
}
`
	}
	balancer := func(path, drain string) string {
		return `
	handle ` + path + ` {
		rewrite * /mcp
		reverse_proxy 127.0.0.1:` + strconv.Itoa(portA) + ` 127.0.0.1:` + strconv.Itoa(portB) + ` {
			lb_policy mcp {
				instance a 127.0.0.1:` + strconv.Itoa(portA) + `
				instance b 127.0.0.1:` + strconv.Itoa(portB) + `
				drain ` + drain + `
				fallback first
			}
		}
	}`
	}
	c := caddyrun.StartCaddyfile(t, "", instance("a", portA)+instance("b", portB)+
		"http://127.0.0.1:{{PORT}} {\n\tbind 127.0.0.1"+balancer("/to-b", "a")+balancer("/to-a", "b")+"\n}\n")
	ctx := context.Background()
	for i := range 3 {
		status, r := modernPost(ctx, t, c.URL+"/to-b", "", 1, "tools/call", `{"name":"ask","arguments":{}}`)
		state, _ := resultOf(r)["requestState"].(string)
		if status != 200 || !strings.HasPrefix(state, "b~") {
			t.Fatalf("ask through /to-b: %d %v", status, r)
		}
		retry := `{"name":"ask","arguments":{},"inputResponses":{"name":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + state + `"}`
		status, r = modernPost(ctx, t, c.URL+"/to-a", "", 2, "tools/call", retry)
		if want := "state=child-state-" + strconv.Itoa(i+1) + " "; status != 200 || !strings.HasPrefix(textOf(r), want) {
			t.Fatalf("retry %d through /to-a: %d %v, want a text beginning %q", i, status, r, want)
		}
	}
	// what the balancer protects against: the same kind of state at a
	status, r := modernPost(ctx, t, c.URL+"/to-b", "", 3, "tools/call", `{"name":"ask","arguments":{}}`)
	state, _ := resultOf(r)["requestState"].(string)
	retry := `{"name":"ask","arguments":{},"inputResponses":{"name":{"action":"accept","content":{"name":"Ann"}}},"requestState":"` + state + `"}`
	status, r = modernPost(ctx, t, "http://127.0.0.1:"+strconv.Itoa(portA)+"/mcp", "", 4, "tools/call", retry)
	if e, _ := r["error"].(map[string]any); status != 400 || e == nil || !strings.Contains(e["message"].(string), "the instance that held this round is gone") {
		t.Fatalf("b's state at a: %d %v", status, r)
	}
}
