package stdiobridge_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/stdiobridge"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_stdio")
}

// An option that takes one value is refused when given twice in a block,
// in cfargs' wording; an option that accumulates may repeat.
func TestCaddyfileSetTwice(t *testing.T) {
	caddyfiledoc.CheckRepeats(t, func() caddyfile.Unmarshaler { return new(stdiobridge.Handler) }, []caddyfiledoc.Repeat{
		{Name: "command twice", In: "mcp_stdio {\n\tcommand a\n\tcommand b\n}", Err: "command: set twice"},
		{Name: "max_sessions twice", In: "mcp_stdio {\n\tmax_sessions 1\n\tmax_sessions 2\n}", Err: "max_sessions: set twice"},
		{Name: "call_timeout twice", In: "mcp_stdio {\n\tcall_timeout off\n\tcall_timeout 1m\n}", Err: "call_timeout: set twice"},
		{Name: "stateless twice", In: "mcp_stdio {\n\tstateless\n\tstateless\n}", Err: "stateless: set twice"},
		{Name: "name twice", In: "mcp_stdio {\n\tname a\n\tname b\n}", Err: "name: set twice"},
		{Name: "roots twice", In: "mcp_stdio {\n\troots none\n\troots forward\n}", Err: "roots: set twice"},
		{Name: "env twice", In: "mcp_stdio {\n\tenv A 1\n\tenv A 2\n}", Err: "env A: set twice"},
		{Name: "lists and env repeat", In: "mcp_stdio {\n\tcommand a\n\tenv A 1\n\tenv B 2\n\tinherit_env PATH\n\tinherit_env HOME\n\tallowed_hosts a.example\n\tallowed_hosts b.example\n\tallowed_origins https://a.example\n\tallowed_origins https://b.example\n}", Err: ""},
	})
}

// The sandbox block: every option read into its JSON field, each mistake
// refused at adapt time with what is wrong.
func TestCaddyfileSandbox(t *testing.T) {
	parse := func(in string) (*stdiobridge.Handler, error) {
		h := new(stdiobridge.Handler)
		return h, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
	}
	h, err := parse(`mcp_stdio {
	command x
	sandbox {
		read /a /b
		read /c
		write /d
		no_default_paths
		network outbound 443 80
		user nobody nogroup
		memory 256MiB
		processes 64
		cpu_time 10m
		cpus 1.5
		cgroup /sys/fs/cgroup/caddy
		open_files 1024
		file_size 1GiB
		seccomp off
		unix_sockets
		best_effort
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(h.Sandbox)
	want := `{"read":["/a","/b","/c"],"write":["/d"],"no_default_paths":true,"network":"outbound","connect_ports":[443,80],"user":"nobody","group":"nogroup","memory":268435456,"processes":64,"cpus":1.5,"cgroup":"/sys/fs/cgroup/caddy","cpu_time":600000000000,"open_files":1024,"file_size":1073741824,"seccomp":false,"unix_sockets":true,"best_effort":true}`
	if string(got) != want {
		t.Errorf("sandbox block:\n got %s\nwant %s", got, want)
	}
	if h, err := parse("mcp_stdio {\n\tcommand x\n\tsandbox\n}"); err != nil || h.Sandbox == nil || string(must(json.Marshal(h.Sandbox))) != "{}" {
		t.Errorf("sandbox without a block: %v %+v", err, h.Sandbox)
	}
	for _, row := range []struct{ in, err string }{
		{"network none 443", "network none takes no ports"},
		{"network outbound 70000", "is not a TCP port"},
		{"network host", `"host" is not none or outbound`},
		{"memory lots", "is not a size"},
		{"processes 0", "is not a positive number"},
		{"cpu_time 10ms", "of a second or more"},
		{"cpus 0", "is not a number of CPUs"},
		{"cpus half", "is not a number of CPUs"},
		{"cgroup auto", `"auto" is not off or an absolute path`},
		{"seccomp maybe", "is not on or off"},
		{"user", "wrong argument count"},
		{"memory 1GiB\n\t\tmemory 2GiB", "memory: set twice"},
		{"chroot /x", `unrecognized sandbox option "chroot"`},
	} {
		_, err := parse("mcp_stdio {\n\tcommand x\n\tsandbox {\n\t\t" + row.in + "\n\t}\n}")
		if err == nil || !strings.Contains(err.Error(), row.err) {
			t.Errorf("sandbox { %s }: %v; want %q", row.in, err, row.err)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
