// Package policy decides, for one agent, whether a flow or a DNS name is
// allowed, and says why. It is pure: no I/O, no clock, no gVisor. The gateway
// hands it bytes to parse and facts about a flow; it hands back a Decision.
package policy

import (
	"fmt"
	"net/netip"
)

// Proto is a transport protocol, numbered as in the IP header.
type Proto uint8

const (
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto parses "tcp" or "udp".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp or udp)", s)
}

// Verdict is the outcome of a decision. The zero value denies.
type Verdict uint8

const (
	Deny Verdict = iota
	Allow
	// WouldDeny is the verdict of a policy under enforcement: audit on what
	// only its default deny refuses: a name no rule allows, and a flow to a
	// public address that this agent's own DNS lookup bound to such a name.
	// It is allowed (Allowed reports true) and logged as "would_deny", with
	// the rule that would have denied it. Deny rules, the guards (metadata,
	// special-purpose addresses, bad names and protocols), flows to an
	// address no lookup bound, and inbound and agent-to-agent connections
	// are decided as under enforcement.
	WouldDeny
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case WouldDeny:
		return "would_deny"
	}
	return "deny"
}

// Decision is a verdict with the rule that produced it and a reason a person
// can read. Every decision can be explained by printing it.
type Decision struct {
	Verdict Verdict
	// Rule names what decided: a rule's place in its file (for example
	// "coder.yaml:12 egress[1]"), "default" for default deny, or "builtin:..."
	// for a guard the gateway or the address classifier applies.
	Rule string
	// Reason is one line for humans.
	Reason string
}

// Allowed reports whether the flow may go ahead: Allow, or WouldDeny
// under enforcement: audit.
func (d Decision) Allowed() bool { return d.Verdict == Allow || d.Verdict == WouldDeny }

func (d Decision) String() string {
	return fmt.Sprintf("%s by %s: %s", d.Verdict, d.Rule, d.Reason)
}

// Flow is what the gateway knows about a new flow when it asks for a decision.
type Flow struct {
	Proto Proto
	Dst   netip.AddrPort
	// Names are the DNS names that this agent's own lookups bound to
	// Dst.Addr() and that have not expired. Empty when there are none.
	Names []string
}

// PeerKind says how a peer of an inbound connection reached the gateway.
// The zero value is no peer and is always denied.
type PeerKind uint8

const (
	// PeerAgent is another attached agent, known by the TUN its packets
	// came from.
	PeerAgent PeerKind = iota + 1
	// PeerHost is the gateway host itself: a connection through a published
	// listener from one of the host's own addresses.
	PeerHost
	// PeerRemote is a client of a published listener bound to a
	// non-loopback address, known by its address.
	PeerRemote
)

func (k PeerKind) String() string {
	switch k {
	case PeerAgent:
		return "agent"
	case PeerHost:
		return "host"
	case PeerRemote:
		return "remote"
	}
	return fmt.Sprintf("peer(%d)", uint8(k))
}

// Peer is who opens an inbound connection. The gateway fills it from the
// link or the published listener the connection came through, never from
// a source address the peer chose.
type Peer struct {
	Kind PeerKind
	// Agent is the peer agent's name, for PeerAgent.
	Agent string
	// Addr is what cidrs rules match, for PeerRemote. For the other kinds
	// it is for the audit log only.
	Addr netip.Addr
}

// String is the peer as `clawnet policy explain --from` takes it:
// "agent:NAME", "host" or "remote:ADDR" (see ParsePeer).
func (p Peer) String() string {
	switch p.Kind {
	case PeerAgent:
		return "agent:" + p.Agent
	case PeerHost:
		return "host"
	case PeerRemote:
		return "remote:" + p.Addr.String()
	}
	return p.Kind.String()
}

// Inbound is what the gateway knows about a new connection to an agent
// when it asks for a decision.
type Inbound struct {
	Proto Proto
	// Port is the agent's port the peer connects to.
	Port uint16
	Peer Peer
}

// InboundDecision is a decision on an inbound connection, with what the
// allowing rule asks of the gateway.
type InboundDecision struct {
	Decision
	// ProxyProtocol asks the gateway to send the agent's server a PROXY
	// protocol v2 header carrying the peer's identity, before any byte from
	// the peer. Only an Allow sets it.
	ProxyProtocol bool
}

// Decider is what the gateway needs of a compiled policy. Implementations
// are immutable and safe for concurrent use.
type Decider interface {
	// Name is the policy's name, as agents are attached with it.
	Name() string
	// DecideFlow decides a new TCP or UDP flow at its first packet.
	DecideFlow(Flow) Decision
	// DecideName decides whether name (from a TLS SNI or an HTTP Host) may
	// be reached on proto/port. The gateway separately checks that the name
	// is bound to the flow's destination for this agent.
	DecideName(name string, proto Proto, port uint16) Decision
	// DecideQuery decides whether a DNS query for qname may be resolved
	// upstream at all (some allow rule names it and no deny rule covers it on
	// every port).
	DecideQuery(qname string) Decision
	// DecideInbound decides a new connection to the agent, by its ingress
	// and ingress_deny rules. Agent to agent, the gateway also asks the
	// connecting agent's DecideAgent: both must allow.
	DecideInbound(Inbound) InboundDecision
	// DecideAgent decides whether the agent may connect to the attached
	// agent named agent on proto/port, by its egress and deny rules.
	DecideAgent(agent string, proto Proto, port uint16) Decision
	// HasIngress reports whether some ingress rule lets some peer connect
	// on proto/port. The gateway refuses to publish a UDP port without one.
	HasIngress(proto Proto, port uint16) bool
}
