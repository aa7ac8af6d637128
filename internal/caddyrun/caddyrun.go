// Package caddyrun runs a real Caddy inside a test process, from a
// Caddyfile or a JSON config, on a free loopback port. It drives Caddy the
// way the binary does (adapt, then caddy.Load), with the admin endpoint off
// so test packages running in parallel cannot collide on it.
package caddyrun

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile" // the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// Caddy is a running in-process Caddy instance.
type Caddy struct {
	t       testing.TB
	stopped bool
	Port    int
	// URL is http://127.0.0.1:<Port>.
	URL string
}

// mu serializes Caddy instances: Caddy's running config is process-global.
var mu sync.Mutex

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options are global options added to every Caddyfile.
const globalOptions = `{
	admin off
	persist_config off
	auto_https off
	http_port {{PORT}}
%s}
`

// StartCaddyfile adapts and runs a Caddyfile. In caddyfile, {{PORT}} is
// replaced by the chosen port; extraGlobal goes inside the global options.
func StartCaddyfile(t testing.TB, extraGlobal, caddyfile string) *Caddy {
	t.Helper()
	c := begin(t)
	c.LoadCaddyfile(extraGlobal, caddyfile)
	return c
}

// StartJSON runs a JSON config. {{PORT}} is replaced by the chosen port;
// the admin endpoint is disabled unless the config says otherwise.
func StartJSON(t testing.TB, config string) *Caddy {
	t.Helper()
	c := begin(t)
	c.LoadJSON(config)
	return c
}

func begin(t testing.TB) *Caddy {
	mu.Lock()
	port := FreePort(t)
	c := &Caddy{t: t, Port: port, URL: "http://127.0.0.1:" + strconv.Itoa(port)}
	t.Cleanup(func() {
		defer mu.Unlock()
		if !c.stopped {
			c.Stop()
		}
	})
	return c
}

// Stop stops Caddy (as `caddy stop` would) and returns when it has.
func (c *Caddy) Stop() {
	c.t.Helper()
	c.stopped = true
	if err := caddy.Stop(); err != nil {
		c.t.Errorf("stopping caddy: %v", err)
	}
}

// Adapt turns a Caddyfile (with {{PORT}} substituted) into JSON.
func (c *Caddy) Adapt(extraGlobal, caddyfile string) []byte {
	c.t.Helper()
	if extraGlobal != "" {
		extraGlobal = "\t" + strings.TrimSpace(extraGlobal) + "\n"
	}
	src := fmt.Sprintf(globalOptions, extraGlobal) + caddyfile
	src = strings.ReplaceAll(src, "{{PORT}}", strconv.Itoa(c.Port))
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		c.t.Fatalf("adapting Caddyfile: %v\n%s", err, src)
	}
	for _, w := range warnings {
		c.t.Logf("caddyfile warning: %s", w.String())
	}
	return cfg
}

// LoadCaddyfile loads (or reloads) a Caddyfile into the running instance.
func (c *Caddy) LoadCaddyfile(extraGlobal, caddyfile string) {
	c.t.Helper()
	c.load(c.Adapt(extraGlobal, caddyfile))
}

// LoadJSON loads (or reloads) a JSON config into the running instance.
func (c *Caddy) LoadJSON(config string) {
	c.t.Helper()
	config = strings.ReplaceAll(config, "{{PORT}}", strconv.Itoa(c.Port))
	var m map[string]any
	if err := json.Unmarshal([]byte(config), &m); err != nil {
		c.t.Fatalf("JSON config: %v", err)
	}
	if _, ok := m["admin"]; !ok {
		m["admin"] = map[string]any{"disabled": true}
	}
	b, _ := json.Marshal(m)
	c.load(b)
}

// TryLoadCaddyfile loads a Caddyfile and returns the provisioning error.
func (c *Caddy) TryLoadCaddyfile(extraGlobal, caddyfile string) error {
	c.t.Helper()
	err := caddy.Load(c.Adapt(extraGlobal, caddyfile), true)
	http.DefaultClient.CloseIdleConnections() // as load
	return err
}

func (c *Caddy) load(cfg []byte) {
	c.t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		c.t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	// a keep-alive connection the replaced server accepted is served by
	// the old config as it shuts down (its streams end at once): the
	// test's next request goes over a new one, to the new config
	http.DefaultClient.CloseIdleConnections()
	c.waitReady()
}

func (c *Caddy) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(c.Port), 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("caddy did not listen on port %d", c.Port)
}

// Do sends a request to the instance; path is appended to URL.
func (c *Caddy) Do(method, path string, header http.Header) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.URL+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}
