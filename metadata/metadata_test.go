package metadata

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestValidateErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		want string
	}{
		{"relative resource", Handler{Resource: "/mcp"}, "resource:"},
		{"resource not http", Handler{Resource: "ftp://x/mcp"}, "resource:"},
		{"resource with fragment", Handler{Resource: "https://x/mcp#frag"}, "must not have a fragment"},
		{"resource with empty fragment", Handler{Resource: "https://x/mcp#"}, "must not have a fragment"},
		{"resource without host", Handler{Resource: "https:///mcp"}, "has no host"},
		{"authorization server relative", Handler{AuthorizationServers: []string{"https://a", "auth"}}, "authorization_servers[1]:"},
		{"authorization server empty", Handler{AuthorizationServers: []string{""}}, "authorization_servers[0]:"},
		{"jwks_uri", Handler{JWKSURI: "jwks.json"}, "jwks_uri:"},
		{"resource_documentation", Handler{ResourceDocumentation: "docs"}, "resource_documentation:"},
		{"resource_policy_uri", Handler{ResourcePolicyURI: "mailto:x@y"}, "resource_policy_uri:"},
		{"resource_tos_uri", Handler{ResourceTOSURI: "://"}, "resource_tos_uri:"},
		{"bearer method", Handler{BearerMethodsSupported: []string{"header", "cookie"}}, `bearer_methods_supported: "cookie"`},
		{"scope with space", Handler{ScopesSupported: []string{"a b"}}, "scopes_supported:"},
		{"offline_access", Handler{AuthorizationServers: []string{"https://a"}, ScopesSupported: []string{"read", "offline_access"}}, "scopes_supported: offline_access: MCP servers SHOULD NOT"},
		{"signing alg none", Handler{ResourceSigningAlgValuesSupported: []string{"RS256", "none"}}, "resource_signing_alg_values_supported:"},
		{"dpop alg none", Handler{DPoPSigningAlgValuesSupported: []string{"NONE"}}, "dpop_signing_alg_values_supported:"},
		{"field invalid json", Handler{Fields: map[string]json.RawMessage{"x": json.RawMessage(`{oops`)}}, "field x: value is not valid JSON"},
		{"field duplicates member", Handler{Fields: map[string]json.RawMessage{"resource_name": json.RawMessage(`"x"`)}}, `field resource_name: duplicates the named member`},
		{"field empty name", Handler{Fields: map[string]json.RawMessage{"": json.RawMessage(`1`)}}, "field: empty member name"},
		{"cors origin", Handler{CORS: []string{"app.example.com"}}, "cors:"},
		// what the gateway cannot honour
		{"no authorization server", Handler{}, "authorization_servers: at least one authorization server is required"},
		{"no authorization server, empty list", Handler{AuthorizationServers: []string{}}, "authorization_servers: at least one"},
		{"bearer method query", Handler{AuthorizationServers: []string{"https://a"}, BearerMethodsSupported: []string{"header", "query"}},
			`bearer_methods_supported: "query": MCP forbids access tokens in the query string`},
		{"bearer method body", Handler{AuthorizationServers: []string{"https://a"}, BearerMethodsSupported: []string{"body", "header"}},
			`bearer_methods_supported: "body": MCP clients must send the token in the Authorization header`},
		{"dpop required", Handler{AuthorizationServers: []string{"https://a"}, DPoPBoundAccessTokensRequired: true},
			"dpop_bound_access_tokens_required: nothing in caddymcp verifies DPoP proofs"},
		{"bearer methods through field", Handler{AuthorizationServers: []string{"https://a"},
			Fields: map[string]json.RawMessage{"bearer_methods_supported": json.RawMessage(`["query"]`)}}, "field bearer_methods_supported: duplicates the named member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	h := Handler{
		Resource:                          "https://mcp.example.com/mcp",
		AuthorizationServers:              []string{"https://auth.example.com", "http://localhost:9000"},
		BearerMethodsSupported:            []string{"header"},
		ResourceSigningAlgValuesSupported: []string{"RS256"},
		ResourceDocumentation:             "{http.request.scheme}://{http.request.host}/docs",
		Fields:                            map[string]json.RawMessage{"resource_name#de": json.RawMessage(`"Beispiel"`)},
		CORS:                              []string{"*", "https://app.example.com"},
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	tests := []struct{ name, input, want string }{
		{"unknown option", "oauth_protected_resource {\n\tfoo bar\n}", `unrecognized oauth_protected_resource option "foo"`},
		{"resource without value", "oauth_protected_resource {\n\tresource\n}", "wrong argument count"},
		{"resource two values", "oauth_protected_resource {\n\tresource a b\n}", "wrong argument count"},
		{"list without value", "oauth_protected_resource {\n\tauthorization_servers\n}", "wrong argument count"},
		{"flag with value", "oauth_protected_resource {\n\tdpop_bound_access_tokens_required yes\n}", "wrong argument count"},
		{"field bad json", "oauth_protected_resource {\n\tfield x notjson\n}", "field x: value \"notjson\" is not valid JSON"},
		{"field twice", "oauth_protected_resource {\n\tfield x 1\n\tfield x 2\n}", "field x: set twice"},
		{"max_age bad", "oauth_protected_resource {\n\tmax_age soon\n}", "max_age:"},
		{"inline args", "oauth_protected_resource https://x", "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}
