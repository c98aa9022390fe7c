package dnsproxy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// newTestAnswerer answers through the given servers, with a short per-try
// timeout so that silent servers do not slow the tests.
func newTestAnswerer(t testing.TB, public []netip.Prefix, servers ...netip.AddrPort) *Answerer {
	t.Helper()
	up, err := NewUpstream(UpstreamOptions{Servers: servers}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	up.tryTimeout = 300 * time.Millisecond
	return &Answerer{up: up, public: public}
}

// The test zone has a chain exactly as long as the answer path follows.
func TestDNSZoneChain(t *testing.T) {
	if dnstest.MaxChain != maxChain {
		t.Fatalf("dnstest.MaxChain = %d, want maxChain (%d)", dnstest.MaxChain, maxChain)
	}
}

func TestDNSDeniedNeverUpstream(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := []struct {
		name  string
		qtype uint16
		rule  string
	}{
		{"secret-data.attacker.example.", dns.TypeA, policy.RuleDefault},
		{"c2VjcmV0.exfil.attacker.example.", dns.TypeAAAA, policy.RuleDefault},
		{"secret-data.attacker.example.", dns.TypeTXT, policy.RuleDefault},
		{"secret.example.com.", dns.TypeA, "dnstest.yaml:"},
		{"SECRET.Example.COM.", dns.TypeA, "dnstest.yaml:"},
		{"secret.example.com.", dns.TypeAAAA, "dnstest.yaml:"},
		{"example.com.evil.example.", dns.TypeA, policy.RuleDefault},
		{"xn--bcher-kva.example.", dns.TypeA, policy.RuleDefault},
		{"1.0.0.127.in-addr.arpa.", dns.TypePTR, policy.RuleDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+qtypeString(tt.qtype), func(t *testing.T) {
			res := r.Answer(context.Background(), pol, dnstest.Query(tt.name, tt.qtype, 1232), false)
			m := dnstest.MustUnpack(t, res.Reply)
			if m.Rcode != dns.RcodeNameError {
				t.Errorf("rcode = %s, want NXDOMAIN", rcodeString(m.Rcode))
			}
			e := dnstest.EDE(m)
			if e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != blockedText {
				t.Errorf("extended error = %v, want Blocked %q", e, blockedText)
			}
			if len(m.Answer) != 0 {
				t.Errorf("answer = %v, want none", m.Answer)
			}
			if res.Verdict != policy.Deny || !strings.HasPrefix(res.Rule, tt.rule) || res.Reason == "" {
				t.Errorf("result = %v %q %q, want deny by %s...", res.Verdict, res.Rule, res.Reason, tt.rule)
			}
			if len(res.Binds) != 0 {
				t.Errorf("binds = %v, want none", res.Binds)
			}
		})
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("denied names reached the upstream: %v", q)
	}
}

func TestDNSAllowedResolved(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)

	q := dnstest.Query("API.Example.COM.", dns.TypeA, 0)
	res := r.Answer(context.Background(), pol, q, false)
	m := dnstest.MustUnpack(t, res.Reply)
	if m.Id != 0x4242 || !m.Response || m.Rcode != dns.RcodeSuccess || !m.RecursionAvailable {
		t.Fatalf("reply header = %+v, want id 0x4242, NOERROR, RA", m.MsgHdr)
	}
	if len(m.Question) != 1 || m.Question[0].Name != "API.Example.COM." || m.Question[0].Qtype != dns.TypeA {
		t.Fatalf("question = %v, want the agent's own", m.Question)
	}
	if m.IsEdns0() != nil {
		t.Error("reply carries OPT to a query without EDNS")
	}
	if got := dnstest.Addrs(m); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("93.184.216.34")}) {
		t.Fatalf("answer = %v", m.Answer)
	}
	if h := m.Answer[0].Header(); h.Name != "API.Example.COM." || h.Ttl != 300 {
		t.Errorf("answer header = %v, want the agent's name and TTL 300", h)
	}
	if res.QName != "api.example.com" || res.QType != "A" || res.RCode != "NOERROR" || res.Verdict != policy.Allow ||
		!strings.HasPrefix(res.Rule, "dnstest.yaml:") {
		t.Errorf("result = %+v", res)
	}
	if !slices.Equal(res.Binds, []netip.Addr{netip.MustParseAddr("93.184.216.34")}) || res.TTL != 300*time.Second {
		t.Errorf("binds = %v for %v, want the address for 300s", res.Binds, res.TTL)
	}

	res = r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeAAAA, 1232), false)
	m = dnstest.MustUnpack(t, res.Reply)
	if got := dnstest.Addrs(m); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("2606:2800:220:1::1")}) {
		t.Fatalf("AAAA answer = %v", m.Answer)
	}
	if o := m.IsEdns0(); o == nil || o.UDPSize() != ownUDPSize || o.Do() {
		t.Errorf("reply OPT = %v, want size %d and no DO", o, ownUDPSize)
	}
	// Only the normalized name and the type went upstream.
	want := []dnstest.Asked{{Name: "api.example.com.", Type: "A", Net: "udp"}, {Name: "api.example.com.", Type: "AAAA", Net: "udp"}}
	if got := up.Queries(); !slices.Equal(got, want) {
		t.Fatalf("upstream saw %v, want %v", got, want)
	}
}

func TestDNSUpstreamSeesNoAgentOptions(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	var got *dns.Msg
	var mu sync.Mutex
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		mu.Lock()
		got = q.Copy()
		mu.Unlock()
		return false
	})
	r := newTestAnswerer(t, nil, up.Addr)
	m := new(dns.Msg)
	m.SetQuestion("api.example.com.", dns.TypeA)
	m.SetEdns0(4096, true)
	o := m.IsEdns0()
	o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{10, 1, 2, 0}},
		&dns.EDNS0_LOCAL{Code: 65001, Data: []byte("exfiltrated-bytes")})
	m.CheckingDisabled = true
	b, _ := m.Pack()
	res := r.Answer(context.Background(), dnstest.Decider(t, dnstest.Policy), b, false)
	dnstest.MustUnpack(t, res.Reply)
	mu.Lock()
	defer mu.Unlock()
	if got == nil {
		t.Fatal("upstream saw no query")
	}
	if got.Id == m.Id {
		t.Error("upstream query reused the agent's ID")
	}
	if got.CheckingDisabled {
		t.Error("the agent's CD bit travelled upstream")
	}
	if o := got.IsEdns0(); o == nil || len(o.Option) != 0 || o.Do() || o.UDPSize() != upstreamUDPSize {
		t.Errorf("upstream OPT = %v, want ours: size %d, no options, no DO", o, upstreamUDPSize)
	}
}

func TestDNSCNAMEChain(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := []struct {
		name string
		want []string
		ttl  time.Duration
	}{
		{"chain.example.com.", []string{"151.101.1.1", "151.101.65.1"}, 120 * time.Second},
		{"loop.example.com.", nil, 0},
		{"long0.example.com.", nil, 0},
		{"eight0.example.com.", []string{"93.184.216.61"}, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.Answer(context.Background(), pol, dnstest.Query(tt.name, dns.TypeA, 1232), false)
			m := dnstest.MustUnpack(t, res.Reply)
			if m.Rcode != dns.RcodeSuccess {
				t.Fatalf("rcode = %s, want NOERROR", rcodeString(m.Rcode))
			}
			var got []string
			for _, rr := range m.Answer {
				a, ok := rr.(*dns.A)
				if !ok || rr.Header().Name != tt.name {
					t.Fatalf("answer record %v: want only A records of %s (the chain flattened)", rr, tt.name)
				}
				got = append(got, a.A.String())
				if time.Duration(rr.Header().Ttl)*time.Second != tt.ttl {
					t.Errorf("TTL = %d, want the chain's smallest, %v", rr.Header().Ttl, tt.ttl)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("addresses = %v, want %v", got, tt.want)
			}
			if len(res.Binds) != len(tt.want) || res.QName != strings.TrimSuffix(tt.name, ".") {
				t.Errorf("binds %v to %q, want %v to the queried name", res.Binds, res.QName, tt.want)
			}
		})
	}
	// The chain is followed inside the answer, never re-queried: the
	// upstream saw exactly the names the agent asked.
	for _, q := range up.Queries() {
		if !strings.HasSuffix(q.Name, ".example.com.") || strings.Contains(q.Name, "cdn") || strings.HasPrefix(q.Name, "loop2") {
			t.Errorf("upstream asked for %s, a name the agent did not ask", q.Name)
		}
	}
	if n := len(up.Queries()); n != len(tests) {
		t.Errorf("upstream saw %d queries, want %d", n, len(tests))
	}
}

func TestDNSRebinding(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	lab := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("169.254.0.0/16")}
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := []struct {
		name   string
		qtype  uint16
		public []netip.Prefix
		host   string
		want   []string
		denied bool
	}{
		{"rebind.example.com.", dns.TypeA, nil, "", []string{"93.184.216.40"}, false},
		{"rebind.example.com.", dns.TypeA, nil, "93.184.216.40", nil, true},
		{"rebind6.example.com.", dns.TypeAAAA, nil, "", nil, true},
		{"private.example.com.", dns.TypeA, nil, "", nil, true},
		{"lab.example.com.", dns.TypeA, nil, "", nil, true},
		{"lab.example.com.", dns.TypeA, lab, "", []string{"198.18.0.10"}, false},
		// Metadata stays out even inside treat_as_public.
		{"labmeta.example.com.", dns.TypeA, lab, "", []string{"198.18.0.11"}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/public=%v/host=%s", tt.name, tt.public, tt.host), func(t *testing.T) {
			r := newTestAnswerer(t, tt.public, up.Addr)
			q, res, done := ParseQuery(dnstest.Query(tt.name, tt.qtype, 1232), false)
			if done {
				t.Fatalf("parse: %+v", res)
			}
			if tt.host != "" {
				host := netip.MustParseAddr(tt.host)
				q.IsHost = func(a netip.Addr) bool { return a == host }
			}
			if res, done := q.Decide(pol); done {
				t.Fatalf("decide: %+v", res)
			}
			res = r.Resolve(context.Background(), q)
			m := dnstest.MustUnpack(t, res.Reply)
			var got []string
			for _, a := range dnstest.Addrs(m) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.want) || m.Rcode != dns.RcodeSuccess {
				t.Fatalf("answer = %s %v, want NOERROR %v", rcodeString(m.Rcode), got, tt.want)
			}
			if len(res.Binds) != len(tt.want) {
				t.Errorf("binds = %v, want %v", res.Binds, tt.want)
			}
			if tt.denied {
				if e := dnstest.EDE(m); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
					t.Errorf("extended error = %v, want Blocked", e)
				}
				if res.Verdict != policy.Deny || res.Rule != ruleRebinding || !strings.Contains(res.Reason, "removed") {
					t.Errorf("result = %v by %s (%s), want deny by %s", res.Verdict, res.Rule, res.Reason, ruleRebinding)
				}
			} else if res.Verdict != policy.Allow {
				t.Errorf("verdict = %v, want allow", res.Verdict)
			}
		})
	}
}

func TestDNSTTLClamp(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	for name, want := range map[string]time.Duration{"zero.example.com.": bindMinTTL, "week.example.com.": bindMaxTTL} {
		res := r.Answer(context.Background(), pol, dnstest.Query(name, dns.TypeA, 0), false)
		m := dnstest.MustUnpack(t, res.Reply)
		if len(m.Answer) != 1 || time.Duration(m.Answer[0].Header().Ttl)*time.Second != want || res.TTL != want {
			t.Errorf("%s: answer %v, bind TTL %v, want TTL %v", name, m.Answer, res.TTL, want)
		}
	}
}

func TestDNSReplySize(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)

	// No EDNS: 512 bytes at most, TC set, the agent retries over TCP.
	res := r.Answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 0), false)
	if len(res.Reply) > 512 {
		t.Fatalf("reply without EDNS is %d bytes, want at most 512", len(res.Reply))
	}
	m := dnstest.MustUnpack(t, res.Reply)
	if !m.Truncated || len(m.Answer) >= MaxBindingsPerName {
		t.Fatalf("TC = %v with %d records, want a truncated answer", m.Truncated, len(m.Answer))
	}
	// EDNS 4096: all of it, capped at MaxBindingsPerName addresses.
	res = r.Answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 4096), false)
	m = dnstest.MustUnpack(t, res.Reply)
	if m.Truncated || len(m.Answer) != MaxBindingsPerName || len(res.Binds) != MaxBindingsPerName {
		t.Fatalf("TC = %v with %d records, %d binds; want %d untruncated", m.Truncated, len(m.Answer), len(res.Binds), MaxBindingsPerName)
	}
	// An advertised size below 512 counts as 512.
	res = r.Answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 100), false)
	if m := dnstest.MustUnpack(t, res.Reply); len(res.Reply) > 512 || len(res.Reply) < 400 || !m.Truncated {
		t.Fatalf("reply to EDNS size 100 is %d bytes (TC %v), want up to 512 and TC", len(res.Reply), m.Truncated)
	}
	// TCP: no limit but the message's.
	res = r.Answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 0), true)
	if m := dnstest.MustUnpack(t, res.Reply); m.Truncated || len(m.Answer) != MaxBindingsPerName {
		t.Fatalf("TCP reply TC = %v with %d records", m.Truncated, len(m.Answer))
	}
	// The upstream was asked over UDP, found it truncated, asked again
	// over TCP: every answer was whole.
	var nets []string
	for _, q := range up.Queries() {
		nets = append(nets, q.Net)
	}
	if want := strings.Repeat("udp tcp ", 4); strings.Join(nets, " ")+" " != want {
		t.Errorf("upstream transports = %v, want a TCP retry after each truncated UDP answer", nets)
	}
}
