package policy

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		addr  string
		class Class
		rng   string // the range a rule must lie within; "" for public
		via   string
	}{
		// IPv4 special-purpose registry.
		{"0.0.0.0", ClassUnspecified, "0.0.0.0/32", ""},
		{"0.1.2.3", ClassThisNetwork, "0.0.0.0/8", ""},
		{"10.0.0.1", ClassPrivate, "10.0.0.0/8", ""},
		{"10.255.255.255", ClassPrivate, "10.0.0.0/8", ""},
		{"100.64.0.1", ClassCGNAT, "100.64.0.0/10", ""},
		{"100.127.255.254", ClassCGNAT, "100.64.0.0/10", ""},
		{"100.128.0.1", ClassPublic, "", ""},
		{"127.0.0.1", ClassLoopback, "127.0.0.0/8", ""},
		{"127.255.255.254", ClassLoopback, "127.0.0.0/8", ""},
		{"169.254.1.1", ClassLinkLocal, "169.254.0.0/16", ""},
		{"172.16.0.1", ClassPrivate, "172.16.0.0/12", ""},
		{"172.31.255.255", ClassPrivate, "172.16.0.0/12", ""},
		{"172.32.0.1", ClassPublic, "", ""},
		{"192.0.0.8", ClassReserved, "192.0.0.0/24", ""},
		{"192.0.0.170", ClassReserved, "192.0.0.0/24", ""},
		{"192.0.2.1", ClassDocumentation, "192.0.2.0/24", ""},
		{"192.31.196.1", ClassPublic, "", ""}, // AS112, globally reachable
		{"192.52.193.1", ClassPublic, "", ""}, // AMT, globally reachable
		{"192.88.99.1", ClassReserved, "192.88.99.0/24", ""},
		{"192.168.1.1", ClassPrivate, "192.168.0.0/16", ""},
		{"198.18.0.1", ClassBenchmarking, "198.18.0.0/15", ""},
		{"198.19.255.255", ClassBenchmarking, "198.18.0.0/15", ""},
		{"198.20.0.1", ClassPublic, "", ""},
		{"198.51.100.7", ClassDocumentation, "198.51.100.0/24", ""},
		{"203.0.113.9", ClassDocumentation, "203.0.113.0/24", ""},
		{"224.0.0.1", ClassMulticast, "224.0.0.0/4", ""},
		{"239.255.255.250", ClassMulticast, "224.0.0.0/4", ""},
		{"240.0.0.1", ClassReserved, "240.0.0.0/4", ""},
		{"255.255.255.254", ClassReserved, "240.0.0.0/4", ""},
		{"255.255.255.255", ClassBroadcast, "255.255.255.255/32", ""},
		{"8.8.8.8", ClassPublic, "", ""},
		{"1.1.1.1", ClassPublic, "", ""},
		{"140.82.112.3", ClassPublic, "", ""},

		// Cloud metadata endpoints.
		{"169.254.169.254", ClassMetadata, "169.254.169.254/32", ""},
		{"169.254.170.2", ClassMetadata, "169.254.170.2/32", ""},
		{"169.254.170.23", ClassMetadata, "169.254.170.23/32", ""},
		{"100.100.100.200", ClassMetadata, "100.100.100.200/32", ""},
		{"192.0.0.192", ClassMetadata, "192.0.0.192/32", ""},
		{"168.63.129.16", ClassMetadata, "168.63.129.16/32", ""},
		{"fd00:ec2::254", ClassMetadata, "fd00:ec2::254/128", ""},
		{"fd00:ec2::23", ClassMetadata, "fd00:ec2::23/128", ""},
		{"fd20:ce::254", ClassMetadata, "fd20:ce::254/128", ""},
		{"169.254.169.253", ClassLinkLocal, "169.254.0.0/16", ""},

		// IPv6 special-purpose registry.
		{"::", ClassUnspecified, "::/128", ""},
		{"::1", ClassLoopback, "::1/128", ""},
		{"100::1", ClassReserved, "100::/64", ""},
		{"100:0:0:1::1", ClassReserved, "100:0:0:1::/64", ""},
		{"2001:1::1", ClassReserved, "2001::/23", ""},
		{"2001:2::5", ClassBenchmarking, "2001:2::/48", ""},
		{"2001:20::1", ClassReserved, "2001::/23", ""},
		{"2001:db8::1", ClassDocumentation, "2001:db8::/32", ""},
		{"3fff:1::1", ClassDocumentation, "3fff::/20", ""},
		{"5f00::1", ClassReserved, "5f00::/16", ""},
		{"fc00::1", ClassPrivate, "fc00::/7", ""},
		{"fd12:3456::1", ClassPrivate, "fc00::/7", ""},
		{"fe80::1", ClassLinkLocal, "fe80::/10", ""},
		{"fe80::1%eth0", ClassLinkLocal, "fe80::/10", ""},
		{"fec0::1", ClassReserved, "fec0::/10", ""},
		{"ff02::1", ClassMulticast, "ff00::/8", ""},
		{"ff05::1:3", ClassMulticast, "ff00::/8", ""},
		{"4000::1", ClassReserved, "4000::/8", ""}, // outside 2000::/3
		{"2606:4700:4700::1111", ClassPublic, "", ""},
		{"2a00:1450:4001:80b::200e", ClassPublic, "", ""},

		// Every IPv4-in-IPv6 form takes the class of the IPv4 inside.
		{"::ffff:10.0.0.1", ClassPrivate, "10.0.0.0/8", "ipv4-mapped"},
		{"::ffff:127.0.0.1", ClassLoopback, "127.0.0.0/8", "ipv4-mapped"},
		{"::ffff:169.254.169.254", ClassMetadata, "169.254.169.254/32", "ipv4-mapped"},
		{"::ffff:8.8.8.8", ClassPublic, "", "ipv4-mapped"},
		{"::ffff:0:10.0.0.1", ClassPrivate, "::ffff:0:a00:0/104", "ipv4-translated"},
		{"::10.0.0.1", ClassPrivate, "::a00:0/104", "ipv4-compatible"},
		{"::127.0.0.1", ClassLoopback, "::7f00:0/104", "ipv4-compatible"},
		{"::2", ClassThisNetwork, "::/104", "ipv4-compatible"},
		{"::8.8.8.8", ClassPublic, "", "ipv4-compatible"},
		{"64:ff9b::10.0.0.1", ClassPrivate, "64:ff9b::a00:0/104", "nat64"},
		{"64:ff9b::a9fe:a9fe", ClassMetadata, "64:ff9b::a9fe:a9fe/128", "nat64"},
		{"64:ff9b::127.0.0.1", ClassLoopback, "64:ff9b::7f00:0/104", "nat64"},
		{"64:ff9b::8.8.8.8", ClassPublic, "", "nat64"},
		{"64:ff9b:1::8.8.8.8", ClassReserved, "64:ff9b:1::/48", "nat64-local"},
		{"64:ff9b:1::192.168.0.1", ClassPrivate, "64:ff9b:1::/48", "nat64-local"},
		{"2002:a00:1::1", ClassPrivate, "2002:a00::/24", "6to4"},
		{"2002:c0a8:101::1", ClassPrivate, "2002:c0a8::/32", "6to4"},
		{"2002:7f00:1::", ClassLoopback, "2002:7f00::/24", "6to4"},
		{"2002:a9fe:a9fe::1", ClassMetadata, "2002:a9fe:a9fe::/48", "6to4"},
		{"2002:808:808::1", ClassPublic, "", "6to4"},
		// Teredo: server 65.54.227.120, client 10.0.0.1 stored inverted.
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", ClassPrivate, "2001:0:4136:e378:8000:63bf:f5ff:fffe/128", "teredo"},
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", ClassLoopback, "2001:0:4136:e378:8000:63bf:80ff:fffe/128", "teredo"},
		{"2001:0:4136:e378:8000:63bf:5601:5601", ClassMetadata, "2001:0:4136:e378:8000:63bf:5601:5601/128", "teredo"},
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", ClassPublic, "", "teredo"},
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		got := ClassifyAddr(a)
		rng := ""
		if got.Range.IsValid() {
			rng = got.Range.String()
		}
		if got.Class != tc.class || rng != tc.rng || got.Via != tc.via {
			t.Errorf("ClassifyAddr(%s) = %v %q via %q, want %v %q via %q", tc.addr, got.Class, rng, got.Via, tc.class, tc.rng, tc.via)
		}
		if c := Classify(a); c != got.Class {
			t.Errorf("Classify(%s) = %v, want %v", tc.addr, c, got.Class)
		}
		if got.What == "" {
			t.Errorf("ClassifyAddr(%s).What is empty", tc.addr)
		}
	}
	if len(tests) < 60 {
		t.Fatalf("classifier table has %d addresses, want at least 60", len(tests))
	}
	if c := Classify(netip.Addr{}); c != ClassInvalid {
		t.Errorf("Classify(zero Addr) = %v, want %v", c, ClassInvalid)
	}
}

// Every special range must classify its own first and last address as
// special, and the range it reports must contain the address.
func TestClassifyRangeEdges(t *testing.T) {
	for _, table := range [][]special{ipv4Special, ipv6Special} {
		for _, s := range table {
			first := s.prefix.Addr()
			last := lastAddr(s.prefix)
			for _, a := range []netip.Addr{first, last} {
				info := ClassifyAddr(a)
				if !info.Class.Special() {
					t.Errorf("ClassifyAddr(%s) = %v, want special (%s)", a, info.Class, s.prefix)
					continue
				}
				if info.Inner.IsValid() {
					continue // wrapped forms report the wrapped range
				}
				if !info.Range.Contains(a) {
					t.Errorf("ClassifyAddr(%s).Range = %s, does not contain it", a, info.Range)
				}
			}
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
