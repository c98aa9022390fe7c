package policy

import (
	"fmt"
	"net/netip"
)

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
