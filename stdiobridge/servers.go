package stdiobridge

// A request is classified once, in ServeHTTP and servePOST (its method,
// its client's era by mcpreq.Era, its session, the route's stateless
// setting), and served by one of two servers, each with its own files:
//
//   - sessionServer, the 2025 era: the session transport
//     (session_transport.go), sessions and their child (session.go) and
//     their streams (sse.go); a stateless route's sessions too.
//   - poolServer, the 2026-07-28 era: the pool (modern.go, pool.go),
//     multi-round-trip requests (mrtr.go), the probe of what the child
//     speaks (probe.go) and subscriptions (subscriptions.go).
//
// Handler keeps the config, its lifecycle (Provision, Cleanup, the route's
// table) and what both eras share (origin checks, limits, audit, metrics).
// Both servers are views of the Handler: they hold nothing of their own.

// sessionServer serves 2025-era messages.
type sessionServer struct{ *Handler }

// poolServer serves 2026-07-28 requests.
type poolServer struct{ *Handler }
