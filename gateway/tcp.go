package gateway

import (
	"sync/atomic"

	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
)

// handleTCP takes a new TCP flow held at SYN: decide, then forward it
// directly or, when only a name allowed it, through the name checks.
func (a *Agent) handleTCP(r *netstack.TCPRequest) {
	growStack()
	if r.Dst.Port() == 53 {
		// DNS is the gateway's own (see dns.go): never forwarded as a flow.
		a.handleDNSTCP(r)
		return
	}
	f := newFlow(a, policy.ProtoTCP, r.Src, r.Dst, a.g.cfg.Timeouts.TCPIdle.D())
	d := a.decideFlow(f)
	if !d.Allowed() {
		r.Reject()
		f.audit(EventDeny, d, nil)
		return
	}
	if err := a.track(f); err != nil {
		r.Reject()
		f.audit(EventDeny, limitDecision(err), nil)
		return
	}
	switch {
	case f.byName:
		defer a.untrack(f)
		a.forwardByName(r, f, d)
	case f.to != nil:
		if !a.forwardToAgent(r, f, d) {
			a.untrack(f)
		}
	default:
		if !a.forwardDirect(r, f, d) {
			a.untrack(f)
		}
	}
}

// forwardDirect dials first and completes the agent's handshake after: a
// refused or unreachable upstream is a reset to the agent, not an accepted
// connection that dies at once. It reports whether the flow was handed to
// its splice, which then owns it.
func (a *Agent) forwardDirect(r *netstack.TCPRequest, f *flow, d policy.Decision) bool {
	up, err := a.g.dial(a.ctx, "tcp", r.Dst, f.buf)
	if err != nil {
		r.Reject()
		f.audit(EventFail, d, err)
		return false
	}
	f.upstream = up
	r.Buffer = f.buf
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		f.audit(EventFail, d, err)
		return false
	}
	f.agent = conn
	a.start(f, d)
	return true
}

// start hands a flow connected both ways to its splice, which owns it from
// here: the open line (and the other agent's, between agents), the idle
// timer, both directions until both end, the close lines. The splice runs
// on fresh goroutines: the caller's stack grew deep in the dial and would
// stay that size for the flow's whole life.
func (a *Agent) start(f *flow, d policy.Decision) {
	f.audit(EventOpen, d, nil)
	f.mirrorOpen(f.agent)
	f.armIdle()
	go func() {
		defer a.untrack(f)
		f.spliceTCP()
		f.close()
		f.audit(EventClose, d, nil)
		f.mirrorEnd(nil)
	}()
}

// connectStackFrame is the frame growStack takes: with what lies below it
// and the runtime's guard, it asks for a 16 KiB stack, as deep as the
// connect path goes (the decision, the dial, gVisor's handshake: its
// SYN-ACK is built more than 8 KiB down).
const connectStackFrame = 14 << 10

// stackSink keeps growStack's frame from being optimised away.
var stackSink atomic.Bool

// growStack grows the calling goroutine's stack in one step, to what a new
// TCP flow's handling needs. gVisor starts that goroutine for each SYN with
// the runtime's smallest stack, which otherwise grows three times on the
// way (2 to 4 KiB in the policy decision, on to 16 KiB in gVisor's
// handshake), each time copying every frame below: done here, the copy is
// of two or three frames. The goroutine of a flow forwarded directly ends
// once the flow is handed to its splice; one that stays (a name-bound
// flow) gives the stack back as the GC shrinks it.
//
//go:noinline
func growStack() {
	var frame [connectStackFrame]byte
	if stackSink.Load() {
		for i := range frame {
			frame[i] = byte(i)
		}
		stackSink.Store(frame[len(frame)-1] == 0)
	}
}
