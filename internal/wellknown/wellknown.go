// Package wellknown holds the RFC 9728 URL rules shared by the metadata
// responder and the bearer middleware: how a request's public origin is
// determined and how a resource maps to its metadata URL and back.
package wellknown

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ProtectedResourcePrefix is the RFC 9728 well-known path of protected
// resource metadata.
const ProtectedResourcePrefix = "/.well-known/oauth-protected-resource"

// AuthorizationServerPrefix is the RFC 8414 well-known path of authorization
// server metadata.
const AuthorizationServerPrefix = "/.well-known/oauth-authorization-server"

// Origin returns the scheme and host the client used to reach this request.
// X-Forwarded-Proto and X-Forwarded-Host are honoured only when Caddy has
// determined that the immediate peer is one of the server's trusted proxies,
// and then only the value that proxy added (the last one: a client can put
// anything before it). A host that is not a valid host[:port] is ignored.
func Origin(r *http.Request) (scheme, host string) {
	scheme = "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host = r.Host
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if p := lastValue(r.Header.Values("X-Forwarded-Proto")); p == "http" || p == "https" {
			scheme = p
		}
		if h := lastValue(r.Header.Values("X-Forwarded-Host")); h != "" && ValidHost(h) {
			host = h
		}
	}
	return scheme, host
}

// lastValue returns the last element of a comma-separated header (over all
// its lines): the one added by the proxy nearest to us.
func lastValue(values []string) string {
	if len(values) == 0 {
		return ""
	}
	v := values[len(values)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// ValidHost reports whether h is a host[:port] that can stand in a URL's
// authority as it is: letters, digits, '-', '.', '_', and an IPv6 literal
// in brackets; nothing that would start a path, query, fragment or
// userinfo.
func ValidHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == ':' || c == '[' || c == ']':
		default:
			return false
		}
	}
	return true
}

// HasDotSegment reports whether a (decoded) path has a "." or ".."
// segment, or a character that would end a URL's path (# or ?).
func HasDotSegment(path string) bool {
	if strings.ContainsAny(path, "#?") {
		return true
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// IsCORSPreflight reports whether r is a CORS preflight (Fetch standard):
// an OPTIONS request with Origin and Access-Control-Request-Method.
func IsCORSPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// IsUnder reports whether path is prefix itself or lies below it.
func IsUnder(path, prefix string) bool {
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// ResourceFromMetadataRequest derives the resource identifier that a
// metadata request asks about by reversing RFC 9728 section 3.1 path
// insertion: https://h/.well-known/oauth-protected-resource/a/b describes
// https://h/a/b, and the bare well-known path describes https://h.
func ResourceFromMetadataRequest(r *http.Request) string {
	scheme, host := Origin(r)
	rest := ""
	if IsUnder(r.URL.Path, ProtectedResourcePrefix) {
		rest = r.URL.Path[len(ProtectedResourcePrefix):]
	}
	return scheme + "://" + host + rest
}

// MetadataURLForRequest applies RFC 9728 section 3.1 path insertion to the
// request's own URL: the metadata of https://h/a/b is served at
// https://h/.well-known/oauth-protected-resource/a/b. The root resource maps
// to the bare well-known path.
func MetadataURLForRequest(r *http.Request) string {
	scheme, host := Origin(r)
	path := r.URL.Path
	if path == "/" {
		path = ""
	}
	return scheme + "://" + host + ProtectedResourcePrefix + path
}

// CheckURL reports why s is not an absolute http(s) URL with a host. With
// noFragment, a fragment is refused too (RFC 9728 resource identifiers).
// Values holding Caddy placeholders are resolved per request and accepted.
func CheckURL(s string, noFragment bool) error {
	if strings.ContainsRune(s, '{') {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a valid URL: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if noFragment && (u.Fragment != "" || strings.Contains(s, "#")) {
		return fmt.Errorf("%q must not have a fragment", s)
	}
	return nil
}

// ValidScope reports whether s is one scope token (RFC 6749 section 3.3)
// that can also be written inside a quoted WWW-Authenticate parameter.
func ValidScope(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \"\\")
}

// RedactURI hides the value of an access_token query parameter (RFC 6750
// section 2.3), so that a token a client put in the URL never reaches a log.
func RedactURI(uri string) string {
	path, query, ok := strings.Cut(uri, "?")
	if !ok || !strings.Contains(strings.ToLower(query), "access") {
		return uri
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		name, _, _ := strings.Cut(p, "=")
		if n, err := url.QueryUnescape(name); err == nil && strings.EqualFold(n, "access_token") {
			parts[i] = name + "=REDACTED"
		} else if err != nil && strings.Contains(strings.ToLower(name), "access") {
			parts[i] = "REDACTED"
		}
	}
	return path + "?" + strings.Join(parts, "&")
}
