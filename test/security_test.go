package integration_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// The tests in this file send what a hostile agent would to get around the
// gateway's checks (DESIGN.md invariants 4 and 5) and assert on what reached
// the far side: the canary's log, or a socket the test owns in the host
// namespace. None of them sleeps and then looks for nothing: after the
// refused attempt each sends an allowed sentinel and waits until the far side
// has it (harness.NeverSawBefore), so what the refused attempt let through
// has had its chance to arrive.

// Names of the canary's address for the HTTP tests: one the agent's policy
// allows and one it denies. Both are A records of in.Server4, and the agent
// only ever looks up the allowed one.
const (
	allowedName   = "allowed.canary.test"
	forbiddenName = "forbidden.canary.test"
	portHTTP      = 80
	portLenient   = 8081 // canarylog.ServiceHTTPLenient
	portH2C       = 8082 // canarylog.ServiceH2C
)

func hostsZone(in *harness.Internet) string {
	return fmt.Sprintf("allowed   IN A %s\nforbidden IN A %s\n", in.Server4, in.Server4)
}

func hostsPolicy(*harness.Internet) (string, string) {
	return "hosts", fmt.Sprintf(`version: v1
name: hosts
egress:
  - domains: [%s]
    ports: [%d, %d, %d]
deny:
  - domains: [%s]
`, allowedName, portHTTP, portLenient, portH2C, forbiddenName)
}

// newHostsEnv starts an internet whose zone has both names, a daemon with
// the hosts policy, and an agent that has looked up the allowed name, so the
// canary's address is bound to it for this agent alone.
func newHostsEnv(t *testing.T) (*env, *agent) {
	t.Helper()
	harness.RequireRoot(t)
	in := harness.NewInternetWith(t, harness.InternetOptions{ExtraZoneFor: hostsZone})
	name, body := hostsPolicy(in)
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in, Policies: map[string]string{name: body}})
	e := &env{t: t, in: in, d: d}
	a := e.attach("hosts", name)
	if got := a.lookup(t, "udp", ap(gatewayV4, 53), allowedName); len(got) != 1 || got[0] != in.Server4 {
		t.Fatalf("%s A = %v, want %v", allowedName, got, in.Server4)
	}
	return e, a
}

// uniq returns a marker no other request or datagram of the run carries.
func uniq() string { return hex.EncodeToString(harness.RandomBytes(6)) }

// forbiddenRequest matches any request the canary logged with the forbidden
// name as its Host (or :authority), in whatever case or form.
func forbiddenRequest(e canarylog.Entry) bool {
	return e.Event == canarylog.EventRequest && strings.Contains(strings.ToLower(e.Host), "forbidden")
}

// request matches the canary's line for one HTTP request, by its unique path.
func request(service, path, host string) func(canarylog.Entry) bool {
	return func(e canarylog.Entry) bool {
		return e.Service == service && e.Event == canarylog.EventRequest && e.Path == path && e.Host == host
	}
}

// sentinel sends an allowed HTTP/1.1 request (Host allowed.canary.test, a
// path never used before) on a new connection to dst, and returns a
// predicate for the canary's line for it: the barrier NeverSawBefore waits
// for.
func sentinel(t *testing.T, a *agent, service string, dst netip.AddrPort) func(canarylog.Entry) bool {
	t.Helper()
	path := "/sentinel-" + uniq()
	c := a.dial(t, "tcp", dst)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, allowedName)
	if got, err := io.ReadAll(c); err != nil || !strings.Contains(string(got), " 200 OK") {
		t.Errorf("sentinel request to %s: %q, %v", dst, got, err)
	}
	return request(service, path, allowedName)
}

// marks are where the canary's and the audit log stood before an attempt.
type marks struct{ canary, audit int }

func (e *env) mark(t *testing.T) marks { return marks{canary: e.in.Mark(), audit: len(e.d.Audit(t))} }

// neverForbidden is the far-side assertion of the HTTP tests: once a
// sentinel sent after the attempt reached the canary, no request for the
// forbidden name may be in its log since the mark.
func neverForbidden(t *testing.T, e *env, a *agent, m marks, service string, port uint16) {
	t.Helper()
	done := sentinel(t, a, service, ap(e.in.Server4, port))
	e.in.NeverSawBefore(t, m.canary, 10*time.Second, "the sentinel request", done, "a request for "+forbiddenName, forbiddenRequest)
}

// expectAuditDeny checks that the audit log has, after mark, a deny for dst
// whose line mentions mention (any field; "" for any deny).
func expectAuditDeny(t *testing.T, d *harness.Daemon, mark int, dst netip.AddrPort, mention string) {
	t.Helper()
	var since []harness.AuditEntry
	ok := harness.Poll(2*time.Second, 20*time.Millisecond, func() bool {
		since = nil
		if all := d.Audit(t); mark < len(all) {
			since = all[mark:]
		}
		for _, ae := range since {
			if ae.DstAddr() == dst && ae.Verdict == "deny" && strings.Contains(strings.ToLower(ae.Line), mention) {
				return true
			}
		}
		return false
	})
	if !ok {
		var b strings.Builder
		for _, ae := range since {
			b.WriteString("  " + ae.Line + "\n")
		}
		what := ""
		if mention != "" {
			what = " mentioning " + mention
		}
		t.Errorf("audit log has no deny for %s%s; since the attempt it has:\n%s", dst, what, b.String())
	}
}

// payloadWatch records the payload of every datagram a socket receives.
type payloadWatch struct {
	mu  sync.Mutex // guards got
	got [][]byte
}

func watchPayloads(t *testing.T, pc net.PacketConn) *payloadWatch {
	w := &payloadWatch{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			w.mu.Lock()
			w.got = append(w.got, append([]byte(nil), buf[:n]...))
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return w
}

func (w *payloadWatch) saw(p []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, g := range w.got {
		if bytes.Equal(g, p) {
			return true
		}
	}
	return false
}

// TestSecurityDirectedBroadcast checks invariant 5 for the subnets the
// gateway host is on: a UDP rule whose CIDR covers the test internet's /24
// (the host holds .1 of it) still never lets the agent reach the subnet's
// broadcast (.255) or network (.0) address. A broadcast the gateway sends
// from the host is delivered to the host's own sockets as well as to the
// link, so both a socket of the host namespace on *:port and the canary
// (whose UDP echo is bound to 0.0.0.0:7) must receive nothing, and the
// audit log must say deny.
//
// The limited broadcast (255.255.255.255) and multicast are left out on
// purpose: the host routes them out of its default interface, so on a
// gateway with the hole the test would send onto a real network.
func TestSecurityDirectedBroadcast(t *testing.T) {
	harness.RequireRoot(t)
	hostSock, err := net.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := uint16(hostSock.LocalAddr().(*net.UDPAddr).Port)
	hostSeen := watchPayloads(t, hostSock)

	in := harness.NewInternet(t)
	network := in.Net4.Masked().Addr()
	b4 := network.As4()
	b4[3] = 255
	broadcast := netip.AddrFrom4(b4)
	// A kernel that treats a subnet's lowest address as unicast sends a
	// datagram for it to whoever answers ARP; let the canary answer, so a
	// datagram let through shows up in its log.
	in.NS.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(network, 32).String(), "dev", in.PeerIf)

	pol := fmt.Sprintf(`version: v1
name: subnet-udp
egress:
  - cidrs: [%q]
    ports: [7, %d]
    protocol: udp
`, in.Net4, hostPort)
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in, Policies: map[string]string{"subnet-udp": pol}})
	e := &env{t: t, in: in, d: d}
	a := e.attach("bcast", "subnet-udp")

	for _, probe := range []struct {
		name string
		dst  netip.AddrPort
	}{
		{"broadcast to the host's socket", ap(broadcast, hostPort)},
		{"broadcast to the canary", ap(broadcast, 7)},
		{"network address to the canary", ap(network, 7)},
	} {
		t.Run(probe.name, func(t *testing.T) {
			m := e.mark(t)
			payload := []byte("must not arrive " + uniq())
			c := a.dial(t, "udp", probe.dst)
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("send to %s: %v", probe.dst, err)
			}
			// The barrier: the gateway has decided this flow, whatever it
			// decided, and then a datagram sent after it reached the canary.
			d.WaitAudit(t, 5*time.Second, "a decision on the flow to "+probe.dst.String(), func(ae harness.AuditEntry) bool {
				return ae.DstAddr() == probe.dst && ae.Proto == "udp"
			})
			marker := []byte("sentinel " + uniq())
			u := a.dial(t, "udp", ap(in.Server4, 7))
			if got, err := harness.UDPExchange(u, marker, 5*time.Second); err != nil || !bytes.Equal(got, marker) {
				t.Fatalf("sentinel datagram to %s: %q, %v", ap(in.Server4, 7), got, err)
			}
			in.NeverSawBefore(t, m.canary, 5*time.Second, "the sentinel datagram", func(ce canarylog.Entry) bool {
				return ce.Service == canarylog.ServiceUDPEcho && ce.SHA256 == canarylog.Digest(marker)
			}, "the datagram sent to "+probe.dst.String(), func(ce canarylog.Entry) bool {
				return ce.SHA256 == canarylog.Digest(payload) || ce.LocalAddr().Addr() == probe.dst.Addr()
			})
			if hostSeen.saw(payload) {
				t.Errorf("the host's own socket on *:%d received the datagram the agent sent to %s", hostPort, probe.dst)
			}
			expectAuditDeny(t, d, m.audit, probe.dst, "")
		})
	}
}

// TestSecurityHalfClosedHead checks that a request head the agent cuts
// short by shutting its write side is not passed on: a lenient server reads
// the Host from whatever arrived before the EOF, so forwarding such bytes as
// "not HTTP" forwards a name nobody checked.
func TestSecurityHalfClosedHead(t *testing.T) {
	e, a := newHostsEnv(t)
	dst := ap(e.in.Server4, portLenient)
	for _, tc := range []struct{ name, head string }{
		{"after the Host line", "GET /cut HTTP/1.1\r\nHost: " + forbiddenName + "\r\n"},
		{"inside the Host line", "GET /cut HTTP/1.1\r\nHost: " + forbiddenName},
		{"bare LF", "GET /cut HTTP/1.1\nHost: " + forbiddenName + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := e.mark(t)
			c := a.dial(t, "tcp", dst)
			got, err := harness.EchoHalfClose(c, []byte(tc.head), 5*time.Second)
			if bytes.Contains(got, []byte(forbiddenName)) {
				t.Errorf("the agent got an answer for %s: %q", forbiddenName, got)
			}
			t.Logf("the agent saw %q, %v", got, err)
			neverForbidden(t, e, a, m, canarylog.ServiceHTTPLenient, portLenient)
			expectAuditDeny(t, e.d, m.audit, dst, "")
		})
	}
}

// TestSecurityPipelinedHost checks invariant 4 for every request on a kept
// alive HTTP/1.1 connection, not only the first: a second request for the
// forbidden name, pipelined behind an allowed one or sent after its answer,
// never reaches the server, and the flow is cut.
func TestSecurityPipelinedHost(t *testing.T) {
	e, a := newHostsEnv(t)
	dst := ap(e.in.Server4, portHTTP)
	req := func(path, host, extra string) string {
		return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", path, host, extra)
	}

	t.Run("pipelined in one write", func(t *testing.T) {
		m := e.mark(t)
		first := "/first-" + uniq()
		c := a.dial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, req(first, allowedName, "")+req("/second", forbiddenName, "Connection: close\r\n")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if n := bytes.Count(got, []byte("HTTP/1.1 200 OK")); n > 1 {
			t.Errorf("the agent got %d answers on the connection, so the request for %s was answered too:\n%s", n, forbiddenName, got)
		}
		t.Logf("the agent saw %d bytes, %v", len(got), err)
		neverForbidden(t, e, a, m, canarylog.ServiceHTTP, portHTTP)
		// Whether the allowed first request still gets through when the
		// forbidden one came in the same segment is the gateway's choice.
		t.Logf("the allowed first request reached the canary: %v", e.in.Saw(request(canarylog.ServiceHTTP, first, allowedName)))
		expectAuditDeny(t, e.d, m.audit, dst, forbiddenName)
	})

	t.Run("after the first answer", func(t *testing.T) {
		m := e.mark(t)
		first := "/first-" + uniq()
		c := a.dial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, req(first, allowedName, "")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer to the allowed first request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("answer to the allowed first request: %s", resp.Status)
		}
		e.in.WaitFor(t, 5*time.Second, "the allowed first request", request(canarylog.ServiceHTTP, first, allowedName))

		// The connection is still open and idle: now the forbidden one.
		if _, err := io.WriteString(c, req("/second", forbiddenName, "Connection: close\r\n")); err != nil {
			t.Logf("write of the second request: %v", err)
		}
		if resp, err := http.ReadResponse(br, nil); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("the request for %s on the kept-alive connection was answered: %s %q", forbiddenName, resp.Status, body)
		} else {
			t.Logf("the second request ended the connection: %v", err)
		}
		neverForbidden(t, e, a, m, canarylog.ServiceHTTP, portHTTP)
		expectAuditDeny(t, e.d, m.audit, dst, forbiddenName)
	})
}

// h2Conn is a hand-driven HTTP/2 client connection: the test picks every
// frame, so requests for different authorities share one connection, which
// no pooling client would do.
type h2Conn struct {
	w    io.Writer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func newH2Conn(w io.Writer, r io.Reader) *h2Conn {
	h := &h2Conn{w: w, fr: http2.NewFramer(w, r)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	return h
}

// start sends the client connection preface and a SETTINGS frame.
func (h *h2Conn) start() error {
	if _, err := io.WriteString(h.w, http2.ClientPreface); err != nil {
		return fmt.Errorf("write preface: %w", err)
	}
	return h.fr.WriteSettings()
}

// get sends a GET for authority and path on stream.
func (h *h2Conn) get(stream uint32, authority, path string) error {
	h.hbuf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "GET"},
		{Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: authority},
		{Name: ":path", Value: path},
	} {
		if err := h.enc.WriteField(f); err != nil {
			return err
		}
	}
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true})
}

// response reads frames until the response on stream has ended and returns
// its :status, answering SETTINGS and PING as a client must.
func (h *h2Conn) response(stream uint32) (string, error) {
	status := ""
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return status, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := h.fr.WriteSettingsAck(); err != nil {
					return status, err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := h.fr.WritePing(true, f.Data); err != nil {
					return status, err
				}
			}
		case *http2.GoAwayFrame:
			return status, fmt.Errorf("GOAWAY %v", f.ErrCode)
		case *http2.RSTStreamFrame:
			if f.StreamID == stream {
				return status, fmt.Errorf("RST_STREAM %v", f.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == stream {
				status = f.PseudoValue("status")
				if f.StreamEnded() {
					return status, nil
				}
			}
		case *http2.DataFrame:
			if f.StreamID == stream && f.StreamEnded() {
				return status, nil
			}
		}
	}
}

// dialH2 opens a prior-knowledge HTTP/2 connection from the agent.
func dialH2(t *testing.T, a *agent, dst netip.AddrPort) *h2Conn {
	t.Helper()
	c := a.dial(t, "tcp", dst)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := newH2Conn(c, c)
	if err := h.start(); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSecurityHTTP2Authority checks invariant 4 for HTTP/2 in cleartext:
// every request's :authority must be the allowed name, whether the
// connection starts with the prior-knowledge preface or is upgraded from an
// HTTP/1.1 request that named the allowed host. How the gateway gets there
// (decoding HPACK, or refusing what it cannot check) is its choice; the test
// only asserts that the forbidden name never reached the server, and that an
// allowed request alone on its own connection still does.
func TestSecurityHTTP2Authority(t *testing.T) {
	e, a := newHostsEnv(t)
	dst := ap(e.in.Server4, portH2C)

	t.Run("prior knowledge, allowed alone", func(t *testing.T) {
		path := "/h2-alone-" + uniq()
		h := dialH2(t, a, dst)
		if err := h.get(1, allowedName, path); err != nil {
			t.Fatal(err)
		}
		if status, err := h.response(1); err != nil || status != "200" {
			t.Errorf("HTTP/2 request for %s: status %q, %v", allowedName, status, err)
		}
		ce := e.in.WaitFor(t, 5*time.Second, "the HTTP/2 request for "+allowedName, request(canarylog.ServiceH2C, path, allowedName))
		if ce.HTTPProto != "HTTP/2.0" {
			t.Errorf("canary served the request in %q, want HTTP/2.0", ce.HTTPProto)
		}
	})

	t.Run("prior knowledge, forbidden first", func(t *testing.T) {
		m := e.mark(t)
		h := dialH2(t, a, dst)
		if err := h.get(1, forbiddenName, "/h2-forbidden"); err != nil {
			t.Logf("send: %v", err)
		}
		if status, err := h.response(1); err == nil {
			t.Errorf("HTTP/2 request for %s was answered: status %s", forbiddenName, status)
		}
		neverForbidden(t, e, a, m, canarylog.ServiceH2C, portH2C)
		expectAuditDeny(t, e.d, m.audit, dst, "")
	})

	t.Run("prior knowledge, forbidden second", func(t *testing.T) {
		m := e.mark(t)
		h := dialH2(t, a, dst)
		if err := h.get(1, allowedName, "/h2-first-"+uniq()); err != nil {
			t.Fatal(err)
		}
		status, err := h.response(1)
		t.Logf("first request, for %s: status %q, %v", allowedName, status, err)
		if err == nil {
			if err := h.get(3, forbiddenName, "/h2-second"); err != nil {
				t.Logf("send: %v", err)
			}
			if status, err := h.response(3); err == nil {
				t.Errorf("HTTP/2 request for %s on stream 3 was answered: status %s", forbiddenName, status)
			}
		}
		neverForbidden(t, e, a, m, canarylog.ServiceH2C, portH2C)
		expectAuditDeny(t, e.d, m.audit, dst, "")
	})

	t.Run("upgrade, forbidden after", func(t *testing.T) {
		m := e.mark(t)
		c := a.dial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// HTTP2-Settings carries a SETTINGS payload: INITIAL_WINDOW_SIZE 65535.
		settings := base64.RawURLEncoding.EncodeToString([]byte{0, 4, 0, 0, 0xff, 0xff})
		fmt.Fprintf(c, "GET /upgrade-%s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: %s\r\n\r\n",
			uniq(), allowedName, settings)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		// A gateway that keeps the connection HTTP/1.1 (the server never
		// sees the Upgrade) has refused nothing, so it owes no deny line.
		refused := true
		switch {
		case err != nil:
			t.Logf("the upgrade request ended the connection: %v", err)
		case resp.StatusCode != http.StatusSwitchingProtocols:
			t.Logf("the upgrade was not taken: %s", resp.Status)
			refused = false
		default:
			// The upgrade request is stream 1; the client's preface
			// follows the 101 (RFC 7540 section 3.2).
			h := newH2Conn(c, br)
			if err := h.start(); err != nil {
				t.Logf("preface after 101: %v", err)
			}
			status, err := h.response(1)
			t.Logf("the upgraded request, for %s: status %q, %v", allowedName, status, err)
			if err := h.get(3, forbiddenName, "/upgraded-second"); err != nil {
				t.Logf("send: %v", err)
			}
			if status, err := h.response(3); err == nil {
				t.Errorf("HTTP/2 request for %s after the upgrade was answered: status %s", forbiddenName, status)
			}
		}
		neverForbidden(t, e, a, m, canarylog.ServiceH2C, portH2C)
		if refused {
			expectAuditDeny(t, e.d, m.audit, dst, "")
		}
	})
}

// TestSecurityHTTPKeepAliveLegit guards legitimate traffic against the fixes
// for the holes above: several requests for the allowed name on one kept
// alive connection, with bodies (by Content-Length and chunked) that hold
// the text of a request for the forbidden name, all reach the server intact.
// A body is not a request head.
func TestSecurityHTTPKeepAliveLegit(t *testing.T) {
	e, a := newHostsEnv(t)
	dst := ap(e.in.Server4, portHTTP)
	smuggled := "GET / HTTP/1.1\r\nHost: " + forbiddenName + "\r\n\r\n"

	type legit struct {
		method, path, raw string
		body              int64 // decoded body length the canary must count
	}
	requests := func() []legit {
		id := uniq()
		chunked := fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled, len("tail"), "tail")
		return []legit{
			{"GET", "/legit-get-" + id, fmt.Sprintf("GET /legit-get-%s HTTP/1.1\r\nHost: %s\r\n\r\n", id, allowedName), 0},
			{"POST", "/legit-length-" + id, fmt.Sprintf("POST /legit-length-%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s",
				id, allowedName, len(smuggled), smuggled), int64(len(smuggled))},
			{"POST", "/legit-chunked-" + id, fmt.Sprintf("POST /legit-chunked-%s HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n%s",
				id, allowedName, chunked), int64(len(smuggled) + len("tail"))},
		}
	}
	answers := func(t *testing.T, reqs []legit, br *bufio.Reader) {
		t.Helper()
		for _, r := range reqs {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer to %s %s: %v", r.method, r.path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), allowedName+r.path) {
				t.Errorf("answer to %s %s: %s %q", r.method, r.path, resp.Status, body)
			}
		}
	}
	arrived := func(t *testing.T, reqs []legit, sent []byte) {
		t.Helper()
		for _, r := range reqs {
			ce := e.in.WaitFor(t, 5*time.Second, r.method+" "+r.path, request(canarylog.ServiceHTTP, r.path, allowedName))
			if ce.Method != r.method || ce.Bytes != r.body || ce.Error != "" {
				t.Errorf("canary logged %s %s with a %d-byte body (error %q), want %s with %d", ce.Method, r.path, ce.Bytes, ce.Error, r.method, r.body)
			}
		}
		// The connection's close line: the server received exactly the
		// bytes the agent sent, unchanged.
		e.in.WaitFor(t, 5*time.Second, "the connection's close line with every byte sent", func(ce canarylog.Entry) bool {
			return ce.Service == canarylog.ServiceHTTP && ce.Event == canarylog.EventClose && ce.SHA256 == canarylog.Digest(sent)
		})
		if got := e.in.Matching(forbiddenRequest); len(got) > 0 {
			t.Errorf("the server read a request for %s out of a body:\n%s", forbiddenName, harness.DumpEntries(got))
		}
	}

	t.Run("one at a time", func(t *testing.T) {
		reqs := requests()
		c := a.dial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var sent []byte
		for i, r := range reqs {
			// Each request waits for the answer to the one before it.
			if _, err := io.WriteString(c, r.raw); err != nil {
				t.Fatalf("write %s %s: %v", r.method, r.path, err)
			}
			sent = append(sent, r.raw...)
			answers(t, reqs[i:i+1], br)
		}
		arrived(t, reqs, sent)
	})

	t.Run("pipelined", func(t *testing.T) {
		reqs := requests()
		c := a.dial(t, "tcp", dst)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var sent []byte
		for _, r := range reqs {
			sent = append(sent, r.raw...)
		}
		if _, err := c.Write(sent); err != nil {
			t.Fatal(err)
		}
		answers(t, reqs, bufio.NewReader(c))
		arrived(t, reqs, sent)
	})

	t.Run("HTTP/2 prior knowledge", func(t *testing.T) {
		h := dialH2(t, a, ap(e.in.Server4, portH2C))
		for i := range 3 {
			stream := uint32(2*i + 1)
			path := fmt.Sprintf("/legit-h2-%d-%s", stream, uniq())
			if err := h.get(stream, allowedName, path); err != nil {
				t.Fatal(err)
			}
			if status, err := h.response(stream); err != nil || status != "200" {
				t.Fatalf("HTTP/2 request %d for %s: status %q, %v", stream, allowedName, status, err)
			}
			e.in.WaitFor(t, 5*time.Second, "HTTP/2 request "+path, request(canarylog.ServiceH2C, path, allowedName))
		}
	})
}
