package gateway

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	buf      int            // bytes of each netstack buffer (see budget.go)
	reserved int64          // what the flow reserved of the agent's buffer budget
	pol      policy.Decider // the policy the flow is decided on; guarded by a.mu once tracked (revoke.go)
	names    []string       // the names bound to dst when the flow was decided
	stage    flowStage      // guarded by a.mu (revoke.go)
	byName   bool           // allowed only through a name bound to dst (see decide.go)
	name     string         // the DNS name bound to dst that allowed the flow, if any
	sni      string
	host     string
	// Inbound flows, and flows between agents: in says the flow is seen
	// from the side of the agent it reaches; peer names the other side
	// (agent:NAME, host, remote:ADDR); to is the agent a flow goes to.
	in        bool
	peer      string
	to        *Agent
	mirror    *flow                  // to's side of a flow between agents
	mirrorDec policy.InboundDecision // to's ingress decision on it

	up, down atomic.Uint64 // bytes agent→upstream and back
	last     atomic.Int64  // unix nanos of the last byte either way
	timer    *time.Timer

	closeOnce sync.Once
	done      chan struct{} // closed by close
}

func newFlow(a *Agent, proto policy.Proto, src, dst netip.AddrPort, idle time.Duration) *flow {
	return &flow{a: a, proto: proto, src: src, dst: dst, start: time.Now(), idle: idle, done: make(chan struct{})}
}

func (f *flow) close() { f.shut(false) }

// abort closes a flow torn down from outside (detach, idle) and resets its
// upstream, so the kernel drops at once what a peer that stopped reading
// would never take, instead of holding it for minutes in FIN-WAIT.
func (f *flow) abort() { f.shut(true) }

func (f *flow) shut(reset bool) {
	f.closeOnce.Do(func() {
		close(f.done)
		if f.timer != nil {
			f.timer.Stop()
		}
		if f.agent != nil {
			f.agent.Close()
		}
		if f.upstream != nil {
			if tc, ok := f.upstream.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			f.upstream.Close()
		}
	})
}

// armIdle closes the flow once nothing has moved either way for f.idle. A
// quiet stream that still moves a byte now and then is never cut.
func (f *flow) armIdle() {
	f.last.Store(time.Now().UnixNano())
	f.timer = time.AfterFunc(f.idle, f.checkIdle)
	f.settle()
}

func (f *flow) checkIdle() {
	quiet := time.Since(time.Unix(0, f.last.Load()))
	if quiet >= f.idle {
		f.abort()
		return
	}
	f.timer.Reset(f.idle - quiet)
}

// halfCloser is a connection whose write side can be shut on its own.
type halfCloser interface{ CloseWrite() error }

// spliceTCP copies both ways until both sides have finished. An EOF from one
// side shuts the write side of the other (half-close); an error aborts both.
func (f *flow) spliceTCP() {
	down := f.download()
	f.pipe(f.upstream, f.agent, &f.up, &f.a.bytesUp)
	<-down
}

// pipe copies src to dst: by the direct path (direct.go) between the
// netstack and a host TCP socket, which every flow with a host side takes,
// else through a pooled copy buffer (flows between agents). On EOF it
// half-closes dst; on any error it closes the whole flow so the other
// direction ends too. It takes a copy buffer only once src is readable, so
// an idle flow holds none. A flow closed from outside (a revocation resets
// it) never passes an EOF on as a half-close.
func (f *flow) pipe(dst, src net.Conn, n, total *atomic.Uint64) {
	if f.pipeDirect(dst, src, n, total) {
		return
	}
	for {
		waitReadable(src, f.done)
		bp := copyBufs.Get().(*[]byte)
		nr, rerr := src.Read(*bp)
		if nr > 0 {
			f.last.Store(time.Now().UnixNano())
			nw, werr := dst.Write((*bp)[:nr])
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
			f.endPipe(dst, rerr)
			return
		}
	}
}

// dial connects to exactly the address that was decided: an IP literal, so
// nothing is resolved again between the decision and the connection. The
// socket's kernel buffers are fixed at buf bytes each way (see budget.go).
func (g *Gateway) dial(ctx context.Context, network string, dst netip.AddrPort, buf int) (net.Conn, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if g.dialFunc != nil {
		return g.dialFunc(ctx, network, dst)
	}
	d := g.dialer
	d.Control = func(network, address string, rc syscall.RawConn) error {
		if got, err := netip.ParseAddrPort(address); err != nil || got != dst {
			return &os.SyscallError{Syscall: "connect", Err: syscall.EPERM}
		}
		return upstreamSockopts(rc, strings.HasPrefix(network, "udp"), buf)
	}
	return d.DialContext(ctx, network, dst.String())
}

// upstreamSockopts sets an upstream socket up before it connects: its
// receive and send buffers fixed at buf (so the kernel holds no more for
// the flow than its reservation, and the window scale fits), and, on UDP,
// SO_BROADCAST off (Go turns it on for every UDP socket), so the kernel
// itself refuses a broadcast address should a check above ever miss one.
// (Urgent data is kept in line by the direct path, on every host socket it
// reads, dialled or accepted.)
func upstreamSockopts(rc syscall.RawConn, udp bool, buf int) error {
	var serr error
	set := func(fd int, opt, v int, name string) {
		if serr == nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
				serr = &os.SyscallError{Syscall: "setsockopt " + name, Err: err}
			}
		}
	}
	if err := rc.Control(func(fd uintptr) {
		if udp {
			set(int(fd), unix.SO_BROADCAST, 0, "SO_BROADCAST")
		}
		if buf > 0 {
			// The kernel doubles what it is given, for its own
			// bookkeeping: ask for half, so it holds at most buf.
			set(int(fd), unix.SO_RCVBUF, buf/2, "SO_RCVBUF")
			set(int(fd), unix.SO_SNDBUF, buf/2, "SO_SNDBUF")
		}
	}); err != nil {
		return err
	}
	return serr
}

// readableConn is a connection that can say when a Read would not block.
type readableConn interface {
	WaitReadable(done <-chan struct{})
}

// waitReadable blocks until a Read on c would not block, or done closes:
// the netstack's connections say so without a buffer; others are read at
// once. (Host sockets are read by the direct path, which waits on them
// itself.)
func waitReadable(c net.Conn, done <-chan struct{}) {
	if c, ok := c.(readableConn); ok {
		c.WaitReadable(done)
	}
}
