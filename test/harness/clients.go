package harness

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// RandomBytes returns n random bytes, so a transfer that reorders or drops
// data cannot still produce the expected digest.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// halfCloser is a connection whose write side can be shut alone.
type halfCloser interface {
	CloseWrite() error
}

// EchoHalfClose sends payload on c while reading, half-closes the write
// side, and reads until the peer half-closes back. It returns what came back.
// Against the canary's echo this exercises half-close in both directions: the
// echo only finishes after seeing our FIN, and we only get EOF after its FIN.
func EchoHalfClose(c net.Conn, payload []byte, timeout time.Duration) ([]byte, error) {
	hc, ok := c.(halfCloser)
	if !ok {
		return nil, errors.New("connection cannot half-close")
	}
	c.SetDeadline(time.Now().Add(timeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = hc.CloseWrite()
		}
		werr <- err
	}()
	got, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		return got, fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return got, fmt.Errorf("read: %w", rerr)
	}
	return got, nil
}

// DNSExchange sends one query on c (UDP or TCP framing by connection type)
// and returns the answer.
func DNSExchange(c net.Conn, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	dc := &dns.Conn{Conn: c}
	c.SetDeadline(time.Now().Add(timeout))
	if err := dc.WriteMsg(m); err != nil {
		return nil, fmt.Errorf("send query %s: %w", name, err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		return nil, fmt.Errorf("read answer for %s: %w", name, err)
	}
	if r.Id != m.Id {
		return nil, fmt.Errorf("answer for %s has id %d, sent %d", name, r.Id, m.Id)
	}
	return r, nil
}

// IsRefused reports whether err is a refused connection or a port
// unreachable (ECONNREFUSED): what the gateway's RST and ICMP look like.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// UDPExchange writes payload on a connected UDP socket and reads one reply.
func UDPExchange(c net.Conn, payload []byte, timeout time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(payload); err != nil {
		return nil, fmt.Errorf("send datagram: %w", err)
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read datagram: %w", err)
	}
	return buf[:n], nil
}
