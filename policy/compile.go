package policy

import (
	"fmt"
	"net/netip"
	"slices"
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
	// audit: enforcement: audit (see WouldDeny).
	audit bool
	// setup is the policy of the setup phase (egress and setup rules), nil
	// when the file has no setup rules; phase names this policy's phase.
	setup *Policy
	phase string
	// pending holds the pending rules compiled as egress rules, for
	// explanations only: no decision of the gateway reads it.
	pending *Policy
	// pendingSetup names the pending rules with phase: setup, which
	// approval puts in setup rather than egress.
	pendingSetup map[string]bool
	nsetup       int
	npend        int

	allowNames, denyNames   domainSet
	allowNets, denyNets     prefixTable
	allowAgents, denyAgents map[string][]int32 // egress to attached agents

	inAllow, inDeny peerTable // ingress, ingress_deny
}

// peerTable finds the ingress rules that name a peer.
type peerTable struct {
	agents map[string][]int32
	host   []int32
	nets   prefixTable
	all    []int32 // every rule in the table, in file order
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
	// proxy: an ingress rule that asks for a PROXY v2 header.
	proxy bool
	// from is the rule's from: note, for explanations.
	from string
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

// Phases of an agent under a policy with setup rules.
const (
	PhaseSetup = "setup"
	PhaseRun   = "run"
)

// Phased is a Decider whose policy may have setup rules. The gateway asks
// it for the Decider of an agent's setup phase; the Decider itself is the
// run phase's.
type Phased interface {
	// SetupPhase is the Decider of the setup phase (the egress rules and
	// the setup rules), or nil when the policy has no setup rules. It is
	// made once, at compile time, so one agent's flows see one snapshot.
	SetupPhase() Decider
}

var _ Phased = (*Policy)(nil)

// SetupPhase implements Phased.
func (p *Policy) SetupPhase() Decider {
	if p.setup == nil {
		return nil
	}
	return p.setup
}

// Phase is PhaseSetup for the setup phase's policy, else PhaseRun.
func (p *Policy) Phase() string {
	if p.phase == "" {
		return PhaseRun
	}
	return p.phase
}

// NumSetup and NumPending count the file's setup and pending rules.
func (p *Policy) NumSetup() int   { return p.nsetup }
func (p *Policy) NumPending() int { return p.npend }

// ForPhase is the Decider of an agent in phase under d: d's setup phase
// when phase is PhaseSetup and d has one, else d.
func ForPhase(d Decider, phase string) Decider {
	if phase != PhaseSetup || d == nil {
		return d
	}
	if ph, ok := d.(Phased); ok {
		if s := ph.SetupPhase(); s != nil {
			return s
		}
	}
	return d
}

// Audit reports whether the policy says enforcement: audit.
func (p *Policy) Audit() bool { return p.audit }

// RuleFrom is the from: note of the rule named id, or "" when it has none
// (or id names no rule of p, such as "default").
func (p *Policy) RuleFrom(id string) string {
	for i := range p.rules {
		if p.rules[i].id == id {
			return p.rules[i].from
		}
	}
	return ""
}

// NumRules is the number of rules after presets are expanded.
func (p *Policy) NumRules() int { return len(p.rules) }

// Compile builds the decision structures for f. f must come from Parse or
// be built with the same care; Compile checks what matching depends on.
// The policy returned is the run phase's; with setup rules, its
// SetupPhase is compiled alongside, with the setup rules after the egress
// rules, named "setup[i]".
func Compile(f *File, opts Options) (*Policy, error) {
	p, err := compile(f, opts)
	if err != nil {
		return nil, err
	}
	p.nsetup, p.npend = len(f.Setup), len(f.Pending)
	if len(f.Setup) > 0 {
		if p.setup, err = compile(withRules(f, f.Setup, "setup"), opts); err != nil {
			return nil, err
		}
		p.setup.phase = PhaseSetup
		p.setup.nsetup, p.setup.npend = p.nsetup, p.npend
	}
	if len(f.Pending) > 0 {
		// Pending rules on their own: an explanation says what approving
		// them would open, and never that the policy opens it.
		pf := withRules(f, f.Pending, "pending")
		pf.Egress, pf.Presets, pf.Enforcement = pf.Egress[len(f.Egress):], nil, EnforceMode
		if p.pending, err = compile(pf, opts); err != nil {
			return nil, err
		}
		for i, r := range f.Pending {
			if r.Phase == PhaseSetup {
				if p.pendingSetup == nil {
					p.pendingSetup = map[string]bool{}
				}
				p.pendingSetup[pf.Egress[i].id] = true
			}
		}
	}
	return p, nil
}

// withRules is f with extra appended to its egress rules, named
// "list[i]" by their place in list; f's own setup and pending rules are
// left out.
func withRules(f *File, extra []Rule, list string) *File {
	g := *f
	g.Setup, g.Pending = nil, nil
	g.Egress = slices.Clone(f.Egress)
	for i, r := range extra {
		r.id = ruleID(f.Filename, r.Line, fmt.Sprintf("%s[%d]", list, i))
		g.Egress = append(g.Egress, r)
	}
	return &g
}

func compile(f *File, opts Options) (*Policy, error) {
	p := &Policy{name: f.Name}
	switch f.Enforcement {
	case "", EnforceMode:
	case AuditMode:
		p.audit = true
	default:
		return nil, fmt.Errorf("%s: enforcement: want enforce or audit, got %q", f.Filename, f.Enforcement)
	}
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
	for i, r := range f.Ingress {
		if err := p.addIngress(r, ruleID(f.Filename, r.Line, fmt.Sprintf("ingress[%d]", i)), false); err != nil {
			return nil, err
		}
	}
	for i, r := range f.IngressDeny {
		id := r.id
		if id == "" {
			id = ruleID(f.Filename, r.Line, fmt.Sprintf("ingress_deny[%d]", i))
		}
		if err := p.addIngress(r, id, true); err != nil {
			return nil, err
		}
	}
	if c, ok := proxyConflict(f.Ingress); ok {
		return nil, fmt.Errorf("%s: %s", ruleID(f.Filename, f.Ingress[c.i].Line, fmt.Sprintf("ingress[%d]", c.i)), c.msg(f.Ingress))
	}
	p.allowNets.build()
	p.denyNets.build()
	p.inAllow.nets.build()
	p.inDeny.nets.build()
	return p, nil
}

// newRule checks and compiles what every rule has: protocol and ports.
// Allow rules need ports; a deny rule without them covers every port.
func newRule(id string, deny bool, proto Proto, ports []PortRange) (rule, error) {
	cr := rule{id: id, deny: deny, ports: normalizePorts(ports)}
	switch proto {
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
		return cr, fmt.Errorf("%s: unsupported protocol %s", id, proto)
	}
	if !deny && len(cr.ports) == 0 {
		return cr, fmt.Errorf("%s: allow rule without ports", id)
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
	return cr, nil
}

func (p *Policy) add(r Rule, id string, deny bool) error {
	cr, err := newRule(id, deny, r.Protocol, r.Ports)
	if err != nil {
		return err
	}
	cr.from = r.From
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
	agents := &p.allowAgents
	if deny {
		agents = &p.denyAgents
	}
	for _, a := range r.Agents {
		if !ValidAgentName(a) {
			return fmt.Errorf("%s: bad agent name %q", id, a)
		}
		addAgent(agents, a, idx)
	}
	return nil
}

func addAgent(m *map[string][]int32, name string, idx int32) {
	if *m == nil {
		*m = make(map[string][]int32)
	}
	if l := (*m)[name]; len(l) == 0 || l[len(l)-1] != idx {
		(*m)[name] = append(l, idx)
	}
}

// addIngress compiles an ingress (deny false) or ingress_deny rule. It
// re-checks what Parse checks, for Files built by hand.
func (p *Policy) addIngress(r IngressRule, id string, deny bool) error {
	cr, err := newRule(id, deny, r.Protocol, r.Ports)
	if err != nil {
		return err
	}
	if len(r.Agents) == 0 && !r.Host && len(r.CIDRs) == 0 {
		return fmt.Errorf("%s: ingress rule names no peer", id)
	}
	if deny && (r.AllowAny || r.ProxyProtocol) {
		return fmt.Errorf("%s: allow_any and proxy_protocol belong on ingress rules", id)
	}
	cr.proxy = r.ProxyProtocol
	cr.from = r.From
	idx := int32(len(p.rules))
	p.rules = append(p.rules, cr)
	t := &p.inAllow
	if deny {
		t = &p.inDeny
	}
	t.all = append(t.all, idx)
	for _, a := range r.Agents {
		if !ValidAgentName(a) {
			return fmt.Errorf("%s: bad agent name %q", id, a)
		}
		addAgent(&t.agents, a, idx)
	}
	if r.Host {
		t.host = append(t.host, idx)
	}
	for _, c := range r.CIDRs {
		if !c.IsValid() || c.Addr().Zone() != "" || c.Addr().Is4In6() {
			return fmt.Errorf("%s: bad cidr %s", id, c)
		}
		if !deny && !r.AllowAny && tooBroad(c) {
			return fmt.Errorf("%s: cidr %s lets nearly every address connect and allow_any is not set", id, c)
		}
		t.nets.add(c, idx)
	}
	return nil
}
