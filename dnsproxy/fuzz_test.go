package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// memExchanger is an upstream in memory: it records what it was asked and
// answers with fn.
type memExchanger struct {
	asked []*dns.Msg
	fn    func(q *dns.Msg) (*dns.Msg, error)
}

func (e *memExchanger) Exchange(_ context.Context, m *dns.Msg) (*dns.Msg, error) {
	e.asked = append(e.asked, m.Copy())
	r, err := e.fn(m)
	if err != nil {
		return nil, err
	}
	if err := checkAnswer(m, r); err != nil {
		return nil, err
	}
	return r, nil
}

func dnsFuzzSeeds(f *testing.F) {
	for _, q := range [][]byte{
		dnstest.Query("api.example.com.", dns.TypeA, 0),
		dnstest.Query("API.example.COM.", dns.TypeAAAA, 1232),
		dnstest.Query("secret.example.com.", dns.TypeA, 1232),
		dnstest.Query("x.attacker.example.", dns.TypeTXT, 4096),
		dnstest.Query("example.com.", dns.TypeHTTPS, 1232),
		dnstest.RawQuery(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }),
		dnstest.RawQuery(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }),
		{0x42, 0x42, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c},
		{},
	} {
		f.Add(q, false)
		f.Add(q, true)
	}
}

// FuzzDNSQuery feeds arbitrary bytes to the answer path as an agent's
// query, twice, through a cache. It must not panic; any reply must parse,
// carry the query's ID and fit the transport; nothing the policy does not
// allow is ever asked upstream, nor anything twice for one query; and an
// answer with addresses is given again from the cache.
func FuzzDNSQuery(f *testing.F) {
	dnsFuzzSeeds(f)
	pol := dnstest.Decider(f, dnstest.Policy)
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		up := &memExchanger{fn: func(q *dns.Msg) (*dns.Msg, error) {
			m := new(dns.Msg)
			m.SetReply(q)
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 93.184.216.34")
			m.Answer = append(m.Answer, rr)
			return m, nil
		}}
		r := NewAnswerer(up, AnswererOptions{CacheSize: 4, FailureTTL: time.Minute})
		var first Result
		for round := range 2 {
			before := len(up.asked)
			res := r.Answer(context.Background(), pol, raw, tcp)
			checkFuzzReply(t, raw, tcp, res)
			if n := len(up.asked) - before; n > 1 {
				t.Fatalf("one query asked upstream %d times", n)
			}
			if round == 0 {
				first = res
				continue
			}
			if len(first.Binds) > 0 && (len(up.asked) != 1 || !slices.Equal(res.Binds, first.Binds)) {
				t.Fatalf("second answer bound %v after %d lookups, want %v from the cache", res.Binds, len(up.asked), first.Binds)
			}
		}
		for _, q := range up.asked {
			name := q.Question[0].Name
			if d := pol.DecideQuery(name); !d.Allowed() {
				t.Fatalf("%s went upstream though the policy says %v", name, d)
			}
			if qt := q.Question[0].Qtype; qt != dns.TypeA && qt != dns.TypeAAAA {
				t.Fatalf("type %s went upstream", qtypeString(qt))
			}
		}
	})
}

// checkFuzzReply checks a reply to raw: it parses, answers raw's ID and
// fits the transport.
func checkFuzzReply(t *testing.T, raw []byte, tcp bool, res Result) {
	t.Helper()
	if res.Reply == nil {
		return
	}
	m := new(dns.Msg)
	if err := m.Unpack(res.Reply); err != nil {
		t.Fatalf("reply %x does not parse: %v", res.Reply, err)
	}
	if !m.Response || len(raw) < 12 || m.Id != binary.BigEndian.Uint16(raw) {
		t.Fatalf("reply header %+v does not answer query %x", m.MsgHdr, raw)
	}
	if !tcp && len(res.Reply) > maxUDPReply {
		t.Fatalf("UDP reply of %d bytes", len(res.Reply))
	}
	if !tcp && m.IsEdns0() == nil && len(res.Reply) > dns.MinMsgSize {
		t.Fatalf("UDP reply of %d bytes without EDNS", len(res.Reply))
	}
}

// upstreamAnswerSeeds are answers for api.example.com A: plain, a CNAME
// loop, special-purpose addresses, extreme TTLs, and a count past the end.
func upstreamAnswerSeeds(f *testing.F) {
	seed := func(rrs ...string) []byte {
		m := new(dns.Msg)
		m.SetQuestion("api.example.com.", dns.TypeA)
		m.Response = true
		for _, s := range rrs {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		b, _ := m.Pack()
		return b
	}
	f.Add(seed("api.example.com. 60 IN A 93.184.216.34"))
	f.Add(seed("api.example.com. 60 IN CNAME a.example.net.", "a.example.net. 60 IN CNAME api.example.com."))
	f.Add(seed("api.example.com. 60 IN A 127.0.0.1", "api.example.com. 60 IN A 169.254.169.254"))
	f.Add(seed("api.example.com. 0 IN CNAME b.example.net.", "b.example.net. 4294967295 IN A 1.1.1.1"))
	f.Add([]byte{0, 0, 0x81, 0x80, 0, 1, 0xff, 0xff, 0, 0, 0, 0})
}

// FuzzDNSUpstreamAnswer feeds arbitrary bytes as the upstream's answer to an
// allowed query, asked twice through a cache. Nothing may panic, the reply
// must parse, and only public addresses, at most MaxBindingsPerName of
// them, may be bound; the second time, from the cache, the same ones.
func FuzzDNSUpstreamAnswer(f *testing.F) {
	upstreamAnswerSeeds(f)
	pol := dnstest.Decider(f, dnstest.Policy)
	f.Fuzz(func(t *testing.T, answer []byte) {
		up := &memExchanger{fn: func(q *dns.Msg) (*dns.Msg, error) {
			m := new(dns.Msg)
			if err := m.Unpack(answer); err != nil {
				return nil, err
			}
			// The fuzzed ID, not the query's random one, decides a failure:
			// both rounds must see the same upstream.
			if m.Id == 0xffff {
				return nil, errors.New("fuzzed failure")
			}
			if len(answer) >= 4 && answer[3]&0x0f == 0 {
				// Most of the time, get past the ID and question checks
				// so the records themselves are exercised.
				m.Id, m.Question = q.Id, q.Question
			}
			return m, nil
		}}
		r := NewAnswerer(up, AnswererOptions{CacheSize: 4, FailureTTL: time.Minute})
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			var first Result
			for round := range 2 {
				res := r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", qt, 1232), false)
				m := new(dns.Msg)
				if err := m.Unpack(res.Reply); err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				if len(res.Binds) > MaxBindingsPerName {
					t.Fatalf("%d addresses bound", len(res.Binds))
				}
				if round == 0 && len(res.Binds) > 0 && (res.TTL < bindMinTTL || res.TTL > bindMaxTTL) {
					t.Fatalf("TTL %v outside [%v, %v]", res.TTL, bindMinTTL, bindMaxTTL)
				}
				for _, ip := range res.Binds {
					if policy.ClassifyAddr(ip).Class.Special() || ip.Is4() != (qt == dns.TypeA) {
						t.Fatalf("bound %s for a %s query", ip, qtypeString(qt))
					}
				}
				for _, rr := range m.Answer {
					if rr.Header().Name != "api.example.com." || rr.Header().Rrtype != qt {
						t.Fatalf("answer record %v is not an %s of the queried name", rr, qtypeString(qt))
					}
				}
				if len(m.Answer) != len(res.Binds) {
					t.Fatalf("answer has %d records, %d bound", len(m.Answer), len(res.Binds))
				}
				if round == 0 {
					first = res
				} else if !slices.Equal(res.Binds, first.Binds) || res.RCode != first.RCode || res.TTL > first.TTL ||
					len(res.Binds) > 0 && res.TTL <= 0 {
					t.Fatalf("from the cache: %s %v for %v, first %s %v for %v", res.RCode, res.Binds, res.TTL, first.RCode, first.Binds, first.TTL)
				}
			}
		}
	})
}
