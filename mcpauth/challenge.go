package mcpauth

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// failure is a rejected request: the status, the RFC 6750 error code and a
// description that says what was wrong without echoing the credential.
type failure struct {
	status      int
	code        string // "" for a request without a token (RFC 6750 section 3.1)
	description string
}

func (f *failure) Error() string {
	if f.code == "" {
		return f.description
	}
	return f.code + ": " + f.description
}

func missingToken() *failure {
	return &failure{status: http.StatusUnauthorized, description: "JWT token required"}
}

func invalidToken(desc string) *failure {
	return &failure{status: http.StatusUnauthorized, code: "invalid_token", description: desc}
}

// invalidReason sorts an invalid_token description into the closed set of
// reasons that label mcp_auth_decisions_total (descriptions may carry
// details, such as why keys are unavailable; labels must not).
func invalidReason(desc string) string {
	for _, r := range invalidReasons {
		if strings.Contains(desc, r.needle) {
			return r.reason
		}
	}
	return "other"
}

var invalidReasons = []struct{ needle, reason string }{
	{"keys are not available", "keys_unavailable"}, // first: its detail may say anything
	{"not active", "inactive"},
	{"not an access token", "not_access_token"},
	{"expired", "expired"},
	{"not valid yet", "not_yet_valid"},
	{"issued in the future", "not_yet_valid"},
	{"signature is invalid", "bad_signature"},
	{"algorithm", "algorithm"},
	{"alg does not match", "algorithm"},
	{"kid", "unknown_key"},
	{"no key in the JWKS", "unknown_key"},
	{"key cannot be used", "unknown_key"},
	{"issuer", "issuer"},
	{"aud", "audience"},
	{"subject", "no_subject"},
	{"no expiry", "no_expiry"},
	{"larger than", "too_large"},
	{"malformed", "malformed"},
	{"claim", "claims"},
}

func invalidRequest(desc string) *failure {
	return &failure{status: http.StatusBadRequest, code: "invalid_request", description: desc}
}

func insufficientScope(desc string) *failure {
	return &failure{status: http.StatusForbidden, code: "insufficient_scope", description: desc}
}

// unavailable is a token that could not be checked (the introspection
// endpoint failed): 503, no challenge, since the token may well be good and
// a challenge would send the client to fetch another.
func unavailable(desc string) *failure {
	return &failure{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", description: desc}
}

// unavailableRetryAfter is the Retry-After of a 503 for a token that could
// not be checked, in seconds.
const unavailableRetryAfter = "5"

// writeChallenge writes the RFC 6750 response for f, pointing the client at
// the protected resource metadata (RFC 9728 section 5.1) and, for step-up,
// at the scopes it needs (MCP 2025-11-25). A 503 (unavailable) gets the
// same body and Retry-After instead of a challenge.
func writeChallenge(w http.ResponseWriter, f *failure, metadataURL, scope string) {
	var b strings.Builder
	b.WriteString("Bearer ")
	switch f.code {
	case "":
		param(&b, "resource_metadata", metadataURL)
		param(&b, "scope", scope)
	case "insufficient_scope":
		param(&b, "error", f.code)
		param(&b, "scope", scope)
		param(&b, "resource_metadata", metadataURL)
		param(&b, "error_description", f.description)
	default:
		param(&b, "resource_metadata", metadataURL)
		param(&b, "error", f.code)
		param(&b, "error_description", f.description)
		param(&b, "scope", scope)
	}
	code := f.code
	if code == "" {
		code = "unauthorized"
	}
	body, _ := json.Marshal(struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}{code, f.description})

	h := w.Header()
	if f.status == http.StatusServiceUnavailable {
		h.Set("Retry-After", unavailableRetryAfter)
	} else {
		h.Set("WWW-Authenticate", b.String())
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(f.status)
	_, _ = w.Write(body)
}

// param appends name="value" (RFC 9110 quoted-string) when value is set.
func param(b *strings.Builder, name, value string) {
	if value == "" {
		return
	}
	if !strings.HasSuffix(b.String(), " ") {
		b.WriteString(", ")
	}
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			// control characters cannot appear in a header value
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// offlineAccess is the OpenID scope for refresh tokens: MCP servers SHOULD
// NOT name it in challenges or scopes_supported (it is the client's to ask
// for, not the resource's to need).
const offlineAccess = "offline_access"

// challengeScope renders the scopes a challenge names, offline_access left
// out.
func challengeScope(scopes []string) string {
	if !slices.Contains(scopes, offlineAccess) {
		return strings.Join(scopes, " ")
	}
	return strings.Join(slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == offlineAccess }), " ")
}
