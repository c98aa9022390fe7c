package gateway

import (
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
	up, err := a.g.dial(a.ctx, "udp", r.Dst, f.buf)
	if err != nil {
		a.untrack(f)
		f.audit(EventFail, d, err)
		return false
	}
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		a.untrack(f)
		return false
	}
	f.upstream, f.agent = up, conn
	f.audit(EventOpen, d, nil)
	f.armIdle()
	go func() {
		defer a.untrack(f)
		f.spliceTCP()
		f.close()
		f.audit(EventClose, d, nil)
	}()
	return true
}
