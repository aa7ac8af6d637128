#!/usr/bin/env bash
# `make bench`: builds Caddy with the plugin and the servers, installs
# supergateway 4.0.0 (skipped if npm cannot), and runs cmd/mcpbench,
# which prints the comparison table (also written to .ci/artifacts/bench.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ./caddy ] || make build
mkdir -p bin
go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server
go build -o bin/authserver ./examples/authserver
go build -o bin/mcpbench ./cmd/mcpbench
sg=""
if . .ci/node-tools.sh 2>/dev/null && npm install --prefix .ci/node --no-audit --no-fund --loglevel=error supergateway@4.0.0 > /dev/null 2>&1; then
	sg="$(command -v node) $PWD/.ci/node/node_modules/supergateway/dist/index.js"
else
	echo "supergateway could not be installed (npm unavailable?): skipped"
fi
# With 8 or more cores, servers (and their children) get the first half and
# the load generator the second (taskset), so that neither steals the
# other's CPU; BENCH_SESSIONS chooses the by-concurrency levels (1,16,64,
# and 256 with 8 or more cores).
# BENCH_LEVELS_ONLY=1: only the by-concurrency table (minutes less).
only=()
if [ -n "${BENCH_LEVELS_ONLY:-}" ]; then only=(-levels-only); fi
n=$(nproc)
run=()
if [ "$n" -ge 8 ] && command -v taskset > /dev/null; then
	export BENCH_SESSIONS="${BENCH_SESSIONS:-1,16,64,256}"
	half=$((n / 2))
	export BENCH_SERVER_CPUS="0-$((half - 1))"
	echo "servers on CPUs $BENCH_SERVER_CPUS, load generator on $half-$((n - 1))"
	run=(taskset -c "$half-$((n - 1))")
fi
"${run[@]}" bin/mcpbench -supergateway "$sg" "${only[@]}" "$@"
# what the sandbox costs (README "Performance"): child start and calls/s
# with and without it, alternating rounds; BENCH_SANDBOX_ROUNDS=0 skips it
# (it needs root: the sandbox's namespaces)
if [ $# -eq 0 ] && [ "${BENCH_SANDBOX_ROUNDS:-5}" != 0 ] && [ "$(id -u)" = 0 ]; then
	"${run[@]}" bin/mcpbench -sandbox "${BENCH_SANDBOX_ROUNDS:-5}"
fi
# what mcp_aggregate costs with one backend (README, mcp_aggregate):
# BENCH_AGGREGATE_ROUNDS=0 skips it
if [ $# -eq 0 ] && [ "${BENCH_AGGREGATE_ROUNDS:-5}" != 0 ]; then
	"${run[@]}" bin/mcpbench -aggregate "${BENCH_AGGREGATE_ROUNDS:-5}"
fi
