// mcp_stdio in front of a modern stdio server (.ci/modern-server.mjs, the
// TypeScript SDK 2.x): requests pass through, and the server's own
// input_required rounds reach the client with the server's requestState
// sealed inside the bridge's. Usage: node tsmodern.mjs <url>
import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const url = process.argv[2];
const meta = {
	"io.modelcontextprotocol/protocolVersion": "2026-07-28",
	"io.modelcontextprotocol/clientCapabilities": { elicitation: {} },
};
const res = await fetch(url, {
	method: "POST",
	headers: {
		"Content-Type": "application/json", Accept: "application/json, text/event-stream",
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "two_rounds",
	},
	body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "two_rounds", arguments: {}, _meta: meta } }),
});
const first = (await res.json()).result;
assert.equal(first.resultType, "input_required");
assert.ok(first.inputRequests.name, "the server's own input key is kept");
assert.notEqual(first.requestState, "round-1", "the server's requestState is sealed inside the bridge's");
assert.equal(first._meta["io.modelcontextprotocol/serverInfo"].name, "caddymcp-modern-test-server");

const client = new Client({ name: "caddymcp-ts2-modern", version: "1.0.0" }, {
	capabilities: { elicitation: {} }, versionNegotiation: { mode: { pin: "2026-07-28" } },
});
client.setRequestHandler("elicitation/create", async (req) => ({
	action: "accept", content: /colour/.test(req.params.message) ? { colour: "teal" } : { name: "Ann" },
}));
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
assert.equal(client.getProtocolEra(), "modern");
const greet = await client.callTool({ name: "greet", arguments: { name: "caddy" } });
assert.match(greet.content[0].text, /hello caddy/);
const rounds = await client.callTool({ name: "two_rounds", arguments: {} });
assert.equal(rounds.content[0].text, "Ann likes teal");
await client.close();
console.log("modern stdio server (TypeScript SDK 2.x) behind mcp_stdio: passed through, two input_required rounds: ok");
