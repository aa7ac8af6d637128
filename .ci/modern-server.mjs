// A modern (2026-07-28) stdio MCP server built with the TypeScript SDK 2.x
// (@modelcontextprotocol/server): it answers server/discover itself, so
// mcp_stdio passes requests through to it. Its "two_rounds" tool asks its
// client twice with input_required results and its own requestState.
import { McpServer, inputRequired, acceptedContent } from "@modelcontextprotocol/server";
import { serveStdio } from "@modelcontextprotocol/server/stdio";
import { z } from "zod";

serveStdio(() => {
	const server = new McpServer({ name: "caddymcp-modern-test-server", version: "1.0.0" });
	server.registerTool("greet", { description: "says hello", inputSchema: z.object({ name: z.string().optional() }) },
		async ({ name }) => ({ content: [{ type: "text", text: `hello ${name ?? "world"} from pid ${process.pid}` }] }));
	server.registerTool("two_rounds", { description: "asks for a name, then a colour", inputSchema: z.object({}) }, async (_args, ctx) => {
		const rs = ctx.mcpReq.requestState;
		const state = (typeof rs === "function" ? rs.call(ctx.mcpReq) : rs) ?? "";
		const responses = ctx.mcpReq.inputResponses;
		if (state === "") {
			return inputRequired({ inputRequests: { name: inputRequired.elicit({ message: "Your name?", requestedSchema: z.object({ name: z.string() }) }) }, requestState: "round-1" });
		}
		if (state === "round-1") {
			const name = acceptedContent(responses, "name")?.name ?? "?";
			return inputRequired({ inputRequests: { colour: inputRequired.elicit({ message: "Your colour?", requestedSchema: z.object({ colour: z.string() }) }) }, requestState: `round-2:${name}` });
		}
		const colour = acceptedContent(responses, "colour")?.colour ?? "?";
		return { content: [{ type: "text", text: `${state.slice("round-2:".length)} likes ${colour}` }] };
	});
	return server;
});
