package configs

import (
	"fmt"
	"net/netip"
	"strings"
)

// SplitHost splits a Host header, or balancer.tls.redirect_host, into its
// host and port. The host is a host name (letters, digits and hyphens, in
// dot-separated labels of 1–63 bytes, 253 in all, one trailing dot
// allowed), an IPv4 address, or an IPv6 address in brackets (kept in host);
// then, optionally, ":" and a port in range [1, 65535] (port "" when there
// is none, or an empty one, as RFC 3986 allows).
//
// Anything else is an error: userinfo ("a@evil.example", which a URL
// built from it would send elsewhere), a zone, bytes beyond ASCII, markup,
// a bare IPv6 address. A Host is the client's to choose, and whatever a
// server builds from it (a redirect's Location) must be a URL it meant.
func SplitHost(hostport string) (host, port string, err error) {
	host = hostport
	hasPort := false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", fmt.Errorf("%q: an IPv6 address in brackets needs its ]", hostport)
		}
		host = hostport[:end+1]
		if rest := hostport[end+1:]; rest != "" {
			if rest[0] != ':' {
				return "", "", fmt.Errorf("%q: only :PORT may follow ]", hostport)
			}
			port, hasPort = rest[1:], true
		}
		if a, err := netip.ParseAddr(host[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", fmt.Errorf("%q is not an IPv6 address (without a zone)", host)
		}
	} else {
		if i := strings.LastIndexByte(hostport, ':'); i >= 0 {
			host, port, hasPort = hostport[:i], hostport[i+1:], true
		}
		if strings.Contains(host, ":") {
			return "", "", fmt.Errorf("%q: an IPv6 address must be in brackets", hostport)
		}
		if a, err := netip.ParseAddr(host); (err != nil || !a.Is4()) && !validHostname(strings.TrimSuffix(host, ".")) {
			return "", "", fmt.Errorf("%q is neither a host name nor an IP address", host)
		}
	}
	if hasPort && port != "" {
		if n, err := parsePort(port); err != nil || n == 0 {
			return "", "", fmt.Errorf("%q: port must be in range [1, 65535]", hostport)
		}
	}
	return host, port, nil
}
