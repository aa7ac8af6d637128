#!/usr/bin/env bash
# mcp_auth against a real identity provider, Ory Hydra v2.3.0, end to end:
# Hydra with JWT access tokens, a client_credentials client allowed the MCP
# resource as audience, Caddy with mcp_auth (issuer exactly as Hydra names
# itself, trailing slash included; JWKS discovered from its OpenID
# metadata), a per-tool scope rule, and go-sdk's everything-server behind
# mcp_stdio. Also dynamic client registration, once enabled in Hydra.
# Hydra: HYDRA_BIN, else bin/hydra, built once by .ci/build-hydra.sh
# (`make bin/hydra`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.ci/artifacts/hydra
mkdir -p "$out" bin
hydra=${HYDRA_BIN:-$PWD/bin/hydra}
[ -x "$hydra" ] || ./.ci/build-hydra.sh "$hydra"
[ -x ./caddy ] || make build
go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened"; return 1; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

pub=$(free_port) adm=$(free_port) port=$(free_port)
issuer=http://127.0.0.1:$pub/   # Hydra's issuer, verbatim: with the trailing slash
resource=http://127.0.0.1:$port/mcp
DSN=memory URLS_SELF_ISSUER=$issuer STRATEGIES_ACCESS_TOKEN=jwt SECRETS_SYSTEM=caddymcp-hydra-e2e-secret-0123456789 \
	SERVE_PUBLIC_PORT=$pub SERVE_ADMIN_PORT=$adm SERVE_PUBLIC_HOST=127.0.0.1 SERVE_ADMIN_HOST=127.0.0.1 \
	OIDC_DYNAMIC_CLIENT_REGISTRATION_ENABLED=true WEBFINGER_OIDC_DISCOVERY_CLIENT_REGISTRATION_URL="${issuer}oauth2/register" \
	"$hydra" serve all --dev > "$out/hydra.log" 2>&1 &
pids+=($!)
wait_port "$pub"
wait_port "$adm"

client() { # scope -> "id secret"
	curl -s "http://127.0.0.1:$adm/admin/clients" -H 'Content-Type: application/json' -d '{
		"grant_types":["client_credentials"],"scope":"'"$1"'","audience":["'"$resource"'"],
		"token_endpoint_auth_method":"client_secret_post"}' |
		python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["client_id"], c["client_secret"])'
}
token() { # id secret scope -> access token (Hydra takes `audience`, not RFC 8707 `resource`)
	curl -s "http://127.0.0.1:$pub/oauth2/token" -d grant_type=client_credentials -d "client_id=$1" -d "client_secret=$2" \
		-d "scope=$3" -d "audience=$resource" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

cat > "$out/Caddyfile" <<CADDY
{
	admin off
	auto_https off
}
:$port {
	bind 127.0.0.1
	route /mcp {
		mcp_auth {
			issuer $issuer
			audience $resource
			scopes read:all
			tool test_trigger_* scopes write:all
		}
		mcp_stdio {
			command $PWD/bin/everything-server
		}
	}
}
CADDY
./caddy run --config "$out/Caddyfile" --adapter caddyfile > "$out/caddy.log" 2>&1 &
pids+=($!)
wait_port "$port"

read -r rid rsecret < <(client "read:all")
read -r wid wsecret < <(client "read:all write:all")
read_tok=$(token "$rid" "$rsecret" "read:all")
write_tok=$(token "$wid" "$wsecret" "read:all write:all")
meta='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
call() { # token tool -> status
	curl -s -o "$out/last.json" -w '%{http_code}' "$resource" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
		-H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' \
		-H "Mcp-Name: $2" -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'"$2"'","arguments":{},'"$meta"'}}'
}
fail=0
check() { if [ "$2" = "$3" ]; then echo "ok   $1: $2"; else echo "FAIL $1: got $2, want $3"; fail=1; fi; }
check "no token" "$(curl -s -o /dev/null -w '%{http_code}' "$resource" -X POST)" 401
check "Hydra read:all token, test_simple_text" "$(call "$read_tok" test_simple_text)" 200
grep -q 'This is a simple text response' "$out/last.json" || { echo "FAIL the call's answer: $(cat "$out/last.json")"; fail=1; }
check "Hydra read:all token, test_trigger_tool_change" "$(call "$read_tok" test_trigger_tool_change)" 403
check "Hydra write:all token, test_trigger_tool_change" "$(call "$write_tok" test_trigger_tool_change)" 200
other=$(curl -s "http://127.0.0.1:$pub/oauth2/token" -d grant_type=client_credentials -d "client_id=$rid" -d "client_secret=$rsecret" -d scope=read:all |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
check "Hydra token without our audience" "$(call "$other" test_simple_text)" 401
reg=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pub/oauth2/register" -H 'Content-Type: application/json' \
	-d '{"client_name":"mcp-client","redirect_uris":["http://127.0.0.1:5555/cb"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none"}')
check "dynamic client registration (enabled in Hydra)" "$reg" 201
curl -s "http://127.0.0.1:$pub/.well-known/openid-configuration" | grep -q '"registration_endpoint"' && echo "ok   registration_endpoint advertised" || { echo "FAIL no registration_endpoint"; fail=1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pub/.well-known/oauth-authorization-server")
echo "note RFC 8414 metadata (/.well-known/oauth-authorization-server): HTTP $code (MCP clients fall back to OpenID discovery)"
[ $fail -eq 0 ] && echo "Hydra v2.3.0 end to end: passed" || { echo "Hydra end to end: FAILED (logs in $out)"; exit 1; }
