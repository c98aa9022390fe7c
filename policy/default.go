package policy

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// DefaultName is the name of the built-in policy made of the gateway's LLM
// provider and MCP servers.
const DefaultName = "default"

// Default builds the built-in policy named "default": the LLM provider's
// preset and the approved MCP servers, nothing else. An MCP server is
// "host", "host:port" or a URL such as "https://mcp.example.com/sse"; the
// port defaults to 443 (80 for http:// and ws:// URLs). A server given as
// an address opens exactly that address and port, even a private one: the
// operator named it.
func Default(llmProvider string, mcpServers []string, opts Options) (*Policy, error) {
	f, err := DefaultFile(llmProvider, mcpServers)
	if err != nil {
		return nil, err
	}
	return Compile(f, opts)
}

// DefaultFile is the built-in policy before it is compiled, for callers
// that add rules to it (File.WithDenies) before compiling.
func DefaultFile(llmProvider string, mcpServers []string) (*File, error) {
	f := &File{Filename: DefaultName, Version: "v1", Name: DefaultName}
	if llmProvider != "" {
		pr, ok := LookupPreset(llmProvider)
		if !ok || !pr.LLM {
			return nil, fmt.Errorf("llm_provider: unknown LLM provider %q (want one of %s)", llmProvider, strings.Join(llmNames(), ", "))
		}
		f.Presets = []PresetRef{{Name: pr.Name}}
	}
	for i, s := range mcpServers {
		r, err := mcpRule(s)
		if err != nil {
			return nil, fmt.Errorf("mcp_servers[%d]: %w", i, err)
		}
		r.id = fmt.Sprintf("default mcp_servers[%d] %s", i, s)
		f.Egress = append(f.Egress, r)
	}
	return f, nil
}

func llmNames() []string {
	var out []string
	for _, p := range presets {
		if p.LLM {
			out = append(out, p.Name)
		}
	}
	return out
}

// mcpRule turns one mcp_servers entry into an egress rule for its host and
// port.
func mcpRule(s string) (Rule, error) {
	host, port := s, uint16(443)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return Rule{}, fmt.Errorf("bad URL %q", s)
		}
		switch u.Scheme {
		case "https", "wss":
		case "http", "ws":
			port = 80
		default:
			return Rule{}, fmt.Errorf("bad URL %q: scheme %q (want https or http)", s, u.Scheme)
		}
		host = u.Hostname()
		if ps := u.Port(); ps != "" {
			n, err := parsePort(ps)
			if err != nil {
				return Rule{}, fmt.Errorf("bad URL %q: %w", s, err)
			}
			port = n
		}
	} else {
		var ps string
		var err error
		host, ps, err = splitHostPort(s)
		if err != nil {
			return Rule{}, err
		}
		if ps != "" {
			if port, err = parsePort(ps); err != nil {
				return Rule{}, fmt.Errorf("%q: %w", s, err)
			}
		}
	}
	if host == "" {
		return Rule{}, fmt.Errorf("%q names no host", s)
	}
	r := Rule{Protocol: ProtoTCP, Ports: []PortRange{{port, port}}}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return Rule{}, fmt.Errorf("%q: zoned addresses are not supported", s)
		}
		r.CIDRs = []netip.Prefix{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}
		return r, nil
	}
	pat, err := ParsePattern(host)
	if err != nil {
		return Rule{}, err
	}
	if pat.Wildcard {
		return Rule{}, fmt.Errorf("%q: an MCP server is one host, not a wildcard", s)
	}
	r.Domains = []Pattern{pat}
	return r, nil
}

// splitHostPort splits "host", "host:port", "[v6]:port" and a bare IPv6
// address. It is here because policy does not import net.
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", "", fmt.Errorf("%q: missing ']'", s)
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", "", fmt.Errorf("%q: junk after ']'", s)
		}
		return host, rest[1:], nil
	}
	if strings.Count(s, ":") > 1 {
		return s, "", nil // a bare IPv6 address
	}
	if h, p, ok := strings.Cut(s, ":"); ok {
		if p == "" {
			return "", "", fmt.Errorf("%q: empty port", s)
		}
		return h, p, nil
	}
	return s, "", nil
}
