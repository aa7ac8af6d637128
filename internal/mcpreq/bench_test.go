package mcpreq

import (
	"testing"
)

// BenchmarkParse: one 2026-07-28 tools/call as mcp_auth, the matcher and
// mcp_stdio read it (once per request).
func BenchmarkParse(b *testing.B) {
	body := `{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/srv/a.txt","limit":100},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}},"progressToken":3}}}`
	h := map[string]string{"Mcp-Method": "tools/call", "Mcp-Name": "read_file", "Content-Type": "application/json"}
	b.ReportAllocs()
	for b.Loop() {
		q := Get(request(body, h), DefaultMaxBytes)
		if q.Err != nil {
			b.Fatal(q.Err)
		}
	}
}
