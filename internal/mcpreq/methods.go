package mcpreq

// The vocabulary of MCP that a metric label may name: every method of MCP
// 2025-11-25 and 2026-07-28 (both directions, notifications included) and
// the released protocol versions. A client chooses the method and version
// strings it sends (and a server that echoes the client's version chooses
// it too), so a label takes them only from these sets; anything else is
// "other", and no request can grow a metric's label set.

// methods are MCP's methods: 2025-11-25's requests and notifications of
// either side, and what 2026-07-28 added.
var methods = map[string]bool{
	// lifecycle and utilities
	"initialize":                               true,
	"ping":                                     true,
	"notifications/initialized":                true,
	"notifications/cancelled":                  true,
	"notifications/progress":                   true,
	"logging/setLevel":                         true,
	"notifications/message":                    true,
	"completion/complete":                      true,
	"tasks/get":                                true,
	"tasks/result":                             true,
	"tasks/list":                               true,
	"tasks/cancel":                             true,
	"notifications/tasks/status":               true,
	"server/discover":                          true, // 2026-07-28
	"subscriptions/listen":                     true, // 2026-07-28
	"notifications/subscriptions/acknowledged": true, // 2026-07-28

	// server features
	"tools/list":                           true,
	"tools/call":                           true,
	"notifications/tools/list_changed":     true,
	"prompts/list":                         true,
	"prompts/get":                          true,
	"notifications/prompts/list_changed":   true,
	"resources/list":                       true,
	"resources/templates/list":             true,
	"resources/read":                       true,
	"resources/subscribe":                  true,
	"resources/unsubscribe":                true,
	"notifications/resources/list_changed": true,
	"notifications/resources/updated":      true,

	// client features
	"sampling/createMessage":             true,
	"elicitation/create":                 true,
	"notifications/elicitation/complete": true,
	"roots/list":                         true,
	"notifications/roots/list_changed":   true,
}

// versions are the released MCP protocol versions.
var versions = map[string]bool{
	"2024-11-05": true,
	"2025-03-26": true,
	"2025-06-18": true,
	"2025-11-25": true,
	"2026-07-28": true,
}

// MethodLabel is m as a metric label: m if it is a method of MCP, else
// "other"; "" (a response, which has no method) stays "".
func MethodLabel(m string) string {
	if m == "" || methods[m] {
		return m
	}
	return "other"
}

// VersionLabel is v as a metric label: v if it is a released MCP protocol
// version, else "other"; "" (none known) stays "".
func VersionLabel(v string) string {
	if v == "" || versions[v] {
		return v
	}
	return "other"
}
