#!/usr/bin/env bash
# Runs the caddymcp example: the example authorization server on :9000, a
# remote Streamable HTTP MCP server on :8000 (go-sdk's everything-server),
# and Caddy (./caddy, from `make build`) with Caddyfile.example on :3000.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p bin
go build -o bin/authserver ./examples/authserver
go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server

pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "example stopped"
}
trap cleanup INT TERM EXIT

bin/authserver -addr localhost:9000 -state bin/authserver-state.json &
pids+=($!)
bin/everything-server -http localhost:8000 -stateless=false &
pids+=($!)
PATH="$PWD/bin:$PATH" ./caddy run --config Caddyfile.example --adapter caddyfile &
pids+=($!)

for port in 9000 8000 3000; do
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
done

cat <<'MSG'

caddymcp example is up:
  MCP endpoints (point an MCP client here; both need an OAuth token):
    http://localhost:3000/stdio/mcp    a stdio MCP server run by mcp_stdio
    http://localhost:3000/remote/mcp   a remote Streamable HTTP MCP server behind reverse_proxy
  authorization server (development only): http://localhost:9000
  try: curl -i http://localhost:3000/remote/mcp
Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
