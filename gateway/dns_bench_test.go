package gateway

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkDNSAllowed is the answer path for an allowed name: parse, policy,
// a real exchange with an upstream on loopback, the answer built.
func BenchmarkDNSAllowed(b *testing.B) {
	up := newFakeUpstream(b, dnsZone...)
	r := newTestAnswerer(b, nil, up.addr)
	pol := testDecider(b, dnsTestPolicy)
	q := mkQuery("api.example.com.", dns.TypeA, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if res := r.answer(context.Background(), pol, q, false); len(res.binds) != 1 {
			b.Fatalf("result = %+v", res)
		}
	}
}

// BenchmarkDNSDenied is the answer path for a denied name: answered locally,
// nothing upstream.
func BenchmarkDNSDenied(b *testing.B) {
	r := &dnsAnswerer{up: &memExchanger{fn: func(*dns.Msg) (*dns.Msg, error) { panic("asked upstream") }}}
	pol := testDecider(b, dnsTestPolicy)
	q := mkQuery("secret-data.attacker.example.", dns.TypeA, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if res := r.answer(context.Background(), pol, q, false); res.rcode != "NXDOMAIN" {
			b.Fatalf("result = %+v", res)
		}
	}
}
