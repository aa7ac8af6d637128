#!/usr/bin/env bash
# Real servers from npm under mcp_stdio's recommended sandbox (README,
# Sandbox): @modelcontextprotocol/server-filesystem and server-memory in a
# real Caddy (./caddy), every tool called by the TypeScript SDK 1.x client
# (.ci/sandbox-servers.mjs), and what the sandbox refuses them. The
# conformance suites through a sandboxed route are in .ci/conformance.sh.
# Needs root (namespaces) and Landlock ABI 4; elsewhere it says so and
# fails if CADDYMCP_REQUIRE_SANDBOX is set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.ci/node
out=${SANDBOX_OUT:-$root/.ci/artifacts/sandbox}
mkdir -p "$tools" "$out"
if [ "$(id -u)" != 0 ]; then
	echo "sandbox-e2e: needs root (the sandbox starts servers in namespaces)"
	[ -z "${CADDYMCP_REQUIRE_SANDBOX:-}" ] || exit 1
	exit 0
fi
[ -x ./caddy ] || make build
# a kernel without Landlock ABI 4 cannot run the sandbox: say so
probe=$(mktemp)
printf '{\n\tadmin off\n}\n:0 {\n\tmcp_stdio {\n\t\tcommand /bin/true\n\t\tsandbox\n\t}\n}\n' > "$probe"
if ! why=$(./caddy validate --config "$probe" --adapter caddyfile 2>&1); then
	rm -f "$probe"
	echo "sandbox-e2e: this machine cannot run the sandbox: $(grep -o 'sandbox: [^"]*' <<< "$why" | head -1)"
	[ -z "${CADDYMCP_REQUIRE_SANDBOX:-}" ] || exit 1
	exit 0
fi
rm -f "$probe"
. .ci/node-tools.sh
cp .ci/sandbox-servers.mjs .ci/oom-server.cjs "$tools/"
work=$(mktemp -d /tmp/caddymcp-sandbox-e2e.XXXXXX)
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/files" "$work/data" "$work/outside"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$out/Caddyfile" <<CADDY
{
	admin off
	auto_https off
}
:$port {
	bind 127.0.0.1
	# the recommended profile (Caddyfile.example), with the paths of this test
	mcp_stdio /fs {
		command npx -y @modelcontextprotocol/server-filesystem $work/files $work/outside /etc
		dir $tools
		sandbox {
			read $tools
			write $work/files
			memory 1GiB
			open_files 1024
			file_size 64MiB
		}
	}
	mcp_stdio /memory {
		command npx -y @modelcontextprotocol/server-memory
		dir $tools
		env MEMORY_FILE_PATH $work/data/memory.jsonl
		sandbox {
			read $tools
			write $work/data
			memory 1GiB
			open_files 1024
			file_size 64MiB
		}
	}
	# Node.js past its memory limit: the client is told why
	mcp_stdio /oom {
		command node $tools/oom-server.cjs
		sandbox {
			read $tools
			memory 300MiB
		}
	}
}
CADDY
./caddy run --config "$out/Caddyfile" --adapter caddyfile > "$out/caddy.log" 2>&1 &
pid=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
grep '"sandbox ready"' "$out/caddy.log" | head -2
node "$tools/sandbox-servers.mjs" "http://127.0.0.1:$port" "$work/files" "$work/data" "$work/outside" || {
	echo "sandbox-e2e: FAILED (Caddy's log: $out/caddy.log)"; exit 1; }
answer=$(curl -s -m 120 -X POST "http://127.0.0.1:$port/oom" -H 'Content-Type: application/json' \
	-H 'Accept: application/json, text/event-stream' \
	-d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"oom","version":"1"}}}')
case $answer in
*"server ran out of memory (limit 300 MiB)"*) echo "node past memory 300MiB: the client got $(grep -o 'MCP server process exited ([^"]*' <<< "$answer")" ;;
*) echo "sandbox-e2e: node past its memory limit: the client got: $answer"; exit 1 ;;
esac
# every server process started under the sandbox, and said so
n=$(grep -c '"session started".*"sandbox":"pid namespace' "$out/caddy.log" || true)
[ "$n" -ge 2 ] || { echo "sandbox-e2e: $n session lines name the sandbox, want 2"; exit 1; }
echo "sandbox-e2e: ok"
