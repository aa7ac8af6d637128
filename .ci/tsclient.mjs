// The TypeScript SDK's MCP client against an mcp_stdio endpoint: initialize,
// list and call tools, receive progress, answer sampling and elicitation
// requests, terminate the session. Usage: node tsclient.mjs <url>
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const url = new URL(process.argv[2]);
const client = new Client({ name: "caddymcp-ts-client", version: "1.0.0" }, { capabilities: { sampling: {}, elicitation: {} } });
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
	model: "test-model", role: "assistant", content: { type: "text", text: "sampled by ts" },
}));
client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: { username: "ts-user" } }));

const transport = new StreamableHTTPClientTransport(url);
await client.connect(transport);
assert.ok(transport.sessionId, "no session id");

const { tools } = await client.listTools();
assert.ok(tools.some((t) => t.name === "test_simple_text"), "tools/list lacks test_simple_text");

const simple = await client.callTool({ name: "test_simple_text" });
assert.equal(simple.content[0].type, "text");

const progress = [];
const withProgress = await client.callTool({ name: "test_tool_with_progress" }, undefined, {
	onprogress: (p) => progress.push(p.progress),
});
assert.ok(!withProgress.isError);
assert.deepEqual(progress, [0, 50, 100], "progress notifications");

const sampled = await client.callTool({ name: "test_sampling", arguments: { prompt: "hi" } });
assert.match(sampled.content[0].text, /sampled by ts/);

const elicited = await client.callTool({ name: "test_elicitation", arguments: { message: "name?" } });
assert.match(elicited.content[0].text, /ts-user/);

await transport.terminateSession();
assert.equal(transport.sessionId, undefined);
await client.close();
console.log("TypeScript SDK client: initialize, tools/list, tools/call, progress, sampling, elicitation, terminate: ok");
