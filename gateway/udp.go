package gateway

import (
	"net"

	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
)

// handleUDP takes the first datagram of a new UDP flow, on the packet path.
// A UDP flow to a name is allowed by the binding alone: there is no first
// message to check.
func (a *Agent) handleUDP(r *netstack.UDPRequest) bool {
	f := newFlow(a, policy.ProtoUDP, r.Src, r.Dst, a.g.cfg.Timeouts.UDPIdle.D())
	d := a.decideFlow(f)
	if !d.Allowed() {
		f.audit(EventDeny, d, nil)
		return false
	}
	if err := a.track(f); err != nil {
		f.audit(EventDeny, limitDecision(err), nil)
		return false
	}
	// A UDP "dial" only binds and connects a socket: it does not block, so
	// it is done here on the packet path and the first datagram is kept.
	up, err := a.udpUpstream(f)
	if err != nil {
		a.untrack(f)
		f.audit(EventFail, d, err)
		return false
	}
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		f.mirrorEnd(err)
		a.untrack(f)
		return false
	}
	f.upstream, f.agent = up, conn
	a.start(f, d)
	return true
}

// udpUpstream is where a UDP flow's datagrams go: a host socket, or, for a
// flow to another agent, a flow into that agent's stack from a's own
// address, which the other agent tracks as its side (f.mirror).
func (a *Agent) udpUpstream(f *flow) (net.Conn, error) {
	if f.to == nil {
		return a.g.dial(a.ctx, "udp", f.dst, f.buf)
	}
	b, in := f.to, f.mirror
	if err := b.track(in); err != nil {
		in.audit(EventDeny, limitDecision(err), nil)
		return nil, err
	}
	c, err := b.stack.DialUDP(a.ownSource(f), f.dst)
	if err != nil {
		b.untrack(in)
		in.audit(EventFail, f.mirrorDec.Decision, err)
		f.mirror = nil
		return nil, err
	}
	in.agent = c
	return c, nil
}
