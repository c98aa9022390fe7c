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
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
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

// Allowed reports whether the verdict is Allow.
func (d Decision) Allowed() bool { return d.Verdict == Allow }

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
}
