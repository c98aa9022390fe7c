package policy

import (
	"net/netip"
	"strconv"
	"strings"
)

// Rule names of the guards that apply whatever the rules say.
const (
	RuleDefault        = "default"
	RuleMetadata       = "builtin:metadata"
	RuleSpecialAddress = "builtin:special-address"
	RuleBadAddress     = "builtin:bad-address"
	RuleBadName        = "builtin:bad-name"
	RuleBadProto       = "builtin:protocol"
)

// classify is ClassifyPublic with the gateway's treat_as_public.
func (p *Policy) classify(a netip.Addr) AddrInfo { return ClassifyPublic(a, p.public) }

// ClassifyPublic is ClassifyAddr with an operator's treat_as_public
// applied: the addresses of public, bare or wrapped, are public unless
// they are metadata.
func ClassifyPublic(a netip.Addr, public []netip.Prefix) AddrInfo {
	info := ClassifyAddr(a)
	if info.Class == ClassPublic || info.Class == ClassMetadata || len(public) == 0 {
		return info
	}
	for _, c := range public {
		if c.Contains(a) || info.Inner.IsValid() && c.Contains(info.Inner) {
			return AddrInfo{Class: ClassPublic, What: "public (treat_as_public " + c.String() + ")", Inner: info.Inner, Via: info.Via}
		}
	}
	return info
}

// flowAddr is the address a flow's decision is about: IPv4-mapped IPv6 is
// the IPv4 address it carries, and a zone never changes the answer.
func flowAddr(a netip.Addr) netip.Addr {
	return a.WithZone("").Unmap()
}

// DecideFlow decides a new flow: metadata endpoints never; special-purpose
// addresses only by a cidrs rule inside their range; then any matching deny
// rule; then an allow rule by cidr or by one of the flow's bound names;
// else default deny.
func (p *Policy) DecideFlow(f Flow) Decision {
	a := flowAddr(f.Dst.Addr())
	port := f.Dst.Port()
	if !a.IsValid() {
		return Decision{Deny, RuleBadAddress, "flow has no valid destination address"}
	}
	if maskOf(f.Proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp flows are allowed, not " + f.Proto.String()}
	}
	info := p.classify(a)
	if info.Class == ClassMetadata {
		return Decision{Deny, RuleMetadata, info.describe(a) + "; never reachable"}
	}
	// Normalize the bound names once for both passes; most flows have one
	// or two, which fit on the stack.
	var buf [4]string
	names := buf[:0]
	for _, n := range f.Names {
		if name, err := NormalizeName(n); err == nil {
			names = append(names, name)
		}
	}
	if d, ok := p.denyFlow(a, info, f.Proto, port, names); ok {
		return d
	}

	var allow *rule
	var allowNet netip.Prefix
	named := false // a cidrs rule names a's range, on some other port maybe
	p.allowNets.match(a, func(i int32, c netip.Prefix) bool {
		if info.Class.Special() && !within(c, info.Range) {
			return true
		}
		named = true
		if r := &p.rules[i]; r.covers(f.Proto, port) {
			allow, allowNet = r, c
			return false
		}
		return true
	})
	if allow != nil {
		return Decision{Allow, allow.id, a.String() + " in " + allowNet.String() + " on " + allow.scope}
	}
	if info.Class.Special() && !named {
		return Decision{Deny, RuleSpecialAddress, info.describe(a) + "; only a cidrs rule within " + info.Range.String() + " opens it"}
	}
	for _, name := range names {
		if info.Class.Special() {
			break // names never open special-purpose addresses
		}
		var pat Pattern
		p.allowNames.match(name, func(i int32, pt Pattern) bool {
			if r := &p.rules[i]; r.covers(f.Proto, port) {
				allow, pat = r, pt
				return false
			}
			return true
		})
		if allow != nil {
			return Decision{Allow, allow.id, "name " + name + " bound to " + a.String() + " matches " + pat.String() + " on " + allow.scope}
		}
	}
	if p.audit && len(names) > 0 && !info.Class.Special() {
		// Audit relaxes the default deny for an address this agent's own
		// lookup bound to a name, never for a bare address.
		return Decision{WouldDeny, RuleDefault, "no rule allows " + flowString(f.Proto, a, port) + namesSuffix(f.Names) + auditNote}
	}
	return Decision{Deny, RuleDefault, "no rule allows " + flowString(f.Proto, a, port) + namesSuffix(f.Names)}
}

// auditNote ends the reason of a WouldDeny decision.
const auditNote = "; allowed by enforcement: audit"

// orAudit is d, the policy's default deny, turned into WouldDeny under
// enforcement: audit.
func (p *Policy) orAudit(d Decision) Decision {
	if p.audit && d.Verdict == Deny && d.Rule == RuleDefault {
		d.Verdict = WouldDeny
		d.Reason += auditNote
	}
	return d
}

// denyFlow applies the deny rules to a flow: by cidr on the address and on
// the IPv4 address it wraps, and by domain on its bound names.
func (p *Policy) denyFlow(a netip.Addr, info AddrInfo, proto Proto, port uint16, names []string) (Decision, bool) {
	var deny *rule
	var why string
	check := func(addr netip.Addr) {
		p.denyNets.match(addr, func(i int32, c netip.Prefix) bool {
			if r := &p.rules[i]; r.covers(proto, port) {
				deny, why = r, addr.String()+" in denied "+c.String()
				return false
			}
			return true
		})
	}
	check(a)
	if deny == nil && info.Inner.IsValid() && info.Inner != a {
		check(info.Inner)
	}
	for _, name := range names {
		if deny != nil {
			break
		}
		p.denyNames.match(name, func(i int32, pt Pattern) bool {
			if r := &p.rules[i]; r.covers(proto, port) {
				deny, why = r, "name "+name+" matches denied "+pt.String()
				return false
			}
			return true
		})
	}
	if deny == nil {
		return Decision{}, false
	}
	return Decision{Deny, deny.id, why + " (" + deny.scope + ")"}, true
}

// within reports whether prefix c lies inside r.
func within(c, r netip.Prefix) bool {
	return r.IsValid() && c.Bits() >= r.Bits() && r.Contains(c.Addr())
}

// DecideName decides whether name may be reached on proto/port: a domain
// rule allows it and no deny rule covers it there.
func (p *Policy) DecideName(name string, proto Proto, port uint16) Decision {
	n, err := NormalizeName(name)
	if err != nil {
		return Decision{Deny, RuleBadName, err.Error()}
	}
	if maskOf(proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp flows are allowed, not " + proto.String()}
	}
	var hit *rule
	var pat Pattern
	find := func(set *domainSet) {
		hit = nil
		set.match(n, func(i int32, pt Pattern) bool {
			if r := &p.rules[i]; r.covers(proto, port) {
				hit, pat = r, pt
				return false
			}
			return true
		})
	}
	if find(&p.denyNames); hit != nil {
		return Decision{Deny, hit.id, "name " + n + " matches denied " + pat.String() + " (" + hit.scope + ")"}
	}
	if find(&p.allowNames); hit != nil {
		return Decision{Allow, hit.id, "name " + n + " matches " + pat.String() + " on " + hit.scope}
	}
	return p.orAudit(Decision{Deny, RuleDefault, "no rule allows " + proto.String() + " to " + n + ":" + strconv.Itoa(int(port))})
}

// DecideQuery decides whether the gateway may resolve qname upstream: only
// when some connection to the name could be allowed, that is when an allow
// rule names it on a protocol and port that no deny rule takes back.
func (p *Policy) DecideQuery(qname string) Decision {
	n, err := NormalizeName(qname)
	if err != nil {
		return Decision{Deny, RuleBadName, err.Error()}
	}
	// Fast path, the common case: no deny rule names it at all.
	denied := false
	p.denyNames.match(n, func(int32, Pattern) bool {
		denied = true
		return false
	})
	if !denied {
		var first *rule
		p.allowNames.match(n, func(i int32, _ Pattern) bool {
			first = &p.rules[i]
			return false
		})
		if first != nil {
			return Decision{Allow, first.id, "name " + n + " is allowed by a domain rule"}
		}
		return p.orAudit(Decision{Deny, RuleDefault, "no domain rule allows " + n})
	}
	open, allow, deny := p.namePorts(n)
	if allow != nil && open {
		return Decision{Allow, allow.id, "name " + n + " is allowed by a domain rule"}
	}
	if deny != nil {
		if allow != nil {
			return Decision{Deny, deny.id, "name " + n + " is denied on every port an allow rule gives it"}
		}
		return Decision{Deny, deny.id, "name " + n + " matches a deny rule"}
	}
	return p.orAudit(Decision{Deny, RuleDefault, "no domain rule allows " + n})
}

// namePorts says whether any (protocol, port) is left open for n, and
// which allow rule opened it (or the first allow and deny rules seen).
func (p *Policy) namePorts(n string) (open bool, allow, deny *rule) {
	for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
		ports, a, d := p.namePortsFor(n, proto)
		if deny == nil {
			deny = d
		}
		if len(ports) > 0 {
			return true, a, deny
		}
		if allow == nil {
			allow = a
		}
	}
	return false, allow, deny
}

// namePortsFor returns the ports on which n is allowed over proto, the
// first allow rule that leaves some port open (or the first that matched),
// and the first deny rule that matched.
func (p *Policy) namePortsFor(n string, proto Proto) (ports portSet, allow, deny *rule) {
	var denied portSet
	p.denyNames.match(n, func(i int32, _ Pattern) bool {
		r := &p.rules[i]
		if ps := r.portsFor(proto); ps != nil {
			if deny == nil {
				deny = r
			}
			denied = denied.union(ps)
		}
		return true
	})
	p.allowNames.match(n, func(i int32, _ Pattern) bool {
		r := &p.rules[i]
		ps := r.portsFor(proto)
		if ps == nil {
			return true
		}
		left := ps.minus(denied)
		if allow == nil || len(ports) == 0 && len(left) > 0 {
			allow = r
		}
		ports = ports.union(left)
		return true
	})
	return ports, allow, deny
}

// addrPortsFor returns the ports on which a flow to a over proto, with no
// bound names, would be allowed, and the first allow rule that gives one.
func (p *Policy) addrPortsFor(a netip.Addr, info AddrInfo, proto Proto) (ports portSet, allow, deny *rule, named bool) {
	if info.Class == ClassMetadata {
		return nil, nil, nil, false
	}
	var denied portSet
	deniedBy := func(addr netip.Addr) {
		p.denyNets.match(addr, func(i int32, _ netip.Prefix) bool {
			r := &p.rules[i]
			if ps := r.portsFor(proto); ps != nil {
				if deny == nil {
					deny = r
				}
				denied = denied.union(ps)
			}
			return true
		})
	}
	deniedBy(a)
	if info.Inner.IsValid() && info.Inner != a {
		deniedBy(info.Inner)
	}
	p.allowNets.match(a, func(i int32, c netip.Prefix) bool {
		if info.Class.Special() && !within(c, info.Range) {
			return true
		}
		named = true
		r := &p.rules[i]
		ps := r.portsFor(proto)
		if ps == nil {
			return true
		}
		left := ps.minus(denied)
		if allow == nil || len(ports) == 0 && len(left) > 0 {
			allow = r
		}
		ports = ports.union(left)
		return true
	})
	return ports, allow, deny, named
}

func flowString(proto Proto, a netip.Addr, port uint16) string {
	return proto.String() + " to " + netip.AddrPortFrom(a, port).String()
}

func namesSuffix(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (bound names: " + strings.Join(names, ", ") + ")"
}
