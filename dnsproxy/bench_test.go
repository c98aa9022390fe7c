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
