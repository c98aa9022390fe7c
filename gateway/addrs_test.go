package gateway

import (
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
