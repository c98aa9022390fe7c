package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// The test zone has a chain exactly as long as the answer path follows.
func TestDNSZoneChain(t *testing.T) {
	if dnstest.MaxChain != dnsMaxChain {
		t.Fatalf("dnstest.MaxChain = %d, want dnsMaxChain (%d)", dnstest.MaxChain, dnsMaxChain)
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
			res := r.answer(context.Background(), pol, dnstest.Query(tt.name, tt.qtype, 1232), false)
			m := dnstest.MustUnpack(t, res.reply)
			if m.Rcode != dns.RcodeNameError {
				t.Errorf("rcode = %s, want NXDOMAIN", rcodeString(m.Rcode))
			}
			e := dnstest.EDE(m)
			if e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != dnsBlockedText {
				t.Errorf("extended error = %v, want Blocked %q", e, dnsBlockedText)
			}
			if len(m.Answer) != 0 {
				t.Errorf("answer = %v, want none", m.Answer)
			}
			if res.verdict != policy.Deny || !strings.HasPrefix(res.rule, tt.rule) || res.reason == "" {
				t.Errorf("result = %v %q %q, want deny by %s...", res.verdict, res.rule, res.reason, tt.rule)
			}
			if len(res.binds) != 0 {
				t.Errorf("binds = %v, want none", res.binds)
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
	res := r.answer(context.Background(), pol, q, false)
	m := dnstest.MustUnpack(t, res.reply)
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
	if res.qname != "api.example.com" || res.qtype != "A" || res.rcode != "NOERROR" || res.verdict != policy.Allow ||
		!strings.HasPrefix(res.rule, "dnstest.yaml:") {
		t.Errorf("result = %+v", res)
	}
	if !slices.Equal(res.binds, []netip.Addr{netip.MustParseAddr("93.184.216.34")}) || res.ttl != 300*time.Second {
		t.Errorf("binds = %v for %v, want the address for 300s", res.binds, res.ttl)
	}

	res = r.answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeAAAA, 1232), false)
	m = dnstest.MustUnpack(t, res.reply)
	if got := dnstest.Addrs(m); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("2606:2800:220:1::1")}) {
		t.Fatalf("AAAA answer = %v", m.Answer)
	}
	if o := m.IsEdns0(); o == nil || o.UDPSize() != dnsOwnUDPSize || o.Do() {
		t.Errorf("reply OPT = %v, want size %d and no DO", o, dnsOwnUDPSize)
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
	res := r.answer(context.Background(), dnstest.Decider(t, dnstest.Policy), b, false)
	dnstest.MustUnpack(t, res.reply)
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

func TestDNSTypesRefused(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	types := []uint16{dns.TypeTXT, dns.TypeNULL, dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMX, dns.TypeSRV,
		dns.TypePTR, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeCNAME, dns.TypeNS, dns.TypeSOA, dns.TypeCAA, dns.TypeDNSKEY,
		dns.TypeOPT, dns.TypeTSIG, 0, 65535}
	for _, qt := range types {
		t.Run(qtypeString(qt), func(t *testing.T) {
			res := r.answer(context.Background(), pol, dnstest.Query("api.example.com.", qt, 1232), false)
			m := dnstest.MustUnpack(t, res.reply)
			if m.Rcode != dns.RcodeRefused {
				t.Errorf("rcode = %s, want REFUSED", rcodeString(m.Rcode))
			}
			if e := dnstest.EDE(m); e == nil || e.InfoCode != dns.ExtendedErrorCodeNotSupported {
				t.Errorf("extended error = %v, want Not Supported", e)
			}
			if res.verdict != policy.Deny || res.rule != ruleDNSUnsupp || len(m.Answer) != 0 {
				t.Errorf("result = %v by %s, answer %v", res.verdict, res.rule, m.Answer)
			}
		})
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("refused types reached the upstream: %v", q)
	}
}

func TestDNSMalformed(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	opt := func(m *dns.Msg) *dns.OPT {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(1232)
		return o
	}
	badLabel := dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "a\\032b.example.com." })
	tests := []struct {
		name  string
		raw   []byte
		rcode int // -1: dropped
	}{
		{"empty", nil, -1},
		{"short", []byte{0x42, 0x42, 0, 0, 0, 1}, -1},
		{"response", dnstest.RawQuery(func(m *dns.Msg) { m.Response = true }), -1},
		{"garbage", append([]byte{0x42, 0x42, 0x01, 0x00, 0x00, 0x01}, []byte("not a dns message at all")...), dns.RcodeFormatError},
		{"too large", append(dnstest.Query("api.example.com.", dns.TypeA, 0), make([]byte, dnsMaxQuery)...), dns.RcodeFormatError},
		{"opcode notify", dnstest.RawQuery(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), dns.RcodeNotImplemented},
		{"opcode update", dnstest.RawQuery(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), dns.RcodeNotImplemented},
		{"no question", dnstest.RawQuery(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError},
		{"two questions", dnstest.RawQuery(func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "secret.example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}), dns.RcodeFormatError},
		{"answer in query", dnstest.RawQuery(func(m *dns.Msg) {
			rr, _ := dns.NewRR("api.example.com. 60 IN A 1.2.3.4")
			m.Answer = append(m.Answer, rr)
		}), dns.RcodeFormatError},
		{"two OPT", dnstest.RawQuery(func(m *dns.Msg) { m.Extra = append(m.Extra, opt(m), opt(m)) }), dns.RcodeFormatError},
		{"TXT in additional", dnstest.RawQuery(func(m *dns.Msg) {
			rr, _ := dns.NewRR("x.example.com. 60 IN TXT \"data\"")
			m.Extra = append(m.Extra, rr)
		}), dns.RcodeFormatError},
		{"EDNS version 1", dnstest.RawQuery(func(m *dns.Msg) { o := opt(m); o.SetVersion(1); m.Extra = append(m.Extra, o) }), dns.RcodeBadVers},
		{"class CH", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS; m.Question[0].Qtype = dns.TypeTXT }), dns.RcodeRefused},
		{"class ANY", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY }), dns.RcodeRefused},
		{"root", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "." }), dns.RcodeRefused},
		{"bad label", badLabel, dns.RcodeFormatError},
		{"dot in label", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "a\\.b.example.com." }), dns.RcodeFormatError},
		{"binary label", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "\\000\\255.example.com." }), dns.RcodeFormatError},
		{"ip literal", dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "10.0.0.1." }), dns.RcodeFormatError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.answer(context.Background(), pol, tt.raw, false)
			if tt.rcode < 0 {
				if res.reply != nil {
					t.Fatalf("reply = %x, want the query dropped", res.reply)
				}
				return
			}
			m := dnstest.MustUnpack(t, res.reply)
			if m.Id != 0x4242 || !m.Response {
				t.Errorf("reply header = %+v, want a response with id 0x4242", m.MsgHdr)
			}
			if m.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", rcodeString(m.Rcode), rcodeString(tt.rcode))
			}
			rule := ruleDNSMalformed
			if tt.rcode == dns.RcodeNotImplemented || tt.rcode == dns.RcodeRefused {
				rule = ruleDNSUnsupp
			}
			if len(m.Answer) != 0 || res.verdict != policy.Deny || res.rule != rule || res.reason == "" {
				t.Errorf("result = %v by %s (%s), answer %v", res.verdict, res.rule, res.reason, m.Answer)
			}
		})
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("malformed queries reached the upstream: %v", q)
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
			res := r.answer(context.Background(), pol, dnstest.Query(tt.name, dns.TypeA, 1232), false)
			m := dnstest.MustUnpack(t, res.reply)
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
			if len(res.binds) != len(tt.want) || res.qname != strings.TrimSuffix(tt.name, ".") {
				t.Errorf("binds %v to %q, want %v to the queried name", res.binds, res.qname, tt.want)
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
			q, res, done := parseQuery(dnstest.Query(tt.name, tt.qtype, 1232), false)
			if done {
				t.Fatalf("parse: %+v", res)
			}
			if tt.host != "" {
				host := netip.MustParseAddr(tt.host)
				q.isHost = func(a netip.Addr) bool { return a == host }
			}
			if res, done := q.decide(pol); done {
				t.Fatalf("decide: %+v", res)
			}
			res = r.resolve(context.Background(), q)
			m := dnstest.MustUnpack(t, res.reply)
			var got []string
			for _, a := range dnstest.Addrs(m) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.want) || m.Rcode != dns.RcodeSuccess {
				t.Fatalf("answer = %s %v, want NOERROR %v", rcodeString(m.Rcode), got, tt.want)
			}
			if len(res.binds) != len(tt.want) {
				t.Errorf("binds = %v, want %v", res.binds, tt.want)
			}
			if tt.denied {
				if e := dnstest.EDE(m); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
					t.Errorf("extended error = %v, want Blocked", e)
				}
				if res.verdict != policy.Deny || res.rule != ruleDNSRebinding || !strings.Contains(res.reason, "removed") {
					t.Errorf("result = %v by %s (%s), want deny by %s", res.verdict, res.rule, res.reason, ruleDNSRebinding)
				}
			} else if res.verdict != policy.Allow {
				t.Errorf("verdict = %v, want allow", res.verdict)
			}
		})
	}
}

func TestDNSTTLClamp(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	for name, want := range map[string]time.Duration{"zero.example.com.": bindMinTTL, "week.example.com.": bindMaxTTL} {
		res := r.answer(context.Background(), pol, dnstest.Query(name, dns.TypeA, 0), false)
		m := dnstest.MustUnpack(t, res.reply)
		if len(m.Answer) != 1 || time.Duration(m.Answer[0].Header().Ttl)*time.Second != want || res.ttl != want {
			t.Errorf("%s: answer %v, bind TTL %v, want TTL %v", name, m.Answer, res.ttl, want)
		}
	}
}

func TestDNSReplySize(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)

	// No EDNS: 512 bytes at most, TC set, the agent retries over TCP.
	res := r.answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 0), false)
	if len(res.reply) > 512 {
		t.Fatalf("reply without EDNS is %d bytes, want at most 512", len(res.reply))
	}
	m := dnstest.MustUnpack(t, res.reply)
	if !m.Truncated || len(m.Answer) >= maxBindingsPerName {
		t.Fatalf("TC = %v with %d records, want a truncated answer", m.Truncated, len(m.Answer))
	}
	// EDNS 4096: all of it, capped at maxBindingsPerName addresses.
	res = r.answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 4096), false)
	m = dnstest.MustUnpack(t, res.reply)
	if m.Truncated || len(m.Answer) != maxBindingsPerName || len(res.binds) != maxBindingsPerName {
		t.Fatalf("TC = %v with %d records, %d binds; want %d untruncated", m.Truncated, len(m.Answer), len(res.binds), maxBindingsPerName)
	}
	// An advertised size below 512 counts as 512.
	res = r.answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 100), false)
	if m := dnstest.MustUnpack(t, res.reply); len(res.reply) > 512 || len(res.reply) < 400 || !m.Truncated {
		t.Fatalf("reply to EDNS size 100 is %d bytes (TC %v), want up to 512 and TC", len(res.reply), m.Truncated)
	}
	// TCP: no limit but the message's.
	res = r.answer(context.Background(), pol, dnstest.Query("many.example.com.", dns.TypeAAAA, 0), true)
	if m := dnstest.MustUnpack(t, res.reply); m.Truncated || len(m.Answer) != maxBindingsPerName {
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

func TestDNSUpstreamHostile(t *testing.T) {
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := []struct {
		name string
		hook func(w dns.ResponseWriter, q *dns.Msg) bool
	}{
		{"garbage", func(w dns.ResponseWriter, q *dns.Msg) bool {
			w.Write([]byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad})
			return true
		}},
		{"wrong id", func(w dns.ResponseWriter, q *dns.Msg) bool {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Id++
			rr, _ := dns.NewRR("api.example.com. 60 IN A 6.6.6.6")
			m.Answer = append(m.Answer, rr)
			w.WriteMsg(m)
			return true
		}},
		{"other question", func(w dns.ResponseWriter, q *dns.Msg) bool {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Question[0].Name = "evil.example.net."
			rr, _ := dns.NewRR("evil.example.net. 60 IN A 6.6.6.6")
			m.Answer = append(m.Answer, rr)
			w.WriteMsg(m)
			return true
		}},
		{"servfail", func(w dns.ResponseWriter, q *dns.Msg) bool {
			m := new(dns.Msg)
			m.SetRcode(q, dns.RcodeServerFailure)
			w.WriteMsg(m)
			return true
		}},
		{"silent", func(w dns.ResponseWriter, q *dns.Msg) bool { return true }},
		{"truncated over tcp too", func(w dns.ResponseWriter, q *dns.Msg) bool {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Truncated = true
			w.WriteMsg(m)
			return true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := dnstest.NewServer(t, dnstest.Zone...)
			up.SetHook(tt.hook)
			r := newTestAnswerer(t, nil, up.Addr)
			res := r.answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
			m := dnstest.MustUnpack(t, res.reply)
			if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 || len(res.binds) != 0 {
				t.Fatalf("reply = %s %v (binds %v), want SERVFAIL with nothing", rcodeString(m.Rcode), m.Answer, res.binds)
			}
			if res.err == "" {
				t.Error("result carries no error for the audit line")
			}
		})
	}

	// Records for names other than the chain's: never taken.
	up := dnstest.NewServer(t)
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, s := range []string{
			"evil.example.net. 60 IN A 6.6.6.6",
			"api.example.com. 60 IN AAAA 2606:2800::6",
			"api.example.com. 60 CH A 6.6.6.7",
		} {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
		return true
	})
	r := newTestAnswerer(t, nil, up.Addr)
	res := r.answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
	if m := dnstest.MustUnpack(t, res.reply); len(m.Answer) != 0 || len(res.binds) != 0 {
		t.Fatalf("answer = %v, binds %v; want records of other names and types ignored", m.Answer, res.binds)
	}
}

func TestDNSUpstreamFailover(t *testing.T) {
	bad := dnstest.NewServer(t)
	bad.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeRefused)
		w.WriteMsg(m)
		return true
	})
	good := dnstest.NewServer(t, dnstest.Zone...)
	// A port nobody listens on first: the walk goes past it.
	dead := netip.MustParseAddrPort("127.0.0.1:1")
	r := newTestAnswerer(t, nil, dead, bad.Addr, good.Addr)
	res := r.answer(context.Background(), dnstest.Decider(t, dnstest.Policy), dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	m := dnstest.MustUnpack(t, res.reply)
	if len(dnstest.Addrs(m)) != 1 {
		t.Fatalf("answer = %s %v (%s), want the third server's", rcodeString(m.Rcode), m.Answer, res.err)
	}
	if len(bad.Queries()) != 1 || len(good.Queries()) != 1 {
		t.Fatalf("servers asked: bad %v, good %v; want each once", bad.Queries(), good.Queries())
	}

	// NXDOMAIN is an answer: no next server.
	res = r.answer(context.Background(), dnstest.Decider(t, dnstest.Policy), dnstest.Query("nothere.example.com.", dns.TypeA, 0), false)
	if m := dnstest.MustUnpack(t, res.reply); m.Rcode != dns.RcodeNameError || res.verdict != policy.Allow {
		t.Fatalf("reply = %s (%v), want NXDOMAIN from upstream", rcodeString(m.Rcode), res.verdict)
	}
}

func TestDNSUpstreamCancel(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t)
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool { return true }) // never answers
	r := newTestAnswerer(t, nil, up.Addr)
	r.up.(*upstream).tryTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	res := r.answer(ctx, dnstest.Decider(t, dnstest.Policy), dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answer took %v after cancel, want it to end with the context", d)
	}
	if m := dnstest.MustUnpack(t, res.reply); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", rcodeString(m.Rcode))
	}
}

func TestDNSPolicyMissing(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	res := r.answer(context.Background(), nil, dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	if m := dnstest.MustUnpack(t, res.reply); m.Rcode != dns.RcodeRefused || res.rule != rulePolicyGone {
		t.Fatalf("reply = %s by %s, want REFUSED by %s", rcodeString(m.Rcode), res.rule, rulePolicyGone)
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("upstream saw %v without a policy", q)
	}
}

func TestDNSResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("# host\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up, err := newUpstream(Upstream{System: true}, path, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("[fe80::1%eth0]:53")}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers = %v, want %v", got, want)
	}
	// A change is picked up once the check interval has passed.
	if err := os.WriteFile(path, []byte("nameserver 127.0.0.54\nnameserver 127.0.0.55\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up.checked = time.Time{}
	want = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.54:53"), netip.MustParseAddrPort("127.0.0.55:53")}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers after a change = %v, want %v", got, want)
	}
	// A file that loses its servers keeps the last good ones.
	if err := os.WriteFile(path, []byte("# nothing here yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up.checked = time.Time{}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers after an empty file = %v, want the last good %v", got, want)
	}
	// No file at all: allowed names fail (SERVFAIL), nothing is asked.
	up, err = newUpstream(Upstream{System: true}, filepath.Join(dir, "missing"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.exchange(context.Background(), new(dns.Msg).SetQuestion("a.example.com.", dns.TypeA)); err != errNoUpstream {
		t.Fatalf("exchange without servers = %v, want %v", err, errNoUpstream)
	}
}

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
		t.Fatalf("rcode = %s, want NXDOMAIN", rcodeString(m.Rcode))
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
			t.Fatalf("pipelined reply = %v, %v; want %s", m, err, rcodeString(want))
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
			t.Fatalf("query %d: rcode %s", i, rcodeString(m.Rcode))
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
		t.Fatalf("bob's query = %s, want NOERROR", rcodeString(m.Rcode))
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
	g.dns.up.(*upstream).tryTimeout = 10 * time.Second
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
	if !done || res.rcode != "REFUSED" || res.rule != ruleDNSRateLimit {
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
