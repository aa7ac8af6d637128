package mcpauth

import "testing"

// Every invalid_token description the handler can give sorts into its
// reason label; the label set stays closed whatever a description carries.
func TestInvalidReason(t *testing.T) {
	for desc, want := range map[string]string{
		"token is expired":                                       "expired",
		"token is not valid yet (nbf)":                           "not_yet_valid",
		"token is issued in the future (iat)":                    "not_yet_valid",
		"token signature is invalid":                             "bad_signature",
		"token signing algorithm is not allowed":                 "algorithm",
		"token alg does not match the alg of its JWK":            "algorithm",
		"token signing key (kid) is not in the JWKS":             "unknown_key",
		"token kid header is not a string":                       "unknown_key",
		"no key in the JWKS matches the token (no kid)":          "unknown_key",
		"token signing key cannot be used":                       "unknown_key",
		"token signing keys are not available: fetch failed 500": "keys_unavailable",
		"token issuer is not accepted":                           "issuer",
		"token aud claim is malformed":                           "audience",
		"token has no audience (aud)":                            "audience",
		"token audience (aud) does not include this resource":    "audience",
		"token has no subject (sub)":                             "no_subject",
		"token has no expiry (exp)":                              "no_expiry",
		"token is larger than 16384 bytes":                       "too_large",
		"token is malformed":                                     "malformed",
		"token is missing a required claim":                      "claims",
		"token has a claim of the wrong type":                    "claims",
		"token cannot be verified":                               "other",
		"token is invalid":                                       "other",
	} {
		if got := invalidReason(desc); got != want {
			t.Errorf("%q: %q, want %q", desc, got, want)
		}
	}
}
