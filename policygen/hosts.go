package policygen

import (
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/clawnet/clawnet/policy"
)

// endpoint is a host and port a URL names.
type endpoint struct {
	host string
	port uint16
}

// parseEndpoint reads the host and port of a URL such as
// "https://api.example.com/v1" or "socks5://proxy:1080". It never returns
// the URL's user, password, path or query: they may hold secrets, and
// messages name the key, not the value.
func parseEndpoint(raw string) (endpoint, string) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return endpoint{}, "not a URL with a host"
	}
	e := endpoint{host: strings.ToLower(u.Hostname())}
	switch u.Scheme {
	case "https", "wss":
		e.port = 443
	case "http", "ws":
		e.port = 80
	case "socks5", "socks5h", "socks":
		e.port = 1080
	case "postgres", "postgresql":
		e.port = 5432
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return endpoint{}, "has a bad port"
		}
		e.port = uint16(n)
	}
	if e.port == 0 {
		return endpoint{}, "has no port and a scheme with no default one"
	}
	if e.host == "" {
		return endpoint{}, "not a URL with a host"
	}
	return e, ""
}

// hostKind says how a rule can name host.
type hostKind uint8

const (
	hostName     hostKind = iota // a DNS name: a domains rule
	hostAddr                     // a literal address: a cidrs rule
	hostLoopback                 // the agent's own loopback: no rule
	hostBad                      // nothing a rule can name
)

func classifyHost(h string) hostKind {
	if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		a = a.Unmap()
		switch {
		case a.IsLoopback() || a.IsUnspecified():
			return hostLoopback
		case a.Zone() != "" || policy.ClassifyAddr(a).Class == policy.ClassMetadata:
			return hostBad
		}
		return hostAddr
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return hostLoopback
	}
	if p, err := policy.ParsePattern(h); err != nil || p.Wildcard {
		return hostBad
	}
	return hostName
}

// endpointNeed turns a URL at key into a need, or a note or warning when
// no rule is needed or possible.
func (r *reader) endpointNeed(key, raw string, n Need) {
	e, why := parseEndpoint(raw)
	if why != "" {
		r.warn(key, why+"; no rule written")
		return
	}
	switch classifyHost(e.host) {
	case hostLoopback:
		r.note(key, "on the agent's own loopback (inside its namespace): no rule needed")
		return
	case hostBad:
		r.warn(key, "its host is not a name or address a rule can open; no rule written")
		return
	}
	n.Hosts = []string{e.host}
	n.Ports = []uint16{e.port}
	r.need(n)
}
