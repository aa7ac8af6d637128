package mcpreq

import "testing"

func TestLabels(t *testing.T) {
	for _, c := range []struct{ in, method, version string }{
		{"tools/call", "tools/call", "other"},
		{"server/discover", "server/discover", "other"},
		{"notifications/subscriptions/acknowledged", "notifications/subscriptions/acknowledged", "other"},
		{"notifications/elicitation/complete", "notifications/elicitation/complete", "other"},
		{"tasks/result", "tasks/result", "other"},
		{"2025-03-26", "other", "2025-03-26"},
		{"2026-07-28", "other", "2026-07-28"},
		{"tools/call ", "other", "other"},
		{"Tools/Call", "other", "other"},
		{"", "", ""},
	} {
		if got := MethodLabel(c.in); got != c.method {
			t.Errorf("MethodLabel(%q) = %q, want %q", c.in, got, c.method)
		}
		if got := VersionLabel(c.in); got != c.version {
			t.Errorf("VersionLabel(%q) = %q, want %q", c.in, got, c.version)
		}
	}
}
