package harness

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/clawnet/clawnet/gateway/control"
)

// PP2TypeClawnetPeer is the PROXY v2 TLV in which the gateway names the
// peer of an inbound connection (agent:NAME, host, remote:ADDR). It is
// written out here rather than taken from the gateway package, so a test
// fails if the gateway's value drifts from the documented one.
const PP2TypeClawnetPeer proxyproto.PP2Type = 0xE0

// AttachRequest attaches through the control API with a request the CLI may
// not be able to express yet (published ports). It returns the agent the
// daemon answered, or the daemon's error message as the error.
func (d *Daemon) AttachRequest(req control.AttachRequest) (control.Agent, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return control.Agent{}, err
	}
	resp, err := d.client.Post("http://clawnet/v1/agents", "application/json", bytes.NewReader(body))
	if err != nil {
		return control.Agent{}, fmt.Errorf("POST /v1/agents: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return control.Agent{}, fmt.Errorf("POST /v1/agents: read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e control.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return control.Agent{}, errors.New(e.Error)
		}
		return control.Agent{}, fmt.Errorf("POST /v1/agents: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var a control.Agent
	if err := json.Unmarshal(data, &a); err != nil {
		return control.Agent{}, fmt.Errorf("POST /v1/agents: decode answer: %w: %s", err, data)
	}
	return a, nil
}

// ProxyHeader is what a Server read of a PROXY v2 header.
type ProxyHeader struct {
	Src, Dst netip.AddrPort
	// Peer is the value of the PP2TypeClawnetPeer TLV; HasPeer says
	// whether the header carried one.
	Peer    string
	HasPeer bool
}

// ServerConn is one connection a Server accepted, in accept order.
type ServerConn struct {
	// Remote is the peer address the agent's kernel reported.
	Remote netip.AddrPort
	// Proxy is the PROXY header read first, for a server that expects
	// one; nil otherwise or if none could be read (see Err).
	Proxy *ProxyHeader
	// Line is the first line read (without its newline), or what came
	// before EOF when no newline did.
	Line string
	// Done is set once the server has read the line (or failed to).
	Done bool
	Err  string
}

func (c ServerConn) String() string {
	s := fmt.Sprintf("from %s line %q", c.Remote, c.Line)
	if c.Proxy != nil {
		s += fmt.Sprintf(" proxy{src %s dst %s peer %q}", c.Proxy.Src, c.Proxy.Dst, c.Proxy.Peer)
	}
	if c.Err != "" {
		s += " error: " + c.Err
	}
	return s
}

// Server is a TCP server inside a namespace (an agent's server) that logs
// every connection it accepts: who the kernel says connected, the PROXY v2
// header when it expects one, and the first line. It answers "ack LINE\n"
// and then holds the connection until the peer closes it. Its log is the
// far side of inbound tests: a test asserts on what the server saw.
type Server struct {
	Addr  string
	proxy bool

	ln    net.Listener
	mu    sync.Mutex // guards conns, open
	conns []ServerConn
	open  map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Serve starts a Server on addr inside ns; with proxy it reads a PROXY v2
// header before the line. It stops, closing every connection, when t ends,
// and prints its log if t failed.
func (ns *NetNS) Serve(t testing.TB, addr string, proxy bool) *Server {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	s := &Server{Addr: addr, proxy: proxy, ln: ln, open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		if t.Failed() {
			t.Logf("server %s in %s saw:\n%s", addr, ns.Name, dumpConns(s.Conns()))
		}
	})
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s.mu.Lock()
		i := len(s.conns)
		s.conns = append(s.conns, ServerConn{Remote: netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())})
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(i, c)
	}
}

func (s *Server) handle(i int, c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	var ph *ProxyHeader
	var perr error
	if s.proxy {
		ph, perr = readProxy(br)
	}
	var line string
	var err error
	if perr == nil {
		line, err = br.ReadString('\n')
		line = strings.TrimSuffix(line, "\n")
		if err == io.EOF && line != "" {
			err = nil
		}
	} else {
		err = perr
	}
	s.mu.Lock()
	sc := &s.conns[i]
	sc.Proxy, sc.Line, sc.Done = ph, line, true
	if err != nil {
		sc.Err = err.Error()
	}
	s.mu.Unlock()
	if err != nil {
		return
	}
	if _, err := fmt.Fprintf(c, "ack %s\n", line); err != nil {
		return
	}
	// Hold the connection until the peer closes it.
	io.Copy(io.Discard, br)
}

func readProxy(br *bufio.Reader) (*ProxyHeader, error) {
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, fmt.Errorf("read PROXY header: %w", err)
	}
	if h.Version != 2 {
		return nil, fmt.Errorf("PROXY header version %d, want 2", h.Version)
	}
	ph := &ProxyHeader{}
	if a, ok := h.SourceAddr.(*net.TCPAddr); ok {
		ap := a.AddrPort()
		ph.Src = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a, ok := h.DestinationAddr.(*net.TCPAddr); ok {
		ap := a.AddrPort()
		ph.Dst = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	tlvs, err := h.TLVs()
	if err != nil {
		return ph, fmt.Errorf("PROXY header TLVs: %w", err)
	}
	for _, tlv := range tlvs {
		if tlv.Type == PP2TypeClawnetPeer {
			ph.Peer, ph.HasPeer = string(tlv.Value), true
		}
	}
	return ph, nil
}

// Conns returns a copy of the server's log.
func (s *Server) Conns() []ServerConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ServerConn(nil), s.conns...)
}

// Mark returns the log's length now, for WaitFor and NothingBefore.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// WaitFor waits up to timeout for a connection (read to its line) that
// pred accepts and returns its index and entry; it fails t if none comes.
func (s *Server) WaitFor(t testing.TB, timeout time.Duration, what string, pred func(ServerConn) bool) (int, ServerConn) {
	t.Helper()
	idx := -1
	var got ServerConn
	Poll(timeout, 5*time.Millisecond, func() bool {
		for i, c := range s.Conns() {
			if c.Done && pred(c) {
				idx, got = i, c
				return true
			}
		}
		return false
	})
	if idx < 0 {
		t.Fatalf("server %s never saw %s within %v; it saw:\n%s", s.Addr, what, timeout, dumpConns(s.Conns()))
	}
	return idx, got
}

// NothingBefore is the far-side barrier of a socket the test owns: after
// the refused attempts the test made an allowed connection (the sentinel,
// which pred recognises). A listener accepts in arrival order, so once the
// sentinel is in the log everything that arrived before it is too: every
// connection logged since mark and before the sentinel is one that must
// not have arrived, and fails t, described as what.
func (s *Server) NothingBefore(t testing.TB, mark int, timeout time.Duration, sentinel string, pred func(ServerConn) bool, what string) {
	t.Helper()
	idx := -1
	Poll(timeout, 5*time.Millisecond, func() bool {
		for i, c := range s.Conns() {
			if i >= mark && c.Done && pred(c) {
				idx = i
				return true
			}
		}
		return false
	})
	all := s.Conns()
	if idx < 0 {
		t.Fatalf("server %s never saw %s within %v; it saw:\n%s", s.Addr, sentinel, timeout, dumpConns(all))
	}
	if bad := all[mark:idx]; len(bad) > 0 {
		t.Errorf("server %s accepted %s (before %s):\n%s", s.Addr, what, sentinel, dumpConns(bad))
	}
}

func dumpConns(cs []ServerConn) string {
	if len(cs) == 0 {
		return "  (nothing)"
	}
	var b strings.Builder
	for i, c := range cs {
		fmt.Fprintf(&b, "  %d: %s\n", i, c)
	}
	return strings.TrimRight(b.String(), "\n")
}

// Exchange writes line and a newline on c and reads the Server's answer
// line; it returns what came back, without the newline.
func Exchange(c net.Conn, line string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return got, fmt.Errorf("read answer: %w", err)
	}
	return strings.TrimSuffix(got, "\n"), nil
}

// TCPPsh is the TCP push flag (the others are in packet.go).
const TCPPsh = 0x08

// TCPSegment builds an IPv4 or IPv6 packet (by src's family) holding one
// TCP segment with the given flags, sequence and acknowledgment numbers
// and payload, no options.
func TCPSegment(src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], payload)
	return ipPacket(src.Addr(), dst.Addr(), ProtoTCP, tcp, 16)
}

// TCPSeqAck returns the sequence and acknowledgment numbers of the TCP
// segment in the IP packet b.
func TCPSeqAck(b []byte) (seq, ack uint32, ok bool) {
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4 && b[9] == ProtoTCP:
		l4 = b[int(b[0]&0xf)*4:]
	case len(b) >= 40 && b[0]>>4 == 6 && b[6] == ProtoTCP:
		l4 = b[40:]
	}
	if len(l4) < 20 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:]), true
}
