// The TypeScript SDK 2.x client (@modelcontextprotocol/client) with the MCP
// tasks extension (io.modelcontextprotocol/tasks) declared, driven by the
// extension's own client package (@modelcontextprotocol/ext-tasks: its
// task session polls tasks/get, routes a task's inputRequests to the
// application's input handler and answers them with tasks/update, cancels
// with tasks/cancel, resumes a task by reference), against an mcp_stdio
// route that serves the tasks fixture (internal/mcpserver, mode tasks: a
// 2025 stdio server with no tasks of its own).
//  1. disconnect-reconnect: a 20-second tool becomes a task, the client
//     detaches and disconnects right after, a new client resumes the task
//     by its id and gets the result;
//  2. elicitation: a task asks a question (input_required), the input
//     handler answers it (tasks/update), the task completes;
//  3. cancel: a cancelled task ends cancelled and the server process is
//     sent notifications/cancelled (it writes CANCEL_LOG);
//  4. no-extension: an SDK client without the extension gets the plain
//     result from callTool.
// ext-tasks needs the host's raw dispatch for 2026 task wire shapes (the
// SDK 2.4 Client's own decoding refuses resultType "task"): rawDispatch
// below posts them with the headers the SDK sets (MCP-Protocol-Version,
// Mcp-Method, Mcp-Name: the task id on tasks/*).
// Usage: MCP_URL=... [MCP_TOKEN=...] [CANCEL_LOG=...] node tstasks.mjs
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { createTaskSessionFromClient } from "@modelcontextprotocol/ext-tasks/client";

const url = process.env.MCP_URL;
const token = process.env.MCP_TOKEN;
const cancelLog = process.env.CANCEL_LOG;
assert.ok(url, "MCP_URL is required");
const caps = { elicitation: { form: {} }, extensions: { "io.modelcontextprotocol/tasks": {} } };
const clientInfo = { name: "caddymcp-ts2-tasks", version: "1.0.0" };

const nameField = { "tools/call": "name", "prompts/get": "name", "resources/read": "uri", "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId" };
let nextId = 1;
const wire = [];
async function rawDispatch(framed, options) {
	const request = { jsonrpc: "2.0", id: framed.id ?? `ts-${nextId++}`, ...framed };
	const headers = { "Content-Type": "application/json", Accept: "application/json, text/event-stream",
		"MCP-Protocol-Version": request.params?._meta?.["io.modelcontextprotocol/protocolVersion"] ?? "2026-07-28",
		"Mcp-Method": request.method };
	const f = nameField[request.method];
	if (f && typeof request.params?.[f] === "string") headers["Mcp-Name"] = request.params[f];
	if (token) headers.Authorization = `Bearer ${token}`;
	const resp = await fetch(url, { method: "POST", headers, body: JSON.stringify(request), signal: options?.signal });
	const text = await resp.text();
	wire.push(request.method);
	if ((resp.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
		const answers = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)));
		return answers.find((d) => d.id === request.id && ("result" in d || "error" in d));
	}
	return JSON.parse(text);
}

async function connect(withTasks, inputs) {
	const client = new Client(clientInfo, {
		capabilities: withTasks ? caps : { elicitation: { form: {} } },
		versionNegotiation: { mode: { pin: "2026-07-28" } },
	});
	const requestInit = token ? { headers: { Authorization: `Bearer ${token}` } } : undefined;
	await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit }));
	assert.equal(client.getProtocolEra(), "modern");
	if (!withTasks) return { client };
	const session = createTaskSessionFromClient(client, { endpointId: "caddymcp-tstasks", rawDispatch,
		v2RequestFraming: { protocolVersion: "2026-07-28", clientInfo, clientCapabilities: caps },
		onInputRequest: async (request, context) => {
			inputs?.push({ kind: request.kind, scope: context.scope, delivery: context.delivery });
			return { action: "accept", content: { confirm: true } };
		} });
	return { client, session };
}

let failed = 0;
async function step(name, fn) {
	const t0 = Date.now();
	try {
		const detail = await fn();
		console.log(`ok ${name}: ${detail}; ${Date.now() - t0} ms`);
	} catch (e) {
		failed++;
		console.log(`FAIL ${name}: ${e?.stack ?? e}`);
	}
}
const text = (outcome) => outcome.result?.content?.[0]?.text;

await step("disconnect-reconnect", async () => {
	const a = await connect(true);
	const ex = await a.session.callTool("slow_compute", { seconds: 20, label: "ts-20s" });
	assert.equal(ex.kind, "task", "the 20-second call is a task");
	const taskId = ex.handle.taskId;
	await ex.detach(); // stop driving it, without cancelling
	await a.client.close(); // the client goes away while the tool runs (its session with it)
	const b = await connect(true);
	const resumed = await b.session.resumeTask({ endpointId: b.session.endpointId, generation: "v2", taskId, originalOperation: "tools/call" });
	const { outcome } = await resumed.settle();
	await b.session.close();
	await b.client.close();
	assert.equal(outcome.status, "completed", JSON.stringify(outcome));
	assert.match(text(outcome), /after 20 seconds/);
	return `task ${taskId.slice(0, 20)}… resumed by a second client: ${text(outcome)}`;
});

await step("elicitation", async () => {
	const inputs = [];
	const c = await connect(true, inputs);
	const ex = await c.session.callTool("confirm_delete", { filename: "ts.txt" });
	assert.equal(ex.kind, "task");
	const { outcome } = await ex.settle();
	await c.session.close();
	await c.client.close();
	assert.equal(outcome.status, "completed", JSON.stringify(outcome));
	assert.equal(text(outcome), "deleted 'ts.txt'");
	assert.deepEqual(inputs, [{ kind: "elicitation", scope: "task", delivery: "task-update" }]);
	return `one elicitation of the task answered through tasks/update, ${text(outcome)}`;
});

await step("cancel", async () => {
	const c = await connect(true);
	const ex = await c.session.callTool("slow_compute", { seconds: 60, label: "ts-cancel" });
	assert.equal(ex.kind, "task");
	const taskId = ex.handle.taskId;
	await ex.cancel();
	const view = await rawDispatch({ method: "tasks/get", params: { taskId, _meta: {
		"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": caps } } });
	await c.session.close();
	await c.client.close();
	assert.equal(view.result?.status, "cancelled", JSON.stringify(view));
	let seen = "not checked (CANCEL_LOG unset)";
	if (cancelLog) {
		const until = Date.now() + 10000;
		while (!readFileSync(cancelLog, "utf8").includes("ts-cancel")) {
			assert.ok(Date.now() < until, "the server process was not sent notifications/cancelled");
			await new Promise((r) => setTimeout(r, 50));
		}
		seen = "the server process logged notifications/cancelled";
	}
	return `tasks/cancel sent, the task is cancelled; ${seen}`;
});

await step("no-extension", async () => {
	const { client } = await connect(false);
	const res = await client.callTool({ name: "slow_compute", arguments: { seconds: 3, label: "ts-plain" } });
	await client.close();
	assert.equal(res.taskId, undefined, JSON.stringify(res));
	assert.match(res.content[0].text, /after 3 seconds/);
	return `plain result: ${res.content[0].text}`;
});

if (failed) {
	console.log(`TypeScript SDK 2.x client with the tasks extension at ${url}: ${failed} step(s) failed`);
	process.exit(1);
}
const counts = Object.entries(wire.reduce((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {})).map(([k, v]) => `${k} ${v}`).join(", ");
console.log(`TypeScript SDK 2.x client with the tasks extension (ext-tasks) at ${url}: all 4 steps ok (${counts})`);
