package mcpauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// maxTokenLength bounds the bearer token we are willing to parse. Real access
// tokens are a few KiB; anything larger is refused before any decoding.
const maxTokenLength = 16 << 10

// bearerToken extracts the token from the Authorization header. It returns
// "" and nil when there is no credential at all.
func bearerToken(r *http.Request) (string, *failure) {
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", invalidRequest("more than one Authorization header")
	}
	v := values[0]
	scheme, token, found := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// RFC 6750 section 3.1: a request using another authentication
		// method lacks authentication information; the plain challenge
		// lets MCP clients start discovery
		return "", nil
	}
	if !found || token == "" {
		return "", invalidRequest("Bearer token missing in Authorization header")
	}
	if strings.ContainsAny(token, " \t") {
		return "", invalidRequest("Authorization header must carry exactly one Bearer token")
	}
	if len(token) > maxTokenLength {
		return "", invalidToken(fmt.Sprintf("token is larger than %d bytes", maxTokenLength))
	}
	if !isB64Token(token) {
		return "", invalidRequest("Bearer token contains characters not allowed by RFC 6750")
	}
	return token, nil
}

// b64TokenChars marks the characters of RFC 6750's b64token, less "=".
var b64TokenChars = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/") {
		t[c] = true
	}
	return t
}()

// isB64Token checks RFC 6750 section 2.1: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for i < len(s) && b64TokenChars[s[i]] {
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// describe turns a jwt parsing error into a description for the client
// and the log. It never includes the token.
func describe(err error) string {
	var kerr *keyError
	switch {
	case errors.As(err, &kerr):
		return kerr.msg
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if strings.Contains(err.Error(), "signing method") {
			return "token signing algorithm is not allowed"
		}
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		if strings.Contains(err.Error(), "signing method") {
			return "token signing algorithm is not allowed"
		}
		return "token cannot be verified"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token is expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token is issued in the future (iat)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token issuer is not accepted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		if strings.Contains(err.Error(), "exp") {
			return "token has no expiry (exp)"
		}
		return "token is missing a required claim"
	case errors.Is(err, jwt.ErrInvalidType):
		return "token has a claim of the wrong type"
	default:
		return "token is invalid"
	}
}

// keyError is a key lookup failure with a client-safe message.
type keyError struct{ msg string }

func (e *keyError) Error() string { return e.msg }

// canonicalURI normalizes an audience value for comparison (RFC 8707,
// RFC 3986 section 6): scheme and host are case-insensitive, a default port
// is dropped and a lone trailing slash is ignored. Non-URL audiences are
// compared as they are.
func canonicalURI(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return s
	}
	u.Scheme = strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	u.Host = host
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}

// scopesOf reads the granted scopes from `scope` (space-separated string,
// RFC 8693/9068) or `scp` (array or string, common in other issuers).
func scopesOf(claims jwt.MapClaims) []string {
	var out []string
	add := func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, strings.Fields(v)...)
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					out = append(out, strings.Fields(s)...)
				}
			}
		}
	}
	add(claims["scope"])
	add(claims["scp"])
	return out
}

// granted returns the scopes a token grants, with those they imply
// (scope_implies).
func (h *Handler) granted(claims jwt.MapClaims) []string {
	return h.expand(scopesOf(claims))
}

// expand adds to granted every scope a scope of it implies.
func (h *Handler) expand(granted []string) []string {
	if len(h.implied) == 0 {
		return granted
	}
	out := granted
	for _, g := range granted {
		for _, s := range h.implied[g] {
			if !slices.Contains(out, s) {
				if len(out) == len(granted) {
					out = slices.Clone(granted)
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// closeImplies closes scope_implies transitively: admin -> write:all ->
// write:files makes admin imply write:files too. Cycles end where every
// scope of the cycle implies the others.
func closeImplies(direct map[string][]string) map[string][]string {
	if len(direct) == 0 {
		return nil
	}
	out := make(map[string][]string, len(direct))
	for broad := range direct {
		seen := []string{}
		stack := slices.Clone(direct[broad])
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if s == broad || slices.Contains(seen, s) {
				continue
			}
			seen = append(seen, s)
			stack = append(stack, direct[s]...)
		}
		out[broad] = seen
	}
	return out
}
