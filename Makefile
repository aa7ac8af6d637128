# caddymcp — the two commands that matter: `make example` and `make test`.

SHELL := /bin/bash
CADDY_VERSION ?= v2.11.9
XCADDY_VERSION ?= v0.4.5
# Our module is built from this checkout (=.), so xcaddy needs only modules
# that the first configured proxy serves; "|off" stops a fallback to
# fetching our unpublished module path from its VCS host.
XCADDY_GOPROXY := $(shell go env GOPROXY | cut -d, -f1)|off

.PHONY: build example test test-go soak as-e2e sandbox-e2e request-path conformance example-test fuzz bench bench-sandbox bench-aggregate bench-overhead bench-idle scale-demo hydra lint clean

## build: a ./caddy binary with the plugin (xcaddy build --with github.com/caddymcp/caddymcp=.)
build: caddy

caddy: $(shell find . -name '*.go' -not -path './node_modules/*') go.mod go.sum
	GOPROXY="$(XCADDY_GOPROXY)" go run github.com/caddyserver/xcaddy/cmd/xcaddy@$(XCADDY_VERSION) \
		build $(CADDY_VERSION) --output ./caddy --with github.com/caddymcp/caddymcp=.

## example: run the example (Caddy with Caddyfile.example and its helpers)
example: caddy
	./examples/run.sh

## test: every test: gofmt, go vet, the plugin build, Go unit and integration
## tests (with -race), the MCP conformance suite against mcp_stdio, and the
## example end to end (README walkthrough, Inspector CLI, Inspector in Chromium)
test: test-go conformance example-test as-e2e sandbox-e2e

## test-go: gofmt, go vet, the plugin build and go test -race ./... (stdiobridge, the longest package,
## takes about 250 s alone on 2 cores and 365 s beside a `go build -a` loop: -timeout 20m, not go's 10m);
## mcpauth's TestHydraOpaqueTokens runs against bin/hydra
test-go: lint caddy bin/hydra
	CADDYMCP_CADDY_BIN=$(CURDIR)/caddy CADDYMCP_HYDRA_BIN=$(CURDIR)/bin/hydra go test -race -count=1 -timeout 20m ./...

## soak: the soak, load and scale tests alone (named TestSoak*, skipped under go test -short; make test runs them too)
soak: caddy
	CADDYMCP_CADDY_BIN=$(CURDIR)/caddy go test -race -count=1 -timeout 20m -run '^TestSoak' ./...

## request-path: the functions and files a 2025 and a 2026 tools/call visit in mcp_stdio (dlv trace of TestRequestPath)
request-path:
	./.ci/request-path.sh

## as-e2e: mcp_authorization_server with real MCP clients doing the whole OAuth flow by themselves (TypeScript SDK 1.x and 2.x,
## headless Chromium as the user; the upstream is zitadel/oidc's example OpenID provider, cmd/devidp)
as-e2e: caddy
	./.ci/as-e2e.sh

## sandbox-e2e: server-filesystem and server-memory from npm under the recommended sandbox, every tool called
## by the TypeScript SDK client, and what the sandbox refuses them (README "Sandbox"; needs root)
sandbox-e2e: caddy
	./.ci/sandbox-e2e.sh

## example-test: run the example and check it as a user would (needs ports 3000, 8000, 9000, 2019, 6274)
example-test: caddy
	./.ci/example.sh

## fuzz: each fuzz target for FUZZTIME (default 15s), starting from the committed seed corpora
FUZZTIME ?= 15s
fuzz:
	FUZZTIME=$(FUZZTIME) ./.ci/fuzz.sh

## bench: the performance comparison (native, direct stdio, mcp_stdio, mcp_auth + mcp_stdio, supergateway), README "Performance";
## BENCH_SESSIONS=1,16,64,256 chooses the by-concurrency levels, BENCH_LEVELS_ONLY=1 runs that table alone
bench: caddy
	./.ci/bench.sh

## bench-sandbox: what the sandbox costs alone (child start, calls/s; two Caddys, alternating rounds; make bench runs it too)
bench-sandbox: caddy
	./.ci/bench.sh -sandbox 5

## bench-aggregate: what mcp_aggregate with one backend costs against mcp_stdio alone (alternating rounds; make bench runs it too)
bench-aggregate: caddy
	./.ci/bench.sh -aggregate 5

## bench-overhead: what the audit log costs (two Caddys, alternating rounds)
bench-overhead: caddy
	./.ci/bench.sh -overhead 10

## bench-idle: Caddy's memory with IDLE_SESSIONS (default 10000, or what the descriptor limit allows) idle sessions of a small C server (needs cc)
IDLE_SESSIONS ?= 10000
bench-idle: caddy
	mkdir -p bin
	cc -O2 -o bin/tiny cmd/tiny/tiny.c
	go build -o bin/mcpbench ./cmd/mcpbench
	bin/mcpbench -idle $(IDLE_SESSIONS)

## scale-demo: 3 caddymcp instances behind a Caddy balancer (lb_policy mcp), loaded, one killed (README "More than one machine")
scale-demo: caddy
	mkdir -p bin
	go build -o bin/everything-server github.com/modelcontextprotocol/go-sdk/conformance/everything-server
	go build -o bin/scaledemo ./cmd/scaledemo
	bin/scaledemo $(SCALE_DEMO_FLAGS)

## hydra: mcp_auth against Ory Hydra v2.3.0 end to end, JWT access tokens (the opaque ones: TestHydraOpaqueTokens in test-go)
hydra: caddy bin/hydra
	HYDRA_BIN=$(CURDIR)/bin/hydra ./.ci/hydra-e2e.sh

## bin/hydra: Ory Hydra v2.3.0 built from the Go module proxy, once (about 5 min on 2 cores with a cold module cache)
bin/hydra:
	./.ci/build-hydra.sh $@

## conformance: the official MCP conformance suite, native vs. through mcp_stdio (installs Node 22 locally)
conformance: caddy
	./.ci/conformance.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

clean:
	rm -rf caddy bin .ci/node .ci/artifacts
