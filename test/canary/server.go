package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// Well-known ports of the services; the canary adds -port-offset to each.
const (
	portEcho    = 7
	portDiscard = 9
	portSource  = 19
	portBanner  = 22
	portDNS     = 53
	portHTTP    = 80
	portHTTPS   = 443
	// Not well-known: the HTTP variants tests need beside the plain one.
	portLenientHTTP = 8081
	portH2C         = 8082
	portTarpit      = 8083
)

// maxSource caps what one source request may ask for, so a typo in a test
// cannot make the canary stream forever.
const maxSource = 1 << 30

// banner is what the server-first service says before reading anything.
const banner = "SSH-2.0-clawnet-canary\r\n"

// server owns every listener and every live connection; close stops them all
// and waits for their goroutines.
type server struct {
	log    *canarylog.Writer
	offset int

	mu      sync.Mutex // guards closers and closed
	closers []io.Closer
	conns   map[net.Conn]struct{}
	closed  bool

	wg sync.WaitGroup
}

func newServer(w *canarylog.Writer, offset int) *server {
	return &server{log: w, offset: offset, conns: make(map[net.Conn]struct{})}
}

func (s *server) addr(port int) string { return ":" + strconv.Itoa(port+s.offset) }

// own registers c to be closed by close; it reports false (and closes c) when
// the server is already shutting down.
func (s *server) own(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.closers = append(s.closers, c)
	return true
}

func (s *server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	return true
}

func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	closers := s.closers
	s.closers = nil
	// Closed outside the lock: a connection's close hook may untrack it.
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	for _, c := range closers {
		c.Close()
	}
	s.wg.Wait()
}

func (s *server) spawn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

func (s *server) listenAll(z *zone, certs *certMinter) error {
	// The "tcp" network with an empty host binds [::] dual-stack, so one
	// listener takes both IPv4 and IPv6 on every address of the namespace.
	stream := []struct {
		port    int
		service string
		handle  func(*countConn, *canarylog.Entry)
	}{
		{portEcho, canarylog.ServiceEcho, handleEcho},
		{portDiscard, canarylog.ServiceDiscard, handleDiscard},
		{portSource, canarylog.ServiceSource, handleSource},
		{portBanner, canarylog.ServiceBanner, handleBanner},
		{portLenientHTTP, canarylog.ServiceHTTPLenient, s.handleLenientHTTP},
		{portTarpit, canarylog.ServiceTarpit, handleTarpit},
	}
	for _, st := range stream {
		ln, err := net.Listen("tcp", s.addr(st.port))
		if err != nil {
			return fmt.Errorf("listen %s: %w", st.service, err)
		}
		if !s.own(ln) {
			return errors.New("server closed")
		}
		s.spawn(func() { s.acceptLoop(ln, st.service, st.handle) })
	}
	if err := s.listenHTTP(certs); err != nil {
		return err
	}
	if err := s.listenUDPEcho(); err != nil {
		return err
	}
	return s.listenDNS(z)
}

// acceptLoop logs an open line at accept, so a connection that never ends
// is still on record, and a close line with the final counts.
func (s *server) acceptLoop(ln net.Listener, service string, handle func(*countConn, *canarylog.Entry)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Log(canarylog.Entry{Service: service, Event: canarylog.EventError, Error: err.Error()})
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !s.track(c, true) {
			c.Close()
			return
		}
		s.spawn(func() {
			defer s.track(c, false)
			cc := newCountConn(c)
			base := canarylog.Entry{Service: service, Proto: "tcp", Remote: c.RemoteAddr().String(), Local: c.LocalAddr().String()}
			open := base
			open.Event = canarylog.EventOpen
			s.log.Log(open)
			e := base
			e.Event = canarylog.EventClose
			handle(cc, &e)
			c.Close()
			cc.fill(&e)
			s.log.Log(e)
		})
	}
}

func handleEcho(c *countConn, e *canarylog.Entry) {
	// A plain copy loop (countConn has no ReadFrom) echoes as data arrives;
	// when the client half-closes we half-close back after the last byte,
	// which is what the half-close tests look for.
	if _, err := io.Copy(c, c); err != nil {
		e.Error = err.Error()
		return
	}
	if err := c.closeWrite(); err != nil {
		e.Error = err.Error()
	}
}

func handleDiscard(c *countConn, e *canarylog.Entry) {
	if _, err := io.Copy(io.Discard, c); err != nil {
		e.Error = err.Error()
	}
}

func handleSource(c *countConn, e *canarylog.Entry) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
	if err != nil {
		e.Error = fmt.Sprintf("read request line: %v", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || n < 0 || n > maxSource {
		e.Error = fmt.Sprintf("bad request line %q: want a byte count 0..%d", strings.TrimSpace(line), maxSource)
		return
	}
	e.Requested = n
	if _, err := io.Copy(c, canarylog.SourceStream(n)); err != nil {
		e.Error = err.Error()
		return
	}
	if err := c.closeWrite(); err != nil {
		e.Error = err.Error()
		return
	}
	// Wait for the client's close (or anything it still sends) so it, not
	// we, decides when the connection ends.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.Copy(io.Discard, c)
}

func handleBanner(c *countConn, e *canarylog.Entry) {
	if _, err := io.WriteString(c, banner); err != nil {
		e.Error = err.Error()
		return
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
	e.Line = strings.TrimRight(line, "\r\n")
	if err != nil && !errors.Is(err, io.EOF) {
		e.Error = err.Error()
	}
}

// countConn counts and hashes both directions of a connection.
type countConn struct {
	net.Conn

	mu       sync.Mutex // guards the counters and hashes
	in, out  int64
	hin, hou hash.Hash
	sni      string // set by the TLS server when a ClientHello arrives
	closed   func() // run once by Close, if set
}

// onClose makes Close run f once, for connections that outlive the server
// that accepted them (hijacked by h2c).
func (c *countConn) onClose(f func()) {
	c.mu.Lock()
	c.closed = f
	c.mu.Unlock()
}

func (c *countConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	f := c.closed
	c.closed = nil
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return err
}

func newCountConn(c net.Conn) *countConn {
	return &countConn{Conn: c, hin: sha256.New(), hou: sha256.New()}
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.in += int64(n)
	c.hin.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.out += int64(n)
	c.hou.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *countConn) closeWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

func (c *countConn) setSNI(s string) {
	c.mu.Lock()
	c.sni = s
	c.mu.Unlock()
}

func (c *countConn) fill(e *canarylog.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.Bytes, e.BytesOut = c.in, c.out
	e.SHA256 = hex.EncodeToString(c.hin.Sum(nil))
	e.SHA256Out = hex.EncodeToString(c.hou.Sum(nil))
	if c.sni != "" {
		e.SNI = c.sni
	}
}
