package gateway

import (
	"bytes"
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
// Plaintext HTTP stays under inspection for the whole connection (see
// uploadHTTP); TLS and unknown protocols are spliced as they are.
func (a *Agent) forwardByName(r *netstack.TCPRequest, f *flow, d policy.Decision) {
	r.Buffer = f.buf
	conn, err := r.Accept()
	if err != nil {
		f.audit(EventFail, d, err)
		return
	}
	f.agent = conn
	// The buffer the first bytes are read into goes on to carry the
	// upload, so a head held back there is never copied.
	bp := copyBufs.Get().(*[]byte)
	hello := (*bp)[:sniff.MaxBytes]
	_ = conn.SetReadDeadline(time.Now().Add(sniffWait))
	n, res, serr := readHello(conn, hello)
	var down chan struct{}
	if n == 0 && isTimeout(serr) {
		if !a.dialUpstream(f, d) {
			copyBufs.Put(bp)
			conn.Abort()
			return
		}
		down = f.download()
		// The client speaks once the server has: check its first bytes
		// as usual, with the flow's idle timer as the only bound.
		_ = conn.SetReadDeadline(time.Time{})
		n, res, serr = readHello(conn, hello)
	}
	dd, ok := a.checkHello(f, d, res, serr, n)
	if !ok {
		copyBufs.Put(bp)
		conn.Abort()
		f.close()
		if down != nil {
			<-down
		}
		f.deniedAfter(dd, res.Kind, res.Name, "")
		return
	}
	if dd.Verdict == policy.WouldDeny {
		d = dd // an allowed address, but a name only audit lets through
	}
	_ = conn.SetReadDeadline(time.Time{})
	if down == nil {
		if !a.dialUpstream(f, d) {
			copyBufs.Put(bp)
			conn.Abort()
			return
		}
		down = f.download()
	}
	f.audit(EventOpen, d, nil)
	if res.Kind == sniff.HTTP || res.Kind == sniff.HTTP2 {
		a.uploadHTTP(f, d, bp, n)
	} else {
		err := f.send(hello[:n])
		copyBufs.Put(bp)
		if err == nil {
			f.pipe(f.upstream, f.agent, &f.up, &a.bytesUp)
		}
	}
	<-down
	f.close()
	f.audit(EventClose, d, nil)
}

// dialUpstream dials the flow's destination, reporting a failure.
func (a *Agent) dialUpstream(f *flow, d policy.Decision) bool {
	up, err := a.g.dial(a.ctx, "tcp", f.dst, f.buf)
	if err != nil {
		f.audit(EventFail, d, err)
		return false
	}
	f.upstream = up
	f.armIdle()
	return true
}

// download starts copying upstream to the agent; the channel closes when
// that direction has finished.
func (f *flow) download() chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.pipe(f.agent, f.upstream, &f.down, &f.a.bytesDown)
	}()
	return done
}

// send writes b upstream, closing the flow on error.
func (f *flow) send(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := f.upstream.Write(b); err != nil {
		f.close()
		return err
	}
	f.up.Add(uint64(len(b)))
	f.a.bytesUp.Add(uint64(len(b)))
	f.last.Store(time.Now().UnixNano())
	return nil
}

// uploadHTTP copies the agent's bytes upstream while holding back every
// HTTP/1 request head and HTTP/2 header block until its name is checked:
// on a name-bound flow every plaintext request, not only the first, must
// name an allowed server bound to the address. Heads are parsed in place
// in the copy buffer (its first n bytes are the client's first bytes);
// body and DATA bytes go upstream as they come, never copied again. A
// request that fails, or a head the client leaves unfinished (half-close,
// reset), resets the flow with a deny line naming the request.
func (a *Agent) uploadHTTP(f *flow, d policy.Decision, bp *[]byte, n int) {
	s := sniff.NewStream()
	end := n
	var rerr error
	timed := false // a read deadline bounds the head being held
	for {
		buf := *bp
		off, dd, req, ok := a.scanRequests(f, d, s, buf[:end])
		if ok && off == 0 && end == len(buf) {
			dd, ok = policy.Decision{Rule: d.Rule, Reason: "request head too large"}, false
		}
		if !ok {
			copyBufs.Put(bp)
			f.refuse(dd, req)
			return
		}
		if f.send(buf[:off]) != nil {
			copyBufs.Put(bp)
			return
		}
		held := copy(buf, buf[off:end])
		switch {
		case rerr != nil:
			copyBufs.Put(bp)
			switch {
			case held > 0 && errors.Is(rerr, io.EOF):
				f.refuse(policy.Decision{Rule: d.Rule, Reason: "the client closed its side in the middle of a request head"}, nil)
			case held > 0 && isTimeout(rerr):
				f.refuse(policy.Decision{Rule: d.Rule, Reason: "a request head still unfinished after " + helloTimeout.String()}, nil)
			default:
				f.endUpload(rerr)
			}
			return
		case s.Opaque() && held == 0:
			copyBufs.Put(bp)
			f.pipe(f.upstream, f.agent, &f.up, &a.bytesUp)
			return
		case held == 0:
			// Nothing held: an idle flow keeps no buffer.
			copyBufs.Put(bp)
			waitReadable(f.agent, f.done)
			bp = copyBufs.Get().(*[]byte)
		}
		if (held > 0) != timed {
			// A head has started (or ended): it gets helloTimeout to
			// finish, as the first one does; a body or an idle
			// connection has only the flow's idle timer.
			timed = held > 0
			var t time.Time
			if timed {
				t = time.Now().Add(helloTimeout)
			}
			_ = f.agent.SetReadDeadline(t)
		}
		m, err := f.agent.Read((*bp)[held:])
		end, rerr = held+m, err
	}
}

// scanRequests runs the stream over buf and checks the name of every
// request it completes. It returns how many leading bytes may go upstream;
// when one request fails, none of buf does.
func (a *Agent) scanRequests(f *flow, d policy.Decision, s *sniff.Stream, buf []byte) (int, policy.Decision, *sniff.Request, bool) {
	off := 0
	for off < len(buf) {
		n, req, err := s.Scan(buf[off:])
		if err != nil {
			return 0, policy.Decision{Rule: d.Rule, Reason: "request: " + err.Error()}, req, false
		}
		if req != nil {
			label := "Host"
			if req.Proto == sniff.HTTP2 {
				label = ":authority"
			}
			if dd, ok := a.nameAllowed(f, d, label, req.Name); !ok {
				return 0, dd, req, false
			}
		}
		if n == 0 {
			break
		}
		off += n
	}
	return off, d, nil, true
}

// endUpload ends the upload direction after a read error: an EOF half-closes
// upstream, anything else closes the flow.
func (f *flow) endUpload(err error) {
	if errors.Is(err, io.EOF) && !f.closing() {
		if hc, ok := f.upstream.(halfCloser); ok && hc.CloseWrite() == nil {
			return
		}
	}
	f.close()
}

// aborter is a connection that can be reset rather than closed.
type aborter interface{ Abort() }

// refuse resets the flow on a request that failed its check.
func (f *flow) refuse(d policy.Decision, req *sniff.Request) {
	if ab, ok := f.agent.(aborter); ok {
		ab.Abort()
	}
	f.close()
	var kind sniff.Kind
	var name, line string
	if req != nil {
		kind, name = req.Proto, req.Name
		line = req.Method + " " + req.Target
	}
	f.deniedAfter(d, kind, name, line)
}

// sniffWait is how long a flow allowed by name waits for the client's first
// bytes before taking it for a server-first protocol.
const sniffWait = 300 * time.Millisecond

// helloTimeout bounds how long a client may take to finish a ClientHello or
// request head it has started.
var helloTimeout = 10 * time.Second

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
				if startedHello(buf[:n], res) {
					// A lenient server may end the head at end of stream
					// and read a Host from it: never pass it on.
					return n, res, errHelloCut
				}
				// A line without an HTTP version cannot carry headers:
				// the bytes are an unknown protocol (an echo, a command).
				return n, sniff.Result{Kind: sniff.Unknown}, nil
			}
			return n, res, err
		}
	}
}

// startedHello reports whether bytes a client ended with had started a
// ClientHello or an HTTP request, by sniff's own rule for a first line: a
// method token, whitespace and "HTTP/" after it.
func startedHello(b []byte, res sniff.Result) bool {
	if res.Kind != sniff.Unknown || b[0] == 22 {
		return true
	}
	line := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line = b[:i]
	}
	return bytes.Contains(bytes.ToLower(line), []byte("http/"))
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
	switch res.Kind {
	case sniff.Unknown:
		// Neither TLS nor HTTP: the address itself was bound to an allowed
		// name by this agent's DNS, which is all that can be checked.
		return d, true
	case sniff.HTTP2:
		// Names come in the header blocks that follow the preface; the
		// upload checks each one.
		return d, true
	}
	label := "SNI"
	if res.Kind == sniff.HTTP {
		label = "Host"
	}
	nd, ok := a.nameAllowed(f, d, label, res.Name)
	if !ok {
		return nd, false
	}
	f.a.mu.Lock() // a reload reads them (revoke.go)
	f.name = res.Name
	if res.Kind == sniff.TLS {
		f.sni = res.Name
	} else {
		f.host = res.Name
	}
	f.a.mu.Unlock()
	return nd, true
}

// nameAllowed checks a name the client presented on a flow allowed by name:
// it must be bound to the destination by this agent's DNS and allowed by
// its policy on this port.
func (a *Agent) nameAllowed(f *flow, d policy.Decision, label, name string) (policy.Decision, bool) {
	deny := func(reason string) (policy.Decision, bool) {
		return policy.Decision{Verdict: policy.Deny, Rule: d.Rule, Reason: reason}, false
	}
	if name == "" {
		return deny(fmt.Sprintf("no %s: a flow allowed by name must name its server", label))
	}
	ip := f.dst.Addr().Unmap()
	if !a.names.Has(name, ip) {
		return deny(fmt.Sprintf("%s %s is not bound to %s by this agent's DNS", label, name, ip))
	}
	nd := f.snapshot().DecideName(name, policy.ProtoTCP, f.dst.Port())
	return nd, nd.Allowed()
}

// deniedAfter writes the deny line of a flow refused after its handshake,
// naming what the client presented (and the request, for HTTP).
func (f *flow) deniedAfter(d policy.Decision, kind sniff.Kind, name, request string) {
	ev := f.line(EventDeny, d, nil)
	ev.SNI, ev.Host, ev.Request = "", "", request
	if kind == sniff.TLS {
		ev.SNI = name
	} else if kind == sniff.HTTP || kind == sniff.HTTP2 {
		ev.Host = name
	}
	f.a.event(ev)
}
