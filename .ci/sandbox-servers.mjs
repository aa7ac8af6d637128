// Real servers from npm under mcp_stdio's recommended sandbox, through the
// TypeScript SDK 1.x client: every tool of @modelcontextprotocol/server-filesystem
// (its own allowed directories are FILES, OUTSIDE and /etc, the sandbox's
// writable one FILES only: what the server would allow, the sandbox still
// refuses) and of @modelcontextprotocol/server-memory (its graph in DATA).
// Usage: node sandbox-servers.mjs <base-url> <files-dir> <data-dir> <outside-dir>
import assert from "node:assert/strict";
import fs from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [base, files, data, outside] = process.argv.slice(2);

async function open(path) {
	const client = new Client({ name: "caddymcp-sandbox-check", version: "1.0.0" });
	await client.connect(new StreamableHTTPClientTransport(new URL(base + path)));
	return client;
}

const text = (r) => (r.content || []).map((c) => c.text || "").join("\n");
async function ok(client, name, args) {
	const r = await client.callTool({ name, arguments: args });
	assert.ok(!r.isError, `${name}: ${text(r)}`);
	return text(r);
}
async function refused(client, name, args, why) {
	const r = await client.callTool({ name, arguments: args });
	assert.ok(r.isError, `${name} (${why}) was not refused: ${text(r)}`);
	return text(r);
}

// the filesystem server
const fsc = await open("/fs");
const fsTools = (await fsc.listTools()).tools.map((t) => t.name).sort();
const called = new Set();
const call = async (name, args) => { called.add(name); return ok(fsc, name, args); };
await call("list_allowed_directories", {});
await call("write_file", { path: `${files}/hello.txt`, content: "hello from a sandboxed server\n" });
assert.match(await call("read_text_file", { path: `${files}/hello.txt` }), /hello from a sandboxed server/);
await call("read_file", { path: `${files}/hello.txt` });
await call("edit_file", { path: `${files}/hello.txt`, edits: [{ oldText: "hello", newText: "greetings" }] });
assert.match(await call("read_multiple_files", { paths: [`${files}/hello.txt`] }), /greetings/);
await call("create_directory", { path: `${files}/sub` });
await call("move_file", { source: `${files}/hello.txt`, destination: `${files}/sub/hello.txt` });
assert.match(await call("list_directory", { path: `${files}/sub` }), /hello\.txt/);
await call("list_directory_with_sizes", { path: `${files}/sub` });
assert.match(await call("directory_tree", { path: files }), /hello\.txt/);
assert.match(await call("search_files", { path: files, pattern: "**/hello*" }), /hello\.txt/);
await call("get_file_info", { path: `${files}/sub/hello.txt` });
fs.writeFileSync(`${files}/pixel.png`, Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==", "base64"));
await call("read_media_file", { path: `${files}/pixel.png` });
assert.deepEqual(fsTools.filter((n) => !called.has(n)), [], "filesystem tools not called");
assert.ok(fs.existsSync(`${files}/sub/hello.txt`), "the server's file is not on disk");
// the server itself allows "/": the sandbox refuses what lies outside
await refused(fsc, "write_file", { path: `${outside}/escape.txt`, content: "x" }, "write outside the sandbox's paths");
assert.ok(!fs.existsSync(`${outside}/escape.txt`), "a file was written outside the sandbox's paths");
await refused(fsc, "read_text_file", { path: "/etc/shadow" }, "read /etc/shadow");
await refused(fsc, "list_directory", { path: outside }, "list a directory outside the sandbox's paths");
await fsc.close();
console.log(`server-filesystem: ${fsTools.length} tools pass under the sandbox; writing outside, /etc/shadow and listing outside are refused`);

// the memory server
const mem = await open("/memory");
const memTools = (await mem.listTools()).tools.map((t) => t.name).sort();
const mcalled = new Set();
const mcall = async (name, args) => { mcalled.add(name); return ok(mem, name, args); };
await mcall("create_entities", { entities: [
	{ name: "Caddy", entityType: "server", observations: ["serves HTTPS"] },
	{ name: "caddymcp", entityType: "plugin", observations: ["sandboxes servers"] },
] });
await mcall("create_relations", { relations: [{ from: "caddymcp", to: "Caddy", relationType: "extends" }] });
await mcall("add_observations", { observations: [{ entityName: "Caddy", contents: ["written in Go"] }] });
assert.match(await mcall("read_graph", {}), /written in Go/);
assert.match(await mcall("search_nodes", { query: "sandbox" }), /caddymcp/);
assert.match(await mcall("open_nodes", { names: ["Caddy"] }), /serves HTTPS/);
await mcall("delete_observations", { deletions: [{ entityName: "Caddy", observations: ["serves HTTPS"] }] });
await mcall("delete_relations", { relations: [{ from: "caddymcp", to: "Caddy", relationType: "extends" }] });
await mcall("delete_entities", { entityNames: ["caddymcp"] });
assert.deepEqual(memTools.filter((n) => !mcalled.has(n)), [], "memory tools not called");
assert.match(fs.readFileSync(`${data}/memory.jsonl`, "utf8"), /written in Go/, "the graph is not in the data directory");
await mem.close();
console.log(`server-memory: ${memTools.length} tools pass under the sandbox, its graph in the one writable directory`);
