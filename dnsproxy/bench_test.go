package dnsproxy

import (
	"context"
	"testing"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
)

// BenchmarkDNSAllowed is the answer path for an allowed name: parse, policy,
// a real exchange with an upstream on loopback, the answer built.
func BenchmarkDNSAllowed(b *testing.B) {
	up := dnstest.NewServer(b, dnstest.Zone...)
	r := newTestAnswerer(b, nil, up.Addr)
	pol := dnstest.Decider(b, dnstest.Policy)
	q := dnstest.Query("api.example.com.", dns.TypeA, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if res := r.Answer(context.Background(), pol, q, false); len(res.Binds) != 1 {
			b.Fatalf("result = %+v", res)
		}
	}
}

// BenchmarkDNSDenied is the answer path for a denied name: answered locally,
// nothing upstream.
func BenchmarkDNSDenied(b *testing.B) {
	r := &Answerer{up: &memExchanger{fn: func(*dns.Msg) (*dns.Msg, error) { panic("asked upstream") }}}
	pol := dnstest.Decider(b, dnstest.Policy)
	q := dnstest.Query("secret-data.attacker.example.", dns.TypeA, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if res := r.Answer(context.Background(), pol, q, false); res.RCode != "NXDOMAIN" {
			b.Fatalf("result = %+v", res)
		}
	}
}

// BenchmarkDNSCached is the answer path for an allowed name another lookup
// left in the cache: parse, policy, the kept answer filtered again and
// built for this agent, nothing upstream.
func BenchmarkDNSCached(b *testing.B) {
	up := &memExchanger{fn: func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 300 IN A 93.184.216.34")
		m.Answer = append(m.Answer, rr)
		return m, nil
	}}
	r := NewAnswerer(up, AnswererOptions{CacheSize: DefaultCacheSize, FailureTTL: DefaultFailureTTL})
	pol := dnstest.Decider(b, dnstest.Policy)
	q := dnstest.Query("api.example.com.", dns.TypeA, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if res := r.Answer(context.Background(), pol, q, false); len(res.Binds) != 1 {
			b.Fatalf("result = %+v", res)
		}
	}
	if len(up.asked) != 1 {
		b.Fatalf("upstream asked %d times, want once", len(up.asked))
	}
}
