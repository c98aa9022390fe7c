package gateway

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/netstack"
)

// The direct path of a flow between the agent's side in the netstack and a
// host TCP socket (every flow forwarded by address): no copy buffer of the
// gateway's. Downloads are read from the host socket straight into the
// stack's send buffer; uploads are written to the host socket straight
// from the stack's receive buffer. Each byte crosses user space once
// instead of twice, and an idle flow holds no buffer at all.

// maxMove bounds the bytes moved into the stack in one step, so a download
// is handed on in pieces the agent can start on.
const maxMove = 1 << 20

// errShortSocket is a host socket that held fewer bytes than it said: the
// batch read so far is lost, so the flow cannot go on.
var errShortSocket = errors.New("upstream socket held fewer bytes than it reported")

// errSocketFull stops the stack handing over more while the host socket's
// send buffer is full; the flow waits for room, then goes on.
var errSocketFull = errors.New("upstream socket full")

// pipeDirect runs pipe's job on the direct path when dst and src are the
// two sides it serves, and reports whether it did.
func (f *flow) pipeDirect(dst, src net.Conn, n, total *atomic.Uint64) bool {
	switch s := src.(type) {
	case *net.TCPConn:
		if d, ok := dst.(*netstack.TCPConn); ok {
			f.directDown(d, s, n, total)
			return true
		}
	case *netstack.TCPConn:
		if d, ok := dst.(*net.TCPConn); ok {
			f.directUp(d, s, n, total)
			return true
		}
	}
	return false
}

// directDown moves what the upstream sends into the agent's side. When the
// stack's send buffer is full it waits for room first, so the upstream's
// window closes as the agent falls behind, as with a copy.
func (f *flow) directDown(dst *netstack.TCPConn, src *net.TCPConn, n, total *atomic.Uint64) {
	rc, err := src.SyscallConn()
	if err != nil {
		f.close()
		return
	}
	// Urgent data stays in the stream (SO_OOBINLINE): SIOCINQ counts the
	// urgent byte, and a read would otherwise skip it and come up short.
	// A proxy cannot pass urgency on anyway; the byte itself it can. Set
	// here, on every host socket the path reads (dialled upstreams and
	// clients accepted on a published port alike), and nowhere else.
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_OOBINLINE, 1)
	}); err != nil || serr != nil {
		f.close()
		return
	}
	var r sockReader
	for {
		dst.WaitWritable(f.done)
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			for {
				q, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
				if err != nil {
					rerr = os.NewSyscallError("ioctl SIOCINQ", err)
					return true
				}
				if q == 0 {
					// Nothing queued: wait for data, or say why
					// not.
					wait, err := peekSocket(fd)
					rerr = err
					return !wait
				}
				r = sockReader{fd: int(fd), n: min(q, maxMove)}
				moved, err := dst.WriteFrom(&r)
				f.moved(moved, n, total)
				if err != nil {
					rerr = err
					if r.err != nil {
						// The batch read so far is gone
						// with the error: the agent must
						// not take the stream as whole.
						dst.Abort()
					}
					return true
				}
				if moved < q {
					return true // the send buffer is full: wait for room
				}
				// All of it taken: ask only whether more came (or
				// the upstream's EOF, which may have come with the
				// last bytes) before waiting, not SIOCINQ and then
				// the same question.
				wait, err := peekSocket(fd)
				if wait || err != nil {
					rerr = err
					return !wait
				}
			}
		}); err != nil && rerr == nil {
			rerr = err
		}
		if rerr != nil {
			f.endPipe(dst, rerr)
			return
		}
	}
}

// directUp moves what the agent sends to the upstream. The stack hands its
// views to the socket while the agent's connection is locked, so the
// socket is written without blocking; when it is full the flow waits for
// room with the connection unlocked.
func (f *flow) directUp(dst *net.TCPConn, src *netstack.TCPConn, n, total *atomic.Uint64) {
	rc, err := dst.SyscallConn()
	if err != nil {
		f.close()
		return
	}
	var w sockWriter
	for {
		src.WaitReadable(f.done)
		if f.closing() {
			f.close()
			return
		}
		var moved int
		var rerr error
		if err := rc.Write(func(fd uintptr) bool {
			w = sockWriter{fd: int(fd)}
			moved, rerr = src.ReadTo(&w)
			if moved == 0 && w.full {
				rerr = nil
				return false
			}
			return true
		}); err != nil && rerr == nil {
			rerr = err
		}
		f.moved(moved, n, total)
		if rerr != nil {
			f.endPipe(dst, rerr)
			return
		}
	}
}

// peekSocket says whether a host socket with nothing counted in it has
// nothing to read yet (wait), or why there is nothing: its EOF or an error.
// Neither (a byte raced in) means read it.
func peekSocket(fd uintptr) (wait bool, err error) {
	var b [1]byte
	m, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN:
		return true, nil
	case err == unix.EINTR:
		return false, nil
	case err != nil:
		return false, os.NewSyscallError("recvfrom", err)
	case m == 0:
		return false, io.EOF
	}
	return false, nil
}

func (f *flow) moved(m int, n, total *atomic.Uint64) {
	if m > 0 {
		f.last.Store(time.Now().UnixNano())
		n.Add(uint64(m))
		total.Add(uint64(m))
	}
}

// endPipe ends one direction as pipe does: an EOF half-closes dst, unless
// the flow is being closed from outside; anything else closes the flow.
func (f *flow) endPipe(dst net.Conn, err error) {
	if errors.Is(err, io.EOF) && !f.closing() {
		if hc, ok := dst.(halfCloser); ok && hc.CloseWrite() == nil {
			return
		}
	}
	f.close()
}

// sockReader reads a host socket that has n bytes queued, for the stack's
// WriteFrom. It must deliver every byte it claims: the stack reads until
// it has them all.
type sockReader struct {
	fd, n int
	err   error
}

func (r *sockReader) Len() int   { return r.n }
func (r *sockReader) Err() error { return r.err }

func (r *sockReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.n == 0 {
		r.err = errShortSocket
		return 0, r.err
	}
	p = p[:min(len(p), r.n)]
	for {
		m, err := unix.Read(r.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			r.err = errShortSocket
		case err != nil:
			r.err = os.NewSyscallError("read", err)
		case m == 0:
			r.err = errShortSocket
		default:
			r.n -= m
			return m, nil
		}
		return 0, r.err
	}
}

// sockWriter writes the stack's views to a host socket without blocking:
// a full socket takes what it can and says so (full), and the stack keeps
// the rest.
type sockWriter struct {
	fd   int
	full bool
	err  error
}

func (w *sockWriter) Err() error { return w.err }

func (w *sockWriter) Write(p []byte) (int, error) {
	for {
		m, err := unix.Write(w.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			w.full = true
			return 0, errSocketFull
		case err != nil:
			w.err = os.NewSyscallError("write", err)
			return 0, w.err
		case m < len(p):
			w.full = true
			return m, errSocketFull
		}
		return m, nil
	}
}
