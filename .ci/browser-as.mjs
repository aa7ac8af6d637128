// Real-browser test of mcp_authorization_server: headless Chromium runs the
// MCP Inspector web UI against an mcp_auth-protected endpoint with no token.
// The Inspector finds the authorization server, registers, and sends the
// browser to it; the "user" clicks Allow on the consent page and logs in at
// the upstream provider's form; the Inspector gets its token, connects,
// lists the tools and calls one.
// Usage: node browser-as.mjs <inspector url with API token> <issuer> <screenshot path>
import { chromium } from "playwright-core";

const [inspectorURL, issuer, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
	executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
	args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const fail = async (msg) => {
	for (const [i, p] of context.pages().entries()) {
		await p.screenshot({ path: screenshot.replace(/\.png$/, `-failure-${i}.png`) }).catch(() => {});
		console.error(`page ${i} ${p.url()}:\n`, (await p.locator("body").innerText().catch(() => "")).slice(0, 2000));
	}
	console.error("browser test failed:", msg);
	await browser.close();
	process.exit(1);
};
const visited = [];
context.on("request", (r) => visited.push(r.url()));
// the user, in whichever tab the Inspector sends to the authorization server
const userAuthorizes = async (p) => {
	const allow = p.getByRole("button", { name: /Allow and log in/ });
	await allow.waitFor({ timeout: 30000 });
	await allow.click();
	await p.locator("#username").waitFor({ timeout: 15000 });
	await p.fill("#username", "test-user2");
	await p.fill("#password", "verysecure");
	await p.locator("button[type=submit]").first().click();
};
try {
	await page.goto(inspectorURL);
	const toggle = page.getByRole("switch", { name: /Connect or disconnect/ });
	await toggle.waitFor({ timeout: 15000 });
	const popup = context.waitForEvent("page", { timeout: 30000 }).catch(() => null);
	await toggle.check({ force: true });
	// the consent page opens in this tab or in a new one
	const first = await Promise.race([
		page.waitForURL((u) => String(u).startsWith(issuer), { timeout: 30000 }).then(() => page),
		popup.then((p) => p || new Promise(() => {})),
	]);
	await userAuthorizes(first);
	await page.getByText("Connected", { exact: true }).first().waitFor({ timeout: 30000 });
	for (const want of [`${issuer}/authorize`, `${issuer}/consent`, `${issuer}/callback/corp`]) {
		if (!visited.some((u) => u.startsWith(want))) await fail(`the browser never visited ${want}`);
	}
	const auth = new URL(visited.find((u) => u.startsWith(`${issuer}/authorize?`)));
	const registered = visited.some((u) => u.startsWith(`${issuer}/register`)) ? "dynamic client registration"
		: /^https:/.test(auth.searchParams.get("client_id")) ? "a client ID metadata document" : "dynamic client registration, made by its backend";
	console.log(`browser: the Inspector identified itself by ${registered} (client_id ${auth.searchParams.get("client_id")})`);
	await page.getByText("Tools", { exact: true }).first().click();
	await page.getByText(/Tools \(\d+\)/).waitFor({ timeout: 15000 });
	await page.getByText("test_simple_text", { exact: true }).first().click();
	await page.getByRole("button", { name: "Execute Tool" }).click();
	await page.getByText("This is a simple text response for testing.").first().waitFor({ timeout: 15000 });
	await page.screenshot({ path: screenshot });
	// the access token lives ACCESS_TOKEN_SECONDS (as-e2e's Caddyfile): once
	// it has expired, a call needs the refresh token (this waits for the
	// expiry itself, not for some other event)
	const lifetime = Number(process.env.ACCESS_TOKEN_SECONDS || 0);
	if (lifetime > 0) {
		await page.waitForTimeout((lifetime + 2) * 1000);
		// the Inspector refreshes ("Refreshing authorization…" in a toast);
		// the call is made anew: close the result, pick the tool, execute
		await page.getByText("Results", { exact: true }).first().waitFor({ timeout: 5000 });
		await page.locator("button:near(:text('Results'))").first().click();
		await page.getByText("This is a simple text response for testing.").first().waitFor({ state: "hidden", timeout: 5000 });
		await page.getByText("test_simple_text", { exact: true }).first().click();
		const before = await page.getByText("This is a simple text response for testing.").count();
		await page.getByRole("button", { name: "Execute Tool" }).click({ timeout: 30000 });
		if (before !== 0) await fail("the first result is still shown");
		await page.getByText("This is a simple text response for testing.").first().waitFor({ timeout: 20000 });
		console.log("browser: after the access token expired, the Inspector called test_simple_text again");
	}
	console.log("browser: the Inspector registered, the user consented and logged in upstream, the Inspector connected, listed tools and called test_simple_text; screenshot", screenshot);
} catch (e) {
	await fail(e.message);
}
await browser.close();
