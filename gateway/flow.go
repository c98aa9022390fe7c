package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	buf      int    // bytes of each netstack buffer (see budget.go)
	reserved int64  // what the flow reserved of the agent's buffer budget
	name     string // the DNS name bound to dst that allowed the flow, if any
	sni      string
	host     string

	up, down atomic.Uint64 // bytes agent→upstream and back
	last     atomic.Int64  // unix nanos of the last byte either way
	timer    *time.Timer

	closeOnce sync.Once
	done      chan struct{} // closed by close
}

func newFlow(a *Agent, proto policy.Proto, src, dst netip.AddrPort, idle time.Duration) *flow {
	return &flow{a: a, proto: proto, src: src, dst: dst, start: time.Now(), idle: idle, done: make(chan struct{})}
}

func (f *flow) close() {
	f.closeOnce.Do(func() {
		close(f.done)
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
	d, byName := a.decideTCP(r.Dst)
	if !d.Allowed() {
		r.Reject()
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Name: d.name, Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
		return
	}
	f := newFlow(a, policy.ProtoTCP, r.Src, r.Dst, a.g.cfg.Timeouts.TCPIdle.D())
	f.name = d.name
	if err := a.track(f); err != nil {
		r.Reject()
		a.event(&AuditEvent{Kind: "flow", Event: "deny", Proto: "tcp", Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: "deny", Rule: "builtin:limit", Reason: err.Error()})
		return
	}
	if byName {
		defer a.untrack(f)
		a.forwardByName(r, f, d.Decision)
		return
	}
	spliced := false
	defer func() {
		if !spliced {
			a.untrack(f)
		}
	}()
	// Dial first, complete the agent's handshake after: a refused or
	// unreachable upstream is a reset to the agent, not an accepted
	// connection that dies at once.
	up, err := a.g.dial(a.ctx, "tcp", r.Dst)
	if err != nil {
		r.Reject()
		f.fail(d.Decision, err)
		return
	}
	f.upstream = up
	r.Buffer = f.buf
	conn, err := r.Accept()
	if err != nil {
		up.Close()
		f.fail(d.Decision, err)
		return
	}
	f.agent = conn
	f.opened(d.Decision)
	f.armIdle()
	// The splice runs on fresh goroutines: this one's stack grew deep in
	// the dial and would stay that size for the flow's whole life.
	spliced = true
	go func() {
		defer a.untrack(f)
		f.spliceTCP(nil)
		f.close()
		f.closed(d.Decision)
	}()
}

// namedDecision is a decision with the name that made it, if any.
type namedDecision struct {
	policy.Decision
	name string
}

// decideTCP decides a new TCP flow and says whether it was allowed only
// through a name this agent's DNS bound to the address: such a flow must
// then show that name (SNI or Host) before anything reaches upstream.
func (a *Agent) decideTCP(dst netip.AddrPort) (namedDecision, bool) {
	if d, ok := a.g.guard(dst.Addr(), dst.Port()); ok {
		return namedDecision{Decision: d}, false
	}
	p := a.g.policies.Get(a.policy)
	if p == nil {
		return namedDecision{Decision: policy.Decision{Rule: "builtin:policy-missing", Reason: fmt.Sprintf("policy %q is no longer defined", a.policy)}}, false
	}
	ip := dst.Addr().Unmap()
	fl := policy.Flow{Proto: policy.ProtoTCP, Dst: netip.AddrPortFrom(ip, dst.Port())}
	if d := p.DecideFlow(fl); d.Allowed() {
		return namedDecision{Decision: d}, false
	}
	fl.Names = a.names.Names(ip)
	d := p.DecideFlow(fl)
	nd := namedDecision{Decision: d}
	if len(fl.Names) > 0 {
		nd.name = fl.Names[0]
	}
	return nd, d.Allowed()
}

func (f *flow) opened(d policy.Decision) {
	f.a.event(&AuditEvent{Kind: "flow", Event: "open", Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Name: f.name, SNI: f.sni, Host: f.host, Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason})
}

func (f *flow) fail(d policy.Decision, err error) {
	f.a.event(&AuditEvent{Kind: "flow", Event: "fail", Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Name: f.name, Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason, Error: err.Error()})
}

func (f *flow) closed(d policy.Decision) {
	up, down := f.up.Load(), f.down.Load()
	ms := time.Since(f.start).Milliseconds()
	f.a.event(&AuditEvent{Kind: "flow", Event: "close", Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Name: f.name, SNI: f.sni, Host: f.host, Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason,
		BytesUp: &up, BytesDown: &down, DurationMS: &ms})
}

// halfCloser is a connection whose write side can be shut on its own.
type halfCloser interface{ CloseWrite() error }

// spliceTCP copies both ways until both sides have finished. An EOF from one
// side shuts the write side of the other (half-close); an error aborts both.
func (f *flow) spliceTCP(first []byte) {
	if len(first) > 0 {
		if _, err := f.upstream.Write(first); err != nil {
			f.close()
			return
		}
		f.up.Add(uint64(len(first)))
		f.a.bytesUp.Add(uint64(len(first)))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.pipe(f.agent, f.upstream, &f.down, &f.a.bytesDown)
	}()
	f.pipe(f.upstream, f.agent, &f.up, &f.a.bytesUp)
	<-done
}

// pipe copies src to dst. On EOF it half-closes dst; on any error it closes
// the whole flow so the other direction ends too. It takes a copy buffer only
// once src is readable, so an idle flow holds none.
func (f *flow) pipe(dst, src net.Conn, n, total *atomic.Uint64) {
	for {
		waitReadable(src, f.done)
		bp := copyBufs.Get().(*[]byte)
		nr, rerr := src.Read(*bp)
		buf := *bp
		if nr > 0 {
			f.last.Store(time.Now().UnixNano())
			nw, werr := dst.Write(buf[:nr])
			n.Add(uint64(nw))
			total.Add(uint64(nw))
			if werr != nil {
				copyBufs.Put(bp)
				f.close()
				return
			}
		}
		copyBufs.Put(bp)
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
	f := newFlow(a, policy.ProtoUDP, r.Src, r.Dst, a.g.cfg.Timeouts.UDPIdle.D())
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
	r.Buffer = f.buf
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
	d.Control = func(network, address string, rc syscall.RawConn) error {
		if got, err := netip.ParseAddrPort(address); err != nil || got != dst {
			return &os.SyscallError{Syscall: "connect", Err: syscall.EPERM}
		}
		if network == "udp4" || network == "udp6" || network == "udp" {
			return noBroadcast(rc)
		}
		return nil
	}
	return d.DialContext(ctx, network, dst.String())
}

// noBroadcast turns SO_BROADCAST off on an upstream UDP socket (Go turns
// it on for every UDP socket), so the kernel itself refuses to send to a
// broadcast address should a check above ever miss one.
func noBroadcast(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 0)
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.SyscallError{Syscall: "setsockopt SO_BROADCAST", Err: serr}
	}
	return nil
}

// readableConn is a connection that can say when a Read would not block.
type readableConn interface {
	WaitReadable(done <-chan struct{})
}

// waitReadable blocks until a Read on c would not block, or done closes.
// Host sockets are polled with a one-byte MSG_PEEK, so waiting needs no
// buffer; connections of other kinds are read at once.
func waitReadable(c net.Conn, done <-chan struct{}) {
	switch c := c.(type) {
	case readableConn:
		c.WaitReadable(done)
	case syscall.Conn:
		rc, err := c.SyscallConn()
		if err != nil {
			return
		}
		var b [1]byte
		_ = rc.Read(func(fd uintptr) bool {
			_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return err != unix.EAGAIN
		})
	}
}
