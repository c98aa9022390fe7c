package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
)

// copyBufSize is the copy buffer of one direction of a flow: large enough to
// move a whole 64 KiB segment per call.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// flow is one proxied connection: the agent's side in the netstack and the
// upstream side on a host socket.
type flow struct {
	a        *Agent
	proto    policy.Proto
	src, dst netip.AddrPort
	agent    net.Conn
	upstream net.Conn
	start    time.Time
	idle     time.Duration

	up, down atomic.Uint64 // bytes agent→upstream and back
	last     atomic.Int64  // unix nanos of the last byte either way
	timer    *time.Timer

	closeOnce sync.Once
}

func (f *flow) close() {
	f.closeOnce.Do(func() {
		if f.timer != nil {
			f.timer.Stop()
		}
		if f.agent != nil {
			f.agent.Close()
		}
		if f.upstream != nil {
			f.upstream.Close()
		}
	})
}

// armIdle closes the flow once nothing has moved either way for f.idle. A
// quiet stream that still moves a byte now and then is never cut.
func (f *flow) armIdle() {
	f.last.Store(time.Now().UnixNano())
	f.timer = time.AfterFunc(f.idle, f.checkIdle)
}

func (f *flow) checkIdle() {
	quiet := time.Since(time.Unix(0, f.last.Load()))
	if quiet >= f.idle {
		f.close()
		return
	}
	f.timer.Reset(f.idle - quiet)
}

func (a *Agent) handleTCP(r *netstack.TCPRequest) {
	if r.Dst.Port() == 53 {
		// DNS is the gateway's own (see dns.go): never forwarded as a flow.
		a.handleDNSTCP(r)
		return
	}
	d := a.decide(policy.ProtoTCP, r.Dst)
	if !d.Allowed() {
		r.Reject()
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
		return
	}
	f := &flow{a: a, proto: policy.ProtoTCP, src: r.Src, dst: r.Dst, start: time.Now(), idle: a.g.cfg.Timeouts.TCPIdle.D()}
	if err := a.track(f); err != nil {
		r.Reject()
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: "deny", Rule: "builtin:limit", Reason: err.Error()})
		return
	}
	defer a.untrack(f)
	// Dial first, complete the agent's handshake after: a refused or
	// unreachable upstream is a reset to the agent, not an accepted
	// connection that dies at once.
	up, err := a.g.dial(a.ctx, "tcp", r.Dst)
	if err != nil {
		r.Reject()
		a.event(&AuditEvent{Kind: "flow", Event: "fail", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason, Error: err.Error()})
		return
	}
	f.upstream = up
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		a.event(&AuditEvent{Kind: "flow", Event: "fail", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason, Error: err.Error()})
		return
	}
	f.agent = conn
	a.event(&AuditEvent{Kind: "flow", Event: "open", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
		Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
	f.armIdle()
	f.spliceTCP()
	f.close()
	f.closed(d)
}

func (f *flow) closed(d policy.Decision) {
	up, down := f.up.Load(), f.down.Load()
	ms := time.Since(f.start).Milliseconds()
	f.a.event(&AuditEvent{Kind: "flow", Event: "close", Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason,
		BytesUp: &up, BytesDown: &down, DurationMS: &ms})
}

// halfCloser is a connection whose write side can be shut on its own.
type halfCloser interface{ CloseWrite() error }

// spliceTCP copies both ways until both sides have finished. An EOF from one
// side shuts the write side of the other (half-close); an error aborts both.
func (f *flow) spliceTCP() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.pipe(f.agent, f.upstream, &f.down, &f.a.bytesDown)
	}()
	f.pipe(f.upstream, f.agent, &f.up, &f.a.bytesUp)
	<-done
}

// pipe copies src to dst. On EOF it half-closes dst; on any error it closes
// the whole flow so the other direction ends too.
func (f *flow) pipe(dst, src net.Conn, n, total *atomic.Uint64) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			f.last.Store(time.Now().UnixNano())
			nw, werr := dst.Write(buf[:nr])
			n.Add(uint64(nw))
			total.Add(uint64(nw))
			if werr != nil {
				f.close()
				return
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if hc, ok := dst.(halfCloser); ok && hc.CloseWrite() == nil {
					return
				}
			}
			f.close()
			return
		}
	}
}

func (a *Agent) handleUDP(r *netstack.UDPRequest) bool {
	d := a.decide(policy.ProtoUDP, r.Dst)
	if !d.Allowed() {
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "udp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
		return false
	}
	f := &flow{a: a, proto: policy.ProtoUDP, src: r.Src, dst: r.Dst, start: time.Now(), idle: a.g.cfg.Timeouts.UDPIdle.D()}
	if err := a.track(f); err != nil {
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "udp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: "deny", Rule: "builtin:limit", Reason: err.Error()})
		return false
	}
	// A UDP "dial" only binds and connects a socket: it does not block, so
	// it is done here on the packet path and the first datagram is kept.
	up, err := a.g.dial(a.ctx, "udp", r.Dst)
	if err != nil {
		a.untrack(f)
		a.event(&AuditEvent{Kind: "flow", Event: "fail", Proto: "udp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason, Error: err.Error()})
		return false
	}
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		a.untrack(f)
		return false
	}
	f.upstream, f.agent = up, conn
	a.event(&AuditEvent{Kind: "flow", Event: "open", Proto: "udp", Src: r.Src.String(), Dst: r.Dst.String(),
		Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
	f.armIdle()
	go func() {
		defer a.untrack(f)
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.pipe(f.agent, f.upstream, &f.down, &a.bytesDown)
		}()
		f.pipe(f.upstream, f.agent, &f.up, &a.bytesUp)
		f.close()
		<-done
		f.closed(d)
	}()
	return true
}

// dial connects to exactly the address that was decided: an IP literal, so
// nothing is resolved again between the decision and the connection.
func (g *Gateway) dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	d := g.dialer
	d.Control = func(_, address string, _ syscall.RawConn) error {
		if got, err := netip.ParseAddrPort(address); err != nil || got != dst {
			return &os.SyscallError{Syscall: "connect", Err: syscall.EPERM}
		}
		return nil
	}
	return d.DialContext(ctx, network, dst.String())
}
