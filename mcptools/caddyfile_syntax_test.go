package mcptools_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddymcp/caddymcp/internal/caddyfiledoc"
	"github.com/caddymcp/caddymcp/mcptools"
)

// The syntax above UnmarshalCaddyfile and the README's syntax block list
// every option the parser reads, and no other.
func TestCaddyfileSyntax(t *testing.T) {
	caddyfiledoc.Check(t, "caddyfile.go", "../README.md", "mcp_tools")
}

// Every option lands in its JSON field; mistakes are refused at adapt time.
func TestCaddyfile(t *testing.T) {
	parse := func(in string) (*mcptools.Handler, error) {
		h := new(mcptools.Handler)
		return h, h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
	}
	h, err := parse(`mcp_tools {
	allow tools read_* search
	allow tools list
	deny tools *_admin
	deny resources file:///etc/*
	tool search {
		rename find
		title Find
		description "Search the docs."
		annotation readOnlyHint true
		fixed tenant acme
		fixed limit 10
	}
	prompt summarize {
		rename sum
		fixed style 10
	}
	max_size 1MiB
}`)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(h)
	want := `{"tools":{"allow":["read_*","search","list"],"deny":["*_admin"],"entries":{"search":{"rename":"find","title":"Find","description":"Search the docs.","annotations":{"readOnlyHint":true},"fixed":{"limit":10,"tenant":"acme"}}}},"prompts":{"entries":{"summarize":{"rename":"sum","fixed":{"style":"10"}}}},"resources":{"deny":["file:///etc/*"]},"max_size":1048576}`
	if string(got) != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	for _, row := range []struct{ in, err string }{
		{"allow tools", "wrong argument count"},
		{"allow widgets x", `"widgets" is not tools, prompts or resources`},
		{"tool a {\n\t\trename b\n\t\trename c\n\t}", "rename: set twice"},
		{"tool a {\n\t\tfixed x 1\n\t\tfixed x 2\n\t}", `fixed "x": set twice`},
		{"tool a {\n\t\trename b\n\t}\n\ttool a {\n\t\trename c\n\t}", `tool "a": given twice`},
		{"prompt a {\n\t\tannotation x true\n\t}", "prompts have no annotations"},
		{"tool a {\n\t\tcolour red\n\t}", `unrecognized tool option "colour"`},
		{"max_size 1MiB\n\tmax_size 2MiB", "max_size: set twice"},
		{"rename a b", `unrecognized mcp_tools option "rename"`},
	} {
		_, err := parse("mcp_tools {\n\t" + row.in + "\n}")
		if err == nil || !strings.Contains(err.Error(), row.err) {
			t.Errorf("%q: %v; want %q", row.in, err, row.err)
		}
	}
	// two tools renamed alike, a rename onto another entry: refused at validation
	for _, row := range []struct{ in, err string }{
		{"tool a {\n\t\trename c\n\t}\n\ttool b {\n\t\trename c\n\t}", `are both renamed "c"`},
		{"tool a {\n\t\trename b\n\t}\n\ttool b {\n\t\tdescription x\n\t}", `the name of another tool with settings of its own`},
	} {
		h, err := parse("mcp_tools {\n\t" + row.in + "\n}")
		if err == nil {
			err = h.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), row.err) {
			t.Errorf("%q: %v; want %q", row.in, err, row.err)
		}
	}
}
