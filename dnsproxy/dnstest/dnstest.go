// Package dnstest holds the DNS test helpers that dnsproxy's tests and the
// gateway's share: a DNS server on loopback that logs what reached it, the
// zone and policy most tests use, and builders and readers of messages.
//
// It is for tests only. It must not import dnsproxy (whose own tests use
// it) nor anything of the gateway.
package dnstest

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/clawnet/clawnet/policy"
)

// Policy allows example.com and every name under it, except
// secret.example.com. Nothing else.
const Policy = `version: v1
name: dnstest
egress:
  - domains: [example.com, "*.example.com"]
    ports: [443]
deny:
  - domains: [secret.example.com]
`

// Decider compiles the policy src, as if read from dnstest.yaml.
func Decider(t testing.TB, src string) policy.Decider {
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

// MaxChain is the longest CNAME chain dnsproxy follows; Zone has one
// chain of exactly this length and one longer. dnsproxy's tests check the
// two numbers agree.
const MaxChain = 8

// Zone is what the Server serves in most tests.
var Zone = []string{
	"api.example.com. 300 IN A 93.184.216.34",
	"api.example.com. 300 IN AAAA 2606:2800:220:1::1",
	"api.example.com. 300 IN TXT \"should never be asked\"",
	"zero.example.com. 0 IN A 93.184.216.35",
	"week.example.com. 604800 IN A 93.184.216.36",
	"chain.example.com. 600 IN CNAME c1.cdn.example.net.",
	"c1.cdn.example.net. 120 IN CNAME c2.cdn.example.net.",
	"c2.cdn.example.net. 900 IN A 151.101.1.1",
	"c2.cdn.example.net. 900 IN A 151.101.65.1",
	"loop.example.com. 60 IN CNAME loop2.example.net.",
	"loop2.example.net. 60 IN CNAME loop.example.com.",
	"rebind.example.com. 60 IN A 127.0.0.1",
	"rebind.example.com. 60 IN A 10.1.2.3",
	"rebind.example.com. 60 IN A 169.254.169.254",
	"rebind.example.com. 60 IN A 93.184.216.40",
	"rebind.example.com. 60 IN A 100.96.0.1",
	"rebind6.example.com. 60 IN AAAA ::1",
	"rebind6.example.com. 60 IN AAAA ::ffff:192.168.1.1",
	"rebind6.example.com. 60 IN AAAA fe80::1",
	"rebind6.example.com. 60 IN AAAA fd00:ec2::254",
	"rebind6.example.com. 60 IN AAAA 64:ff9b::10.0.0.1",
	"private.example.com. 60 IN A 192.168.1.10",
	"lab.example.com. 60 IN A 198.18.0.10",
	"labmeta.example.com. 60 IN A 169.254.169.254",
	"labmeta.example.com. 60 IN A 198.18.0.11",
	"secret.example.com. 60 IN A 93.184.216.50",
	"example.com. 60 IN A 93.184.216.34",
}

func init() {
	// A chain longer than MaxChain: long0 → long1 → ... → long11 → A.
	for i := range 11 {
		Zone = append(Zone, fmt.Sprintf("long%d.example.com. 60 IN CNAME long%d.example.com.", i, i+1))
	}
	Zone = append(Zone, "long11.example.com. 60 IN A 93.184.216.60")
	// A chain exactly MaxChain links long.
	for i := range MaxChain {
		Zone = append(Zone, fmt.Sprintf("eight%d.example.com. 60 IN CNAME eight%d.example.com.", i, i+1))
	}
	Zone = append(Zone, fmt.Sprintf("eight%d.example.com. 60 IN A 93.184.216.61", MaxChain))
	// Many addresses: more than a name may bind, more than 512 bytes.
	for i := range 60 {
		Zone = append(Zone, fmt.Sprintf("many.example.com. 60 IN AAAA 2606:2800:220:1::%x", i+1))
	}
}

// Query builds a query as a stub resolver sends it, with ID 0x4242.
// udpSize 0 means no EDNS.
func Query(name string, qtype uint16, udpSize uint16) []byte {
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

// RawQuery edits a packed query for api.example.com A, for malformed cases
// miekg/dns would not build.
func RawQuery(edit func(m *dns.Msg)) []byte {
	m := new(dns.Msg)
	m.SetQuestion("api.example.com.", dns.TypeA)
	m.Id = 0x4242
	edit(m)
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// MustUnpack parses a reply, failing t if there is none or it does not
// parse.
func MustUnpack(t testing.TB, b []byte) *dns.Msg {
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

// EDE returns the Extended DNS Error of m, if any.
func EDE(m *dns.Msg) *dns.EDNS0_EDE {
	if o := m.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// Addrs returns the addresses of m's A and AAAA answer records.
func Addrs(m *dns.Msg) []netip.Addr {
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

// Rcode names rc for test messages.
func Rcode(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// LeakCheck fails t if goroutines started during it outlive it and all
// its cleanups. Call it first: its cleanup then runs last.
func LeakCheck(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(before); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
	})
}
