package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/clawnet/clawnet/policy"
)

// dnsTestPolicy allows example.com and every name under it, except
// secret.example.com. Nothing else.
const dnsTestPolicy = `version: v1
name: dnstest
egress:
  - domains: [example.com, "*.example.com"]
    ports: [443]
deny:
  - domains: [secret.example.com]
`

func testDecider(t testing.TB, src string) policy.Decider {
	t.Helper()
	f, err := policy.Parse("dnstest.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// upstreamQuery is one query a fake upstream received.
type upstreamQuery struct {
	Name, Type, Net string
}

// fakeUpstream is an authoritative-looking DNS server on 127.0.0.1 (UDP and
// TCP on one port) that logs every query it receives, so tests assert on
// what reached the far side.
type fakeUpstream struct {
	t    testing.TB
	addr netip.AddrPort
	udp  *dns.Server
	tcp  *dns.Server

	mu      sync.Mutex
	log     []upstreamQuery // guarded by mu
	records map[string][]dns.RR
	// hook, when set, answers instead of the records (a hostile server).
	// It returns whether it wrote an answer.
	hook func(w dns.ResponseWriter, q *dns.Msg) bool
}

func newFakeUpstream(t testing.TB, zone ...string) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{t: t, records: map[string][]dns.RR{}}
	for _, s := range zone {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("zone record %q: %v", s, err)
		}
		k := strings.ToLower(rr.Header().Name)
		f.records[k] = append(f.records[k], rr)
	}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String())
		if err == nil {
			f.addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatalf("no port free for udp and tcp: %v", err)
		}
	}
	h := dns.HandlerFunc(f.serve)
	f.udp = &dns.Server{PacketConn: pc, Handler: h}
	f.tcp = &dns.Server{Listener: ln, Handler: h}
	var started sync.WaitGroup
	started.Add(2)
	f.udp.NotifyStartedFunc = started.Done
	f.tcp.NotifyStartedFunc = started.Done
	go f.udp.ActivateAndServe()
	go f.tcp.ActivateAndServe()
	started.Wait()
	t.Cleanup(func() {
		f.udp.Shutdown()
		f.tcp.Shutdown()
	})
	return f
}

func (f *fakeUpstream) serve(w dns.ResponseWriter, q *dns.Msg) {
	netw := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		netw = "tcp"
	}
	f.mu.Lock()
	for _, qs := range q.Question {
		f.log = append(f.log, upstreamQuery{Name: qs.Name, Type: qtypeString(qs.Qtype), Net: netw})
	}
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, q) {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	qs := q.Question[0]
	name := strings.ToLower(qs.Name)
	found := false
	// Follow CNAMEs within the zone, as a recursive resolver would, but
	// stop at a loop's second turn.
	seen := map[string]int{}
	for cur := name; seen[cur] < 2; {
		seen[cur]++
		rrs, ok := f.records[cur]
		if !ok {
			break
		}
		found = true
		next := ""
		for _, rr := range rrs {
			if rr.Header().Rrtype == qs.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if c, ok := rr.(*dns.CNAME); ok {
				m.Answer = append(m.Answer, dns.Copy(rr))
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	if netw == "udp" {
		size := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// queries returns what the upstream received so far.
func (f *fakeUpstream) queries() []upstreamQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]upstreamQuery(nil), f.log...)
}

func (f *fakeUpstream) setHook(h func(w dns.ResponseWriter, q *dns.Msg) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// newTestAnswerer answers through the given servers, with a short per-try
// timeout so that silent servers do not slow the tests.
func newTestAnswerer(t testing.TB, public []netip.Prefix, servers ...netip.AddrPort) *dnsAnswerer {
	t.Helper()
	up, err := newUpstream(Upstream{Servers: servers}, "", hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	up.tryTimeout = 300 * time.Millisecond
	return &dnsAnswerer{up: up, public: public}
}

// mkQuery builds a query as a stub resolver sends it. udpSize 0 means no
// EDNS.
func mkQuery(name string, qtype uint16, udpSize uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x4242
	if udpSize > 0 {
		m.SetEdns0(udpSize, false)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func mustUnpack(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	if b == nil {
		t.Fatal("no reply")
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

// edeOf returns the Extended DNS Error of m, if any.
func edeOf(m *dns.Msg) *dns.EDNS0_EDE {
	if o := m.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

func answerAddrs(m *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(v.A.To4())
			out = append(out, a)
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(v.AAAA)
			out = append(out, a)
		}
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for the audit log's writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// events parses the audit lines written so far.
func (s *syncBuffer) events(t testing.TB) []AuditEvent {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AuditEvent
	for _, line := range bytes.Split(bytes.TrimSpace(s.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// dnsTestGateway is a gateway with just what the DNS path needs: policies
// from a directory, an audit log in memory, and a resolver on the given
// upstream servers.
func dnsTestGateway(t testing.TB, pol string, public []netip.Prefix, servers ...netip.AddrPort) (*Gateway, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dnstest.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PolicyDir = dir
	cfg.TreatAsPublic = public
	cfg.DNS.Upstream = Upstream{Servers: servers}
	log := hclog.NewNullLogger()
	ps, err := newPolicyStore(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newResolver(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	r.up.(*upstream).tryTimeout = 300 * time.Millisecond
	audit := &syncBuffer{}
	g := &Gateway{cfg: cfg, log: log, audit: NewAudit(audit), policies: ps, dns: r,
		pool: newAddrPool(cfg.Network.IPv4, cfg.Network.IPv6), host: newHostAddrs(time.Minute)}
	g.gw4, g.gw6 = g.pool.gateway()
	t.Cleanup(r.close)
	t.Cleanup(g.host.close)
	return g, audit
}

// dnsTestAgent is an agent of g without a link: enough for the TCP path and
// the bindings. The UDP path needs a stack (see dnsTestStack).
func dnsTestAgent(t testing.TB, g *Gateway, name string) *Agent {
	t.Helper()
	a := &Agent{g: g, log: hclog.NewNullLogger(), name: name, policy: "dnstest",
		names: newNameTable(), flows: map[*flow]struct{}{}, denyLog: rate.NewLimiter(20, 50)}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		a.cancel()
		a.wg.Wait()
	})
	return a
}

// tcpExchange sends one length-prefixed query on conn and reads the reply.
func tcpExchange(t testing.TB, conn net.Conn, q []byte) *dns.Msg {
	t.Helper()
	co := &dns.Conn{Conn: conn}
	if _, err := co.Write(q); err != nil {
		t.Fatalf("write query: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := co.ReadMsg()
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return m
}

// serveDNSPipe serves a's DNS over one end of a pipe, as handleDNSTCP does
// for a netstack connection, and returns the other end.
func serveDNSPipe(t testing.TB, a *Agent) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	c := &dnsCall{a: a, st: a.g.dns.state(a), proto: dnsAuditProtoTCP,
		src: netip.MustParseAddrPort("100.96.0.2:40000"), dst: netip.MustParseAddrPort("100.96.0.1:53")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		c.serve(server, func() {})
	}()
	t.Cleanup(func() {
		client.Close()
		<-done
	})
	return client
}

// dnsLeakCheck fails t if goroutines started during it outlive it and all
// its cleanups. Call it first: its cleanup then runs last.
func dnsLeakCheck(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(before); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
	})
}
