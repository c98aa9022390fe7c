package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// TestDNSAgentTCP drives the agent's TCP path: bindings land in the asking
// agent's table only, audit lines are written, denied names never go
// upstream.
func TestDNSAgentTCP(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, audit := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "alice")
	b := dnsTestAgent(t, g, "bob")
	conn := serveDNSPipe(t, a)

	m := tcpExchange(t, conn, dnstest.Query("api.example.com.", dns.TypeA, 0))
	if len(dnstest.Addrs(m)) != 1 {
		t.Fatalf("answer = %v", m.Answer)
	}
	m = tcpExchange(t, conn, dnstest.Query("secret-data.attacker.example.", dns.TypeA, 0))
	if m.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode = %s, want NXDOMAIN", dnstest.Rcode(m.Rcode))
	}
	ip := netip.MustParseAddr("93.184.216.34")
	if !a.names.Has("api.example.com", ip) || !slices.Equal(a.names.Names(ip), []string{"api.example.com"}) {
		t.Fatalf("alice's table = %v, want api.example.com bound to %s", a.names.Names(ip), ip)
	}
	if b.names.Len() != 0 || b.names.Has("api.example.com", ip) {
		t.Fatal("alice's lookup bound a name for bob")
	}
	// The flow decision now allows alice, and only alice, to reach the
	// address on the rule's port.
	if d := a.decide(policy.ProtoTCP, netip.AddrPortFrom(ip, 443)); !d.Allowed() {
		t.Errorf("alice's flow to %s:443 = %v, want allowed by the bound name", ip, d)
	}
	if d := b.decide(policy.ProtoTCP, netip.AddrPortFrom(ip, 443)); d.Allowed() {
		t.Errorf("bob's flow to %s:443 = %v, want denied", ip, d)
	}
	if q := up.Queries(); len(q) != 1 || q[0].Name != "api.example.com." {
		t.Fatalf("upstream saw %v, want only api.example.com.", q)
	}
	evs := audit.events(t)
	if len(evs) != 2 {
		t.Fatalf("audit lines = %+v, want 2", evs)
	}
	want := []AuditEvent{
		{Kind: "dns", Agent: "alice", Policy: "dnstest", Proto: "tcp", QName: "api.example.com", QType: "A", RCode: "NOERROR", Verdict: "allow"},
		{Kind: "dns", Agent: "alice", Policy: "dnstest", Proto: "tcp", QName: "secret-data.attacker.example", QType: "A", RCode: "NXDOMAIN", Verdict: "deny", Rule: policy.RuleDefault},
	}
	for i, ev := range evs {
		w := want[i]
		if ev.Kind != w.Kind || ev.Agent != w.Agent || ev.Policy != w.Policy || ev.Proto != w.Proto || ev.QName != w.QName ||
			ev.QType != w.QType || ev.RCode != w.RCode || ev.Verdict != w.Verdict || ev.Rule == "" || ev.Reason == "" ||
			(w.Rule != "" && ev.Rule != w.Rule) || ev.Src == "" || ev.Dst == "" {
			t.Errorf("audit line %d = %+v, want %+v with rule, reason, src and dst", i, ev, w)
		}
	}
}

func TestDNSAgentTCPFraming(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, _ := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "alice")

	// Pipelined queries are answered in turn.
	conn := serveDNSPipe(t, a)
	co := &dns.Conn{Conn: conn}
	q1, q2 := dnstest.Query("api.example.com.", dns.TypeA, 0), dnstest.Query("secret.example.com.", dns.TypeA, 0)
	go func() { co.Write(q1); co.Write(q2) }()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []int{dns.RcodeSuccess, dns.RcodeNameError} {
		m, err := co.ReadMsg()
		if err != nil || m.Rcode != want {
			t.Fatalf("pipelined reply = %v, %v; want %s", m, err, dnstest.Rcode(want))
		}
	}

	// A length beyond any query closes the connection without reading it.
	conn = serveDNSPipe(t, a)
	go conn.Write([]byte{0xff, 0xff})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 10)); err == nil {
		t.Fatalf("read %d bytes after an oversized length, want the connection closed", n)
	}

	// A response sent as a query closes the connection unanswered.
	conn = serveDNSPipe(t, a)
	resp := dnstest.RawQuery(func(m *dns.Msg) { m.Response = true })
	go (&dns.Conn{Conn: conn}).Write(resp)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 10)); err == nil {
		t.Fatalf("read %d bytes after a response, want the connection closed", n)
	}
}

func TestDNSRateLimit(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, audit := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "alice")
	b := dnsTestAgent(t, g, "bob")
	conn := serveDNSPipe(t, a)
	refused := 0
	dnsBurst := g.cfg.DNS.Burst
	n := dnsBurst + 200
	for i := range n {
		// Denied names: cheap to answer, but they still count.
		m := tcpExchange(t, conn, dnstest.Query(fmt.Sprintf("x%d.attacker.example.", i), dns.TypeA, 1232))
		switch m.Rcode {
		case dns.RcodeRefused:
			refused++
		case dns.RcodeNameError:
		default:
			t.Fatalf("query %d: rcode %s", i, dnstest.Rcode(m.Rcode))
		}
	}
	// The burst, plus what the rate refilled while the loop ran.
	if refused < 100 || refused > n-dnsBurst {
		t.Fatalf("refused %d of %d, want about %d", refused, n, n-dnsBurst)
	}
	var limited, suppressed uint64
	for _, ev := range audit.events(t) {
		if ev.Rule == ruleDNSRateLimit {
			limited++
			suppressed += ev.Suppressed
			if ev.RCode != "REFUSED" || ev.Verdict != "deny" {
				t.Errorf("rate-limit audit line = %+v", ev)
			}
		}
	}
	if limited == 0 || limited > 5 {
		t.Errorf("rate-limited audit lines = %d, want a few (rate limited themselves)", limited)
	}
	// Another agent is not slowed by alice.
	m := tcpExchange(t, serveDNSPipe(t, b), dnstest.Query("api.example.com.", dns.TypeA, 0))
	if m.Rcode != dns.RcodeSuccess {
		t.Fatalf("bob's query = %s, want NOERROR", dnstest.Rcode(m.Rcode))
	}
}

func TestDNSInFlightBound(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t, dnstest.Zone...)
	release := make(chan struct{})
	var held sync.WaitGroup
	var seen atomic.Int32
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		if seen.Add(1) <= dnsInFlight {
			held.Done()
		}
		<-release
		return false
	})
	g, _ := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	withTryTimeout(t, g.dns, g.cfg, 10*time.Second)
	a := dnsTestAgent(t, g, "alice")
	st := g.dns.state(a)
	call := &dnsCall{a: a, st: st, proto: dnsAuditProtoUDP}

	held.Add(dnsInFlight)
	var wg sync.WaitGroup
	for range dnsInFlight {
		q, res, done := call.start(dnstest.Query("api.example.com.", dns.TypeA, 0))
		if done {
			t.Fatalf("query refused below the bound: %+v", res)
		}
		wg.Add(1)
		go func() { defer wg.Done(); call.resolve(q) }()
	}
	held.Wait() // every one is at the upstream
	_, res, done := call.start(dnstest.Query("api.example.com.", dns.TypeA, 0))
	if !done || res.RCode != "REFUSED" || res.Rule != ruleDNSRateLimit {
		t.Fatalf("query over the in-flight bound = %+v, want REFUSED", res)
	}
	close(release)
	wg.Wait()
	if n := st.inflight.Load(); n != 0 || len(g.dns.slots) != 0 {
		t.Fatalf("in flight after all answered: agent %d, all %d; want 0", n, len(g.dns.slots))
	}
	if q, _, done := call.start(dnstest.Query("api.example.com.", dns.TypeA, 0)); done {
		t.Fatal("query refused after the slots were released")
	} else {
		call.resolve(q)
	}
}

func TestDNSAgentStateForgotten(t *testing.T) {
	g, _ := dnsTestGateway(t, dnstest.Policy, nil, netip.MustParseAddrPort("127.0.0.1:1"))
	a := dnsTestAgent(t, g, "alice")
	g.dns.state(a)
	a.cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := g.dns.agents.Load(a); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a detached agent's dns state was kept")
		}
		time.Sleep(time.Millisecond)
	}
}
