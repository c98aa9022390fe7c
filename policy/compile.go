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

// Options are the gateway's settings that shape how a policy is compiled.
type Options struct {
	// TreatAsPublic lists prefixes the operator declares ordinary public
	// addresses (labs, tests). They are still bound by rules, names and
	// deny rules; metadata endpoints inside them stay closed.
	TreatAsPublic []netip.Prefix
}

// Policy is a compiled policy. It is immutable and safe for concurrent use.
type Policy struct {
	name   string
	rules  []rule
	public []netip.Prefix

	allowNames, denyNames domainSet
	allowNets, denyNets   prefixTable
}

var _ Decider = (*Policy)(nil)

type protoMask uint8

const (
	maskTCP protoMask = 1 << iota
	maskUDP
)

func maskOf(p Proto) protoMask {
	switch p {
	case ProtoTCP:
		return maskTCP
	case ProtoUDP:
		return maskUDP
	}
	return 0
}

type rule struct {
	id     string
	deny   bool
	protos protoMask
	ports  portSet // nil: every port
	// scope says what the rule covers, for reasons: "tcp port 443".
	scope string
}

func (r *rule) covers(p Proto, port uint16) bool {
	return r.protos&maskOf(p) != 0 && (r.ports == nil || r.ports.contains(port))
}

// portsFor is the set of ports r covers on proto (nil: none).
func (r *rule) portsFor(p Proto) portSet {
	if r.protos&maskOf(p) == 0 {
		return nil
	}
	if r.ports == nil {
		return allPorts
	}
	return r.ports
}

// Name is the policy's name.
func (p *Policy) Name() string { return p.name }

// NumRules is the number of rules after presets are expanded.
func (p *Policy) NumRules() int { return len(p.rules) }

// Compile builds the decision structures for f. f must come from Parse or
// be built with the same care; Compile checks what matching depends on.
func Compile(f *File, opts Options) (*Policy, error) {
	p := &Policy{name: f.Name}
	for _, c := range opts.TreatAsPublic {
		if !c.IsValid() || c.Addr().Zone() != "" || c.Addr().Is4In6() {
			return nil, fmt.Errorf("treat_as_public: bad prefix %s", c)
		}
		if tooBroad(c) {
			return nil, fmt.Errorf("treat_as_public: prefix %s is too broad", c)
		}
		p.public = append(p.public, c.Masked())
	}
	for _, ref := range f.Presets {
		pr, ok := LookupPreset(ref.Name)
		if !ok {
			return nil, fmt.Errorf("%s:%d: unknown preset %q", f.Filename, ref.Line, ref.Name)
		}
		r := Rule{Line: ref.Line, Protocol: ProtoTCP}
		for _, d := range pr.Domains {
			pat, err := ParsePattern(d)
			if err != nil {
				return nil, fmt.Errorf("preset %s: %w", pr.Name, err)
			}
			r.Domains = append(r.Domains, pat)
		}
		for _, port := range pr.Ports {
			r.Ports = append(r.Ports, PortRange{port, port})
		}
		if err := p.add(r, ruleID(f.Filename, ref.Line, "preset "+pr.Name), false); err != nil {
			return nil, err
		}
	}
	for i, r := range f.Egress {
		id := r.id
		if id == "" {
			id = ruleID(f.Filename, r.Line, fmt.Sprintf("egress[%d]", i))
		}
		for _, c := range r.CIDRs {
			if !f.UnsafeAllowAnyAddress && tooBroad(c) {
				return nil, fmt.Errorf("%s: cidr %s opens nearly every address and unsafe_allow_any_address is not set", id, c)
			}
		}
		if err := p.add(r, id, false); err != nil {
			return nil, err
		}
	}
	for i, r := range f.Deny {
		id := r.id
		if id == "" {
			id = ruleID(f.Filename, r.Line, fmt.Sprintf("deny[%d]", i))
		}
		if err := p.add(r, id, true); err != nil {
			return nil, err
		}
	}
	p.allowNets.build()
	p.denyNets.build()
	return p, nil
}

func (p *Policy) add(r Rule, id string, deny bool) error {
	cr := rule{id: id, deny: deny, ports: normalizePorts(r.Ports)}
	switch r.Protocol {
	case ProtoTCP:
		cr.protos = maskTCP
	case ProtoUDP:
		cr.protos = maskUDP
	case 0:
		cr.protos = maskTCP
		if deny {
			cr.protos |= maskUDP
		}
	default:
		return fmt.Errorf("%s: unsupported protocol %s", id, r.Protocol)
	}
	if !deny && len(cr.ports) == 0 {
		return fmt.Errorf("%s: egress rule without ports", id)
	}
	switch cr.protos {
	case maskTCP:
		cr.scope = "tcp "
	case maskUDP:
		cr.scope = "udp "
	default:
		cr.scope = "tcp and udp "
	}
	if cr.ports == nil {
		cr.scope += "any port"
	} else {
		cr.scope += cr.ports.String()
	}
	idx := int32(len(p.rules))
	p.rules = append(p.rules, cr)
	names, nets := &p.allowNames, &p.allowNets
	if deny {
		names, nets = &p.denyNames, &p.denyNets
	}
	for _, d := range r.Domains {
		// Matching relies on normalized patterns; a File built by hand
		// might hold others.
		if q, err := ParsePattern(d.String()); err != nil || q != d {
			return fmt.Errorf("%s: domain %q is not a normalized pattern", id, d)
		}
		names.add(d, idx)
	}
	for _, c := range r.CIDRs {
		if !c.IsValid() || c.Addr().Zone() != "" || c.Addr().Is4In6() {
			return fmt.Errorf("%s: bad cidr %s", id, c)
		}
		nets.add(c, idx)
	}
	return nil
}

// Default builds the built-in policy named "default": the LLM provider's
// preset and the approved MCP servers, nothing else. An MCP server is
// "host", "host:port" or a URL such as "https://mcp.example.com/sse"; the
// port defaults to 443 (80 for http:// and ws:// URLs). A server given as
// an address opens exactly that address and port, even a private one: the
// operator named it.
func Default(llmProvider string, mcpServers []string, opts Options) (*Policy, error) {
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
	return Compile(f, opts)
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
