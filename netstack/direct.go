package netstack

import (
	"errors"
	"io"
	"net"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// The direct path: a proxy moves bytes between a TCPConn and a host socket
// without a buffer of its own, the stack's buffers on one side and the
// kernel's on the other. gonet's Read and Write copy each byte once more
// through the caller's slice and arm a deadline on every call.

// Source is what WriteFrom takes bytes from: Len says how many it holds,
// all of which Read must deliver.
type Source interface {
	io.Reader
	Len() int
}

// WaitWritable blocks until the send buffer has room, the connection can
// no longer be written (a reset, a close), or done is closed.
func (c *TCPConn) WaitWritable(done <-chan struct{}) {
	c.wait(waiter.WritableEvents|waiter.EventHUp|waiter.EventErr, done)
}

func (c *TCPConn) wait(mask waiter.EventMask, done <-chan struct{}) {
	if c.ep.Readiness(mask) != 0 {
		return
	}
	e, ch := waiter.NewChannelEntry(mask)
	c.wq.EventRegister(&e)
	defer c.wq.EventUnregister(&e)
	if c.ep.Readiness(mask) != 0 {
		return
	}
	select {
	case <-ch:
	case <-done:
	}
}

// WriteFrom queues bytes from src on the connection's send buffer: the
// stack calls src.Read with its own buffers, for at most src.Len() bytes and
// at most the room the send buffer has, and holds none of the connection's
// locks meanwhile, so a Read may make a system call. A Read error discards
// the whole batch and is returned as it is. It never waits: a full send
// buffer is 0 bytes and no error (WaitWritable waits for room).
func (c *TCPConn) WriteFrom(src Source) (int, error) {
	n, terr := c.ep.Write(src, tcpip.WriteOptions{})
	switch terr.(type) {
	case nil:
		return int(n), nil
	case *tcpip.ErrWouldBlock:
		return 0, nil
	case *tcpip.ErrBadBuffer:
		// The stack's word for "the reader failed"; the reader knows why.
		if r, ok := src.(interface{ Err() error }); ok && r.Err() != nil {
			return 0, r.Err()
		}
	}
	return 0, c.opError("write", terr)
}

// ReadTo hands what the agent has sent to dst, straight from the stack's
// buffers: dst.Write is called with each of the stack's views in turn,
// while the connection is locked, so it must never block; it may take
// part of a view and return an error, and exactly what it took is
// consumed. It never waits: nothing queued is 0 bytes and no error
// (WaitReadable waits). The agent's FIN after its last byte is io.EOF; an
// error of dst's with nothing taken is returned as it is.
func (c *TCPConn) ReadTo(dst io.Writer) (int, error) {
	res, terr := c.ep.Read(dst, tcpip.ReadOptions{})
	switch terr.(type) {
	case nil:
		return res.Count, nil
	case *tcpip.ErrWouldBlock:
		return 0, nil
	case *tcpip.ErrClosedForReceive:
		return 0, io.EOF
	case *tcpip.ErrBadBuffer:
		if w, ok := dst.(interface{ Err() error }); ok && w.Err() != nil {
			return 0, w.Err()
		}
	}
	return 0, c.opError("read", terr)
}

func (c *TCPConn) opError(op string, terr tcpip.Error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errors.New(terr.String())}
}
