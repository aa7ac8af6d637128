#!/usr/bin/env bash
# mcp_authorization_server end to end with real MCP clients doing
# everything by themselves: a real Caddy (./caddy) with the module, mcp_auth
# and mcp_stdio (go-sdk's everything-server); the upstream OpenID provider
# is zitadel/oidc's example provider (cmd/devidp: not ours, with a login
# form). The TypeScript SDK's OAuth client, 1.x and 2.x (.ci/tsoauth.mjs),
# registers, sends the user (headless Chromium: consent page, upstream
# login) through the flow, gets and refreshes tokens, and calls tools; then
# the MCP Inspector's web UI does the same in headless Chromium
# (.ci/browser-as.mjs).
# Needs Debian's chromium (skipped with a notice unless
# CADDYMCP_REQUIRE_BROWSER=1, as .ci/run sets).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.ci/node
out=${AS_E2E_OUT:-$root/.ci/artifacts/as-e2e}
rm -rf "$out"
mkdir -p "$out" bin
if ! command -v "${CHROMIUM:-chromium}" > /dev/null; then
	if [ -n "${CADDYMCP_REQUIRE_BROWSER:-}" ]; then echo "as-e2e: chromium is required (CADDYMCP_REQUIRE_BROWSER)"; exit 1; fi
	echo "as-e2e: skipped: no chromium (apt-get install chromium)"
	exit 0
fi
. .ci/node-tools.sh
[ -x ./caddy ] || make build
go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server
go build -o bin/devidp ./cmd/devidp
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; return 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port=$(free_port) idp=$(free_port) insp=$(free_port)
export ACCESS_TOKEN_SECONDS=5
issuer=http://127.0.0.1:$port
bin/devidp -addr 127.0.0.1:$idp -client-id caddymcp-as -client-secret devidp-secret -redirect "$issuer/callback/corp" > "$out/devidp.log" 2>&1 &
pids+=($!)
cat > "$out/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	storage file_system $out/storage
}
http://127.0.0.1:$port {
	# CORS for the MCP Inspector's web UI (its origin only)
	@inspector {
		header Origin http://localhost:$insp
		header Origin http://127.0.0.1:$insp
	}
	header @inspector {
		Access-Control-Allow-Origin {http.request.header.Origin}
		Access-Control-Allow-Methods "GET, POST, DELETE, OPTIONS"
		Access-Control-Allow-Headers "Authorization, Content-Type, Accept, Mcp-Protocol-Version, Mcp-Session-Id, Last-Event-ID, Mcp-Method, Mcp-Name"
		Access-Control-Expose-Headers "Mcp-Session-Id, WWW-Authenticate"
	}
	@preflight {
		method OPTIONS
		header Origin http://localhost:$insp
		header Origin http://127.0.0.1:$insp
		path /mcp
	}
	handle @preflight {
		respond 204
	}
	oauth_protected_resource /.well-known/oauth-protected-resource/mcp {
		resource $issuer/mcp
		authorization_servers $issuer
		scopes_supported tools:read
	}
	route /mcp {
		mcp_auth {
			issuer $issuer
			audience $issuer/mcp
			scopes tools:read
			leeway 1s
		}
		mcp_stdio {
			command $root/bin/everything-server
		}
	}
	mcp_authorization_server {
		issuer $issuer
		resource $issuer/mcp
		scopes tools:read tools:write
		upstream corp oidc http://127.0.0.1:$idp {
			client_id caddymcp-as
			client_secret devidp-secret
			label "Example Corp"
		}
		allow email_domain zitadel.ch
		grant tools:read
		# short, so that the clients' refresh is exercised (the Inspector's by waiting)
		access_token_lifetime ${ACCESS_TOKEN_SECONDS}s
	}
}
CADDY
./caddy run --config "$out/Caddyfile" --adapter caddyfile > "$out/caddy.log" 2>&1 &
pids+=($!)
wait_port "$idp"
wait_port "$port"
cp .ci/tsoauth.mjs "$tools/"
fail=0
for major in 1 2; do
	if node "$tools/tsoauth.mjs" "$major" "$issuer/mcp" "$(free_port)" > "$out/tsoauth-$major.log" 2>&1; then
		tail -1 "$out/tsoauth-$major.log"
	else
		cat "$out/tsoauth-$major.log"; echo "as-e2e: the TypeScript SDK $major.x OAuth client failed"; fail=1
	fi
done
# the MCP Inspector's web UI in headless Chromium, doing the same by itself
HOME="$out/inspector-home" MCP_AUTO_OPEN_ENABLED=false CLIENT_PORT=$insp setsid node "$tools/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" \
	--web --transport http --server-url "$issuer/mcp" > "$out/inspector-web.log" 2>&1 &
inspector=$!
pids+=("-$inspector")
for _ in $(seq 300); do grep -q 'MCP_INSPECTOR_API_TOKEN=' "$out/inspector-web.log" && break; sleep 0.1; done
url=$(grep -o "http://127.0.0.1:$insp[^ ]*MCP_INSPECTOR_API_TOKEN=[0-9a-f]*" "$out/inspector-web.log" | head -1)
if [ -z "$url" ]; then
	cat "$out/inspector-web.log"; echo "as-e2e: the Inspector's web UI did not start"; fail=1
else
	cp .ci/browser-as.mjs "$tools/browser-as.mjs"
	node "$tools/browser-as.mjs" "$url" "$issuer" "$out/inspector-connected.png" || { echo "as-e2e: the Inspector failed"; fail=1; }
	icid=$(grep -o '"msg":"client registered","client_id":"[^"]*","client_name":"MCP Inspector"' "$out/caddy.log" | head -1 | sed -E 's/.*"client_id":"([^"]*)".*/\1/')
	[ -n "$icid" ] && echo "as-e2e: the Inspector registered by DCR" || { echo "as-e2e: no registration by the Inspector in the log"; fail=1; }
	grep -q "\"msg\":\"token issued\",\"grant_type\":\"refresh_token\",\"client_id\":\"$icid\"" "$out/caddy.log" &&
		echo "as-e2e: the Inspector refreshed its token" || { echo "as-e2e: the Inspector did not refresh its token"; fail=1; }
fi
if [ $fail -ne 0 ]; then
	tail -30 "$out/caddy.log"
	exit 1
fi
echo "as-e2e: passed (logs in $out)"
