// Real-browser test: headless Chromium (Debian's package) runs the MCP
// Inspector web UI against the example's /stdio/mcp with no token. The
// Inspector must complete the OAuth flow against the example authorization
// server by itself, connect, list the tools and call one.
// Usage: node browser.mjs <inspector url with API token> <screenshot path>
import { chromium } from "playwright-core";

const [inspectorURL, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
	executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
	args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const fail = async (page, msg) => {
	await page.screenshot({ path: screenshot.replace(/\.png$/, "-failure.png") }).catch(() => {});
	console.error("browser test failed:", msg);
	console.error((await page.locator("body").innerText().catch(() => "")).slice(0, 3000));
	await browser.close();
	process.exit(1);
};
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const visited = [];
page.on("request", (r) => visited.push(r.url()));
try {
	await page.goto(inspectorURL);
	const toggle = page.getByRole("switch", { name: /Connect or disconnect/ });
	await toggle.waitFor({ timeout: 15000 });
	await toggle.check({ force: true });
	// 401 -> metadata -> registration -> /authorize (auto-approved) -> callback -> token
	await page.getByText("Connected", { exact: true }).first().waitFor({ timeout: 30000 });
	if (!visited.some((u) => u.startsWith(`http://localhost:${process.env.CADDYMCP_AUTH_PORT || 9000}/authorize`))) {
		await fail(page, "the browser never visited the authorization endpoint");
	}
	await page.getByText("Tools", { exact: true }).first().click();
	await page.getByText(/Tools \(\d+\)/).waitFor({ timeout: 15000 });
	await page.getByText("test_simple_text", { exact: true }).first().click();
	await page.getByRole("button", { name: "Execute Tool" }).click();
	await page.getByText("This is a simple text response for testing.").first().waitFor({ timeout: 15000 });
	await page.screenshot({ path: screenshot });
	console.log("browser: Inspector completed OAuth, connected, listed tools and called test_simple_text; screenshot", screenshot);
} catch (e) {
	await fail(page, e.message);
}
await browser.close();
