// A stdio "server" that, asked to initialize, allocates until it cannot:
// under the sandbox's memory limit V8 dies, and the client must be told
// why (.ci/sandbox-e2e.sh).
const rl = require("readline").createInterface({ input: process.stdin });
rl.on("line", (line) => {
	if (JSON.parse(line).method === "initialize") {
		const keep = [];
		for (;;) keep.push(new Array(1e6).fill(1.5));
	}
});
