package policy

import (
	"net/netip"
	"os"
	"testing"
)

func TestCoderQuick(t *testing.T) {
	data, err := os.ReadFile("testdata/good/coder.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("coder.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flow Flow
		want Verdict
	}{
		{Flow{ProtoTCP, netip.MustParseAddrPort("10.20.1.1:5432"), nil}, Allow},
		{Flow{ProtoTCP, netip.MustParseAddrPort("[::ffff:10.20.1.1]:8050"), nil}, Allow},
		{Flow{ProtoTCP, netip.MustParseAddrPort("10.20.1.1:22"), nil}, Deny},
		{Flow{ProtoUDP, netip.MustParseAddrPort("10.20.1.1:5432"), nil}, Deny},
		{Flow{ProtoTCP, netip.MustParseAddrPort("10.21.1.1:5432"), nil}, Deny},
		{Flow{ProtoTCP, netip.MustParseAddrPort("140.82.1.1:443"), []string{"api.github.com"}}, Allow},
		{Flow{ProtoTCP, netip.MustParseAddrPort("140.82.1.1:443"), []string{"gist.github.com", "api.github.com"}}, Deny},
		{Flow{ProtoTCP, netip.MustParseAddrPort("10.0.0.1:443"), []string{"api.github.com"}}, Deny},
		{Flow{ProtoTCP, netip.MustParseAddrPort("169.254.169.254:80"), nil}, Deny},
		{Flow{ProtoTCP, netip.MustParseAddrPort("1.2.3.4:443"), []string{"API.Anthropic.com."}}, Allow},
	} {
		d := p.DecideFlow(tc.flow)
		t.Logf("%v -> %v", tc.flow, d)
		if d.Verdict != tc.want {
			t.Errorf("DecideFlow(%v) = %v, want %v", tc.flow, d, tc.want)
		}
	}
	for _, h := range []string{"api.github.com", "gist.github.com", "x.y.githubusercontent.com", "githubusercontent.com", "10.20.3.3", "8.8.8.8", "169.254.169.254"} {
		t.Logf("Explain(%s) = %v", h, Explain(p, ProtoTCP, h, 0))
	}
}
