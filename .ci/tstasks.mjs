// A real-client check of the MCP tasks extension (io.modelcontextprotocol/tasks,
// MCP 2026-07-28) against an MCP endpoint: the TypeScript SDK 2.x client
// (@modelcontextprotocol/client, pinned to 2026-07-28) with the requester
// session of @modelcontextprotocol/ext-tasks on top. The SDK client connects
// (server/discover) and carries tools/list. ext-tasks sends tools/call and
// tasks/* through rawDispatch, because the SDK's 2026 decoder rejects
// resultType "task" (and strips the resultType that ext-tasks checks on
// tasks/* results). rawDispatch here is a second SDK
// StreamableHTTPClientTransport driven directly. It takes MCP-Protocol-Version,
// Mcp-Method and Mcp-Name (the task id on tasks/*) from the body, and
// Authorization from MCP_TOKEN.
//  1. disconnect-reconnect: slow_compute 20 s becomes a task. Client A hands
//     the task reference off and closes. Client B resumes the task and polls
//     tasks/get until it completes (deadline 60 s);
//  2. elicitation: confirm_delete's task goes input_required with one
//     elicitation/create. ext-tasks hands it to the session's input handler
//     (not to the SDK's elicitation/create handler) and answers it with
//     tasks/update. The task completes;
//  3. cancel: tasks/cancel on slow_compute 60 s, then tasks/get until the
//     task is cancelled (deadline 15 s). With CANCEL_LOG set, the server
//     must also log ts-cancel there (deadline 10 s);
//  4. no-extension: an SDK client without the extension gets the plain
//     CallToolResult.
// ext-tasks also needs these from the server: server/discover advertising
// extensions["io.modelcontextprotocol/tasks"] = {}; a CreateTaskResult with
// taskId, status, createdAt, lastUpdatedAt and ttlMs (an integer or null);
// resultType "complete" on tasks/* results; and, with its default codec,
// resultType "complete" inside a completed task's result.
// Output: one line per step, "ok <step>: ..." or "FAIL <step>: ...", and
// exit 1 on any failure. Every wait has a deadline, and polling follows the
// server's pollIntervalMs.
// Usage (from the directory holding node_modules, as conformance.sh runs it):
//   MCP_URL=<url> [MCP_TOKEN=<bearer>] [CANCEL_LOG=<file>] node tstasks.mjs
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import {
	DispatchError, createApplicationInputHandler, createTaskSessionEndpointId, createTaskSessionFromClient,
} from "@modelcontextprotocol/ext-tasks/client";

const EXT = "io.modelcontextprotocol/tasks";
const url = process.env.MCP_URL;
const token = process.env.MCP_TOKEN || undefined;
const cancelLog = process.env.CANCEL_LOG || undefined;
if (!url) {
	console.log("FAIL setup: MCP_URL is not set");
	process.exit(1);
}
const clientInfo = { name: "caddymcp-tstasks", version: "1.0.0" };
const requestInit = token ? { headers: { Authorization: `Bearer ${token}` } } : undefined;
const endpointId = await createTaskSessionEndpointId("caddymcp-tstasks", { url });
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// what went over HTTP, as the server sees it: every POST's standard headers
// and body; the response body for tools/call and tasks/*
const wire = [];
function recordingFetch(label) {
	return async (input, init = {}) => {
		const headers = new Headers(init.headers);
		let body;
		try { body = typeof init.body === "string" ? JSON.parse(init.body) : undefined; } catch { body = undefined; }
		const rec = {
			label, method: body?.method, body, mcpMethod: headers.get("mcp-method"), mcpName: headers.get("mcp-name"),
			authorization: headers.get("authorization"),
		};
		if (init.method === "POST" && body?.method) wire.push(rec);
		const res = await fetch(input, init);
		rec.status = res.status;
		if (body?.id !== undefined && (body.method === "tools/call" || body.method?.startsWith("tasks/"))) {
			rec.response = readResponse(res.clone(), body.id).catch(() => undefined);
		}
		return res;
	};
}
async function readResponse(res, id) {
	const type = res.headers.get("content-type") ?? "";
	if (type.includes("application/json")) return [await res.json()].flat().find((m) => m.id === id);
	if (type.includes("text/event-stream")) {
		for (const line of (await res.text()).split("\n")) {
			if (!line.startsWith("data:")) continue;
			try { const m = JSON.parse(line.slice(5)); if (m.id === id) return m; } catch { /* not JSON */ }
		}
	}
	return undefined;
}
const sent = (label, method) => wire.filter((r) => r.label === label && r.method === method);
const newTransport = (label) => new StreamableHTTPClientTransport(new URL(url), { requestInit, fetch: recordingFetch(label) });

// ext-tasks's rawDispatch: the host's own request coordinator (ids, response
// matching, deadlines) over a dedicated SDK transport
class RawLane {
	constructor(label) {
		this.label = label;
		this.seq = 0;
		this.pending = new Map();
		this.transport = newTransport(label);
		this.transport.onmessage = (m) => {
			const done = m && "id" in m && !("method" in m) ? this.pending.get(m.id) : undefined;
			if (done) done(m);
		};
		this.transport.onerror = () => {}; // failures reach the caller through send()
	}
	start() { return this.transport.start(); }
	close() { return this.transport.close(); }
	dispatch = (request, options = {}) => {
		const id = `${this.label}-${++this.seq}`;
		const timeoutMs = options.context?.requestTimeoutMs ?? 30000;
		return new Promise((resolve, reject) => {
			const finish = (error, response) => {
				clearTimeout(timer);
				options.signal?.removeEventListener("abort", onAbort);
				this.pending.delete(id);
				if (error) reject(error); else resolve(response);
			};
			const timer = setTimeout(() => finish(new DispatchError(`${request.method}: no answer within ${timeoutMs} ms`)), timeoutMs);
			const onAbort = () => finish(options.signal.reason ?? new DOMException("aborted", "AbortError"));
			options.signal?.addEventListener("abort", onAbort, { once: true });
			this.pending.set(id, (m) => finish(undefined, m.error ? { kind: "error", error: m.error } : { kind: "result", result: m.result }));
			this.transport.send({ ...request, jsonrpc: "2.0", id }, { headers: options.context?.headers, requestSignal: options.signal })
				.catch((e) => finish(new DispatchError(`${request.method}: ${e?.message ?? e}`, false, { cause: e })));
		});
	};
}

// bounds any promise; the step fails with `what` when the deadline passes
async function within(ms, what, promise) {
	let timer;
	try {
		return await Promise.race([promise, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no outcome within ${secs(ms)}`)), ms); })]);
	} finally { clearTimeout(timer); }
}

// an SDK 2.x client (pinned 2026-07-28, so server/discover and no
// initialize) with an ext-tasks session; the extension is declared in the
// client's capabilities (every SDK request's _meta) and by ext-tasks on the
// requests it frames
async function openSession(label, { onInputRequest } = {}) {
	const capabilities = { elicitation: { form: {} }, extensions: { [EXT]: {} } };
	const client = new Client(clientInfo, { capabilities, versionNegotiation: { mode: { pin: "2026-07-28" } } });
	const lane = new RawLane(label);
	let session;
	const close = async () => {
		await session?.close().catch(() => {});
		await client.close().catch(() => {});
		await lane.close().catch(() => {});
	};
	try {
		await within(15000, `${label}: connect`, client.connect(newTransport(label)));
		assert.equal(client.getProtocolEra(), "modern", `${label}: protocol era`);
		const advertised = client.getServerCapabilities()?.extensions?.[EXT];
		assert.ok(advertised && typeof advertised === "object" && Object.keys(advertised).length === 0,
			`server/discover capabilities.extensions["${EXT}"] is ${JSON.stringify(advertised)}, ext-tasks needs {}`);
		await lane.start();
		session = createTaskSessionFromClient(client, {
			endpointId, rawDispatch: lane.dispatch, onInputRequest, onError: (e) => background.push(e),
			v2RequestFraming: { protocolVersion: client.getNegotiatedProtocolVersion(), clientInfo, clientCapabilities: capabilities },
		});
		assert.ok(session.capabilities.inputResponses, `${label}: ext-tasks did not negotiate tasks V2`);
	} catch (e) {
		await close();
		throw e;
	}
	return { client, lane, session, close };
}

// checks on what a session sent: Mcp-Name = taskId on tasks/* (the SDK
// base64-wraps a value that is not plain visible ASCII), the bearer token on
// every request
const headerValue = (v) => /^=\?base64\?.*\?=$/.test(v ?? "") ? Buffer.from(v.slice(9, -2), "base64").toString("utf8") : v;
function wireChecks(label) {
	const mine = wire.filter((r) => r.label === label);
	for (const r of mine.filter((r) => r.method.startsWith("tasks/"))) {
		assert.equal(headerValue(r.mcpName), r.body.params.taskId, `${r.method} Mcp-Name`);
		assert.ok(r.body.params._meta?.["io.modelcontextprotocol/clientCapabilities"]?.extensions?.[EXT], `${r.method} without the extension in _meta`);
	}
	if (token) assert.ok(mine.every((r) => r.authorization === `Bearer ${token}`), "a request went without the bearer token");
	return `${mine.filter((r) => r.method.startsWith("tasks/")).length} tasks/* sent with Mcp-Name = taskId${token ? ", all with the bearer token" : ""}`;
}
async function createdTask(label) {
	const call = sent(label, "tools/call").at(-1);
	const res = await within(5000, "reading the tools/call response", call.response);
	const r = res?.result;
	assert.ok(r, `tools/call: ${JSON.stringify(res)}`);
	assert.equal(r.resultType, "task", `tools/call: ${JSON.stringify(r)}`);
	assert.ok(typeof r.taskId === "string" && r.taskId, "CreateTaskResult without taskId");
	assert.ok(r.ttlMs === null || Number.isInteger(r.ttlMs), `CreateTaskResult ttlMs ${r.ttlMs}`);
	return r;
}
const textOf = (result) => result?.content?.[0]?.text;
const oneLine = (s, max = 400) => { const t = String(s).replace(/\s+/g, " ").trim(); return t.length > max ? `${t.slice(0, max)}…` : t; };
// zod issues (ext-tasks's schema failures), flattened to "path: message"
function issues(list, out = new Set()) {
	for (const i of list ?? []) {
		if (i.code === "invalid_union" && i.errors) for (const branch of i.errors) issues(branch, out);
		else out.add(`${(i.path ?? []).join(".") || "(root)"}: ${i.message}`);
	}
	return out;
}
const why = (e) => {
	let s = oneLine(e?.message ?? e);
	for (let c = e?.cause; c; c = c.cause) s += ` (cause: ${c.issues ? [...issues(c.issues)].join("; ") : oneLine(c.message ?? c)})`;
	return oneLine(s, 700);
};
const background = []; // errors ext-tasks reported through onError
function outcomeOk(outcome, want = "completed") {
	if (outcome.status === want) return;
	const e = outcome.error;
	const decode = e?.cause?.name === "ProtocolDecodeError" || /schema validation/.test(e?.message ?? "");
	throw new Error(`outcome ${outcome.status}, want ${want}${e ? `: ${why(e.cause ?? e)}` : ""}` +
		(decode && want === "completed" ? " — ext-tasks's default CallToolResult codec rejected the completed task's result (it needs resultType \"complete\" and content[])" : ""));
}
// session.callTool; when it fails on a tools/call that did answer with
// resultType "task", say which CreateTaskResult field ext-tasks missed
async function callTask(s, label, name, args) {
	try {
		return await s.session.callTool(name, args, { requestTimeoutMs: 15000 });
	} catch (e) {
		const r = (await within(5000, "reading the tools/call response", sent(label, "tools/call").at(-1)?.response ?? Promise.resolve()))?.result;
		if (r?.resultType !== "task") throw e;
		const bad = [];
		for (const f of ["taskId", "status", "createdAt", "lastUpdatedAt"]) if (typeof r[f] !== "string") bad.push(`${f} ${JSON.stringify(r[f])}`);
		if (!(r.ttlMs === null || Number.isInteger(r.ttlMs))) bad.push(`ttlMs ${JSON.stringify(r.ttlMs)} (must be present, an integer or null)`);
		if (r.pollIntervalMs !== undefined && !Number.isInteger(r.pollIntervalMs)) bad.push(`pollIntervalMs ${JSON.stringify(r.pollIntervalMs)}`);
		throw new Error(`tools/call answered resultType "task", but ext-tasks did not take it for a CreateTaskResult (${bad.join(", ") || why(e)})`);
	}
}

let failed = 0;
async function step(name, deadlineMs, fn) {
	try {
		const detail = await within(deadlineMs, name, fn());
		const notes = background.splice(0).map((e) => why(e));
		console.log(`ok ${name}: ${detail}${notes.length ? `; ext-tasks reported: ${notes.join(" | ")}` : ""}`);
	} catch (e) {
		failed++;
		const notes = background.splice(0).map((x) => why(x));
		console.log(`FAIL ${name}: ${why(e)}${notes.length ? `; ext-tasks reported: ${notes.join(" | ")}` : ""}`);
	}
}

await step("disconnect-reconnect", 100000, async () => {
	const a = await openSession("A");
	let reference, created, callMs;
	const t0 = Date.now();
	try {
		const execution = await callTask(a, "A", "slow_compute", { seconds: 20, label: "ts-20s" });
		callMs = Date.now() - t0;
		assert.equal(execution.kind, "task", "slow_compute 20 s was answered at once, not with a task");
		created = await createdTask("A");
		// persist the reference (as for a restart), release it without cancelling
		await execution.handoff((ref) => { reference = JSON.stringify(ref); });
		await within(5000, "A: releasing the execution", execution.result());
	} finally {
		await a.close();
	}
	const closedAt = Date.now() - t0;
	assert.equal(sent("A", "tasks/cancel").length, 0, "client A sent tasks/cancel");
	const b = await openSession("B");
	try {
		const execution = await b.session.resumeTask(JSON.parse(reference), { requestTimeoutMs: 15000 });
		const seen = [];
		const { outcome } = await execution.settle({
			signal: AbortSignal.timeout(60000),
			onEvent: (e) => { if (e.type === "task") seen.push(e.task.status); },
		}).catch((e) => { throw e?.name === "TimeoutError" ? new Error(`task ${created.taskId} not terminal within 60 s of client B's start: ${seen.at(-1)}`) : e; });
		const doneMs = Date.now() - t0;
		assert.equal(seen[0], "working", `client B's first tasks/get: ${seen[0]}`);
		outcomeOk(outcome);
		assert.match(textOf(outcome.result) ?? "", /after 20 seconds/, JSON.stringify(outcome.result));
		const gets = sent("B", "tasks/get").length;
		return `via ext-tasks (A: session.callTool + execution.handoff; B: session.resumeTask + execution.settle; tools/call and tasks/* over rawDispatch) ` +
			`task ${created.taskId} (ttlMs ${created.ttlMs}, pollIntervalMs ${created.pollIntervalMs ?? "none"}) created in ${callMs} ms; ` +
			`client A closed ${secs(closedAt)} in, no tasks/cancel; client B found it ${seen[0]}, tasks/get x${gets}, completed ${secs(doneMs)} after the call: ` +
			`"${textOf(outcome.result)}"; ${wireChecks("B")}`;
	} finally {
		await b.close();
	}
});

await step("elicitation", 40000, async () => {
	const asked = [];
	let sdkHandlerCalls = 0;
	const answer = { action: "accept", content: { confirm: true } };
	const onInputRequest = createApplicationInputHandler({
		elicitation: async (request, context) => { asked.push({ request, context }); return answer; },
		sampling: async () => { throw new Error("unexpected sampling request"); },
		roots: async () => { throw new Error("unexpected roots request"); },
	});
	const s = await openSession("E", { onInputRequest });
	// the SDK's own handler: ext-tasks does not route task inputRequests here
	s.client.setRequestHandler("elicitation/create", async () => { sdkHandlerCalls++; return answer; });
	try {
		const t0 = Date.now();
		const execution = await callTask(s, "E", "confirm_delete", { filename: "ts.txt" });
		assert.equal(execution.kind, "task", "confirm_delete was answered at once, not with a task");
		const created = await createdTask("E");
		const snapshots = [];
		const { outcome } = await execution.settle({ signal: AbortSignal.timeout(30000), onEvent: (e) => { if (e.type === "task") snapshots.push(e.task); } })
			.catch((e) => { throw e?.name === "TimeoutError" ? new Error(`task not terminal within 30 s: ${snapshots.at(-1)?.status}`) : e; });
		const waiting = snapshots.find((t) => t.status === "input_required");
		assert.ok(waiting, `no tasks/get showed input_required (statuses: ${snapshots.map((t) => t.status)})`);
		const keys = Object.keys(waiting.raw.inputRequests ?? {});
		assert.equal(keys.length, 1, `inputRequests: ${JSON.stringify(waiting.raw.inputRequests)}`);
		const question = waiting.raw.inputRequests[keys[0]];
		assert.equal(question.method, "elicitation/create");
		assert.equal(question.params.requestedSchema?.properties?.confirm?.type, "boolean", JSON.stringify(question.params));
		assert.equal(asked.length, 1, `the input handler was called ${asked.length} times`);
		assert.equal(asked[0].context.delivery, "task-update");
		assert.equal(asked[0].context.inputId, keys[0]);
		const updates = sent("E", "tasks/update");
		assert.equal(updates.length, 1, `${updates.length} tasks/update sent`);
		assert.deepEqual(updates[0].body.params.inputResponses, { [keys[0]]: answer });
		const ack = await within(5000, "reading the tasks/update response", updates[0].response);
		assert.equal(ack?.result?.resultType, "complete", `tasks/update: ${JSON.stringify(ack)}`);
		outcomeOk(outcome);
		assert.equal(textOf(outcome.result), "deleted 'ts.txt'", JSON.stringify(outcome.result));
		assert.equal(sdkHandlerCalls, 0);
		return `via ext-tasks (session.callTool + execution.settle; inputRequests go to the session's onInputRequest, ` +
			`delivery "task-update", not to the SDK client's elicitation/create handler, called ${sdkHandlerCalls} times; ext-tasks sent tasks/update) ` +
			`task ${created.taskId}: input_required with 1 elicitation/create (key "${keys[0]}", "${question.params.message}"), ` +
			`tasks/update {${keys[0]}: accept, confirm: true} acked complete, completed ${secs(Date.now() - t0)} after the call ` +
			`(tasks/get x${sent("E", "tasks/get").length}): "${textOf(outcome.result)}"; ${wireChecks("E")}`;
	} finally {
		await s.close();
	}
});

await step("cancel", 45000, async () => {
	const s = await openSession("C");
	try {
		const execution = await callTask(s, "C", "slow_compute", { seconds: 60, label: "ts-cancel" });
		assert.equal(execution.kind, "task", "slow_compute 60 s was answered at once, not with a task");
		const created = await createdTask("C");
		const t0 = Date.now();
		await execution.cancel(AbortSignal.timeout(10000)); // ext-tasks checks the ack is resultType "complete"
		const ackMs = Date.now() - t0;
		const ack = await within(5000, "reading the tasks/cancel response", sent("C", "tasks/cancel")[0].response);
		assert.equal(ack?.result?.resultType, "complete", `tasks/cancel: ${JSON.stringify(ack)}`);
		// the local execution ends at the ack; the server's state is polled
		const outcome = await s.session.task(created.taskId).result({ signal: AbortSignal.timeout(15000) })
			.catch((e) => { throw e?.name === "TimeoutError" ? new Error("task not terminal within 15 s of tasks/cancel") : e; });
		const terminalMs = Date.now() - t0;
		outcomeOk(outcome, "cancelled");
		let logged = "CANCEL_LOG unset, log not checked";
		if (cancelLog) {
			const until = Date.now() + 10000;
			const read = () => { try { return readFileSync(cancelLog, "utf8"); } catch { return ""; } };
			while (!read().split("\n").some((l) => l.includes("ts-cancel"))) {
				assert.ok(Date.now() < until, `no line with ts-cancel in ${cancelLog} within 10 s`);
				await sleep(100);
			}
			logged = `the server logged ts-cancel ${secs(Date.now() - t0)} after tasks/cancel`;
		}
		return `via ext-tasks (session.callTool, execution.cancel, session.task(id).result over rawDispatch) task ${created.taskId}: ` +
			`tasks/cancel acked complete in ${ackMs} ms, tasks/get cancelled ${secs(terminalMs)} after it (tasks/get x${sent("C", "tasks/get").length}); ` +
			`${logged}; ${wireChecks("C")}`;
	} finally {
		await s.close();
	}
});

await step("no-extension", 40000, async () => {
	const client = new Client(clientInfo, { capabilities: { elicitation: { form: {} } }, versionNegotiation: { mode: { pin: "2026-07-28" } } });
	try {
		await within(15000, "connect", client.connect(newTransport("P")));
		assert.equal(client.getProtocolEra(), "modern");
		const t0 = Date.now();
		const res = await client.callTool({ name: "slow_compute", arguments: { seconds: 3, label: "ts-plain" } }, { timeout: 30000 });
		const ms = Date.now() - t0;
		const call = sent("P", "tools/call").at(-1);
		assert.equal(call.body.params._meta?.["io.modelcontextprotocol/clientCapabilities"]?.extensions?.[EXT], undefined, "the request declared the extension");
		const raw = (await within(5000, "reading the tools/call response", call.response))?.result;
		assert.ok(raw, "no tools/call result on the wire");
		assert.equal(raw.taskId, undefined, `a task for a client without the extension: ${JSON.stringify(raw)}`);
		assert.ok(raw.resultType === undefined || raw.resultType === "complete", `resultType ${raw.resultType}`);
		assert.equal(res.taskId, undefined);
		assert.match(textOf(res) ?? "", /after 3 seconds/, JSON.stringify(res));
		if (token) assert.ok(sent("P", "tools/call").every((r) => r.authorization === `Bearer ${token}`));
		return `via the SDK client.callTool, no ext-tasks (ext-tasks declares the extension on every call to a server that advertises it) ` +
			`plain CallToolResult after ${secs(ms)}, resultType ${raw.resultType ?? "absent"}, no taskId: "${textOf(res)}"`;
	} finally {
		await client.close().catch(() => {});
	}
});

if (failed) {
	console.log(`tstasks: ${failed} of 4 steps failed against ${url}`);
	process.exit(1);
}
console.log(`tstasks: all 4 steps ok against ${url}`);
process.exit(0);
