package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzParse: any bytes give either a policy that compiles or one
// *ParseError of one line naming the file; never a panic.
var fmtComplaint = regexp.MustCompile(`%!([a-zA-Z]\(|\(EXTRA|\(BADWIDTH|\(BADPREC|\(NOVERB|\(MISSING)`)

func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: v1\nname: x\negress:\n  - cidrs: [10.0.0.0/8]\n    ports: [1]\n"))
	f.Add([]byte("version: v1\nname: x\ningress:\n  - ports: [18789]\n    host: true\n    agents: [a]\n    cidrs: [10.0.0.0/8]\n    proxy_protocol: v2\ningress_deny:\n  - cidrs: [10.1.0.0/16]\n"))
	f.Add([]byte("version: v1\nname: x\ningress:\n  - {ports: [\"1-65535\"], protocol: udp, cidrs: [\"::/0\"], allow_any: true}\negress:\n  - {agents: [a, B.c], ports: [443]}\ndeny:\n  - agents: [a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error is %T, want *ParseError: %v", err, err)
			}
			msg := err.Error()
			// fmt's own complaints ("%!d(string=…)", "%!(EXTRA …)") mean a
			// bad format string; the input's own "%!" quoted in a message
			// does not.
			if !strings.HasPrefix(msg, "fuzz.yaml:") || strings.Contains(msg, "\n") || fmtComplaint.MatchString(msg) {
				t.Fatalf("Parse error %q does not start with the file name on one line", msg)
			}
			return
		}
		p, err := Compile(file, Options{})
		if err != nil {
			t.Fatalf("Parse accepted a file that Compile refuses: %v", err)
		}
		for _, a := range []string{"10.1.2.3:443", "8.8.8.8:53", "[::ffff:10.0.0.1]:80", "[2001:db8::1]:443", "169.254.169.254:80"} {
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				d := p.DecideFlow(Flow{Proto: proto, Dst: netip.MustParseAddrPort(a), Names: []string{"api.example.com", "x.y"}})
				if d.Rule == "" || d.Reason == "" {
					t.Fatalf("DecideFlow(%s) = %v, no rule or reason", a, d)
				}
				if strings.HasPrefix(a, "169.254.169.254") && d.Allowed() {
					t.Fatalf("DecideFlow(%s) = %v, metadata must never be allowed", a, d)
				}
			}
		}
		for _, n := range []string{"api.example.com", "a.b.c", "example.com"} {
			p.DecideQuery(n)
			p.DecideName(n, ProtoTCP, 443)
			Explain(p, ProtoTCP, n, 0)
		}
		peers := []Peer{
			{Kind: PeerAgent, Agent: "a"}, {Kind: PeerHost}, {},
			{Kind: PeerRemote, Addr: netip.MustParseAddr("10.1.2.3")},
			{Kind: PeerRemote, Addr: netip.MustParseAddr("64:ff9b::10.1.2.3")},
		}
		for _, peer := range peers {
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				in := Inbound{Proto: proto, Port: 18789, Peer: peer}
				d := p.DecideInbound(in)
				if d.Rule == "" || d.Reason == "" || strings.Contains(d.Reason, "\n") {
					t.Fatalf("DecideInbound(%s) = %v, no rule or reason on one line", peer, d.Decision)
				}
				if d.Allowed() && (peer.Kind == 0 || len(file.Ingress) == 0 || !p.HasIngress(proto, 18789)) {
					t.Fatalf("DecideInbound(%s %s 18789) = %v, want deny: no ingress rule can allow it", peer, proto, d.Decision)
				}
				if d.ProxyProtocol && !d.Allowed() {
					t.Fatalf("DecideInbound(%s) = %v with ProxyProtocol set on a deny", peer, d.Decision)
				}
				in.Port = 0
				ExplainInbound(p, in)
			}
		}
		if d := p.DecideAgent("a", ProtoTCP, 443); d.Allowed() && len(file.Egress) == 0 {
			t.Fatalf("DecideAgent(a) = %v with no egress rules", d)
		}
		ExplainAgent(p, "a", ProtoUDP, 0)
	})
}
