#!/usr/bin/env bash
# The functions and files a 2025 and a 2026-07-28 tools/call visit in
# mcp_stdio: TestRequestPath under `dlv trace` (every function of
# stdiobridge and internal/childproc, and the entry of each other package
# of the module), read by .ci/requestpath. Usage: .ci/request-path.sh [out]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.ci/artifacts/request-path.md}
mkdir -p "$(dirname "$out")" bin
[ -x bin/dlv ] || GOBIN=$PWD/bin go install github.com/go-delve/delve/cmd/dlv@v1.27.2
trace=$(mktemp)
trap 'rm -f "$trace" bin/requestpath.test' EXIT
bin/dlv trace --output bin/requestpath.test --test ./stdiobridge/ \
	'github.com/caddymcp/caddymcp/(stdiobridge|internal/[a-z]+)\.' \
	-- -test.run '^TestRequestPath$' -test.count=1 > /dev/null 2> "$trace"
go run ./.ci/requestpath -root . < "$trace" > "$out"
grep -E '^## |calls of|entered again' "$out"
echo "report: $out"
