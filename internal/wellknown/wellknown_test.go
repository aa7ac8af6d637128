package wellknown

import "testing"

func TestRedactURI(t *testing.T) {
	for in, want := range map[string]string{
		"/mcp":                                  "/mcp",
		"/mcp?access_token=abc":                 "/mcp?access_token=REDACTED",
		"/mcp?a=1&ACCESS_TOKEN=abc&b=2":         "/mcp?a=1&ACCESS_TOKEN=REDACTED&b=2",
		"/mcp?access%5Ftoken=abc":               "/mcp?access%5Ftoken=REDACTED",
		"/mcp?x=access_token":                   "/mcp?x=access_token",
		"/mcp?access_token":                     "/mcp?access_token=REDACTED",
		"/mcp?access%zz_token=abc&access_token": "/mcp?REDACTED&access_token=REDACTED",
	} {
		if got := RedactURI(in); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}
