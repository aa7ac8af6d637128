package mcpauth_test

import (
	"strings"
	"testing"
)

// Scope hierarchies (MCP basic/authorization: servers MUST account for
// them): with `scope_implies admin read:all write:all` (and write:all
// implying write:files, transitively), a token granting only admin passes
// the route's scopes and every rule, and sees whole lists; the challenge
// names what is needed, offline_access never.
func TestScopeHierarchies(t *testing.T) {
	backend := toolServer(t, []string{"read_file", "write_file", "delete_file"})
	rules := "\t\t\tscopes offline_access\n\t\t\tscope_implies admin read:all write:all\n\t\t\tscope_implies write:all write:files\n" +
		"\t\t\ttool write_* scopes write:all\n\t\t\ttool delete_* scopes write:files\n"
	e := startRuleEnv(t, proxyTo(backend), rules)
	sess := map[string]string{"Mcp-Session-Id": "s", "Mcp-Protocol-Version": "2025-11-25"}
	call := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `"}}`
	}
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, tc := range []struct {
		name, scope, body string
		status            int
		challenge         string
		tools             string
	}{
		{"admin passes the route's scopes", "admin offline_access", call("read_file"), 200, "", ""},
		{"admin implies write:all", "admin offline_access", call("write_file"), 200, "", ""},
		{"admin implies write:files through write:all", "admin offline_access", call("delete_file"), 200, "", ""},
		{"admin sees every tool", "admin offline_access", list, 200, "", "delete_file read_file write_file"},
		{"write:all implies write:files", "read:all write:all offline_access", call("delete_file"), 200, "", ""},
		{"read:all does not", "read:all offline_access", call("write_file"), 403, `scope="read:all write:all"`, ""},
		{"read:all sees what it may call", "read:all offline_access", list, 200, "", "read_file"},
		{"no implied scope upwards", "write:files offline_access", call("read_file"), 403, `scope="read:all"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, challenge, m := e.post(e.token(tc.scope), tc.body, sess)
			if status != tc.status || !strings.Contains(challenge, tc.challenge) || strings.Contains(challenge, "offline_access") {
				t.Fatalf("%d %q, want %d %q", status, challenge, tc.status, tc.challenge)
			}
			if tc.tools != "" && strings.Join(listed(m), " ") != tc.tools {
				t.Fatalf("listed %q, want %q", listed(m), tc.tools)
			}
		})
	}
}
