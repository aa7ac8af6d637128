package stdiobridge

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddymcp/caddymcp/internal/wellknown"
)

// checkOrigin is the DNS-rebinding protection (MCP transport spec,
// security warning): with allowed_hosts, the Host (on every listener) and
// the host of an Origin must be among them; on a loopback listener the
// Host must be loopback and an Origin, if present, loopback too; elsewhere
// an Origin must be the request's own origin. Origins in allowed_origins
// pass the Origin checks. It returns why a request is refused, or "".
func (h *Handler) checkOrigin(r *http.Request) string {
	if len(h.AllowedHosts) > 0 && !h.hostAllowed(r.Host) {
		return "Host " + quote(r.Host) + " is not in allowed_hosts"
	}
	origin := r.Header.Get("Origin")
	if origin != "" && h.originAllowed(origin) {
		return ""
	}
	if origin != "" && len(h.AllowedHosts) > 0 {
		if u, err := url.Parse(origin); err != nil || u.Host == "" || !h.hostAllowed(u.Host) {
			return "Origin " + quote(origin) + " is not allowed"
		}
	}
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && isLoopbackAddr(local.String()) {
		if !isLoopbackHost(r.Host) {
			return "Host " + quote(r.Host) + " is not a loopback name on a loopback listener"
		}
		if origin != "" {
			u, err := url.Parse(origin)
			if err != nil || !isLoopbackHost(u.Host) {
				return "Origin " + quote(origin) + " is not allowed"
			}
		}
		return ""
	}
	if origin == "" {
		return ""
	}
	scheme, host := wellknown.Origin(r)
	if strings.EqualFold(origin, scheme+"://"+host) {
		return ""
	}
	return "Origin " + quote(origin) + " is not allowed"
}

func (h *Handler) originAllowed(origin string) bool {
	return slices.ContainsFunc(h.AllowedOrigins, func(o string) bool {
		return o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}

// isLoopbackAddr reports whether a listener address is a loopback one.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostName is the host of a Host header or URL authority: no port, no
// IPv6 brackets, no trailing dot.
func hostName(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.Trim(host, "[]"), ".")
}

// isLoopbackHost accepts localhost, 127.0.0.0/8 and [::1], with any port.
func isLoopbackHost(hostport string) bool {
	host := hostName(hostport)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func quote(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return "\"" + strings.ToValidUTF8(s, "?") + "\""
}

// hostAllowed matches a Host (port ignored) against allowed_hosts; a
// `*.` entry matches exactly one more label.
func (h *Handler) hostAllowed(hostport string) bool {
	host := strings.ToLower(hostName(hostport))
	for _, a := range h.AllowedHosts {
		a = strings.ToLower(strings.TrimSuffix(a, "."))
		if suffix, ok := strings.CutPrefix(a, "*"); ok {
			if label, ok := strings.CutSuffix(host, suffix); ok && label != "" && !strings.Contains(label, ".") {
				return true
			}
		} else if host == a {
			return true
		}
	}
	return false
}
