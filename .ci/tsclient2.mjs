// The TypeScript SDK 2.x client (@modelcontextprotocol/client) against an
// MCP endpoint with go-sdk's everything-server behind it: connect with the
// given version negotiation, list tools, call one, and go through an
// elicitation round (2026-07-28: an input_required round that the client
// fulfils through its elicitation handler; 2025: a server-to-client
// request).
// Usage: node tsclient2.mjs <url> <pin|auto|default> [bearer token]
import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, mode, token] = process.argv.slice(2);
const versionNegotiation = { pin: { mode: { pin: "2026-07-28" } }, auto: { mode: "auto" }, default: undefined }[mode];
assert.ok(mode in { pin: 1, auto: 1, default: 1 }, `unknown mode ${mode}`);

const client = new Client({ name: "caddymcp-ts2-client", version: "1.0.0" }, {
	capabilities: { elicitation: {} },
	...(versionNegotiation ? { versionNegotiation } : {}),
});
client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { name: "ts2-user", username: "ts2-user" } }));

const requestInit = token ? { headers: { Authorization: `Bearer ${token}` } } : undefined;
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit });
await client.connect(transport);
const era = client.getProtocolEra();
assert.equal(era, mode === "default" ? "legacy" : "modern", `protocol era with ${mode}`);

const { tools } = await client.listTools();
assert.ok(tools.some((t) => t.name === "test_simple_text"), "tools/list lacks test_simple_text");
const simple = await client.callTool({ name: "test_simple_text", arguments: {} });
assert.equal(simple.content[0].type, "text");

let elicited;
if (era === "modern") {
	elicited = await client.callTool({ name: "test_input_required_result_elicitation", arguments: {} });
	assert.match(elicited.content[0].text, /ts2-user/, JSON.stringify(elicited));
} else {
	elicited = await client.callTool({ name: "test_elicitation", arguments: { message: "name?" } });
	assert.match(elicited.content[0].text, /ts2-user/, JSON.stringify(elicited));
}
await client.close();
console.log(`TypeScript SDK 2.x client (${mode}, era ${era}) at ${url}: tools/list, tools/call, elicitation round: ok`);
