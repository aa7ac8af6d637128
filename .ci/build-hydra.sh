#!/usr/bin/env bash
# Builds Ory Hydra v2.3.0 from the Go module proxy into $1 (default
# bin/hydra): `make bin/hydra`, used by `make test` (the Hydra test of
# mcpauth) and .ci/hydra-e2e.sh. Hydra's go.mod replaces hydra-client-go
# with ./internal/httpclient, which the module zip lacks: the published
# module is put there. The memory DSN needs SQLite (tags sqlite,json1).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$PWD/bin/hydra}
case $out in /*) ;; *) out=$PWD/$out ;; esac
mkdir -p "$(dirname "$out")"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
moddir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
cp -r "$(moddir github.com/ory/hydra/v2@v2.3.0)/." "$src"
chmod -R u+w "$src"
cp -r "$(moddir github.com/ory/hydra-client-go/v2@v2.2.1)/." "$src/internal/httpclient"
chmod -R u+w "$src/internal/httpclient"
(cd "$src" && go build -tags sqlite,json1 -o "$out.tmp" .)
mv "$out.tmp" "$out"
