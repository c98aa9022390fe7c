package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/sniff"
)

// TestReadHelloCut: a request head or ClientHello the client ends early
// (half-close) is an error, never bytes to pass on as an unknown protocol.
func TestReadHelloCut(t *testing.T) {
	tests := []struct {
		name, sent string
		want       error
	}{
		{"head without its blank line", "GET /x HTTP/1.1\r\nHost: forbidden.example\r\n", errHelloCut},
		{"request line only", "GET /x HTTP/1.1\r\n", errHelloCut},
		{"tls record header", "\x16\x03\x01\x02\x00\x01", errHelloCut},
		{"complete head", "GET /x HTTP/1.1\r\nHost: ok.example\r\n\r\n", nil},
		{"unknown protocol", "SSH-2.0-x\r\n", nil},
		{"words without a version", "by name", nil},
		{"request line without its end", "GET http://forbidden.example/ HTTP/1.1", errHelloCut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				client.Write([]byte(tt.sent))
				client.Close()
			}()
			defer server.Close()
			_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, sniff.MaxBytes)
			n, _, err := readHello(server, buf)
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Fatalf("readHello(%q) = %d, %v; want %v", tt.sent, n, err, tt.want)
			}
		})
	}
}

// The flow tests run the real data path without root: the agent's real
// netstack on a channel TUN, a second gVisor stack as the agent's kernel,
// and the gateway's dial replaced by one that connects every decided
// address to a server of the test's on loopback.

const flowTestPolicy = `version: v1
name: dnstest
egress:
  - cidrs: [198.18.0.0/15]
    ports: [80, 7]
  - cidrs: [198.18.0.0/15]
    ports: [7]
    protocol: udp
  - domains: [allowed.test]
    ports: [8080]
`

var (
	flowTestServer = netip.MustParseAddr("198.18.0.2")
	flowTestNamed  = netip.MustParseAddr("198.18.1.9") // bound to allowed.test and other.test
)

// upstreamLog records what the test's upstream servers received.
type upstreamLog struct {
	mu    sync.Mutex
	dials []string // "network dst" of every dial the gateway made
	data  strings.Builder
}

func (l *upstreamLog) dialed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.dials...)
}

func (l *upstreamLog) received() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.data.String()
}

// flowTest is one agent on a real netstack with its upstreams on loopback.
type flowTest struct {
	a     *Agent
	cs    *stack.Stack
	audit *syncBuffer
	log   *upstreamLog
}

// newFlowTest starts an agent whose every TCP dial reaches serve (run per
// connection) and every UDP dial a loopback echo. dialErr, when set, fails
// every dial.
func newFlowTest(t *testing.T, idle time.Duration, serve func(net.Conn), dialErr error) *flowTest {
	t.Helper()
	g, audit := dnsTestGateway(t, flowTestPolicy, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}, netip.MustParseAddrPort("127.0.0.1:1"))
	if idle > 0 {
		g.cfg.Timeouts.TCPIdle = Duration(idle)
	}
	log := &upstreamLog{}
	tcpAddr := startTCPServer(t, log, serve)
	udpAddr := startUDPEcho(t, log)
	g.dialFunc = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
		log.mu.Lock()
		log.dials = append(log.dials, network+" "+dst.String())
		log.mu.Unlock()
		if dialErr != nil {
			return nil, dialErr
		}
		var d net.Dialer
		if network == "udp" {
			return d.DialContext(ctx, network, udpAddr)
		}
		return d.DialContext(ctx, network, tcpAddr)
	}
	a := dnsTestAgent(t, g, "flowtest")
	a.names.Bind("allowed.test", flowTestNamed, time.Minute)
	a.names.Bind("other.test", flowTestNamed, time.Minute)
	cs := dnsTestLink(t, a)
	return &flowTest{a: a, cs: cs, audit: audit, log: log}
}

func startTCPServer(t *testing.T, log *upstreamLog, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveAll(t, ln, func(c net.Conn) { serve(&loggedConn{Conn: c, log: log}) })
	return ln.Addr().String()
}

// serveAll accepts on ln until the test ends and runs serve on each
// connection, closing it after; the cleanup waits for every one.
func serveAll(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

// loggedConn records every byte the upstream reads.
type loggedConn struct {
	net.Conn
	log *upstreamLog
}

func (c *loggedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.log.mu.Lock()
	c.log.data.Write(b[:n])
	c.log.mu.Unlock()
	return n, err
}

func (c *loggedConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func startUDPEcho(t *testing.T, log *upstreamLog) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			log.mu.Lock()
			log.data.Write(buf[:n])
			log.mu.Unlock()
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// echo answers every byte it reads and half-closes after EOF.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*loggedConn).CloseWrite()
}

func (ft *flowTest) dial(t *testing.T, dst netip.AddrPort) (*gonet.TCPConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, ft.cs, fullAddr(dst), ipv4.ProtocolNumber)
}

// waitEvent waits for the audit line of event ev to dst.
func (ft *flowTest) waitEvent(t *testing.T, ev Event, dst netip.AddrPort) AuditEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range ft.audit.events(t) {
			if e.Event == ev && e.Dst == dst.String() {
				return e
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q audit line for %s; log: %+v", ev, dst, ft.audit.events(t))
	return AuditEvent{}
}

func TestFlowTCPAllowedEchoesAndCounts(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, echo, nil)
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	if _, err := c.Write([]byte("hello gateway")); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "hello gateway" {
		t.Fatalf("echo = %q, %v; want the bytes back and EOF", got, err)
	}
	if d := ft.log.dialed(); len(d) != 1 || d[0] != "tcp 198.18.0.2:7" {
		t.Fatalf("dials = %v, want exactly the decided address", d)
	}
	open := ft.waitEvent(t, EventOpen, dst)
	cl := ft.waitEvent(t, EventClose, dst)
	if open.Verdict != "allow" || !strings.Contains(open.Rule, "egress[0]") {
		t.Errorf("open line = %+v", open)
	}
	if *cl.BytesUp != 13 || *cl.BytesDown != 13 || cl.DurationMS == nil {
		t.Errorf("close line counts up %d down %d, want 13 and 13", *cl.BytesUp, *cl.BytesDown)
	}
}

func TestFlowTCPDeniedNeverDials(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, echo, nil)
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(flowTestServer, 81),   // no rule
		netip.MustParseAddrPort("100.96.0.1:80"), // the gateway's own address
		netip.AddrPortFrom(flowTestNamed, 9999),  // a name bound, no rule for the port
		netip.MustParseAddrPort("100.96.0.3:7"),  // another agent
	} {
		start := time.Now()
		c, err := ft.dial(t, dst)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded, want a reset", dst)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("dial %s took %v: a deny must be a reset at once", dst, time.Since(start))
		}
		if e := ft.waitEvent(t, EventDeny, dst); e.Verdict != "deny" || e.Rule == "" || e.Reason == "" {
			t.Errorf("deny line for %s = %+v", dst, e)
		}
	}
	if d := ft.log.dialed(); len(d) != 0 {
		t.Fatalf("denied flows were dialled: %v", d)
	}
}

func TestFlowTCPDialFailureIsReset(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, echo, errors.New("connection refused (test)"))
	dst := netip.AddrPortFrom(flowTestServer, 80)
	if c, err := ft.dial(t, dst); err == nil {
		c.Close()
		t.Fatal("dial succeeded although the upstream refused")
	}
	e := ft.waitEvent(t, EventFail, dst)
	if e.Verdict != "allow" || !strings.Contains(e.Error, "refused (test)") {
		t.Errorf("fail line = %+v", e)
	}
}

// TestFlowTCPHalfCloseUpstreamFirst: the server says its piece and shuts
// its write side; the agent still sends after that, and the server reads it.
func TestFlowTCPHalfCloseUpstreamFirst(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, func(c net.Conn) {
		c.Write([]byte("banner\n"))
		c.(*loggedConn).CloseWrite()
		io.ReadAll(c)
	}, nil)
	dst := netip.AddrPortFrom(flowTestServer, 80)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "banner\n" {
		t.Fatalf("agent read %q, %v; want the banner then EOF", got, err)
	}
	if _, err := c.Write([]byte("after the server's EOF")); err != nil {
		t.Fatalf("write after the server half-closed: %v", err)
	}
	c.CloseWrite()
	ft.waitEvent(t, EventClose, dst)
	c.Close()
	if got := ft.log.received(); got != "after the server's EOF" {
		t.Fatalf("server received %q", got)
	}
}

func TestFlowTCPIdleTimeout(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, time.Second, echo, nil)
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Bytes every 100 ms keep it alive past the idle time.
	for i := 0; i < 15; i++ {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Silence closes it.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after silence returned data")
	}
	cl := ft.waitEvent(t, EventClose, dst)
	if *cl.DurationMS < 1400 {
		t.Errorf("flow closed after %d ms: a live flow was cut", *cl.DurationMS)
	}
}

func TestFlowUDPEcho(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, echo, nil)
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c, err := gonet.DialUDP(ft.cs, nil, ptrTo(fullAddr(dst)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("datagram")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "datagram" {
		t.Fatalf("udp echo = %q, %v", buf[:n], err)
	}
	if e := ft.waitEvent(t, EventOpen, dst); e.Proto != "udp" {
		t.Errorf("open line = %+v", e)
	}
	// UDP to a port no rule names is refused without a dial.
	deny := netip.AddrPortFrom(flowTestServer, 8)
	c2, err := gonet.DialUDP(ft.cs, nil, ptrTo(fullAddr(deny)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("refused"))
	ft.waitEvent(t, EventDeny, deny)
	if d := ft.log.dialed(); len(d) != 1 {
		t.Fatalf("dials = %v, want only the allowed flow", d)
	}
}

// httpServer answers every request it reads with 200 and keeps the
// connection for the next one.
func httpServer(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "\r\n" {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
	}
}

// TestFlowByNameChecksEveryRequest: on a flow allowed only by a name, each
// request on the connection must name an allowed server bound to the
// address; a later one that does not resets the flow before its bytes go
// up, with a deny line naming it.
func TestFlowByNameChecksEveryRequest(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, httpServer, nil)
	dst := netip.AddrPortFrom(flowTestNamed, 8080)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := "GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
	c.Write([]byte(first))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("first response = %q, %v", line, err)
	}
	c.Write([]byte("GET /two HTTP/1.1\r\nHost: other.test\r\n\r\n"))
	e := ft.waitEvent(t, EventDeny, dst)
	if e.Host != "other.test" || e.Request != "GET /two" {
		t.Errorf("deny line = %+v, want host other.test and request GET /two", e)
	}
	if got := ft.log.received(); got != first {
		t.Fatalf("upstream received %q, want only the first request", got)
	}
}

// TestFlowByNameWrongFirstHost: the first request's Host decides before the
// upstream is even dialled.
func TestFlowByNameWrongFirstHost(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, httpServer, nil)
	dst := netip.AddrPortFrom(flowTestNamed, 8080)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: unbound.test\r\n\r\n"))
	e := ft.waitEvent(t, EventDeny, dst)
	if e.Host != "unbound.test" || !strings.Contains(e.Reason, "not bound") {
		t.Errorf("deny line = %+v", e)
	}
	if d := ft.log.dialed(); len(d) != 0 {
		t.Fatalf("dials = %v: a refused first request must not reach upstream", d)
	}
}

// TestFlowByNameServerFirst: a client that says nothing is taken for a
// server-first protocol: the banner flows, and the client's first bytes
// are checked before they go up.
func TestFlowByNameServerFirst(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, func(c net.Conn) {
		c.Write([]byte("220 smtp ready\r\n"))
		io.Copy(io.Discard, c)
	}, nil)
	dst := netip.AddrPortFrom(flowTestNamed, 8080)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || line != "220 smtp ready\r\n" {
		t.Fatalf("banner = %q, %v", line, err)
	}
	c.Write([]byte("EHLO agent\r\n"))
	c.CloseWrite()
	ft.waitEvent(t, EventClose, dst)
	if got := ft.log.received(); got != "EHLO agent\r\n" {
		t.Fatalf("upstream received %q", got)
	}
}

// TestFlowByNameSNI: a ClientHello's SNI must be an allowed name bound to
// the address; one that is not never reaches upstream.
func TestFlowByNameSNI(t *testing.T) {
	dnstest.LeakCheck(t)
	for _, tt := range []struct {
		sni   string
		allow bool
	}{{"allowed.test", true}, {"unbound.test", false}} {
		t.Run(tt.sni, func(t *testing.T) {
			ft := newFlowTest(t, 0, func(c net.Conn) { io.Copy(io.Discard, c) }, nil)
			dst := netip.AddrPortFrom(flowTestNamed, 8080)
			c, err := ft.dial(t, dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			// The handshake cannot finish (nobody answers TLS); the
			// ClientHello is what the gateway checks.
			tls.Client(c, &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true}).Handshake()
			if !tt.allow {
				if e := ft.waitEvent(t, EventDeny, dst); e.SNI != tt.sni {
					t.Errorf("deny line = %+v, want sni %s", e, tt.sni)
				}
				if d := ft.log.dialed(); len(d) != 0 {
					t.Fatalf("dials = %v: a refused ClientHello must not reach upstream", d)
				}
				return
			}
			if e := ft.waitEvent(t, EventOpen, dst); e.SNI != tt.sni {
				t.Errorf("open line = %+v, want sni %s", e, tt.sni)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !strings.HasPrefix(ft.log.received(), "\x16\x03") && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if !strings.HasPrefix(ft.log.received(), "\x16\x03") {
				t.Fatalf("upstream received %q, want the ClientHello", ft.log.received())
			}
		})
	}
}

// TestFlowByNameHeldHeadTimesOut: a later request head left unfinished is
// reset after helloTimeout, like the first; none of it reaches upstream.
func TestFlowByNameHeldHeadTimesOut(t *testing.T) {
	dnstest.LeakCheck(t)
	old := helloTimeout
	helloTimeout = 300 * time.Millisecond
	t.Cleanup(func() { helloTimeout = old })
	ft := newFlowTest(t, 0, httpServer, nil)
	dst := netip.AddrPortFrom(flowTestNamed, 8080)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := "GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
	c.Write([]byte(first + "GET /two HTTP/1.1\r\nHost: allowed.test\r\n"))
	e := ft.waitEvent(t, EventDeny, dst)
	if !strings.Contains(e.Reason, "unfinished") {
		t.Errorf("deny line = %+v, want the unfinished head named", e)
	}
	if got := ft.log.received(); got != first {
		t.Fatalf("upstream received %q, want only the finished request", got)
	}
}

// TestFlowAuditMode: under enforcement: audit, a flow to a bound name the
// policy does not allow goes through and is logged would_deny; a raw
// address no rule names is still refused.
func TestFlowAuditMode(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, httpServer, nil)
	audited := strings.Replace(flowTestPolicy, "name: dnstest\n", "name: dnstest\nenforcement: audit\n", 1)
	if err := os.WriteFile(filepath.Join(ft.a.g.cfg.PolicyDir, "dnstest.yaml"), []byte(audited), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ft.a.g.ReloadPolicies(); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(flowTestNamed, 9999) // other.test is bound, no rule names the port
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatalf("audit mode refused a flow to a bound name: %v", err)
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("response = %q, %v", line, err)
	}
	c.Close()
	if e := ft.waitEvent(t, EventOpen, dst); e.Verdict != "would_deny" {
		t.Errorf("open line = %+v, want verdict would_deny", e)
	}
	raw := netip.AddrPortFrom(flowTestServer, 81)
	if c, err := ft.dial(t, raw); err == nil {
		c.Close()
		t.Fatal("audit mode let a raw address through")
	}
	if e := ft.waitEvent(t, EventDeny, raw); e.Verdict != "deny" {
		t.Errorf("raw address line = %+v, want deny", e)
	}
}
