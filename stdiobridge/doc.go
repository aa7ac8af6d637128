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
// Every lock of the package (and of internal/childproc), what it guards,
// and the locks that may be taken while it is held. Locks are taken only
// in the order given by these arrows, never the reverse; a lock marked
// "alone" is never held while another is taken, and none is taken under it.
//
//	routeState.mu (route.go): a handler's route settlement (resolved, dead)
//	  → unsettledMu, table.pubMu (newTable, under caddy.UsagePool's lock), toolLabels.mu
//	unsettledMu (route.go): the handlers whose route is not settled; a leaf
//	tableOrdinalsMu (stdiobridge.go): handler ordinals per server; alone
//	table.pubMu: publish (the settings, the spawner, the warm pool's size)
//	  → warmPool.mu
//	warmPool.mu (prewarm.go): ready warm children, how many are starting
//	  → switchSink.mu (start), table.mu (count)
//	switchSink.mu (prewarm.go): a warm child's target and its early lines;
//	adopt hands the early lines to the new owner's sink under it
//	  → Session.mu, poolChild.mu, childPool.mu
//	Session.mu (session.go): a session's streams, pending requests, state
//	  → table.mu, toolLabels.mu
//	table.mu (sessionTable): sessions, reservations, per-user counts, the
//	initialize_rate limiters, the reaper's state
//	table.poolsMu (poolTable): the pools and each pool's users
//	  → childPool.mu
//	childPool.mu (pool.go): a pool's children and listeners
//	  → poolChild.mu, toolLabels.mu
//	poolChild.mu (pool.go): a child's calls, progress tokens, asker, log level
//	call.mu (pool.go): a call's open questions, whether it was cancelled; alone
//	table.roundsMu (roundTable): parked rounds, unused requestState ids; alone
//	table.probeMu (serverFacts): one probe at a time, and whether its
//	verdict is a guess; alone, held across one probe (bounded by probeTimeout)
//	taskTable.tasksMu (tasks.go): a route's tasks, their counts and kept
//	bytes per principal, the finished list; alone
//	task.mu (tasks.go): one task's status, questions, result; alone (the
//	child is answered, and tasksMu taken, after it is released)
//	toolLabels.mu (metrics.go): the tool names metrics label; a leaf
//	pendingSet.mu (table.go): a count of work in flight; a leaf
//	childproc.Process.writeMu: one child's stdin; alone, held across one
//	write under a deadline (the only lock held across I/O)
//	childproc sweeper.mu: the descendant sweeps pending; alone
//
// table.mu is never held while a Session's or a pool's lock is taken (the
// reaper copies the session list, releases table.mu, then looks at each
// session). A child's output is routed under its own lock only, and the
// pool's lock is taken after it is released. Code that holds a lock calls
// nothing that can panic, or releases it in a defer, and no deferred
// function takes a lock the panicking code may hold.
//
// The Caddyfile syntax is documented on (*Handler).UnmarshalCaddyfile.
package stdiobridge
