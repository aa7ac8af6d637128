#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance,
# server scenarios) against stdio MCP servers twice: served natively over
# HTTP, and over stdio behind mcp_stdio in a real Caddy (./caddy). Fails if
# the bridge passes fewer checks than the native server in any scenario.
#
# Servers: go-sdk's conformance everything-server, and
# `npx -y @modelcontextprotocol/server-everything`. The TypeScript SDK's client
# (.ci/tsclient.mjs) also runs against the bridge.
# Node 22 (which the suite needs) is installed from npm into .ci/node.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.ci/node
out=${CONFORMANCE_OUT:-$root/.ci/artifacts/conformance}
mkdir -p "$tools" "$out" bin

. .ci/node-tools.sh
node --version
[ -x ./caddy ] || make build
go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; return 1; }

run_suite() { # name url -> $out/name.txt with one "scenario passed failed" line per scenario
	local name=$1 url=$2
	node "$tools/node_modules/@modelcontextprotocol/conformance/dist/index.js" server --url "$url" -o "$out/$name" > "$out/$name.log" 2>&1 || true
	grep -E '^(✓|✗) ' "$out/$name.log" | sed -E 's/^(✓|✗) ([^:]+): ([0-9]+) passed, ([0-9]+) failed.*/\2 \3 \4/' > "$out/$name.txt"
	echo "$name: $(grep -E '^Total' "$out/$name.log" || echo 'no summary')"
}

start_bridge() { # port command... -> Caddy with mcp_stdio on port
	local port=$1
	shift
	cat > "$out/Caddyfile.$port" <<CADDY
{
	admin off
	auto_https off
}
:$port {
	bind 127.0.0.1 [::1]
	mcp_stdio /mcp {
		command $*
		dir $tools
		# the suite opens a session per scenario, fast, as one client
		max_sessions_per_user 100
		initialize_rate 1000
	}
}
CADDY
	./caddy run --config "$out/Caddyfile.$port" --adapter caddyfile > "$out/caddy.$port.log" 2>&1 &
	pids+=($!)
	wait_port "$port"
}

compare() { # native bridge: bridge must pass at least what native passes, per scenario
	local status=0
	while read -r scenario passed _; do
		b=$(awk -v s="$scenario" '$1==s {print $2}' "$out/$2.txt")
		if [ -z "$b" ] || [ "$b" -lt "$passed" ]; then
			echo "REGRESSION $scenario: native passes $passed checks, bridge ${b:-none}"
			status=1
		fi
	done < "$out/$1.txt"
	[ "$(wc -l < "$out/$1.txt")" -gt 0 ] || { echo "no results from $1"; status=1; }
	return $status
}

fail=0

p=$(free_port)
bin/everything-server -http "127.0.0.1:$p" -stateless=false > "$out/native-go.server.log" 2>&1 &
pids+=($!)
wait_port "$p"
run_suite native-go "http://127.0.0.1:$p/mcp"
p=$(free_port)
start_bridge "$p" "$root/bin/everything-server"
run_suite bridge-go "http://127.0.0.1:$p/mcp"
compare native-go bridge-go || fail=1
cp .ci/tsclient.mjs "$tools/tsclient.mjs"
node "$tools/tsclient.mjs" "http://127.0.0.1:$p/mcp" || { echo "TypeScript SDK client failed"; fail=1; }
if grep -q ' [1-9][0-9]*$' "$out/bridge-go.txt"; then
	echo "the bridge fails checks with go-sdk's everything-server:"; grep ' [1-9][0-9]*$' "$out/bridge-go.txt"; fail=1
fi

p=$(free_port)
PORT=$p node "$tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp > "$out/native-ts.server.log" 2>&1 &
pids+=($!)
wait_port "$p"
run_suite native-ts "http://127.0.0.1:$p/mcp"
p=$(free_port)
start_bridge "$p" npx -y @modelcontextprotocol/server-everything
run_suite bridge-ts "http://127.0.0.1:$p/mcp"
compare native-ts bridge-ts || fail=1

if [ $fail -ne 0 ]; then
	echo "conformance: FAILED (logs in $out)"
	exit 1
fi
echo "conformance: bridge passes everything the native servers pass"
