package probe

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	tests := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := Percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
		}
	}
}

// serveUntilCleanup runs serve until the test ends; it must then return
// nil, and within 5 s.
func serveUntilCleanup(t *testing.T, name string, serve func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s() = %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not return after its context ended", name)
		}
	})
}

// loopbackServer starts serve on a loopback port and returns its address;
// the server is stopped, and must have returned, when the test ends.
func loopbackServer(t *testing.T, name string, serve func(context.Context, net.Listener) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, name, func(ctx context.Context) error { return serve(ctx, ln) })
	return ln.Addr().String()
}

// server is loopbackServer for the echo server, Serve.
func server(t *testing.T) string {
	t.Helper()
	return loopbackServer(t, "Serve", Serve)
}

func TestRR(t *testing.T) {
	addr := server(t)
	r, err := RR(context.Background(), addr, time.Second)
	if err != nil {
		t.Fatalf("RR() error = %v", err)
	}
	if r.Ops < 10 || r.PerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Errors != 0 {
		t.Errorf("RR() = %+v, want ops >= 10, rate > 0, 0 < p50 <= p99, no errors", r)
	}
}

func TestRRDetectsAWrongReply(t *testing.T) {
	// A server that answers with bytes of its own must not be counted.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, MsgSize)
		c.Read(buf)
		c.Write(make([]byte, MsgSize))
	}()
	if r, err := RR(context.Background(), ln.Addr().String(), time.Second); err == nil {
		t.Errorf("RR() against a non-echoing server = %+v, nil; want an error", r)
	}
}

func TestPing(t *testing.T) {
	if err := Ping(context.Background(), server(t)); err != nil {
		t.Errorf("Ping(echo server) = %v, want nil", err)
	}
	// A forwarder that accepts and closes, its server not up yet, is not
	// an answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if err := Ping(context.Background(), ln.Addr().String()); err == nil {
		t.Error("Ping(accept and close) = nil, want an error")
	}
}

func TestConnects(t *testing.T) {
	addr := server(t)
	r, err := Connects(context.Background(), addr, 4, time.Second)
	if err != nil {
		t.Fatalf("Connects() error = %v", err)
	}
	if r.Ops < 10 || r.PerSec <= 0 || r.Errors != 0 {
		t.Errorf("Connects() = %+v, want ops >= 10 and no errors", r)
	}
}

func TestConnectsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r, err := Connects(context.Background(), addr, 2, 100*time.Millisecond)
	if err == nil || r.Errors == 0 || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Connects() to a closed port = %+v, %v; want an error naming the refusal", r, err)
	}
}

func TestHold(t *testing.T) {
	addr := server(t)
	release := make(chan struct{})
	var (
		mu    sync.Mutex
		ready *Result
	)
	done := make(chan error, 1)
	go func() {
		_, err := Hold(context.Background(), addr, 50, 8, func(r Result) {
			mu.Lock()
			ready = &r
			mu.Unlock()
		}, release)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		r := ready
		mu.Unlock()
		if r != nil {
			if r.Ops != 50 {
				t.Errorf("Hold ready with %d connections, want 50", r.Ops)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Hold never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("Hold returned %v before release", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("Hold() = %v", err)
	}
}

// dnsServer starts a DNSServer answering name with answer on a loopback
// port and returns its address once it answers; it is stopped, and must
// have returned, when the test ends.
// udpTCPPair binds a UDP and a TCP socket on the same free loopback port.
// The UDP port the kernel picks may be taken for TCP by someone else: then
// another is tried.
func udpTCPPair(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var last error
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		last = err
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", last)
	return nil, nil
}

func dnsServer(t *testing.T, name, answer string) string {
	t.Helper()
	pc, ln := udpTCPPair(t)
	s, err := NewDNSServer(name, netip.MustParseAddr(answer), pc, ln)
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, "DNSServer.Serve", s.Serve)
	// The socket is bound already: a first query waits for the server.
	addr := pc.LocalAddr().String()
	if _, err := Resolve(context.Background(), addr, name); err != nil {
		t.Fatalf("DNS server at %s never answered: %v", addr, err)
	}
	return addr
}

func TestDNS(t *testing.T) {
	server := dnsServer(t, "bench.test", "198.18.0.2")
	r, err := DNS(context.Background(), server, "bench.test", 2, time.Second)
	if err != nil || r.Ops < 10 {
		t.Fatalf("DNS(bench.test) = %+v, %v; want >= 10 answered queries", r, err)
	}
	if r, err := DNS(context.Background(), server, "other.test", 1, 100*time.Millisecond); err == nil || !strings.Contains(r.FirstError, "NXDOMAIN") {
		t.Errorf("DNS(other.test) = %+v, %v; want NXDOMAIN errors and no answered query", r, err)
	}
}

func TestHTTPPost(t *testing.T) {
	addr := loopbackServer(t, "ServeHTTP", ServeHTTP)
	tests := []struct {
		size, inflight int
		d              time.Duration
	}{
		{1 << 20, 1, 200 * time.Millisecond},  // bodies larger than one write
		{1 << 10, 16, 200 * time.Millisecond}, // small requests, pipelined
		{bodyChunk + 1, 2, time.Millisecond},  // at least one request, whatever the duration
		{0, 1, 50 * time.Millisecond},         // no body at all
	}
	for _, tt := range tests {
		r, err := HTTPPost(context.Background(), HTTPArgs{Addr: addr, Host: "bench.test", Size: tt.size, InFlight: tt.inflight, Duration: tt.d})
		if err != nil {
			t.Errorf("HTTPPost(size %d, inflight %d) error = %v", tt.size, tt.inflight, err)
			continue
		}
		if r.Ops < 1 || r.Bytes != r.Ops*int64(tt.size) || r.PerSec <= 0 || (tt.size > 0 && r.Gbps <= 0) || r.Errors != 0 {
			t.Errorf("HTTPPost(size %d, inflight %d) = %+v, want requests, bytes = requests × size, rates > 0", tt.size, tt.inflight, r)
		}
	}
}

func TestHTTPPostRejectsAnError(t *testing.T) {
	// A server that refuses the request must fail the test, not count it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("HTTP/1.1 421 Misdirected Request\r\nContent-Length: 0\r\n\r\n"))
		io.Copy(io.Discard, c)
	}()
	r, err := HTTPPost(context.Background(), HTTPArgs{Addr: ln.Addr().String(), Host: "x", Size: 10, InFlight: 1, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "421") {
		t.Errorf("HTTPPost() against a 421 = %+v, %v; want an error naming the status", r, err)
	}
}

func TestResolve(t *testing.T) {
	server := dnsServer(t, "bench.test", "198.18.0.2")
	ip, err := Resolve(context.Background(), server, "Bench.Test")
	if err != nil || ip.String() != "198.18.0.2" {
		t.Errorf("Resolve(Bench.Test) = %v, %v; want 198.18.0.2", ip, err)
	}
	if ip, err := Resolve(context.Background(), server, "other.test"); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Errorf("Resolve(other.test) = %v, %v; want an NXDOMAIN error", ip, err)
	}
}
