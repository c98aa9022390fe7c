package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// bigPolicy writes a policy of n rules: a third exact names, a third
// wildcards, a third CIDRs of many lengths, plus a deny rule every tenth.
func bigPolicy(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.WriteString("version: v1\nname: big\nunsafe_allow_any_address: false\negress:\n")
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "  - domains: [api%d.svc%d.example.com]\n    ports: [443, \"8000-8100\"]\n", i, i%97)
		case 1:
			fmt.Fprintf(&b, "  - domains: [\"*.tenant%d.example.net\"]\n    ports: [443]\n", i)
		case 2:
			if i%2 == 0 {
				bits := 12 + r.IntN(21)
				a := netip.AddrFrom4([4]byte{byte(11 + r.IntN(100)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
				fmt.Fprintf(&b, "  - cidrs: [%s]\n    ports: [443]\n", netip.PrefixFrom(a, bits).Masked())
			} else {
				bits := 32 + r.IntN(97)
				var raw [16]byte
				raw[0] = 0x2a
				for j := 1; j < 16; j++ {
					raw[j] = byte(r.IntN(256))
				}
				fmt.Fprintf(&b, "  - cidrs: [\"%s\"]\n    ports: [443]\n", netip.PrefixFrom(netip.AddrFrom16(raw), bits).Masked())
			}
		}
	}
	b.WriteString("deny:\n")
	for i := 0; i < n/10; i++ {
		fmt.Fprintf(&b, "  - domains: [blocked%d.svc%d.example.com]\n  - cidrs: [%d.%d.0.0/16]\n    ports: [22]\n", i, i%97, 11+i%100, i%256)
	}
	return b.String()
}

func loadBig(b *testing.B) *Policy {
	b.Helper()
	return mustParse(b, "big.yaml", bigPolicy(5000), Options{})
}

func BenchmarkCompile5000(b *testing.B) {
	src := []byte(bigPolicy(5000))
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		f, err := Parse("big.yaml", src)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(f, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFlow(b *testing.B, f Flow, want Verdict) {
	p := loadBig(b)
	if d := p.DecideFlow(f); d.Verdict != want {
		b.Fatalf("DecideFlow(%v) = %v, want %v", f, d, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.DecideFlow(f)
	}
}

func BenchmarkDecideFlowName(b *testing.B) {
	benchFlow(b, Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("93.184.216.34:443"),
		Names: []string{"api4998.svc51.example.com"}}, Allow)
}

func BenchmarkDecideFlowWildcard(b *testing.B) {
	benchFlow(b, Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("93.184.216.34:443"),
		Names: []string{"a.b.c.tenant4999.example.net"}}, Allow)
}

func BenchmarkDecideFlowCIDR(b *testing.B) {
	p := loadBig(b)
	// Find an address a CIDR rule allows.
	var dst netip.AddrPort
	for _, k := range []string{"11", "12", "13", "14", "15", "16", "17", "18", "19", "20"} {
		for i := 0; i < 256 && !dst.IsValid(); i++ {
			a := netip.MustParseAddr(k + "." + fmt.Sprint(i) + ".77.1")
			if d := p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.AddrPortFrom(a, 443)}); d.Allowed() {
				dst = netip.AddrPortFrom(a, 443)
			}
		}
	}
	if !dst.IsValid() {
		b.Fatal("no address allowed by a cidr rule")
	}
	f := Flow{Proto: ProtoTCP, Dst: dst}
	b.ReportAllocs()
	for b.Loop() {
		if !p.DecideFlow(f).Allowed() {
			b.Fatal("deny")
		}
	}
}

func BenchmarkDecideFlowDefaultDeny(b *testing.B) {
	benchFlow(b, Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("[2600::1]:443"),
		Names: []string{"www.nowhere.example.org"}}, Deny)
}

func BenchmarkDecideFlowPrivate(b *testing.B) {
	benchFlow(b, Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("10.1.2.3:443"),
		Names: []string{"api4998.svc51.example.com"}}, Deny)
}

func BenchmarkDecideQuery(b *testing.B) {
	p := loadBig(b)
	b.ReportAllocs()
	for b.Loop() {
		if !p.DecideQuery("x.tenant4000.example.net").Allowed() {
			b.Fatal("deny")
		}
	}
}

func BenchmarkDecideQueryMiss(b *testing.B) {
	p := loadBig(b)
	b.ReportAllocs()
	for b.Loop() {
		if p.DecideQuery("www.nowhere.example.org").Allowed() {
			b.Fatal("allow")
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	addrs := []netip.Addr{
		netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("2606:4700::1111"), netip.MustParseAddr("64:ff9b::a00:1"),
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range addrs {
			ClassifyAddr(a)
		}
	}
}

// bigIngress writes a policy of n ingress rules, by agent, host and cidr,
// and an ingress_deny rule every tenth.
func bigIngress(n int) string {
	var b strings.Builder
	b.WriteString("version: v1\nname: big\ningress:\n")
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "  - agents: [agent%d, peer%d]\n    ports: [%d]\n", i, i%97, 1000+i)
		case 1:
			fmt.Fprintf(&b, "  - host: true\n    ports: [%d]\n", 1000+i)
		case 2:
			fmt.Fprintf(&b, "  - cidrs: [%d.%d.%d.0/24]\n    ports: [%d]\n", 11+i%100, i/256%256, i%256, 1000+i)
		}
	}
	b.WriteString("ingress_deny:\n")
	for i := 0; i < n/10; i++ {
		fmt.Fprintf(&b, "  - agents: [blocked%d]\n  - cidrs: [%d.%d.0.0/16]\n    ports: [22]\n", i, 11+i%100, i%256)
	}
	return b.String()
}

func benchInbound(b *testing.B, in Inbound, want Verdict) {
	p := mustParse(b, "big.yaml", bigIngress(5000), Options{})
	if d := p.DecideInbound(in); d.Verdict != want {
		b.Fatalf("DecideInbound(%v) = %v, want %v", in, d.Decision, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.DecideInbound(in)
	}
}

func BenchmarkDecideInboundAgent(b *testing.B) {
	benchInbound(b, Inbound{Proto: ProtoTCP, Port: 1000 + 4998, Peer: Peer{Kind: PeerAgent, Agent: "peer51"}}, Allow)
}

func BenchmarkDecideInboundRemote(b *testing.B) {
	benchInbound(b, Inbound{Proto: ProtoTCP, Port: 1000 + 4997, Peer: Peer{Kind: PeerRemote, Addr: netip.MustParseAddr("108.19.133.7")}}, Allow)
}

func BenchmarkDecideInboundDefaultDeny(b *testing.B) {
	benchInbound(b, Inbound{Proto: ProtoTCP, Port: 18789, Peer: Peer{Kind: PeerAgent, Agent: "nobody"}}, Deny)
}
