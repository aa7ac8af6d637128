package mcpreq

// Resource URIs as servers read them. A rule on `file:///secret/*` must
// hold for every spelling a server resolves to the same resource:
// `FILE:///secret/key`, `file://localhost/secret/key`,
// `file:///public/../secret/key`, `file:///%73ecret/key`. Readings returns
// the URI as sent, its RFC 3986 section 6 normal form, and the form a
// server reaches that decodes the whole path and resolves it as a file
// path or a WHATWG URL does (backslashes as slashes, tabs and newlines
// dropped, %2F as a slash); a decision that differs between them is
// refused as ambiguous.

import (
	"fmt"
	"strings"
)

// Readings returns the distinct ways a server may read uri, the URI as
// sent first.
func Readings(uri string) []string {
	out := []string{uri}
	norm := NormalizeURI(uri)
	for _, r := range []string{norm, resolvedURI(uri), emptyAuthority(norm), withoutFragment(norm)} {
		if r != "" && !contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// withoutFragment is the reading of a server that resolves the URI to a
// resource and drops its fragment (as net/url and WHATWG URL parsers
// split it off): "" when it has none.
func withoutFragment(uri string) string {
	if i := strings.IndexByte(uri, '#'); i >= 0 {
		return uri[:i]
	}
	return ""
}

// emptyAuthority is the reading of a server that keys resources by scheme,
// host and path: `x:/secret/key` is `x:///secret/key` to it (net/url gives
// both the same scheme, host and path). "" when uri has an authority, or
// no scheme, or a path that is not absolute.
func emptyAuthority(uri string) string {
	p := splitURI(uri)
	if p.scheme == "" || p.hasAuthority || !strings.HasPrefix(p.path, "/") {
		return ""
	}
	return p.scheme + "://" + strings.TrimPrefix(uri, p.scheme+":")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Disagreement says why a decision on the resource URIs names cannot be
// trusted, "" when it can: one is Unsettled, or decide says otherwise of
// one of its readings than of the URI as sent. A tool or prompt name has
// one reading.
func Disagreement[T comparable](kind string, names []string, decide func(string) T) string {
	if kind != "resource" {
		return ""
	}
	for _, n := range names {
		if Unsettled(n) {
			return fmt.Sprintf("resource URI %q is spelled in a form URL parsers rewrite (no // after the scheme, a backslash, or an encoded or non-ASCII host)", n)
		}
		rs := Readings(n)
		first := decide(rs[0])
		for _, r := range rs[1:] {
			if decide(r) != first {
				return fmt.Sprintf("resource URI %q reads as %q too, which is decided otherwise", n, r)
			}
		}
	}
	return ""
}

// Unsettled reports whether a URI of a scheme that WHATWG URL parsers
// and RFC 8089 treat specially (file, http, https, ws, wss, ftp) is
// spelled in a form they rewrite beyond what Readings models: no "//"
// after the scheme (`file:/secret/key` and `file:secret/key` are
// file:///secret/key to Node's URL and pydantic's AnyUrl), a backslash
// anywhere, or a host with non-ASCII characters or percent-encodings
// (fullwidth letters and ideographic full stops map to ASCII under UTS
// 46). Such a URI is refused wherever a rule or the matcher decides on it.
func Unsettled(uri string) bool {
	p := splitURI(strings.TrimFunc(uri, func(r rune) bool { return r <= ' ' }))
	if _, special := defaultPorts[strings.ToLower(p.scheme)]; !special && !strings.EqualFold(p.scheme, "file") {
		return false
	}
	if !p.hasAuthority || strings.ContainsRune(uri, '\\') {
		return true
	}
	for _, c := range []byte(p.authority) {
		if c >= 0x80 || c == '%' {
			return true
		}
	}
	return false
}

// uriParts is a URI split as RFC 3986 section 3 does.
type uriParts struct {
	scheme, authority, path, query, fragment string
	hasAuthority, hasQuery, hasFragment      bool
}

func splitURI(s string) uriParts {
	var p uriParts
	if i := strings.IndexByte(s, ':'); i > 0 && validScheme(s[:i]) {
		p.scheme, s = s[:i], s[i+1:]
	}
	if i := strings.IndexByte(s, '#'); i >= 0 {
		p.fragment, p.hasFragment, s = s[i+1:], true, s[:i]
	}
	if i := strings.IndexByte(s, '?'); i >= 0 {
		p.query, p.hasQuery, s = s[i+1:], true, s[:i]
	}
	if rest, ok := strings.CutPrefix(s, "//"); ok {
		p.hasAuthority = true
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			i = len(rest)
		}
		p.authority, s = rest[:i], rest[i:]
	}
	p.path = s
	return p
}

func validScheme(s string) bool {
	for i, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

func (p uriParts) String() string {
	var b strings.Builder
	if p.scheme != "" {
		b.WriteString(p.scheme)
		b.WriteByte(':')
	}
	if p.hasAuthority {
		b.WriteString("//")
		b.WriteString(p.authority)
	}
	b.WriteString(p.path)
	if p.hasQuery {
		b.WriteByte('?')
		b.WriteString(p.query)
	}
	if p.hasFragment {
		b.WriteByte('#')
		b.WriteString(p.fragment)
	}
	return b.String()
}

var defaultPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}

// NormalizeURI returns the RFC 3986 section 6.2.2 normal form of uri (case
// of scheme, host and percent-encodings; unreserved characters decoded; dot
// segments removed) with the scheme-based steps of section 6.2.3 for the
// schemes a server is likely to know (default ports, an empty http path,
// and RFC 8089's file://localhost).
func NormalizeURI(uri string) string {
	p := splitURI(uri)
	p.scheme = strings.ToLower(p.scheme)
	p.authority = normalizeAuthority(p.scheme, p.authority)
	p.path = removeDotSegments(normalizePercent(p.path))
	if p.hasAuthority && p.path == "" && (p.scheme == "http" || p.scheme == "https") {
		p.path = "/"
	}
	p.query = normalizePercent(p.query)
	p.fragment = normalizePercent(p.fragment)
	return p.String()
}

func normalizeAuthority(scheme, a string) string {
	userinfo, host := "", a
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		userinfo, host = a[:i+1], a[i+1:]
	}
	port := ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host, port = host[:i], host[i+1:]
	}
	host = strings.ToLower(normalizePercent(host))
	if port == defaultPorts[scheme] {
		port = ""
	}
	if scheme == "file" && host == "localhost" {
		host = ""
	}
	out := normalizePercent(userinfo) + host
	if port != "" {
		out += ":" + port
	}
	return out
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// normalizePercent decodes percent-encoded unreserved characters and
// writes the other encodings in upper case.
func normalizePercent(s string) string { return percentDecode(s, unreserved) }

// decodeAll decodes every valid percent-encoding.
func decodeAll(s string) string { return percentDecode(s, func(byte) bool { return true }) }

// percentDecode decodes the valid percent-encodings of the bytes decode
// accepts and writes the others in upper case.
func percentDecode(s string, decode func(byte) bool) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				if c := hi<<4 | lo; decode(c) {
					b.WriteByte(c)
				} else {
					b.WriteByte('%')
					b.WriteString(strings.ToUpper(s[i+1 : i+3]))
				}
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// resolvedURI is uri as a server that turns it into a file path or parses
// it as a WHATWG URL reaches it: tabs and newlines dropped, leading and
// trailing spaces and controls trimmed, the path decoded whole with
// backslashes as slashes and runs of slashes as one, dot segments
// removed.
func resolvedURI(uri string) string {
	uri = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, uri)
	uri = strings.TrimFunc(uri, func(r rune) bool { return r <= ' ' })
	p := splitURI(uri)
	p.scheme = strings.ToLower(p.scheme)
	p.authority = normalizeAuthority(p.scheme, decodeAll(p.authority))
	path := strings.ReplaceAll(decodeAll(p.path), `\`, "/")
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/") // as a file system resolves it
	}
	p.path = removeDotSegments(path)
	if p.hasAuthority && p.path == "" && (p.scheme == "http" || p.scheme == "https") {
		p.path = "/"
	}
	p.query = normalizePercent(p.query)
	p.fragment = normalizePercent(p.fragment)
	return p.String()
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	var out []string
	abs := strings.HasPrefix(in, "/")
	segs := strings.Split(in, "/")
	if abs {
		segs = segs[1:]
	}
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	res := strings.Join(out, "/")
	if abs {
		res = "/" + res
	}
	return res
}
