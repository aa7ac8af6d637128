// Step-up with the TypeScript SDK 2.x client (MCP 2026-07-28) through
// mcp_auth's scope rules: with a read:all token the client sees only what it
// may call; calling a write:all tool gets 403 insufficient_scope, the
// client obtains write:all from the authorization server and retries, and
// the call succeeds. Usage: node tsstepup.mjs <mcp url> <issuer>
import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport, ClientCredentialsProvider } from "@modelcontextprotocol/client";

const [url, issuer] = process.argv.slice(2);
const statuses = [];
const tracing = async (input, init) => {
	const res = await fetch(input, init);
	if (String(input).startsWith(url)) statuses.push(res.status);
	return res;
};
const provider = new ClientCredentialsProvider({ clientId: "demo", clientSecret: "demo-secret", scope: "read:all", expectedIssuer: issuer });
const client = new Client({ name: "caddymcp-stepup", version: "1.0.0" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
await client.connect(new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch: tracing }));
assert.equal(client.getProtocolEra(), "modern");
assert.equal((await provider.tokens()).scope, "read:all");

const { tools } = await client.listTools();
assert.ok(tools.some((t) => t.name === "test_simple_text"), "read tools listed");
assert.ok(!tools.some((t) => t.name.startsWith("test_trigger_")), "write tools hidden from a read:all token");

const before = statuses.length;
const res = await client.callTool({ name: "test_trigger_tool_change", arguments: {} });
assert.ok(!res.isError, JSON.stringify(res));
assert.ok(statuses.slice(before).includes(403), `no 403 before the step-up: ${statuses.slice(before)}`);
assert.match((await provider.tokens()).scope, /write:all/, "the new token carries write:all");
const after = await client.listTools();
assert.ok(after.tools.some((t) => t.name.startsWith("test_trigger_")), "write tools listed after the step-up");
await client.close();
console.log(`step-up with the TypeScript SDK 2.x client: read:all list hides write tools, 403 insufficient_scope, write:all obtained, call succeeded (HTTP ${statuses.slice(before).join(" ")})`);
