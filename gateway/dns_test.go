package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy"
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
	refused, answered := 0, 0
	dnsBurst := g.cfg.DNS.Burst
	start := time.Now()
	// Ask until the limit bites and 200 more: how many are answered
	// depends on how fast this machine asks, the bound does not.
	for i := 0; refused < 200 && i < 20*dnsBurst; i++ {
		// Denied names: cheap to answer, but they still count.
		m := tcpExchange(t, conn, dnstest.Query(fmt.Sprintf("x%d.attacker.example.", i), dns.TypeA, 1232))
		switch m.Rcode {
		case dns.RcodeRefused:
			refused++
		case dns.RcodeNameError:
			answered++
		default:
			t.Fatalf("query %d: rcode %s", i, dnstest.Rcode(m.Rcode))
		}
	}
	took := time.Since(start)
	// The burst, plus what the rate refilled while the loop ran.
	most := dnsBurst + int(float64(g.cfg.DNS.QueriesPerSecond)*took.Seconds()) + 1
	if refused < 200 || answered < dnsBurst || answered > most {
		t.Fatalf("answered %d and refused %d in %v, want the burst (%d) and at most %d answered", answered, refused, took, dnsBurst, most)
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
	if limited == 0 || limited > uint64(5+took.Seconds()) {
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
	// A name not asked before: api.example.com is now answered from the
	// cache, without a slot.
	if q, res, done := call.start(dnstest.Query("example.com.", dns.TypeA, 0)); done {
		t.Fatalf("query refused after the slots were released: %+v", res)
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

// dnsAskUDP runs one query from a through the resolver as handleDNS does:
// decided and answered locally (the cache included) at once, or resolved
// upstream in a goroutine holding one of the agent's slots. It returns
// the reply once there is one.
func dnsAskUDP(t *testing.T, a *Agent, name string) *dns.Msg {
	t.Helper()
	c := &dnsCall{a: a, st: a.g.dns.state(a), proto: dnsAuditProtoUDP,
		src: netip.MustParseAddrPort("100.96.0.2:40000"), dst: netip.MustParseAddrPort("100.96.0.1:53")}
	q, res, done := c.start(dnstest.Query(name, dns.TypeA, 1232))
	if !done {
		ch := make(chan dnsproxy.Result, 1)
		if !a.goDNS(func() { ch <- c.resolve(q) }) {
			t.Fatal("agent detached")
		}
		res = <-ch
	}
	c.finish(res)
	return dnstest.MustUnpack(t, res.Reply)
}

// TestDNSFlappingUpstream: the upstream answers, drops every query for
// 3 s, then answers again, while an agent keeps asking (about 100 queries
// a second, each answered on its own, as UDP queries are). Its cached names
// keep being answered, the others fail at once, and its in-flight slots
// never run out; a second agent is answered from the same cache, bound in
// its own table.
func TestDNSFlappingUpstream(t *testing.T) {
	dnstest.LeakCheck(t)
	const (
		try    = 200 * time.Millisecond
		outage = 3 * time.Second
	)
	var drop atomic.Bool
	up := dnstest.NewServer(t, dnstest.Zone...)
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool { return drop.Load() })
	g, audit := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	g.cfg.DNS.ServfailTTL = Duration(time.Second)
	withTryTimeout(t, g.dns, g.cfg, try)
	alice := dnsTestAgent(t, g, "alice")
	bob := dnsTestAgent(t, g, "bob")
	ip := netip.MustParseAddr("93.184.216.34")

	if m := dnsAskUDP(t, alice, "api.example.com."); len(dnstest.Addrs(m)) != 1 {
		t.Fatalf("alice's first lookup = %v", m)
	}
	if m := dnsAskUDP(t, bob, "api.example.com."); len(dnstest.Addrs(m)) != 1 || len(up.Queries()) != 1 {
		t.Fatalf("bob's lookup = %v after %d upstream queries, want alice's answer from the cache", m, len(up.Queries()))
	}
	if !bob.names.Has("api.example.com", ip) {
		t.Fatal("an answer from the cache did not bind the name for bob")
	}
	evs := audit.events(t)
	if last := evs[len(evs)-1]; last.Agent != "bob" || last.Verdict != "allow" || !strings.Contains(last.Reason, "from the cache") {
		t.Errorf("bob's audit line = %+v, want an allow that says the cache answered", last)
	}

	st := alice.g.dns.state(alice)
	var (
		wg                    sync.WaitGroup
		refused, failed, hits atomic.Int32
		bad                   atomic.Int32
		most, mostAfterFirst  atomic.Int32
		start                 = time.Now()
		firstWaveEnd          = start.Add(2*try + 50*time.Millisecond)
		stopSampling          = make(chan struct{})
		sampled               = make(chan struct{})
		observe               = func(m *dns.Msg, cached bool) {
			switch {
			case m.Rcode == dns.RcodeRefused:
				refused.Add(1)
			case cached && len(m.Answer) == 1:
				hits.Add(1)
			case !cached && m.Rcode == dns.RcodeServerFailure:
				failed.Add(1)
			default:
				bad.Add(1)
			}
		}
	)
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
			}
			n := st.inflight.Load()
			if n > most.Load() {
				most.Store(n)
			}
			if time.Now().After(firstWaveEnd) && n > mostAfterFirst.Load() {
				mostAfterFirst.Store(n)
			}
		}
	}()
	drop.Store(true)
	asked := 0
	for i := 0; time.Since(start) < outage; i++ {
		asked++
		wg.Add(2)
		go func() { defer wg.Done(); observe(dnsAskUDP(t, alice, "api.example.com."), true) }()
		go func() { defer wg.Done(); observe(dnsAskUDP(t, alice, fmt.Sprintf("n%d.example.com.", i)), false) }()
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	close(stopSampling)
	<-sampled
	drop.Store(false)
	t.Logf("outage of %v: %d cached answers, %d SERVFAIL, %d REFUSED; in flight at most %d, %d after the first try",
		outage, hits.Load(), failed.Load(), refused.Load(), most.Load(), mostAfterFirst.Load())
	// A loaded machine asks fewer times in the outage; every time asked
	// must be answered from the cache.
	if refused.Load() != 0 || bad.Load() != 0 || int(hits.Load()) != asked || asked < 10 {
		t.Errorf("during the outage: %d cached answers of %d asked, %d refused, %d unexpected; want every cached name answered and nothing refused",
			hits.Load(), asked, refused.Load(), bad.Load())
	}
	if most.Load() >= dnsInFlight/2 || mostAfterFirst.Load() > 5 {
		t.Errorf("alice's lookups in flight: at most %d, %d once the first try failed; want far below %d, and about one",
			most.Load(), mostAfterFirst.Load(), dnsInFlight)
	}
	if n := st.inflight.Load(); n != 0 || len(g.dns.slots) != 0 {
		t.Fatalf("in flight after the outage: agent %d, all %d; want 0", n, len(g.dns.slots))
	}
	// The upstream is back: a new name resolves within a try or two.
	deadline := time.Now().Add(2*try + 200*time.Millisecond)
	for i := 0; ; i++ {
		if m := dnsAskUDP(t, alice, fmt.Sprintf("back%d.example.com.", i)); m.Rcode == dns.RcodeNameError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("upstream back, a new name still fails")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDNSConfigKeys(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("version: v1\ndns:\n  try_timeout: 500ms\n  cache_size: 0\n  servfail_ttl: 0s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.TryTimeout.D() != 500*time.Millisecond || c.DNS.CacheSize != 0 || c.DNS.ServfailTTL != 0 {
		t.Errorf("dns = %+v, want try_timeout 500ms, no cache, no servfail cache", c.DNS)
	}
	for _, tt := range []struct{ yaml, want string }{
		{"try_timeout: 0s", "dns.try_timeout must be positive and at most 5s"},
		{"try_timeout: 6s", "dns.try_timeout must be positive and at most 5s"},
		{"cache_size: -1", "dns.cache_size must be between 0 and"},
		{"servfail_ttl: 10m", "dns.servfail_ttl must be between 0s and 5m0s"},
	} {
		_, err := ParseConfig("c.yaml", []byte("version: v1\ndns:\n  "+tt.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseConfig(dns: %s) = %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

// TestDNSFloodDropped: UDP queries past an agent's limit get a few REFUSED
// answers a second and are otherwise dropped unanswered and unparsed, so a
// flood costs the gateway little; over TCP (TestDNSRateLimit) each is
// refused.
func TestDNSFloodDropped(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, _ := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "flooder")
	c := &dnsCall{a: a, st: g.dns.state(a), proto: dnsAuditProtoUDP,
		src: netip.MustParseAddrPort("100.96.0.2:40000"), dst: netip.MustParseAddrPort("100.96.0.1:53")}
	answered, refused, dropped := 0, 0, 0
	start := time.Now()
	const n = 3000
	for i := range n {
		_, res, done := c.start(dnstest.Query(fmt.Sprintf("x%d.attacker.example.", i), dns.TypeA, 1232))
		if !done {
			t.Fatalf("query %d for a denied name went upstream", i)
		}
		switch {
		case res.Reply == nil:
			dropped++
		case dnstest.MustUnpack(t, res.Reply).Rcode == dns.RcodeRefused:
			refused++
		default:
			answered++
		}
	}
	secs := time.Since(start).Seconds()
	if most := dnsRefusalsPerSec + int(dnsRefusalsPerSec*secs) + 1; refused > most {
		t.Errorf("%d REFUSED answers in %.2fs, want at most %d", refused, secs, most)
	}
	if most := g.cfg.DNS.Burst + int(float64(g.cfg.DNS.QueriesPerSecond)*secs) + 1; answered > most {
		t.Errorf("%d answered in %.2fs, want at most %d", answered, secs, most)
	}
	if dropped < n-answered-refused || dropped == 0 {
		t.Errorf("answered %d, refused %d, dropped %d of %d", answered, refused, dropped, n)
	}
}
