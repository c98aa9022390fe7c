package gateway

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

func TestNth(t *testing.T) {
	tests := []struct {
		prefix string
		idx    int
		want   string
	}{
		{"100.96.0.0/16", 1, "100.96.0.1"},
		{"100.96.0.0/16", 255, "100.96.0.255"},
		{"100.96.0.0/16", 256, "100.96.1.0"},
		{"100.96.0.0/16", 65534, "100.96.255.254"},
		{"fd63:6c61:776e:1::/64", 2, "fd63:6c61:776e:1::2"},
		{"fd63:6c61:776e:1::/64", 0x1ff, "fd63:6c61:776e:1::1ff"},
	}
	for _, tt := range tests {
		if got := nth(netip.MustParsePrefix(tt.prefix), tt.idx); got.String() != tt.want {
			t.Errorf("nth(%s, %d) = %s, want %s", tt.prefix, tt.idx, got, tt.want)
		}
	}
}

func TestAddrPoolReusesAndExhausts(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("100.96.0.0/29"), netip.MustParsePrefix("fd00::/64"))
	// A /29 has 6 usable indexes; 1 is the gateway's, so 5 agents fit.
	var got []int
	for i := 0; i < 5; i++ {
		idx, err := p.get()
		if err != nil {
			t.Fatalf("get() #%d: %v", i, err)
		}
		if idx == 1 {
			t.Fatalf("get() handed out the gateway's index")
		}
		got = append(got, idx)
	}
	if _, err := p.get(); err == nil {
		t.Fatalf("get() on a full pool = nil error")
	}
	p.put(got[2])
	idx, err := p.get()
	if err != nil || idx != got[2] {
		t.Fatalf("get() after put(%d) = %d, %v", got[2], idx, err)
	}
	v4, v6 := p.addrs(idx)
	if v4.Bits() != 29 || v6.Bits() != 64 || v4.Addr() != nth(p.v4, idx) {
		t.Errorf("addrs(%d) = %s %s", idx, v4, v6)
	}
	if !p.contains(netip.MustParseAddr("::ffff:100.96.0.3")) {
		t.Errorf("contains(::ffff:100.96.0.3) = false: mapped forms must count")
	}
}

func TestHostAddrSet(t *testing.T) {
	set := hostAddrSet([]netip.Prefix{
		netip.MustParsePrefix("10.20.0.5/16"),
		netip.MustParsePrefix("192.0.2.7/31"),
		netip.MustParsePrefix("198.51.100.9/32"),
		netip.MustParsePrefix("2001:db8:1::5/64"),
		netip.MustParsePrefix("172.16.3.255/23"), // an own address that is no broadcast
	})
	tests := []struct {
		addr string
		want hostAddrKind
	}{
		{"10.20.0.5", hostOwn},
		{"10.20.0.0", hostNetwork},
		{"10.20.255.255", hostBroadcast},
		{"10.20.0.255", 0}, // inside the /16, not its broadcast
		{"192.0.2.7", hostOwn},
		{"192.0.2.6", 0}, // a /31 has no network or broadcast address
		{"198.51.100.9", hostOwn},
		{"2001:db8:1::5", hostOwn},
		{"2001:db8:1::", hostNetwork},
		{"2001:db8:1::ffff:ffff:ffff:ffff", 0},
		{"172.16.3.255", hostOwn},
		{"172.16.2.0", hostNetwork},
		{"172.16.3.254", 0},
	}
	for _, tt := range tests {
		if got := set[netip.MustParseAddr(tt.addr)]; got != tt.want {
			t.Errorf("hostAddrSet(...)[%s] = %d, want %d", tt.addr, got, tt.want)
		}
	}
}

func TestGuardBroadcast(t *testing.T) {
	g := &Gateway{pool: newAddrPool(netip.MustParsePrefix("100.96.0.0/16"), netip.MustParsePrefix("fd63:6c61:776e:1::/64")), host: &hostAddrs{}}
	g.gw4, g.gw6 = g.pool.gateway()
	set := hostAddrSet([]netip.Prefix{netip.MustParsePrefix("10.20.0.5/16")})
	g.host.set.Store(&set)
	for _, dst := range []string{
		"10.20.255.255", "10.20.0.0", "10.20.0.5", "::ffff:10.20.255.255",
		"64:ff9b::10.20.255.255", "2002:a14:ffff::1", // the same host, wrapped in IPv6
		"255.255.255.255", "224.0.0.1", "239.1.2.3", "ff02::1", "ff0e::1",
	} {
		d, ok := g.guard(netip.MustParseAddr(dst), 9)
		if !ok || d.Allowed() {
			t.Errorf("guard(%s) = %v %+v, want a refusal", dst, ok, d)
		}
	}
	for _, dst := range []string{"10.20.0.255", "10.21.0.255", "198.18.0.2"} {
		if d, ok := g.guard(netip.MustParseAddr(dst), 9); ok {
			t.Errorf("guard(%s) = %+v, want no opinion", dst, d)
		}
	}
}

// TestDialNoBroadcast shows the kernel refuses a broadcast destination on
// an upstream UDP socket even when no check above the dial caught it:
// 127.255.255.255 is the broadcast address of lo's 127.0.0.0/8.
func TestDialNoBroadcast(t *testing.T) {
	bcast := netip.MustParseAddrPort("127.255.255.255:9")
	var plain net.Dialer
	c, err := plain.Dial("udp", bcast.String())
	if err != nil {
		t.Skipf("this host refuses broadcast on lo even with SO_BROADCAST: %v", err)
	}
	c.Close()
	g := &Gateway{}
	if c, err := g.dial(context.Background(), "udp", bcast, udpBuf); err == nil {
		c.Close()
		t.Fatalf("dial(udp, %s) = nil error: the upstream socket may broadcast", bcast)
	}
	if c, err := g.dial(context.Background(), "udp", netip.MustParseAddrPort("127.0.0.1:9"), udpBuf); err != nil {
		t.Fatalf("dial(udp, 127.0.0.1:9) = %v: unicast must still work", err)
	} else {
		c.Close()
	}
}
