#!/usr/bin/env bash
# The conformance suite's authorization-server scenarios against the
# example authorization server (examples/authserver): metadata (CIMD
# included) and the authorization code grant. The "browser" step of the
# code grant is a curl that follows the auto-approving /authorize back to
# the suite's callback. Every check must pass, with no warning.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.ci/node
out=${AUTHZ_OUT:-$root/.ci/artifacts/authz}
rm -rf "$out"
mkdir -p "$out" bin
. .ci/node-tools.sh
go build -o bin/authserver ./examples/authserver
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; return 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

as=$(free_port)
cb=$(free_port)
issuer=http://localhost:$as
resource=http://localhost:3000/stdio/mcp
bin/authserver -addr "localhost:$as" -audience "$resource" -resources "$resource" > "$out/authserver.log" 2>&1 &
pids+=($!)
wait_port "$as"
# a public client for the suite (DCR, as an older MCP client registers;
# the suite authenticates with "none" wherever the server offers it)
reg=$(curl -s "$issuer/register" -H 'Content-Type: application/json' \
	-d '{"client_name":"conformance","application_type":"native","redirect_uris":["http://127.0.0.1:'"$cb"'/callback"],"token_endpoint_auth_method":"none"}')
id=$(printf '%s' "$reg" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')
node "$tools/node_modules/conformance-2026/dist/index.js" authorization --url "$issuer" --client-id "$id" \
	--resource "$resource" -p "$cb" -o "$out/results" > "$out/suite.log" 2>&1 &
suite=$!
pids+=($suite)
url=""
for _ in $(seq 300); do
	url=$(grep -o "$issuer/authorize?[^ ]*" "$out/suite.log" | head -1 || true)
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || { cat "$out/suite.log"; echo "the suite never asked for the authorization step"; exit 1; }
wait_port "$cb"
curl -s -L -o /dev/null "$url"
wait "$suite" || true
fail=0
for f in "$out"/results/*/checks.json; do
	node -e '
		const checks = require(process.argv[1]);
		let bad = 0;
		for (const c of checks) {
			console.log(`${c.status.padEnd(8)} ${c.id}${c.errorMessage ? ": " + c.errorMessage : ""}`);
			if (c.status !== "SUCCESS" && c.status !== "INFO") bad++;
		}
		process.exit(bad ? 1 : 0);
	' "$f" || fail=1
done
ls "$out"/results/*/checks.json > /dev/null 2>&1 || { cat "$out/suite.log"; echo "no results"; exit 1; }
if [ $fail -ne 0 ]; then echo "authorization conformance: FAILED (logs in $out)"; exit 1; fi
echo "authorization conformance: every check of every scenario passed, no warnings"
