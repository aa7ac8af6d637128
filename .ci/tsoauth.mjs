// The TypeScript SDK's own OAuth client (1.x: @modelcontextprotocol/sdk,
// 2.x: @modelcontextprotocol/client) against mcp_auth + mcp_stdio with
// mcp_authorization_server as the authorization server, doing everything by
// itself: 401 -> protected resource metadata -> authorization server
// metadata -> dynamic client registration -> authorization (the "user",
// headless Chromium, clicks Allow on the consent page and logs in at the
// upstream provider) -> callback -> token -> tools/list, tools/call -> the
// access token is broken on purpose -> the SDK refreshes (a rotated refresh
// token) -> tools/call again.
// Usage: node tsoauth.mjs 1|2 <mcp url> <callback port>
import assert from "node:assert/strict";
import http from "node:http";
import { chromium } from "playwright-core";

const [major, url, cbPort] = process.argv.slice(2);
const sdk = major === "1"
	? {
		...(await import("@modelcontextprotocol/sdk/client/index.js")),
		...(await import("@modelcontextprotocol/sdk/client/streamableHttp.js")),
		...(await import("@modelcontextprotocol/sdk/client/auth.js")),
	}
	: await import("@modelcontextprotocol/client");
const { Client, StreamableHTTPClientTransport, UnauthorizedError } = sdk;

const redirectUrl = `http://127.0.0.1:${cbPort}/callback`;
// the client's callback: the authorization code arrives here
let gotCode;
const codeArrived = new Promise((resolve) => (gotCode = resolve));
const server = http.createServer((req, res) => {
	const u = new URL(req.url, redirectUrl);
	res.end("you may close this window");
	if (u.pathname === "/callback") gotCode(u.searchParams);
}).listen(Number(cbPort), "127.0.0.1");

const browser = await chromium.launch({
	executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
	args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const seen = { authorize: 0, consentPage: 0 };
// the user: allows the client on the consent page, logs in upstream
async function userAuthorizes(authorizationUrl) {
	seen.authorize++;
	const page = await browser.newPage();
	await page.goto(String(authorizationUrl));
	const allow = page.getByRole("button", { name: /Allow and log in/ });
	await allow.waitFor({ timeout: 15000 });
	seen.consentPage++;
	const text = await page.locator("body").innerText();
	assert.match(text, /caddymcp TS SDK/, "the consent page names the client");
	await allow.click();
	await page.locator("#username").waitFor({ timeout: 15000 });
	await page.fill("#username", "test-user2");
	await page.fill("#password", "verysecure");
	await page.locator("button[type=submit], input[type=submit]").first().click();
	await page.waitForURL((u) => String(u).startsWith(redirectUrl), { timeout: 15000 });
	await page.close();
}

const store = {};
const provider = {
	get redirectUrl() { return redirectUrl; },
	get clientMetadata() {
		return { client_name: `caddymcp TS SDK ${major}.x client`, redirect_uris: [redirectUrl], grant_types: ["authorization_code", "refresh_token"],
			response_types: ["code"], token_endpoint_auth_method: "none", application_type: "native" };
	},
	clientInformation: () => store.client,
	saveClientInformation: (c) => { store.client = c; },
	tokens: () => store.tokens,
	saveTokens: (t) => { store.tokens = t; store.saved = (store.saved || 0) + 1; },
	redirectToAuthorization: (u) => { store.pending = userAuthorizes(u); },
	saveCodeVerifier: (v) => { store.verifier = v; },
	saveDiscoveryState: (d) => { store.discovery = d; },
	discoveryState: () => store.discovery,
	codeVerifier: () => store.verifier,
};

const client = new Client({ name: `caddymcp-oauth-${major}`, version: "1.0.0" });
const newTransport = () => new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
let transport = newTransport();
try {
	await client.connect(transport);
	assert.fail("connected without authorizing");
} catch (e) {
	if (!(e instanceof UnauthorizedError)) throw e;
}
await store.pending;
const params = await codeArrived;
assert.ok(params.get("code"), "no code at the callback");
assert.equal(params.get("iss"), new URL(url).origin, "the authorization response's iss (RFC 9207)");
// 2.x checks the callback's iss itself (RFC 9207): it takes the whole query
await transport.finishAuth(major === "1" ? params.get("code") : params);
assert.ok(store.tokens?.access_token && store.tokens?.refresh_token, "tokens with a refresh token");
transport = newTransport();
await client.connect(transport);

const { tools } = await client.listTools();
assert.ok(tools.some((t) => t.name === "test_simple_text"), "tools/list");
const r1 = await client.callTool({ name: "test_simple_text" });
assert.equal(r1.content[0].type, "text");

// an access token that no longer verifies: the SDK uses its refresh token
const firstRefresh = store.tokens.refresh_token;
store.tokens = { ...store.tokens, access_token: "broken.access.token" };
const r2 = await client.callTool({ name: "test_simple_text" });
assert.equal(r2.content[0].type, "text");
assert.notEqual(store.tokens.refresh_token, firstRefresh, "the refresh token rotated");
assert.notEqual(store.tokens.access_token, "broken.access.token", "a new access token");
assert.equal(seen.authorize, 1, "the refresh needed no new authorization");

await client.close();
await browser.close();
server.close();
console.log(`TypeScript SDK ${major}.x OAuth client: 401, discovery, DCR, consent page, upstream login, code with iss, token, tools/list, tools/call, refresh (rotated), tools/call: ok`);
