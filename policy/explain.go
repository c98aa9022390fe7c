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
// Setup and pending rules are said as such: a destination the run phase
// does not allow gets what the setup phase, and what approving the pending
// rules, would decide (a pending rule with phase: setup, approved, allows
// in the setup phase only).
func Explain(p *Policy, proto Proto, host string, port uint16) Decision {
	d := p.withFrom(explain(p, proto, host, port))
	if d.Verdict == Allow {
		return d
	}
	if p.setup != nil {
		if sd := explain(p.setup, proto, host, port); sd.Verdict == Allow && sd.Rule != d.Rule {
			d.Reason += "; in the setup phase only (until clawnet policy phase AGENT run or the setup timeout): allow by " + sd.Rule + fromNote(p.setup.RuleFrom(sd.Rule))
		}
	}
	if p.pending != nil {
		if pd := explain(p.pending, proto, host, port); pd.Verdict == Allow {
			d.Reason += "; pending, not applied until clawnet policy approve: " + pd.Rule + fromNote(p.pending.RuleFrom(pd.Rule))
			if p.pendingSetup[pd.Rule] {
				d.Reason += "; phase: setup: once approved, a setup rule, in the setup phase only"
			}
		}
	}
	return d
}

func fromNote(from string) string {
	if from == "" {
		return ""
	}
	return " (from: " + from + ")"
}

// withFrom adds the deciding rule's from: note to d's reason.
func (p *Policy) withFrom(d Decision) Decision {
	d.Reason += fromNote(p.RuleFrom(d.Rule))
	return d
}

func explain(p *Policy, proto Proto, host string, port uint16) Decision {
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
			conn = p.orAudit(Decision{Deny, RuleDefault, "no rule allows " + proto.String() + " to " + n})
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
	if conn.Allowed() {
		reason += "; its addresses must also be public, or opened by a cidrs rule naming their range"
	}
	return Decision{conn.Verdict, conn.Rule, reason}
}

func explainAddr(p *Policy, proto Proto, a netip.Addr, port uint16) Decision {
	if port != 0 {
		d := p.DecideFlow(Flow{Proto: proto, Dst: netip.AddrPortFrom(a, port)})
		if p.audit && d.Rule == RuleDefault && !p.classify(a).Class.Special() {
			d.Reason += "; under enforcement: audit, a name this agent's own DNS bound to it would open it, logged would_deny"
		}
		return d
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
	why := "no cidrs rule allows " + proto.String() + " to " + a.String() + "; a name bound by the agent's own DNS lookup may still open it"
	if p.audit && !info.Class.Special() {
		why += " (under enforcement: audit, any name not denied, logged would_deny)"
	}
	return Decision{Deny, RuleDefault, why}
}

// ExplainInbound answers "may this peer connect to the agent?" for
// `clawnet policy explain --from`. in.Port 0 means any port. When no rule
// lets the peer in, the reason says which rule would; agent to agent, it
// says the peer's own policy must allow the connection too.
func ExplainInbound(p *Policy, in Inbound) Decision {
	if maskOf(in.Proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp connections are allowed, not " + in.Proto.String()}
	}
	if d, ok := checkPeer(in.Peer); !ok {
		return d
	}
	who := in.Peer.describe()
	var d Decision
	if in.Port != 0 {
		d = p.DecideInbound(in).Decision
	} else {
		ports, allow, deny, denied := p.peerPorts(in.Peer, in.Proto)
		switch {
		case len(ports) > 0:
			d = Decision{Allow, allow.id, who + " may connect to " + in.Proto.String() + " " + ports.String()}
		case deny != nil && allow != nil:
			d = Decision{Deny, deny.id, who + " is denied on every " + in.Proto.String() + " port an ingress rule gives it"}
		case deny != nil && everyPort(denied):
			d = Decision{Deny, deny.id, who + " is denied on every " + in.Proto.String() + " port by an ingress_deny rule"}
		default:
			d = Decision{Deny, RuleDefault, "no ingress rule allows " + who + " on any " + in.Proto.String() + " port"}
		}
	}
	switch {
	case d.Rule == RuleDefault:
		peer := "host: true"
		switch in.Peer.Kind {
		case PeerAgent:
			peer = "agents: [" + in.Peer.Agent + "]"
		case PeerRemote:
			peer = "cidrs: [" + flowAddr(in.Peer.Addr).String() + "]"
		}
		d.Reason += "; to let it in, add to ingress: {" + rulePorts(in.Proto, in.Port) + ", " + peer + "}"
	case d.Allowed() && in.Peer.Kind == PeerAgent:
		d.Reason += "; agent " + in.Peer.Agent + "'s own policy must also name this agent in its egress agents"
	}
	return p.withFrom(d)
}

// ExplainAgent answers "may the agent connect to the attached agent
// named agent?" by this policy's egress and deny rules; port 0 means any
// port. The other agent's ingress must allow the connection too.
func ExplainAgent(p *Policy, agent string, proto Proto, port uint16) Decision {
	if !ValidAgentName(agent) {
		return Decision{Deny, RuleBadName, "bad agent name " + strconv.Quote(agent)}
	}
	if maskOf(proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp flows are allowed, not " + proto.String()}
	}
	var d Decision
	if port != 0 {
		d = p.DecideAgent(agent, proto, port)
	} else {
		ports, allow, deny, denied := p.agentPorts(agent, proto)
		switch {
		case len(ports) > 0:
			d = Decision{Allow, allow.id, "agent " + agent + " is allowed on " + proto.String() + " " + ports.String()}
		case deny != nil && allow != nil:
			d = Decision{Deny, deny.id, "agent " + agent + " is denied on every " + proto.String() + " port an egress rule gives it"}
		case deny != nil && everyPort(denied):
			d = Decision{Deny, deny.id, "agent " + agent + " is denied on every " + proto.String() + " port by a deny rule"}
		default:
			d = Decision{Deny, RuleDefault, "no egress rule allows " + proto.String() + " to agent " + agent}
		}
	}
	switch {
	case d.Rule == RuleDefault:
		d.Reason += "; to allow it, add to egress: {agents: [" + agent + "], " + rulePorts(proto, port) + "}"
	case d.Allowed():
		d.Reason += "; agent " + agent + "'s own policy must also let this agent in, by name in its ingress agents"
	}
	return p.withFrom(d)
}

// rulePorts writes the ports and protocol of a rule that would cover
// proto/port, in YAML flow style.
func rulePorts(proto Proto, port uint16) string {
	s := "ports: [PORT]"
	if port != 0 {
		s = "ports: [" + strconv.Itoa(int(port)) + "]"
	}
	if proto != ProtoTCP {
		s += ", protocol: " + proto.String()
	}
	return s
}
