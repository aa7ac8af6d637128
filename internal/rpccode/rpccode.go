// Package rpccode is caddymcp's own JSON-RPC error codes: one code per
// meaning, in the range JSON-RPC reserves for implementations
// (-32000..-32099), none that MCP or its SDKs give a meaning of their own
// (-32000 generic server error and -32001 request timeout in the SDKs,
// -32002 resource not found in 2025, -32020..-32022 and -32042 in MCP,
// -32800 cancelled). The HTTP status says the same in HTTP's terms; the
// README ("Error codes") has the table.
package rpccode

const (
	// RateLimited: a rate or count limit of the principal (mcp_auth's
	// rate_limit, mcp_stdio's max_sessions_per_user and initialize_rate);
	// HTTP 429 with Retry-After.
	RateLimited = -32010
	// Unavailable: the route cannot take the request now (max_sessions,
	// out of processes or descriptors); HTTP 503 with Retry-After.
	Unavailable = -32011
	// Forbidden: the request's Host or Origin is not allowed (DNS
	// rebinding protection); HTTP 403.
	Forbidden = -32012
	// MethodNotAllowed: an HTTP method the endpoint does not serve; HTTP
	// 405 with Allow.
	MethodNotAllowed = -32013
	// InsufficientScope: a message of a batch that the token's scopes do
	// not allow (the whole request would get 403 with a
	// WWW-Authenticate challenge; a batch answers each message).
	InsufficientScope = -32014
)
