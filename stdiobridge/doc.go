// Package stdiobridge provides the mcp_stdio handler: it runs a stdio MCP
// server (npx …, uvx …, any binary) as child processes and serves it as an
// MCP Streamable HTTP endpoint, to clients of both protocol eras on one
// endpoint: MCP 2025-11-25 (also 2025-06-18 and 2025-03-26) with sessions,
// and MCP 2026-07-28 without.
//
// # Design
//
// Every POSTed message is admitted in one place (admit, stdiobridge.go),
// which decides its era: a message with Mcp-Session-Id, or a plain
// initialize, is the 2025 era's; anything else is 2026-07-28's.
//
//   - 2025 era (session_transport.go, session.go, sse.go): a session is one
//     child; the bridge rewrites request ids (clients' ids never meet in a
//     child), logs each stream's events for Last-Event-ID resumption and
//     routes the child's own requests to the stream the client reads.
//   - 2026 era (modern.go): requests are served by a pool of children per
//     principal (pool per_user; or one per route: pool shared) and per
//     resolved env (pool.go). A child is
//     initialized by the bridge once. What the child speaks is probed once
//     per process config with server/discover on a throwaway sibling
//     (probe.go): a modern child gets requests as they are, a legacy one in
//     2025 form, its answers translated and its questions to the client
//     turned into input_required rounds (mrtr.go) whose requestState is
//     sealed (AES-GCM) and bound to the route, principal, method, name and
//     expiry; a modern child's own requestState is sealed inside one, with
//     a single-use id, so it is a round like the bridge's own.
//     subscriptions/listen is in subscriptions.go, the Mcp-* header checks
//     in headers.go.
//
// Ids that must come back to this instance (2025 session ids,
// requestState) name it (instance_id) and are authenticated with the key
// ring in Caddy's storage (internal/keyring, internal/instanceid), so that
// reverse_proxy's `mcp` policy (package mcplb) can route them and any
// instance can verify them; a round held by another instance is lost
// (-32602), a session of another instance is not found (404).
//
// Children, sessions, pools and parked rounds live in a table per process
// configuration (table.go), shared through a caddy.UsagePool so that a
// reload that keeps a route's process config keeps them all. Limits
// (max_sessions, max_sessions_per_user, initialize_rate) count sessions and
// pool children alike.
//
// A child costs Caddy four descriptors (three pipes and a pidfd) and three
// goroutines parked in the netpoller (stdout, stderr, exit), no OS thread:
// on Linux it is reaped through its pidfd (internal/childproc), so idle
// sessions are bounded by the descriptor limit, not by Go's 10 000 threads.
//
// # Locks
//
// Locks are taken in this order, never the reverse:
//
//	switchSink.mu → Session.mu → table.mu
//	warmPool.mu → table.mu
//	table.pubMu → warmPool.mu
//	table.poolsMu → childPool.mu → poolChild.mu
//	call.mu, table.roundsMu, table.probeMu, sweeper.mu: alone
//	toolLabels.mu: a leaf (taken under Session.mu or childPool.mu)
//
// No lock is held across I/O (childproc.Process.writeMu serializes one child's stdin
// writes, each under a deadline; table.probeMu is held while one probe runs,
// bounded by probeTimeout, so that concurrent first requests wait for one
// probe). A child's output is routed under its own lock only, and the
// pool's lock is taken after it is released.
//
// The Caddyfile syntax is documented on (*Handler).UnmarshalCaddyfile.
package stdiobridge
