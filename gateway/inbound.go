package gateway

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
)

// Inbound: nothing reaches an agent but through the gateway, and only when
// the agent's ingress rules name the peer. A peer is another agent, known
// by the link its packets came in on, or a client of a port the gateway
// published on the host (publish.go). Every inbound connection is decided
// and audited on the side of the agent it reaches (direction "in"); between
// agents the caller's egress must name the callee as well.

// agentAt returns the attached agent whose link address is ip, if any.
func (g *Gateway) agentAt(ip netip.Addr) *Agent {
	ip = ip.Unmap()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range g.agents {
		if a == nil {
			continue
		}
		for _, p := range a.addrs {
			if p.Addr() == ip {
				return a
			}
		}
	}
	return nil
}

// agentAddr returns the agent's link address of dst's family (IPv4 when
// the agent has no IPv6).
func (a *Agent) agentAddr(v6 bool) netip.Addr {
	if v6 && len(a.addrs) > 1 {
		return a.addrs[1].Addr()
	}
	return a.addrs[0].Addr()
}

// policyNow is the agent's policy as it stands, in its phase (phase.go),
// or nil if it is gone.
func (a *Agent) policyNow() policy.Decider { return a.inPhase(a.g.policies.Get(a.policy)) }

// decideToAgent decides a flow from agent a to agent b: a's egress must
// name b and b's ingress must name a. b's side of the flow (f.mirror) is
// decided here too, and a refusal by b's ingress is audited on b's side,
// as every inbound decision is.
func (a *Agent) decideToAgent(f *flow, b *Agent) policy.Decision {
	f.peer = "agent:" + b.name
	f.pol = a.policyNow()
	if f.pol == nil {
		return policy.Decision{Rule: "builtin:policy-missing", Reason: "policy " + a.policy + " is no longer defined"}
	}
	d := f.pol.DecideAgent(b.name, f.proto, f.dst.Port())
	if !d.Allowed() {
		return d
	}
	in := b.inboundFlow(f.proto, f.src, f.dst, "agent:"+a.name)
	bd := in.decideInbound(policy.Peer{Kind: policy.PeerAgent, Agent: a.name})
	if !bd.Allowed() {
		in.audit(EventDeny, bd.Decision, nil)
		return policy.Decision{Rule: bd.Rule, Reason: "agent " + b.name + "'s ingress: " + bd.Reason}
	}
	f.to, f.mirror, f.mirrorDec = b, in, bd
	return d
}

// inboundFlow is a new flow that reaches agent a from peer.
func (a *Agent) inboundFlow(proto policy.Proto, src, dst netip.AddrPort, peer string) *flow {
	f := newFlow(a, proto, src, dst, a.g.cfg.Timeouts.TCPIdle.D())
	if proto == policy.ProtoUDP {
		f.idle = a.g.cfg.Timeouts.UDPIdle.D()
	}
	f.in, f.peer = true, peer
	return f
}

// decideInbound decides an inbound flow by its agent's ingress rules, on
// one policy snapshot the flow keeps.
func (f *flow) decideInbound(peer policy.Peer) policy.InboundDecision {
	f.pol = f.a.policyNow()
	if f.pol == nil {
		return policy.InboundDecision{Decision: policy.Decision{Rule: "builtin:policy-missing", Reason: "policy " + f.a.policy + " is no longer defined"}}
	}
	return f.pol.DecideInbound(policy.Inbound{Proto: f.proto, Port: f.dst.Port(), Peer: peer})
}

// forwardToAgent carries a TCP flow from agent a to agent f.to: the
// connection into b's stack is opened first, from a's own address and
// port (b's server sees who called), and only then is a's handshake
// completed. b tracks its side, so its limits and its detach apply. It
// reports whether the flow was handed to its splice, which then owns it.
func (a *Agent) forwardToAgent(r *netstack.TCPRequest, f *flow, d policy.Decision) bool {
	b, in, bd := f.to, f.mirror, f.mirrorDec
	fail := func(ev Event, bdec, adec policy.Decision, err error) bool {
		r.Reject()
		in.audit(ev, bdec, err)
		f.audit(ev, adec, err)
		return false
	}
	if err := b.track(in); err != nil {
		return fail(EventDeny, limitDecision(err), limitDecision(err), nil)
	}
	src := a.ownSource(f)
	bc, err := b.openInto(a.ctx, in, src, f.dst, bd.ProxyProtocol, src, f.dst)
	if err != nil {
		b.untrack(in)
		return fail(EventFail, bd.Decision, d, err)
	}
	r.Buffer = f.buf
	ac, err := r.Accept()
	if err != nil {
		bc.Abort()
		b.untrack(in)
		return fail(EventFail, bd.Decision, d, err)
	}
	f.agent, f.upstream = ac, bc
	in.agent = bc
	a.start(f, d)
	return true
}

// ownSource is where a flow from agent a to another agent comes from: a's
// own link address (of the destination's family) and the port a's kernel
// chose, whatever source its packets claimed. Identity is the link: b's
// server must never see a's traffic as another agent's.
func (a *Agent) ownSource(f *flow) netip.AddrPort {
	return netip.AddrPortFrom(a.agentAddr(f.dst.Addr().Is6() && !f.dst.Addr().Is4In6()), f.src.Port())
}

// mirrorOpen completes the other agent's side of a flow between agents,
// whose upstream is the caller's connection, and writes its open line.
func (f *flow) mirrorOpen(callerConn net.Conn) {
	if in := f.mirror; in != nil {
		in.upstream = callerConn
		in.audit(EventOpen, f.mirrorDec.Decision, nil)
	}
}

// mirrorEnd ends the other agent's side: closed, counted from its own
// side (what it sent is what the caller received), audited (a close
// line, or a fail line with err when it never opened), untracked.
func (f *flow) mirrorEnd(err error) {
	in := f.mirror
	if in == nil {
		return
	}
	in.close()
	if err != nil {
		in.audit(EventFail, f.mirrorDec.Decision, err)
	} else {
		in.up.Store(f.down.Load())
		in.down.Store(f.up.Load())
		in.audit(EventClose, f.mirrorDec.Decision, nil)
	}
	f.to.untrack(in)
}

// openInto opens the connection into agent a for inbound flow f, from src
// to dst, writing first, when the ingress rule asks, a PROXY v2 header
// from psrc (the peer as the gateway saw it) to pdst.
func (a *Agent) openInto(ctx context.Context, f *flow, src, dst netip.AddrPort, proxy bool, psrc, pdst netip.AddrPort) (*netstack.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, a.g.cfg.Timeouts.Dial.D())
	defer cancel()
	c, err := a.stack.DialTCP(ctx, src, dst, f.buf)
	if err != nil {
		return nil, err
	}
	if proxy {
		if err := writeProxyHeader(c, psrc, pdst, f.peer); err != nil {
			c.Abort()
			return nil, err
		}
	}
	return c, nil
}

var _ net.Conn = (*netstack.TCPConn)(nil)

// ExplainInbound answers what the named policy would decide for a
// connection from peer (agent:NAME, host, or an address) to the agent's
// port; port 0 asks about every port.
func (g *Gateway) ExplainInbound(pol, proto string, port uint16, from string) (*control.Explanation, error) {
	p := g.policies.Get(pol)
	if p == nil {
		return nil, fmt.Errorf("%w: unknown policy %q (known: %v)", ErrNotFound, pol, g.policies.Names())
	}
	pr, err := policy.ParseProto(proto)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	peer, err := policy.ParsePeer(from)
	if err != nil {
		return nil, fmt.Errorf("%w: --from %q: %v", ErrBadRequest, from, err)
	}
	in := policy.Inbound{Proto: pr, Port: port, Peer: peer}
	var d policy.Decision
	if cp, ok := p.(*policy.Policy); ok {
		d = policy.ExplainInbound(cp, in)
	} else {
		d = p.DecideInbound(in).Decision
	}
	return &control.Explanation{Policy: pol, Proto: pr.String(), Port: port, From: peer.String(),
		Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason}, nil
}
