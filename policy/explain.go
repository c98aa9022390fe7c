package policy

import (
	"net/netip"
	"strconv"
	"strings"
)

// Explain answers "what would happen if the agent tried this?" for
// `clawnet policy explain`. host is an IP address or a name; port 0 means
// any port. For a name it says what the DNS query and then a connection to
// the name would get; the verdict is Allow only if both would be allowed.
func Explain(p *Policy, proto Proto, host string, port uint16) Decision {
	if maskOf(proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp flows are allowed, not " + proto.String()}
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return explainAddr(p, proto, flowAddr(a), port)
	}
	n, err := NormalizeName(host)
	if err != nil {
		return Decision{Deny, RuleBadName, err.Error()}
	}
	q := p.DecideQuery(n)
	dns := "dns query for " + n + ": " + q.Verdict.String() + " by " + q.Rule
	var conn Decision
	if port != 0 {
		conn = p.DecideName(n, proto, port)
	} else {
		ports, allow, deny := p.namePortsFor(n, proto)
		switch {
		case len(ports) > 0:
			conn = Decision{Allow, allow.id, "name " + n + " is allowed on " + proto.String() + " " + ports.String()}
		case deny != nil && allow != nil:
			conn = Decision{Deny, deny.id, "name " + n + " is denied on every " + proto.String() + " port an allow rule gives it"}
		case deny != nil:
			conn = Decision{Deny, deny.id, "name " + n + " matches a deny rule"}
		default:
			conn = Decision{Deny, RuleDefault, "no rule allows " + proto.String() + " to " + n}
		}
	}
	target := proto.String() + " " + n
	if port != 0 {
		target += ":" + strconv.Itoa(int(port))
	}
	reason := dns + "; " + target + ": " + conn.Verdict.String() + " by " + conn.Rule + ": " + conn.Reason
	if q.Verdict == Deny {
		return Decision{Deny, q.Rule, reason}
	}
	if conn.Verdict == Allow {
		reason += "; its addresses must also be public, or opened by a cidrs rule naming their range"
	}
	return Decision{conn.Verdict, conn.Rule, reason}
}

func explainAddr(p *Policy, proto Proto, a netip.Addr, port uint16) Decision {
	if port != 0 {
		return p.DecideFlow(Flow{Proto: proto, Dst: netip.AddrPortFrom(a, port)})
	}
	info := p.classify(a)
	if info.Class == ClassMetadata {
		return Decision{Deny, RuleMetadata, info.describe(a) + "; never reachable"}
	}
	ports, allow, deny, named := p.addrPortsFor(a, info, proto)
	switch {
	case len(ports) > 0:
		return Decision{Allow, allow.id, proto.String() + " to " + a.String() + " is allowed on " + ports.String() + " (without a bound name)"}
	case deny != nil && allow != nil:
		return Decision{Deny, deny.id, a.String() + " is denied on every " + proto.String() + " port an allow rule gives it"}
	case deny != nil:
		return Decision{Deny, deny.id, a.String() + " matches a deny rule"}
	case info.Class.Special() && !named:
		return Decision{Deny, RuleSpecialAddress, info.describe(a) + "; only a cidrs rule within " + info.Range.String() + " opens it"}
	}
	return Decision{Deny, RuleDefault, "no cidrs rule allows " + proto.String() + " to " + a.String() + "; a name bound by the agent's own DNS lookup may still open it"}
}
