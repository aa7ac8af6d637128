#!/usr/bin/env bash
# The example, end to end, as a new user meets it: starts examples/run.sh
# (what `make example` runs after the build), then checks the README
# walkthrough line by line, the MCP Inspector CLI on both routes, the MCP
# Inspector web UI in headless Chromium (OAuth flow, tools/list, tools/call),
# and that Ctrl-C stops everything. Artifacts go to .ci/artifacts/example.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.ci/node
out=$root/.ci/artifacts/example
mkdir -p "$out"
. .ci/node-tools.sh
[ -x ./caddy ] || make build

t0=$SECONDS
step() { echo; echo "--- $* ($((SECONDS - t0))s)"; }
# Ports: as set in the environment, else the README's, else (when another
# run holds those) free ones, so that two runs can go on side by side.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_var() { # NAME DEFAULT
	if [ -z "${!1:-}" ]; then
		if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then printf -v "$1" %s "$(free_port)"; else printf -v "$1" %s "$2"; fi
	fi
	export "${1?}"
}
# Two runs on one machine (a second make test beside this one) take turns:
# a port found free is only ours once our Caddy holds it, so two runs
# choosing at once took the same ones.
exec 9> "${TMPDIR:-/tmp}/caddymcp-example.lock"
if command -v flock > /dev/null; then flock 9; fi
port_var CADDYMCP_PORT 3000
port_var CADDYMCP_AUTH_PORT 9000
port_var CADDYMCP_UPSTREAM_PORT 8000
port_var CADDYMCP_ADMIN_PORT 2019
port_var CADDYMCP_INSPECTOR_PORT 6274
echo "ports: caddy $CADDYMCP_PORT, authorization server $CADDYMCP_AUTH_PORT, upstream $CADDYMCP_UPSTREAM_PORT, admin $CADDYMCP_ADMIN_PORT, inspector $CADDYMCP_INSPECTOR_PORT"
wait_port() { for _ in $(seq 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; return 1; }
for port in $CADDYMCP_PORT $CADDYMCP_UPSTREAM_PORT $CADDYMCP_AUTH_PORT $CADDYMCP_ADMIN_PORT $CADDYMCP_INSPECTOR_PORT; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is already in use; stop what uses it"; exit 1; fi
done

step "starting the example (examples/run.sh)"
setsid ./examples/run.sh > "$out/example.log" 2>&1 &
example=$!
inspector=""
cleanup() {
	[ -n "$inspector" ] && kill -- "-$inspector" 2>/dev/null || true
	kill -INT -- "-$example" 2>/dev/null || true
}
trap cleanup EXIT
for port in $CADDYMCP_AUTH_PORT $CADDYMCP_UPSTREAM_PORT $CADDYMCP_PORT; do wait_port $port; done
for _ in $(seq 100); do grep -q "caddymcp example is up" "$out/example.log" && break; sleep 0.1; done
grep -q "caddymcp example is up" "$out/example.log" || { cat "$out/example.log"; echo "the example did not come up"; exit 1; }
echo "example up after $((SECONDS - t0))s"

step "README walkthrough"
CADDYMCP_EXAMPLE_RUNNING=1 go test -count=1 ./examples -run TestREADMEWalkthrough -v 2>&1 | tail -3

step "foreign origins and unknown paths"
base=http://localhost:$CADDYMCP_PORT
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/remote/mcp" -H 'Origin: https://evil.example' -H 'Content-Type: application/json' -d '{}')
[ "$code" = 403 ] || { echo "a foreign Origin on /remote/mcp got $code, want 403"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/remote/mcp" -H 'Host: evil.example' -H 'Content-Type: application/json' -d '{}')
[ "$code" = 403 ] || { echo "a foreign Host on /remote/mcp got $code, want 403"; exit 1; }
for url in "$base/stdio/mcp" "http://localhost:$CADDYMCP_AUTH_PORT/token" "http://localhost:$CADDYMCP_AUTH_PORT/register"; do
	if curl -s -D - -o /dev/null -X OPTIONS "$url" -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST' | grep -qi '^access-control-allow-origin'; then
		echo "$url allows CORS for a foreign origin"; exit 1
	fi
	curl -s -D - -o /dev/null -X OPTIONS "$url" -H "Origin: http://localhost:$CADDYMCP_INSPECTOR_PORT" -H 'Access-Control-Request-Method: POST' \
		| grep -qi "^access-control-allow-origin: http://localhost:$CADDYMCP_INSPECTOR_PORT" || { echo "$url refuses the Inspector's origin"; exit 1; }
done
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/no/such/path")
[ "$code" = 404 ] || { echo "an unknown path got $code, want 404"; exit 1; }
echo "foreign Origin and Host refused, CORS only for the Inspector, unknown paths 404"

step "MCP Inspector CLI"
inspect() { node "$tools/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" --cli "$@" 2>&1; }
token() { curl -s localhost:$CADDYMCP_AUTH_PORT/token -d grant_type=client_credentials -d client_id=demo -d client_secret=demo-secret -d scope=read:all -d "resource=$1" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'; }
for route in stdio remote; do
	url=http://localhost:$CADDYMCP_PORT/$route/mcp
	tok=$(token "$url")
	s=$SECONDS
	inspect "$url" --method tools/list --header "Authorization: Bearer $tok" > "$out/inspector-$route-list.json"
	grep -q '"name": "test_simple_text"' "$out/inspector-$route-list.json" || { cat "$out/inspector-$route-list.json"; echo "inspector: tools/list on $route failed"; exit 1; }
	inspect "$url" --method tools/call --tool-name test_simple_text --header "Authorization: Bearer $tok" > "$out/inspector-$route-call.json"
	grep -q 'This is a simple text response for testing.' "$out/inspector-$route-call.json" || { cat "$out/inspector-$route-call.json"; echo "inspector: tools/call on $route failed"; exit 1; }
	if inspect "$url" --method tools/list < /dev/null > "$out/inspector-$route-noauth.txt"; then
		cat "$out/inspector-$route-noauth.txt"; echo "inspector: tools/list on $route succeeded without a token"; exit 1
	fi
	grep -qi 'auth' "$out/inspector-$route-noauth.txt" || { cat "$out/inspector-$route-noauth.txt"; echo "inspector: no auth error without a token"; exit 1; }
	echo "inspector CLI on /$route/mcp: tools/list, tools/call with a token, auth error without ($((SECONDS - s))s)"
done

step "TypeScript SDK 2.x client: MCP 2026-07-28 (pinned, auto) and 2025 (default)"
cp .ci/tsclient2.mjs "$tools/tsclient2.mjs"
for route in stdio remote; do
	url=http://localhost:$CADDYMCP_PORT/$route/mcp
	modes="pin auto default"
	# the remote server (go-sdk, stateless) has no server-to-client requests
	# for a 2025 client: the default (2025) mode's elicitation is stdio-only
	[ $route = remote ] && modes="pin auto"
	for mode in $modes; do
		node "$tools/tsclient2.mjs" "$url" $mode "$(token "$url")" || { echo "TypeScript SDK 2.x client ($mode) on /$route/mcp failed"; exit 1; }
	done
done

step "Step-up: the TypeScript SDK 2.x client through a scope rule"
cp .ci/tsstepup.mjs "$tools/tsstepup.mjs"
node "$tools/tsstepup.mjs" "http://localhost:$CADDYMCP_PORT/stdio/mcp" "http://localhost:$CADDYMCP_AUTH_PORT" || { echo "step-up failed"; exit 1; }

step "Prometheus metrics on the admin endpoint (what examples/grafana-dashboard.json draws)"
metrics=$(curl -s "localhost:$CADDYMCP_ADMIN_PORT/metrics")
for series in mcp_server_operation_duration_seconds_count mcp_stdio_sessions mcp_stdio_children mcp_stdio_child_starts_total mcp_auth_decisions_total mcp_auth_jwks_fetches_total; do
	grep -q "^$series" <<<"$metrics" || { echo "no $series on localhost:$CADDYMCP_ADMIN_PORT/metrics"; exit 1; }
done
# the metric names in the dashboard's queries (mcp_* words that are not label names)
for expr in $(python3 -c 'import json,re; d=json.load(open("examples/grafana-dashboard.json")); print(" ".join(sorted({m for p in d["panels"] for t in p["targets"] for m in re.findall(r"\b(mcp_[a-z_]+)", t["expr"])} - {"mcp_method_name", "mcp_protocol_version"})))'); do
	grep -q "^$expr" <<<"$metrics" || { echo "the dashboard draws $expr, which /metrics lacks"; exit 1; }
done
echo "metrics: every series the dashboard draws is on the admin endpoint"

step "MCP Inspector web UI in headless Chromium"
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	if [ -n "${CADDYMCP_REQUIRE_BROWSER:-}" ]; then echo "chromium not found at $chromium"; exit 1; fi
	echo "SKIPPED: no chromium (apt-get install chromium); .ci/run installs it and requires this test"
else
	s=$SECONDS
	rm -rf "$out/inspector-home"
	HOME="$out/inspector-home" MCP_AUTO_OPEN_ENABLED=false CLIENT_PORT=$CADDYMCP_INSPECTOR_PORT setsid node "$tools/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" \
		--web --transport http --server-url http://localhost:$CADDYMCP_PORT/stdio/mcp > "$out/inspector-web.log" 2>&1 &
	inspector=$!
	for _ in $(seq 300); do grep -q 'MCP_INSPECTOR_API_TOKEN=' "$out/inspector-web.log" && break; sleep 0.1; done
	url=$(grep -o "http://127.0.0.1:$CADDYMCP_INSPECTOR_PORT[^ ]*MCP_INSPECTOR_API_TOKEN=[0-9a-f]*" "$out/inspector-web.log" | head -1)
	[ -n "$url" ] || { cat "$out/inspector-web.log"; echo "inspector web UI did not start"; exit 1; }
	cp .ci/browser.mjs "$tools/browser.mjs"
	CHROMIUM=$chromium node "$tools/browser.mjs" "$url" "$out/inspector-connected.png"
	grep -q 'approved authorization for client' "$out/example.log" && grep -q 'issued token: grant authorization_code' "$out/example.log" \
		|| { echo "the authorization server saw no authorization code flow"; exit 1; }
	kill -- "-$inspector" 2>/dev/null || true
	inspector=""
	echo "browser test: $((SECONDS - s))s"
fi

step "Ctrl-C stops everything"
kill -INT -- "-$example"
for _ in $(seq 100); do kill -0 "$example" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$example" 2>/dev/null; then echo "examples/run.sh still running after Ctrl-C"; exit 1; fi
# everything the example started is in its process group (setsid above),
# stdio servers started by mcp_stdio in groups of their own under Caddy:
# those of this checkout (their working directory), not another run's
ours() {
	local pid
	for pid in $(pgrep -f "^bin/everything-server$"); do
		[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$root" ] && echo "$pid"
	done
}
for _ in $(seq 100); do
	pgrep -g "$example" > /dev/null || [ -n "$(ours)" ] || break
	sleep 0.1 # a group ends as its processes exit
done
if pgrep -g "$example" > /dev/null; then
	ps -o pid,pgid,args -g "$example"; echo "processes left after Ctrl-C"; exit 1
fi
if [ -n "$(ours)" ]; then
	ps -o pid,args -p "$(ours | paste -sd,)"; echo "stdio server processes left after Ctrl-C"; exit 1
fi
grep -q "example stopped" "$out/example.log" || { echo "run.sh did not report stopping"; exit 1; }
trap - EXIT
echo "example: all checks passed in $((SECONDS - t0))s"
