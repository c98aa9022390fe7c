package dnsproxy

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

func TestDNSTypesRefused(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	types := []uint16{dns.TypeTXT, dns.TypeNULL, dns.TypeANY, dns.TypeAXFR, dns.TypeIXFR, dns.TypeMX, dns.TypeSRV,
		dns.TypePTR, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeCNAME, dns.TypeNS, dns.TypeSOA, dns.TypeCAA, dns.TypeDNSKEY,
		dns.TypeOPT, dns.TypeTSIG, 0, 65535}
	for _, qt := range types {
		t.Run(qtypeString(qt), func(t *testing.T) {
			res := r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", qt, 1232), false)
			m := dnstest.MustUnpack(t, res.Reply)
			if m.Rcode != dns.RcodeRefused {
				t.Errorf("rcode = %s, want REFUSED", rcodeString(m.Rcode))
			}
			if e := dnstest.EDE(m); e == nil || e.InfoCode != dns.ExtendedErrorCodeNotSupported {
				t.Errorf("extended error = %v, want Not Supported", e)
			}
			if res.Verdict != policy.Deny || res.Rule != ruleUnsupported || len(m.Answer) != 0 {
				t.Errorf("result = %v by %s, answer %v", res.Verdict, res.Rule, m.Answer)
			}
		})
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("refused types reached the upstream: %v", q)
	}
}

// malformedCase is a query the answer path drops or answers locally with
// rcode.
type malformedCase struct {
	name  string
	raw   []byte
	rcode int // -1: dropped
}

// malformedCases are broken or unserved queries, one per check.
func malformedCases() []malformedCase {
	opt := func(m *dns.Msg) *dns.OPT {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(1232)
		return o
	}
	badLabel := dnstest.RawQuery(func(m *dns.Msg) { m.Question[0].Name = "a\\032b.example.com." })
	return []malformedCase{
		{"empty", nil, -1},
		{"short", []byte{0x42, 0x42, 0, 0, 0, 1}, -1},
		{"response", dnstest.RawQuery(func(m *dns.Msg) { m.Response = true }), -1},
		{"garbage", append([]byte{0x42, 0x42, 0x01, 0x00, 0x00, 0x01}, []byte("not a dns message at all")...), dns.RcodeFormatError},
		{"too large", append(dnstest.Query("api.example.com.", dns.TypeA, 0), make([]byte, MaxQuery)...), dns.RcodeFormatError},
		{"opcode notify", dnstest.RawQuery(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), dns.RcodeNotImplemented},
		{"opcode update", dnstest.RawQuery(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), dns.RcodeNotImplemented},
		{"no question", dnstest.RawQuery(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError},
		{"two questions", dnstest.RawQuery(func(m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "secret.example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		}), dns.RcodeFormatError},
		{"notify with many questions", dnstest.RawQuery(func(m *dns.Msg) {
			m.Opcode = dns.OpcodeNotify
			for i := 0; i < 40; i++ {
				m.Question = append(m.Question, dns.Question{Name: "a-rather-long-label-to-fill-the-reply.example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			}
		}), dns.RcodeNotImplemented},
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
}

func TestDNSMalformed(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := malformedCases()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := r.Answer(context.Background(), pol, tt.raw, false)
			if tt.rcode < 0 {
				if res.Reply != nil {
					t.Fatalf("reply = %x, want the query dropped", res.Reply)
				}
				return
			}
			m := dnstest.MustUnpack(t, res.Reply)
			if m.Id != 0x4242 || !m.Response {
				t.Errorf("reply header = %+v, want a response with id 0x4242", m.MsgHdr)
			}
			if m.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", rcodeString(m.Rcode), rcodeString(tt.rcode))
			}
			rule := ruleMalformed
			if tt.rcode == dns.RcodeNotImplemented || tt.rcode == dns.RcodeRefused {
				rule = ruleUnsupported
			}
			if len(m.Answer) != 0 || res.Verdict != policy.Deny || res.Rule != rule || res.Reason == "" {
				t.Errorf("result = %v by %s (%s), answer %v", res.Verdict, res.Rule, res.Reason, m.Answer)
			}
			if len(res.Reply) > dns.MinMsgSize {
				t.Errorf("reply is %d bytes, over the %d a UDP client without EDNS takes", len(res.Reply), dns.MinMsgSize)
			}
			if tt.name == "two questions" && res.Reason != "2 questions, want 1" {
				t.Errorf("reason = %q, want the question count", res.Reason)
			}
		})
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("malformed queries reached the upstream: %v", q)
	}
}
