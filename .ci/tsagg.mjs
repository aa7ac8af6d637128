// The TypeScript SDK 2.x client (@modelcontextprotocol/client) against an
// mcp_aggregate endpoint with three backends (conformance.sh: go-sdk's
// everything-server "every" and server-memory "memory" over stdio, the
// TypeScript everything server "remote" over Streamable HTTP; prefix
// collision): lists and calls across backends, an elicitation round of a
// backend, and a cancelled call.
// Usage: node tsagg.mjs <url> <pin|default>
import assert from "node:assert/strict";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const [url, mode] = process.argv.slice(2);
assert.ok(mode === "pin" || mode === "default", `unknown mode ${mode}`);
const client = new Client({ name: "caddymcp-tsagg", version: "1.0.0" }, {
	capabilities: { elicitation: {} },
	...(mode === "pin" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {}),
});
let hold = null; // set: the next question waits until the call is aborted
client.setRequestHandler("elicitation/create", async () => {
	if (hold) await hold;
	return { action: "accept", content: { name: "agg-user", username: "agg-user" } };
});
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
const era = client.getProtocolEra();
assert.equal(era, mode === "pin" ? "modern" : "legacy");

const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
for (const want of ["test_simple_text", "create_entities", "read_graph"]) {
	assert.ok(names.includes(want), `tools/list lacks ${want}: ${names}`);
}
// the TypeScript everything server speaks 2025 only: listed in that era
if (era === "legacy") {
	assert.ok(names.includes("echo") && names.includes("get-sum"), `tools/list lacks the remote backend's tools: ${names}`);
}
// calls across backends
const simple = await client.callTool({ name: "test_simple_text", arguments: {} });
assert.match(simple.content[0].text, /simple text/);
const entity = `agg-${mode}-${process.pid}`;
await client.callTool({ name: "create_entities", arguments: { entities: [{ name: entity, entityType: "test", observations: ["through mcp_aggregate"] }] } });
const graph = await client.callTool({ name: "read_graph", arguments: {} });
assert.match(JSON.stringify(graph), new RegExp(entity), "server-memory did not keep the entity");
if (era === "legacy") {
	const echoed = await client.callTool({ name: "echo", arguments: { message: "across backends" } });
	assert.match(echoed.content[0].text, /across backends/);
}
// an elicitation round of a backend
const elicited = era === "modern"
	? await client.callTool({ name: "test_input_required_result_elicitation", arguments: {} })
	: await client.callTool({ name: "test_elicitation", arguments: { message: "name?" } });
assert.match(elicited.content[0].text, /agg-user/, JSON.stringify(elicited));
// a cancelled call: the remote's long operation (2025); in 2026-07-28 a
// call whose input_required round the client is still answering
const ac = new AbortController();
hold = era === "modern" ? new Promise((resolve) => ac.signal.addEventListener("abort", resolve)) : null;
const slow = era === "legacy"
	? client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 30, steps: 10 } }, { signal: ac.signal })
	: client.callTool({ name: "test_input_required_result_elicitation", arguments: {} }, { signal: ac.signal });
setTimeout(() => ac.abort("cancelled by the test"), 300);
const t0 = Date.now();
await assert.rejects(slow, (e) => /cancelled by the test|abort/i.test(String(e?.message) + String(e?.name)), "the aborted call did not end as aborted");
assert.ok(Date.now() - t0 < 10000, "the aborted call took as long as the operation");
hold = null;
// the aggregate still serves after the cancellation
const again = await client.callTool({ name: "test_simple_text", arguments: {} });
assert.match(again.content[0].text, /simple text/);
await client.close();
console.log(`tsagg (${mode}, ${era}): ${names.length} tools listed (the remote backend speaks 2025 only), calls across backends, an elicitation round, a cancelled call`);
