#!/usr/bin/env bash
# Runs the caddymcp example: Caddy (./caddy, built by `make build`) with
# Caddyfile.example. Stops everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

pids=()
cleanup() {
	trap - INT TERM EXIT
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

./caddy run --config Caddyfile.example --adapter caddyfile &
pids+=($!)

cat <<MSG

caddymcp example is starting:
  metadata:   curl http://localhost:3000/.well-known/oauth-protected-resource/stdio/mcp
Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
