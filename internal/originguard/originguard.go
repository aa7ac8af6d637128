// Package originguard is the DNS-rebinding protection of the MCP
// transport spec (its security warning), shared by every caddymcp handler
// that answers MCP requests itself (mcp_stdio, mcp_aggregate): the Host
// and Origin headers checked against allowed_hosts and allowed_origins,
// or, without them, against the listener (loopback names only on a
// loopback listener) and the request's own origin.
package originguard

import (
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddymcp/caddymcp/internal/wellknown"
)

// Check is the DNS-rebinding protection (MCP transport spec,
// security warning): with allowed_hosts, the Host (on every listener) and
// the host of an Origin must be among them; on a loopback listener the
// Host must be loopback and an Origin, if present, loopback too; elsewhere
// an Origin must be the request's own origin. Origins in allowed_origins
// pass the Origin checks. It returns why a request is refused, or "".
func Check(r *http.Request, allowedHosts, allowedOrigins []string) string {
	if len(allowedHosts) > 0 && !HostAllowed(allowedHosts, r.Host) {
		return "Host " + quote(r.Host) + " is not in allowed_hosts"
	}
	origin := r.Header.Get("Origin")
	if origin != "" && originAllowed(allowedOrigins, origin) {
		return ""
	}
	if origin != "" && len(allowedHosts) > 0 {
		if u, err := url.Parse(origin); err != nil || u.Host == "" || !HostAllowed(allowedHosts, u.Host) {
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

func originAllowed(allowed []string, origin string) bool {
	return slices.ContainsFunc(allowed, func(o string) bool {
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

// HostAllowed matches a Host (port ignored) against allowed_hosts; a
// `*.` entry matches exactly one more label.
func HostAllowed(allowed []string, hostport string) bool {
	host := strings.ToLower(hostName(hostport))
	for _, a := range allowed {
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

// SiteHosts returns the host names of the site block the directive is in
// (none for a site such as :443 or http://). httpcaddyfile keeps the block
// unexported; it is read, never written, through reflection, and a Caddy
// whose Helper looks different yields no names (allowed_hosts then has to
// be set by hand, as in JSON).
func SiteHosts(h httpcaddyfile.Helper) []string {
	keys := reflect.ValueOf(h).FieldByName("parentBlock").FieldByName("Keys")
	if !keys.IsValid() || keys.Kind() != reflect.Slice {
		return nil
	}
	var hosts []string
	for i := 0; i < keys.Len(); i++ {
		text := keys.Index(i).FieldByName("Text")
		if !text.IsValid() || text.Kind() != reflect.String {
			return nil
		}
		addr, err := httpcaddyfile.ParseAddress(text.String())
		if err != nil || addr.Host == "" || strings.ContainsAny(addr.Host, "{}") {
			return nil // a site for any host: no default
		}
		if !slices.Contains(hosts, addr.Host) {
			hosts = append(hosts, addr.Host)
		}
	}
	return hosts
}
