package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/sniff"
)

// forwardByName completes the agent's handshake, reads its first bytes and,
// when they are a TLS ClientHello or an HTTP request, requires their name to
// be allowed and bound to the destination for this agent. Only then is the
// upstream dialled and the bytes passed on. A client that says nothing
// within sniffWait is taken for a server-first protocol (SSH, SMTP,
// databases): the upstream is dialled so its banner can flow, and the
// client's first bytes are still checked before any of them go upstream.
func (a *Agent) forwardByName(r *netstack.TCPRequest, f *flow, d policy.Decision) {
	r.Buffer = f.buf
	conn, err := r.Accept()
	if err != nil {
		f.fail(d, err)
		return
	}
	f.agent = conn
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := (*bp)[:sniff.MaxBytes]

	_ = conn.SetReadDeadline(time.Now().Add(sniffWait))
	n, res, serr := readHello(conn, buf)
	serverFirst := n == 0 && isTimeout(serr)
	if serverFirst {
		up, err := a.g.dial(a.ctx, "tcp", f.dst)
		if err != nil {
			conn.Abort()
			f.fail(d, err)
			return
		}
		f.upstream = up
		f.armIdle()
		down := make(chan struct{})
		go func() {
			defer close(down)
			f.pipe(f.agent, f.upstream, &f.down, &f.a.bytesDown)
		}()
		// The client speaks once the server has: check its first bytes
		// as usual, with the flow's idle timer as the only bound.
		_ = conn.SetReadDeadline(time.Time{})
		n, res, serr = readHello(conn, buf)
		if dd, ok := a.checkHello(f, d, res, serr, n); !ok {
			conn.Abort()
			f.close()
			<-down
			f.deniedAfter(dd, res)
			return
		}
		f.opened(d)
		if _, err := up.Write(buf[:n]); err != nil {
			f.close()
		} else {
			f.up.Add(uint64(n))
			a.bytesUp.Add(uint64(n))
			f.pipe(f.upstream, f.agent, &f.up, &f.a.bytesUp)
		}
		<-down
		f.close()
		f.closed(d)
		return
	}
	if dd, ok := a.checkHello(f, d, res, serr, n); !ok {
		conn.Abort()
		f.close()
		f.deniedAfter(dd, res)
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	up, err := a.g.dial(a.ctx, "tcp", f.dst)
	if err != nil {
		conn.Abort()
		f.fail(d, err)
		return
	}
	f.upstream = up
	f.opened(d)
	f.armIdle()
	f.spliceTCP(buf[:n])
	f.close()
	f.closed(d)
}

// sniffWait is how long a flow allowed by name waits for the client's first
// bytes before taking it for a server-first protocol.
const sniffWait = 300 * time.Millisecond

// helloTimeout bounds how long a client may take to finish a ClientHello or
// request head it has started.
const helloTimeout = 10 * time.Second

// readHello reads until sniff can decide, the buffer is full, or the read
// deadline passes. It returns the bytes read and sniff's verdict on them.
func readHello(conn net.Conn, buf []byte) (int, sniff.Result, error) {
	n := 0
	extended := false
	var res sniff.Result
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if n > 0 {
			var serr error
			res, serr = sniff.Sniff(buf[:n])
			if !errors.Is(serr, sniff.ErrNeedMore) {
				return n, res, serr
			}
			if !extended {
				// A hello has started: give it its own bound.
				_ = conn.SetReadDeadline(time.Now().Add(helloTimeout))
				extended = true
			}
			if n == len(buf) {
				return n, res, sniff.ErrTooLarge
			}
		}
		if err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				// The client shut its side in the middle of a hello or a
				// request head. A lenient server may end the head at end
				// of stream and read a Host from it: never pass it on.
				return n, res, errHelloCut
			}
			return n, res, err
		}
	}
}

// errHelloCut is a hello or request head the client ended before it was
// complete.
var errHelloCut = errors.New("the client closed its side in the middle of a ClientHello or request head")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// checkHello applies the name rules to what the client sent first.
func (a *Agent) checkHello(f *flow, d policy.Decision, res sniff.Result, serr error, n int) (policy.Decision, bool) {
	deny := func(reason string) (policy.Decision, bool) {
		return policy.Decision{Verdict: policy.Deny, Rule: d.Rule, Reason: reason}, false
	}
	if serr != nil {
		if n == 0 {
			return deny("the client closed before sending anything")
		}
		return deny("first bytes: " + serr.Error())
	}
	if res.Kind == sniff.Unknown {
		// Neither TLS nor HTTP: the address itself was bound to an allowed
		// name by this agent's DNS, which is all that can be checked.
		return d, true
	}
	label := "SNI"
	if res.Kind == sniff.HTTP {
		label = "Host"
	}
	if res.Name == "" {
		return deny(fmt.Sprintf("no %s: a flow allowed by name must name its server", label))
	}
	ip := f.dst.Addr().Unmap()
	if !a.names.Has(res.Name, ip) {
		return deny(fmt.Sprintf("%s %s is not bound to %s by this agent's DNS", label, res.Name, ip))
	}
	p := a.g.policies.Get(a.policy)
	if p == nil {
		return deny(fmt.Sprintf("policy %q is no longer defined", a.policy))
	}
	nd := p.DecideName(res.Name, policy.ProtoTCP, f.dst.Port())
	if !nd.Allowed() {
		return nd, false
	}
	f.name = res.Name
	if res.Kind == sniff.TLS {
		f.sni = res.Name
	} else {
		f.host = res.Name
	}
	return nd, true
}

func (f *flow) deniedAfter(d policy.Decision, res sniff.Result) {
	ev := &AuditEvent{Kind: "flow", Event: "deny", Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Name: f.name, Verdict: "deny", Rule: d.Rule, Reason: d.Reason}
	if res.Kind == sniff.TLS {
		ev.SNI = res.Name
	} else if res.Kind == sniff.HTTP {
		ev.Host = res.Name
	}
	f.a.event(ev)
}
