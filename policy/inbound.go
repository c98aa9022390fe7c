package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// RuleBadPeer names the decision on an inbound connection whose peer is
// not a valid agent, host or remote address.
const RuleBadPeer = "builtin:bad-peer"

// ParsePeer parses a peer as `clawnet policy explain --from` takes it:
// "agent:NAME", "host", or a remote client's address, written bare or as
// "remote:ADDR".
func ParsePeer(s string) (Peer, error) {
	if name, ok := strings.CutPrefix(s, "agent:"); ok {
		if !ValidAgentName(name) {
			return Peer{}, fmt.Errorf("bad agent name %q", name)
		}
		return Peer{Kind: PeerAgent, Agent: name}, nil
	}
	if s == "host" {
		return Peer{Kind: PeerHost}, nil
	}
	a, err := netip.ParseAddr(strings.TrimPrefix(s, "remote:"))
	if err != nil || a.Zone() != "" {
		return Peer{}, fmt.Errorf("bad peer %q (want agent:NAME, host or an IP address)", s)
	}
	return Peer{Kind: PeerRemote, Addr: a.Unmap()}, nil
}

// describe is the peer in a reason: "agent openclaw-cli", "the host",
// "remote 203.0.113.5".
func (p Peer) describe() string {
	switch p.Kind {
	case PeerAgent:
		return "agent " + p.Agent
	case PeerHost:
		return "the host"
	}
	return "remote " + flowAddr(p.Addr).String()
}

// checkPeer says why a peer cannot be decided on, if it cannot.
func checkPeer(p Peer) (Decision, bool) {
	switch p.Kind {
	case PeerAgent:
		if !ValidAgentName(p.Agent) {
			return Decision{Deny, RuleBadPeer, fmt.Sprintf("peer agent has a bad name %q", p.Agent)}, false
		}
	case PeerHost:
	case PeerRemote:
		if !p.Addr.IsValid() {
			return Decision{Deny, RuleBadPeer, "remote peer has no valid address"}, false
		}
	default:
		return Decision{Deny, RuleBadPeer, "inbound connection has no peer (" + p.Kind.String() + ")"}, false
	}
	return Decision{}, true
}

// match calls fn for each rule of t naming peer, until fn returns false.
// For a remote peer, c is the prefix that holds its address, most
// specific first; deny rules also see the IPv4 address inside IPv6 forms
// such as NAT64 and 6to4, as for egress.
func (t *peerTable) match(peer Peer, deny bool, fn func(rule int32, c netip.Prefix) bool) {
	switch peer.Kind {
	case PeerAgent:
		for _, i := range t.agents[peer.Agent] {
			if !fn(i, netip.Prefix{}) {
				return
			}
		}
	case PeerHost:
		for _, i := range t.host {
			if !fn(i, netip.Prefix{}) {
				return
			}
		}
	case PeerRemote:
		a := flowAddr(peer.Addr)
		if !t.nets.match(a, fn) || !deny {
			return
		}
		if in := ClassifyAddr(a).Inner; in.IsValid() && in != a {
			t.nets.match(in, fn)
		}
	}
}

// DecideInbound decides a new connection to the agent: any ingress_deny
// rule naming the peer on the protocol and port denies it; then an
// ingress rule naming it allows it; else default deny.
func (p *Policy) DecideInbound(in Inbound) InboundDecision {
	if maskOf(in.Proto) == 0 {
		return InboundDecision{Decision: Decision{Deny, RuleBadProto, "only tcp and udp connections are allowed, not " + in.Proto.String()}}
	}
	if d, ok := checkPeer(in.Peer); !ok {
		return InboundDecision{Decision: d}
	}
	target := in.Proto.String() + " port " + strconv.Itoa(int(in.Port))
	var hit *rule
	var via netip.Prefix
	find := func(t *peerTable, deny bool) {
		t.match(in.Peer, deny, func(i int32, c netip.Prefix) bool {
			if r := &p.rules[i]; r.covers(in.Proto, in.Port) {
				hit, via = r, c
				return false
			}
			return true
		})
	}
	who := in.Peer.describe()
	if find(&p.inDeny, true); hit != nil {
		if via.IsValid() {
			who += " in " + via.String()
		}
		return InboundDecision{Decision: Decision{Deny, hit.id, who + " is denied by an ingress_deny rule (" + hit.scope + ")"}}
	}
	if find(&p.inAllow, false); hit != nil {
		if via.IsValid() {
			who += " in " + via.String()
		}
		reason := who + " may connect to " + target
		if hit.proxy {
			reason += ", with a PROXY v2 header"
		}
		return InboundDecision{Decision: Decision{Allow, hit.id, reason}, ProxyProtocol: hit.proxy}
	}
	return InboundDecision{Decision: Decision{Deny, RuleDefault, "no ingress rule allows " + who + " on " + target}}
}

// DecideAgent decides whether this policy's agent may connect to the
// attached agent named agent on proto/port: a deny rule naming it beats
// every egress rule naming it. The other agent's ingress must allow it too.
func (p *Policy) DecideAgent(agent string, proto Proto, port uint16) Decision {
	if !ValidAgentName(agent) {
		return Decision{Deny, RuleBadName, fmt.Sprintf("bad agent name %q", agent)}
	}
	if maskOf(proto) == 0 {
		return Decision{Deny, RuleBadProto, "only tcp and udp flows are allowed, not " + proto.String()}
	}
	find := func(m map[string][]int32) *rule {
		for _, i := range m[agent] {
			if r := &p.rules[i]; r.covers(proto, port) {
				return r
			}
		}
		return nil
	}
	if r := find(p.denyAgents); r != nil {
		return Decision{Deny, r.id, "agent " + agent + " is denied (" + r.scope + ")"}
	}
	if r := find(p.allowAgents); r != nil {
		return Decision{Allow, r.id, "agent " + agent + " is allowed on " + r.scope}
	}
	return Decision{Deny, RuleDefault, "no egress rule allows " + proto.String() + " to agent " + agent + " on port " + strconv.Itoa(int(port))}
}

// HasIngress reports whether some ingress rule lets some peer connect on
// proto/port. ingress_deny rules are not consulted: they name peers, and
// another peer may still be allowed.
func (p *Policy) HasIngress(proto Proto, port uint16) bool {
	for _, i := range p.inAllow.all {
		if p.rules[i].covers(proto, port) {
			return true
		}
	}
	return false
}

// peerPorts returns the ports on which peer may connect over proto, the
// first ingress rule that leaves one open (or the first that named the
// peer), the first ingress_deny rule that named it, and the ports denied.
func (p *Policy) peerPorts(peer Peer, proto Proto) (ports portSet, allow, deny *rule, denied portSet) {
	p.inDeny.match(peer, true, func(i int32, _ netip.Prefix) bool {
		r := &p.rules[i]
		if ps := r.portsFor(proto); ps != nil {
			if deny == nil {
				deny = r
			}
			denied = denied.union(ps)
		}
		return true
	})
	p.inAllow.match(peer, false, func(i int32, _ netip.Prefix) bool {
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
	return ports, allow, deny, denied
}

// agentPorts returns the ports on which agent may be reached over proto,
// the first egress rule that leaves one open (or the first that named the
// agent), the first deny rule that named it, and the ports denied.
func (p *Policy) agentPorts(agent string, proto Proto) (ports portSet, allow, deny *rule, denied portSet) {
	for _, i := range p.denyAgents[agent] {
		r := &p.rules[i]
		if ps := r.portsFor(proto); ps != nil {
			if deny == nil {
				deny = r
			}
			denied = denied.union(ps)
		}
	}
	for _, i := range p.allowAgents[agent] {
		r := &p.rules[i]
		ps := r.portsFor(proto)
		if ps == nil {
			continue
		}
		left := ps.minus(denied)
		if allow == nil || len(ports) == 0 && len(left) > 0 {
			allow = r
		}
		ports = ports.union(left)
	}
	return ports, allow, deny, denied
}

// everyPort reports whether s holds every port a flow can use.
func everyPort(s portSet) bool { return len(portSet{{1, 65535}}.minus(s)) == 0 }

// proxyClash is two ingress rules that disagree on proxy_protocol for
// the same port: i is the later one.
type proxyClash struct {
	i, j  int
	proto Proto
	port  uint16
}

func (c proxyClash) msg(rules []IngressRule) string {
	return fmt.Sprintf("ingress[%d] and ingress[%d] (line %d) disagree on proxy_protocol for %s port %d: set it on both or on neither (a server that reads PROXY headers must get one on every connection, or a peer could write its own)",
		c.i, c.j, rules[c.j].Line, c.proto, c.port)
}

// proxyConflict finds the first ingress rule whose ports overlap those of
// an earlier rule that disagrees with it on proxy_protocol. Whether a
// connection starts with a PROXY header must depend on the port alone:
// a server that reads one would otherwise take a header that a peer
// without one wrote itself.
func proxyConflict(rules []IngressRule) (proxyClash, bool) {
	protos := [2]Proto{ProtoTCP, ProtoUDP}
	var with, without [2]portSet // by protocol
	for i, r := range rules {
		for k, proto := range protos {
			ps := ingressPorts(r, proto)
			if len(ps) == 0 {
				continue
			}
			mine, other := &without[k], with[k]
			if r.ProxyProtocol {
				mine, other = &with[k], without[k]
			}
			if len(ps.intersect(other)) > 0 {
				for j, o := range rules[:i] {
					if o.ProxyProtocol == r.ProxyProtocol {
						continue
					}
					if x := ps.intersect(ingressPorts(o, proto)); len(x) > 0 {
						return proxyClash{i: i, j: j, proto: proto, port: x[0].Lo}, true
					}
				}
			}
			*mine = mine.union(ps)
		}
	}
	return proxyClash{}, false
}

// ingressPorts is the ports an ingress (allow) rule covers on proto.
func ingressPorts(r IngressRule, proto Proto) portSet {
	if r.Protocol == proto || r.Protocol == 0 && proto == ProtoTCP {
		return normalizePorts(r.Ports)
	}
	return nil
}
