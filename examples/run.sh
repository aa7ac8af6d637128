#!/usr/bin/env bash
# Runs the caddymcp example: the example authorization server on :9000, a
# remote Streamable HTTP MCP server on :8000 (go-sdk's everything-server),
# and Caddy (./caddy, from `make build`) with Caddyfile.example on :3000
# (admin API on :2019). Other ports: CADDYMCP_PORT, CADDYMCP_AUTH_PORT,
# CADDYMCP_UPSTREAM_PORT, CADDYMCP_ADMIN_PORT. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CADDYMCP_PORT=${CADDYMCP_PORT:-3000} CADDYMCP_AUTH_PORT=${CADDYMCP_AUTH_PORT:-9000}
export CADDYMCP_UPSTREAM_PORT=${CADDYMCP_UPSTREAM_PORT:-8000} CADDYMCP_ADMIN_PORT=${CADDYMCP_ADMIN_PORT:-2019}
export CADDYMCP_INSPECTOR_PORT=${CADDYMCP_INSPECTOR_PORT:-6274}
mcp=http://localhost:$CADDYMCP_PORT
inspector="http://localhost:$CADDYMCP_INSPECTOR_PORT http://127.0.0.1:$CADDYMCP_INSPECTOR_PORT"

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

bin/authserver -addr "localhost:$CADDYMCP_AUTH_PORT" -state bin/authserver-state.json \
	-audience "$mcp/stdio/mcp" -resources "$mcp/stdio/mcp $mcp/remote/mcp" -cors-origins "$inspector" &
pids+=($!)
# stateless (go-sdk's default): the mode in which go-sdk serves MCP
# 2026-07-28 clients as well as 2025 ones (README: what 2025 clients lose)
bin/everything-server -http "localhost:$CADDYMCP_UPSTREAM_PORT" &
pids+=($!)
PATH="$PWD/bin:$PATH" ./caddy run --config Caddyfile.example --adapter caddyfile &
pids+=($!)

for port in "$CADDYMCP_AUTH_PORT" "$CADDYMCP_UPSTREAM_PORT" "$CADDYMCP_PORT"; do
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
done

cat <<MSG

caddymcp example is up:
  MCP endpoints (point an MCP client here; both need an OAuth token):
    $mcp/stdio/mcp    a stdio MCP server run by mcp_stdio
    $mcp/remote/mcp   a remote Streamable HTTP MCP server behind reverse_proxy
  authorization server (development only): http://localhost:$CADDYMCP_AUTH_PORT
  try: curl -i $mcp/remote/mcp
Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
