package stdiobridge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddymcp/caddymcp/internal/caddyrun"
)

func waitProcesses(t *testing.T, marker string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for processesMatching(marker) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d processes matching %q, want %d", processesMatching(marker), marker, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPrewarm(t *testing.T) {
	site := func(extra string) string { return fakeSite(t, "plain", "\n\t\tprewarm 2"+extra) }
	c := caddyrun.StartCaddyfile(t, "", `http://127.0.0.1:{{PORT}} {
	respond ok
}
`)
	// validate provisions the handler but must start nothing
	var parsed caddy.Config
	if err := caddyJSON(c.Adapt("", site("")), &parsed); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&parsed); err != nil {
		t.Fatalf("validate: %v", err)
	}
	// a negative check, so a sleep (kept): a child that validate started
	// would be visible by now, and there is no event to wait for instead
	time.Sleep(200 * time.Millisecond)
	if n := processesMatching(self(t)); n != 0 {
		t.Fatalf("caddy validate started %d processes", n)
	}

	c.LoadCaddyfile("", site(""))
	// the first connection (here: a request the route does not even serve) warms up
	c.Do("GET", "/elsewhere", nil).Body.Close()
	waitProcesses(t, self(t), 2)

	cl := newClient(t, c.URL+"/mcp")
	start := time.Now()
	cl.initialize()
	t.Logf("initialize with a prewarmed child: %s", time.Since(start))
	if msgs := cl.call("2", "tools/call", `{"name":"t"}`); len(msgs) != 1 || !strings.Contains(msgs[0], `"text":"ok"`) {
		t.Fatalf("call on a prewarmed child: %v", msgs)
	}
	waitProcesses(t, self(t), 3) // one in use, two ready again

	// an unchanged route keeps its warm children across a reload
	c.LoadCaddyfile("", site("")+"\nhttp://127.0.0.1:{{PORT}}/x {\n\trespond x\n}\n")
	// a negative check, so a sleep (kept): warm children that the reload
	// wrongly ended would be gone (or replaced) by now; no event says that
	// nothing happened
	time.Sleep(200 * time.Millisecond)
	waitProcesses(t, self(t), 3)
	// a changed route ends them (and the session)
	c.LoadCaddyfile("", fakeSite(t, "plain,changed", "\n\t\tprewarm 1"))
	c.Do("GET", "/elsewhere", nil).Body.Close()
	waitProcesses(t, self(t), 1)
	c.Stop()
	waitNoProcesses(t, self(t), 10*time.Second)
}

func TestPrewarmConfigErrors(t *testing.T) {
	c := caddyrun.StartCaddyfile(t, "", `http://127.0.0.1:{{PORT}} {
	respond ok
}
`)
	for _, tc := range []struct{ extra, want string }{
		{"\n\t\tprewarm 1\n\t\tenv USER_ID {http.auth.user.id}", "prewarm: env USER_ID depends on the request"},
		{"\n\t\tprewarm 1\n\t\tstateless", "prewarm: not with stateless"},
		{"\n\t\tprewarm 5\n\t\tmax_sessions 2", "prewarm: 5 is more than max_sessions 2"},
	} {
		err := c.TryLoadCaddyfile("", fakeSite(t, "plain", tc.extra))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.extra, err, tc.want)
		}
	}
}
