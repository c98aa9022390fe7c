package policy

import (
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func agentPeer(name string) Peer { return Peer{Kind: PeerAgent, Agent: name} }

func remotePeer(a string) Peer { return Peer{Kind: PeerRemote, Addr: netip.MustParseAddr(a)} }

var hostPeer = Peer{Kind: PeerHost, Addr: netip.MustParseAddr("127.0.0.1")}

type inboundCase struct {
	peer  Peer
	proto Proto
	port  uint16
	want  Verdict
	rule  string
	proxy bool
}

func checkInbound(t *testing.T, p *Policy, cases []inboundCase) {
	t.Helper()
	for _, tc := range cases {
		in := Inbound{Proto: tc.proto, Port: tc.port, Peer: tc.peer}
		d := p.DecideInbound(in)
		if d.Verdict != tc.want || d.Rule != tc.rule || d.ProxyProtocol != tc.proxy {
			t.Errorf("%s.DecideInbound(%s %s %d) = %v, proxy %v, want %v by %s, proxy %v",
				p.Name(), tc.peer, tc.proto, tc.port, d.Decision, d.ProxyProtocol, tc.want, tc.rule, tc.proxy)
		}
		if d.Reason == "" || strings.Contains(d.Reason, "\n") {
			t.Errorf("%s.DecideInbound(%s %s %d).Reason = %q, want one line", p.Name(), tc.peer, tc.proto, tc.port, d.Reason)
		}
	}
}

// Deny beats allow both ways for inbound connections, and each kind of
// peer matches only rules of its kind: an agent or a remote client whose
// address is the host's is not the host.
func TestDecideInbound(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	const (
		i0  = "inbound.yaml:19 ingress[0]"
		i1  = "inbound.yaml:22 ingress[1]"
		i2  = "inbound.yaml:24 ingress[2]"
		i3  = "inbound.yaml:27 ingress[3]"
		i4  = "inbound.yaml:30 ingress[4]"
		i5  = "inbound.yaml:33 ingress[5]"
		id0 = "inbound.yaml:37 ingress_deny[0]"
		id1 = "inbound.yaml:39 ingress_deny[1]"
		id2 = "inbound.yaml:40 ingress_deny[2]"
	)
	checkInbound(t, p, []inboundCase{
		{agentPeer("openclaw-cli"), tcp, 18789, Allow, i0, false},
		{agentPeer("tester"), tcp, 18789, Allow, i0, false},
		{hostPeer, tcp, 18789, Allow, i0, false},
		{Peer{Kind: PeerHost}, tcp, 18789, Allow, i0, false}, // the address is for the audit log only
		{agentPeer("openclaw-cli"), tcp, 18790, Deny, RuleDefault, false},
		{agentPeer("openclaw-cli"), udp, 18789, Deny, RuleDefault, false},
		{agentPeer("OpenClaw-CLI"), tcp, 18789, Deny, RuleDefault, false}, // names match exactly
		{agentPeer("other"), tcp, 18789, Deny, RuleDefault, false},
		{remotePeer("127.0.0.1"), tcp, 18789, Deny, RuleDefault, false}, // not the host
		{remotePeer("192.0.2.5"), tcp, 18789, Deny, RuleDefault, false},
		{Peer{Kind: PeerAgent, Agent: "other", Addr: netip.MustParseAddr("192.0.2.5")}, tcp, 9000, Deny, RuleDefault, false},
		{Peer{Kind: PeerAgent, Agent: "other", Addr: netip.MustParseAddr("127.0.0.1")}, tcp, 18789, Deny, RuleDefault, false},

		{agentPeer("tester"), tcp, 8081, Allow, i1, false},
		{agentPeer("tester"), tcp, 8080, Deny, id0, false}, // narrow deny in a broad allow, by agent
		{agentPeer("tester"), udp, 8080, Deny, id0, false}, // an ingress_deny rule without protocol covers both
		{hostPeer, tcp, 8050, Deny, id2, false},
		{hostPeer, udp, 8050, Deny, RuleDefault, false},

		{remotePeer("192.0.2.5"), tcp, 9000, Allow, i2, true},
		{remotePeer("::ffff:192.0.2.5"), tcp, 9000, Allow, i2, true},
		{remotePeer("2001:db8::1"), tcp, 9000, Allow, i2, true},
		{remotePeer("192.0.2.200"), tcp, 9000, Deny, id1, false}, // narrow deny in a broad allow, by cidr
		{remotePeer("192.0.2.200"), udp, 5353, Deny, id1, false}, // every port, both protocols
		{remotePeer("::ffff:192.0.2.200"), tcp, 9000, Deny, id1, false},
		{remotePeer("64:ff9b::192.0.2.200"), tcp, 443, Deny, id1, false}, // deny sees the IPv4 inside
		{remotePeer("64:ff9b::192.0.2.5"), tcp, 443, Allow, i5, false},
		{agentPeer("tester"), tcp, 9000, Allow, i3, true},
		{remotePeer("10.1.2.3"), udp, 5353, Allow, i4, false},
		{remotePeer("10.1.2.3"), tcp, 5353, Deny, RuleDefault, false},
		{remotePeer("8.8.8.8"), tcp, 443, Allow, i5, false},
		{remotePeer("2606:4700::1111"), tcp, 443, Allow, i5, false},
		{remotePeer("8.8.8.8"), tcp, 444, Deny, RuleDefault, false},
		{remotePeer("fe80::1%eth0"), tcp, 443, Allow, i5, false},

		{Peer{}, tcp, 18789, Deny, RuleBadPeer, false},
		{Peer{Kind: PeerKind(9), Agent: "tester"}, tcp, 18789, Deny, RuleBadPeer, false},
		{agentPeer(""), tcp, 18789, Deny, RuleBadPeer, false},
		{agentPeer("bad name"), tcp, 18789, Deny, RuleBadPeer, false},
		{Peer{Kind: PeerRemote}, tcp, 443, Deny, RuleBadPeer, false},
		{agentPeer("tester"), Proto(1), 18789, Deny, RuleBadProto, false},
	})
}

func TestDecideInboundReason(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	tests := []struct {
		in   Inbound
		want string
	}{
		{Inbound{tcp, 18789, agentPeer("openclaw-cli")}, "agent openclaw-cli may connect to tcp port 18789"},
		{Inbound{tcp, 18789, hostPeer}, "the host may connect to tcp port 18789"},
		{Inbound{tcp, 9000, remotePeer("192.0.2.5")}, "remote 192.0.2.5 in 192.0.2.0/24 may connect to tcp port 9000, with a PROXY v2 header"},
		{Inbound{tcp, 18789, agentPeer("x")}, "no ingress rule allows agent x on tcp port 18789"},
		{Inbound{udp, 53, remotePeer("192.0.2.5")}, "no ingress rule allows remote 192.0.2.5 on udp port 53"},
		{Inbound{udp, 53, remotePeer("::ffff:192.0.2.5")}, "no ingress rule allows remote 192.0.2.5 on udp port 53"},
		{Inbound{tcp, 8080, agentPeer("tester")}, "agent tester is denied by an ingress_deny rule (tcp and udp port 8080)"},
		{Inbound{udp, 1, remotePeer("192.0.2.129")}, "remote 192.0.2.129 in 192.0.2.128/25 is denied by an ingress_deny rule (tcp and udp any port)"},
	}
	for _, tc := range tests {
		if got := p.DecideInbound(tc.in).Reason; got != tc.want {
			t.Errorf("DecideInbound(%s %s %d).Reason = %q, want %q", tc.in.Peer, tc.in.Proto, tc.in.Port, got, tc.want)
		}
	}
}

// Egress to an agent: a deny rule naming it beats every egress rule that
// does, and agent names are neither DNS names nor addresses.
func TestDecideAgent(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	const (
		e0 = "inbound.yaml:6 egress[0]"
		e1 = "inbound.yaml:8 egress[1]"
		d0 = "inbound.yaml:15 deny[0]"
		d1 = "inbound.yaml:17 deny[1]"
	)
	tests := []struct {
		agent string
		proto Proto
		port  uint16
		want  Verdict
		rule  string
	}{
		{"db", tcp, 5432, Allow, e0},
		{"db", tcp, 6379, Allow, e0},
		{"db", tcp, 22, Deny, RuleDefault},
		{"db", udp, 5432, Deny, RuleDefault},
		{"DB", tcp, 5432, Deny, RuleDefault},
		{"cache", tcp, 5432, Deny, d0}, // narrow deny in a broad allow
		{"cache", tcp, 6379, Allow, e0},
		{"dns-agent", udp, 53, Allow, e1},
		{"dns-agent", tcp, 53, Deny, RuleDefault},
		{"search", tcp, 443, Deny, d1}, // a deny without ports covers every port
		{"search", udp, 443, Deny, d1},
		{"api.example.com", tcp, 443, Deny, RuleDefault}, // a name rule is not an agent rule
		{"nobody", tcp, 443, Deny, RuleDefault},
		{"", tcp, 443, Deny, RuleBadName},
		{"bad name", tcp, 443, Deny, RuleBadName},
		{"db", Proto(1), 5432, Deny, RuleBadProto},
	}
	for _, tc := range tests {
		d := p.DecideAgent(tc.agent, tc.proto, tc.port)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("DecideAgent(%q, %s, %d) = %v, want %v by %s", tc.agent, tc.proto, tc.port, d, tc.want, tc.rule)
		}
		if d.Reason == "" || strings.Contains(d.Reason, "\n") {
			t.Errorf("DecideAgent(%q, %s, %d).Reason = %q, want one line", tc.agent, tc.proto, tc.port, d.Reason)
		}
	}
	if got, want := p.DecideAgent("db", tcp, 5432).Reason, "agent db is allowed on tcp ports 5432,6379"; got != want {
		t.Errorf("DecideAgent(db, tcp, 5432).Reason = %q, want %q", got, want)
	}
	if got, want := p.DecideAgent("db", tcp, 22).Reason, "no egress rule allows tcp to agent db on port 22"; got != want {
		t.Errorf("DecideAgent(db, tcp, 22).Reason = %q, want %q", got, want)
	}
	// Agent rules open no name and no address: what DecideFlow, DecideName
	// and DecideQuery decide is what the domain and cidr rules say.
	if d := p.DecideName("api.example.com", tcp, 443); !d.Allowed() || d.Rule != "inbound.yaml:11 egress[2]" {
		t.Errorf("DecideName(api.example.com, tcp, 443) = %v, want allow by egress[2]", d)
	}
	for _, name := range []string{"db", "search", "db.agents.clawnet.internal"} {
		if d := p.DecideName(name, tcp, 5432); d.Allowed() {
			t.Errorf("DecideName(%q, tcp, 5432) = %v, want deny", name, d)
		}
		if d := p.DecideQuery(name); d.Allowed() {
			t.Errorf("DecideQuery(%q) = %v, want deny", name, d)
		}
	}
	checkFlows(t, p, []flowCase{
		{tcp, "10.0.0.5:5432", []string{"db"}, Deny, RuleSpecialAddress},
		{tcp, "93.184.216.34:5432", []string{"db"}, Deny, RuleDefault},
		{tcp, "93.184.216.34:443", []string{"api.example.com"}, Allow, "inbound.yaml:11 egress[2]"},
	})
}

// Agent to agent needs both sides: the caller's egress names the callee,
// and the callee's ingress names the caller. Either alone opens nothing.
func TestAgentToAgentBothSides(t *testing.T) {
	gw := mustLoad(t, "testdata/good/openclaw-gateway.yaml", Options{})
	cli := mustLoad(t, "testdata/good/openclaw-cli.yaml", Options{})
	allowed := func(from *Policy, fromName string, to *Policy, toName string, port uint16) bool {
		return from.DecideAgent(toName, tcp, port).Allowed() &&
			to.DecideInbound(Inbound{Proto: tcp, Port: port, Peer: agentPeer(fromName)}).Allowed()
	}
	if !allowed(cli, "openclaw-cli", gw, "openclaw-gateway", 18789) {
		t.Errorf("openclaw-cli to openclaw-gateway:18789 is refused, want allowed by both policies")
	}
	if allowed(gw, "openclaw-gateway", cli, "openclaw-cli", 18789) {
		t.Errorf("openclaw-gateway to openclaw-cli:18789 is allowed, want refused: neither policy says so")
	}
	if allowed(cli, "openclaw-cli", gw, "openclaw-gateway", 8080) {
		t.Errorf("openclaw-cli to openclaw-gateway:8080 is allowed, want refused")
	}
	// One side alone is not enough.
	if d := cli.DecideAgent("openclaw-gateway", tcp, 18789); !d.Allowed() {
		t.Errorf("openclaw-cli.DecideAgent(openclaw-gateway, tcp, 18789) = %v, want allow", d)
	}
	if d := cli.DecideInbound(Inbound{tcp, 18789, agentPeer("openclaw-gateway")}); d.Allowed() {
		t.Errorf("openclaw-cli.DecideInbound(agent:openclaw-gateway tcp 18789) = %v, want deny", d.Decision)
	}
	other := mustParse(t, "other.yaml", "version: v1\nname: other\n", Options{})
	if allowed(other, "other", gw, "openclaw-gateway", 18789) {
		t.Errorf("an agent whose egress names no agent reaches openclaw-gateway:18789")
	}
	checkInbound(t, gw, []inboundCase{
		{hostPeer, tcp, 18789, Allow, "openclaw-gateway.yaml:8 ingress[0]", false},
		{remotePeer("192.0.2.5"), tcp, 18789, Deny, RuleDefault, false},
		{agentPeer("other"), tcp, 18789, Deny, RuleDefault, false},
	})
}

// The built-in default policy lets nothing in and reaches no agent.
func TestDefaultInbound(t *testing.T) {
	p, err := Default("anthropic", []string{"mcp.example.com", "10.5.0.7:9000"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range []Peer{agentPeer("openclaw-cli"), hostPeer, remotePeer("10.5.0.7"), remotePeer("8.8.8.8"), remotePeer("::1")} {
		for _, proto := range []Proto{tcp, udp} {
			for _, port := range []uint16{1, 53, 443, 9000, 18789, 65535} {
				d := p.DecideInbound(Inbound{Proto: proto, Port: port, Peer: peer})
				if d.Verdict != Deny || d.Rule != RuleDefault || d.ProxyProtocol {
					t.Errorf("Default.DecideInbound(%s %s %d) = %v, proxy %v, want deny by %s", peer, proto, port, d.Decision, d.ProxyProtocol, RuleDefault)
				}
			}
			if p.HasIngress(proto, 443) {
				t.Errorf("Default.HasIngress(%s, 443) = true, want false", proto)
			}
		}
	}
	for _, a := range []string{"openclaw-gateway", "mcp.example.com", "default"} {
		if d := p.DecideAgent(a, tcp, 443); d.Verdict != Deny || d.Rule != RuleDefault {
			t.Errorf("Default.DecideAgent(%q, tcp, 443) = %v, want deny by %s", a, d, RuleDefault)
		}
	}
}

func TestHasIngress(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	tests := []struct {
		proto Proto
		port  uint16
		want  bool
	}{
		{tcp, 18789, true},
		{udp, 18789, false},
		{udp, 5353, true},
		{tcp, 5353, false},
		{tcp, 8080, true}, // denied to tester by ingress_deny, but some peer may be allowed
		{tcp, 8100, true},
		{tcp, 8101, false},
		{tcp, 1, false},
		{udp, 9000, false},
		{Proto(1), 18789, false},
	}
	for _, tc := range tests {
		if got := p.HasIngress(tc.proto, tc.port); got != tc.want {
			t.Errorf("HasIngress(%s, %d) = %v, want %v", tc.proto, tc.port, got, tc.want)
		}
	}
	if none := mustLoad(t, "testdata/good/coder.yaml", Options{}); none.HasIngress(tcp, 443) {
		t.Errorf("coder.HasIngress(tcp, 443) = true, want false: it has no ingress rules")
	}
}

func TestParseInbound(t *testing.T) {
	data := []byte(`version: v1
name: gw
ingress:
  - ports: [18789]
    host: true
    agents: [openclaw-cli, "1234"]
    cidrs: [192.0.2.0/24]
    proxy_protocol: v2
  - ports: [443]
    protocol: udp
    cidrs: ["::/0"]
    allow_any: true
ingress_deny:
  - agents: [intruder]
egress:
  - agents: [db]
    domains: [api.example.com]
    ports: [5432]
deny:
  - agents:
      - cache
`)
	f, err := Parse("gw.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Ingress) != 2 || len(f.IngressDeny) != 1 {
		t.Fatalf("Parse(gw.yaml) has %d ingress, %d ingress_deny rules, want 2, 1", len(f.Ingress), len(f.IngressDeny))
	}
	i0, i1, d0 := f.Ingress[0], f.Ingress[1], f.IngressDeny[0]
	if i0.Line != 4 || !i0.Host || !i0.ProxyProtocol || i0.AllowAny || i0.Protocol != 0 ||
		!slices.Equal(i0.Agents, []string{"openclaw-cli", "1234"}) ||
		!slices.Equal(i0.CIDRs, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}) ||
		!slices.Equal(i0.Ports, []PortRange{{18789, 18789}}) {
		t.Errorf("Parse(gw.yaml).Ingress[0] = %+v", i0)
	}
	if i1.Line != 9 || i1.Host || i1.ProxyProtocol || !i1.AllowAny || i1.Protocol != ProtoUDP {
		t.Errorf("Parse(gw.yaml).Ingress[1] = %+v", i1)
	}
	if d0.Line != 14 || d0.Ports != nil || d0.Protocol != 0 || !slices.Equal(d0.Agents, []string{"intruder"}) {
		t.Errorf("Parse(gw.yaml).IngressDeny[0] = %+v", d0)
	}
	if e := f.Egress[0]; !slices.Equal(e.Agents, []string{"db"}) || len(e.Domains) != 1 {
		t.Errorf("Parse(gw.yaml).Egress[0] = %+v", e)
	}
	want := []AgentRef{
		{"openclaw-cli", 6, "ingress"}, {"1234", 6, "ingress"},
		{"intruder", 14, "ingress_deny"},
		{"db", 16, "egress"},
		{"cache", 21, "deny"},
	}
	if got := f.AgentRefs(); !slices.Equal(got, want) {
		t.Errorf("AgentRefs() = %v, want %v", got, want)
	}
	p, err := Compile(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkInbound(t, p, []inboundCase{
		{agentPeer("1234"), tcp, 18789, Allow, "gw.yaml:4 ingress[0]", true},
		{agentPeer("intruder"), tcp, 18789, Deny, "gw.yaml:14 ingress_deny[0]", false},
		{remotePeer("2001:db8::1"), udp, 443, Allow, "gw.yaml:9 ingress[1]", false},
		{remotePeer("2001:db8::1"), tcp, 443, Deny, RuleDefault, false},
	})
}

// The same port may not both carry a PROXY header and not: whoever rule
// lets a peer in, the server sees the same kind of stream.
func TestProxyConflict(t *testing.T) {
	base := "version: v1\nname: gw\ningress:\n"
	good := []string{
		"  - {ports: [80], host: true, proxy_protocol: v2}\n  - {ports: [80], agents: [a], proxy_protocol: v2}\n",
		"  - {ports: [80], host: true, proxy_protocol: v2}\n  - {ports: [81], agents: [a]}\n",
		"  - {ports: [80], host: true, proxy_protocol: v2}\n  - {ports: [80], agents: [a], protocol: udp}\n",
		"  - {ports: [80], protocol: udp, host: true, proxy_protocol: v2}\n  - {ports: [80], agents: [a]}\n",
	}
	for _, g := range good {
		if _, err := Parse("gw.yaml", []byte(base+g)); err != nil {
			t.Errorf("Parse(%q) = %v, want ok", g, err)
		}
	}
	bad := map[string]string{
		"  - {ports: [80], host: true, proxy_protocol: v2}\n  - {ports: [\"1-100\"], agents: [a]}\n":                                                                      "gw.yaml:5: ingress[1] and ingress[0] (line 4) disagree on proxy_protocol for tcp port 80",
		"  - {ports: [\"70-90\"], host: true}\n  - {ports: [90], protocol: tcp, agents: [a], proxy_protocol: v2}\n":                                                       "gw.yaml:5: ingress[1] and ingress[0] (line 4) disagree on proxy_protocol for tcp port 90",
		"  - {ports: [53], protocol: udp, host: true}\n  - {ports: [53], protocol: tcp, host: true}\n  - {ports: [53], protocol: udp, agents: [a], proxy_protocol: v2}\n": "gw.yaml:6: ingress[2] and ingress[0] (line 4) disagree on proxy_protocol for udp port 53",
	}
	for src, want := range bad {
		_, err := Parse("gw.yaml", []byte(base+src))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %s...", src, err, want)
		}
	}
}

func TestParsePeer(t *testing.T) {
	tests := []struct {
		in   string
		want Peer
		err  bool
	}{
		{"agent:openclaw-cli", agentPeer("openclaw-cli"), false},
		{"agent:A.b_c-1", agentPeer("A.b_c-1"), false},
		{"host", Peer{Kind: PeerHost}, false},
		{"203.0.113.5", remotePeer("203.0.113.5"), false},
		{"remote:2001:db8::1", remotePeer("2001:db8::1"), false},
		{"::ffff:203.0.113.5", remotePeer("203.0.113.5"), false},
		{"agent:", Peer{}, true},
		{"agent:bad name", Peer{}, true},
		{"agent:-x", Peer{}, true},
		{"Host", Peer{}, true},
		{"fe80::1%eth0", Peer{}, true},
		{"example.com", Peer{}, true},
		{"", Peer{}, true},
	}
	for _, tc := range tests {
		got, err := ParsePeer(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParsePeer(%q) = %v, %v, want %v, err %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil {
			if back, err := ParsePeer(got.String()); err != nil || back != got {
				t.Errorf("ParsePeer(%q.String() = %q) = %v, %v, want %v", tc.in, got.String(), back, err, got)
			}
		}
	}
}

// Compile re-checks ingress rules of Files built by hand.
func TestCompileHandBuiltIngress(t *testing.T) {
	ports := []PortRange{{80, 80}}
	bad := []struct {
		ingress, deny []IngressRule
		egress        []Rule
	}{
		{ingress: []IngressRule{{Host: true}}},                              // no ports
		{ingress: []IngressRule{{Ports: ports}}},                            // no peer
		{deny: []IngressRule{{Ports: ports}}},                               // no peer
		{ingress: []IngressRule{{Ports: ports, Agents: []string{"a b"}}}},   // bad agent
		{deny: []IngressRule{{Agents: []string{""}}}},                       // bad agent
		{ingress: []IngressRule{{Ports: ports, Host: true, Protocol: 1}}},   // protocol
		{deny: []IngressRule{{Host: true, ProxyProtocol: true}}},            // proxy on deny
		{deny: []IngressRule{{Host: true, AllowAny: true}}},                 // allow_any on deny
		{ingress: []IngressRule{{Ports: ports, CIDRs: []netip.Prefix{{}}}}}, // bad cidr
		{ingress: []IngressRule{{Ports: ports, CIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}}},
		{ingress: []IngressRule{{Ports: ports, Host: true}, {Ports: ports, Host: true, ProxyProtocol: true}}},
		{egress: []Rule{{Ports: ports, Agents: []string{"a/b"}}}},
		{egress: []Rule{{Agents: []string{"a"}}}}, // no ports
	}
	for _, tc := range bad {
		f := &File{Filename: "hand.yaml", Name: "hand", Ingress: tc.ingress, IngressDeny: tc.deny, Egress: tc.egress}
		if _, err := Compile(f, Options{}); err == nil {
			t.Errorf("Compile(ingress %+v, ingress_deny %+v, egress %+v) = nil error, want one", tc.ingress, tc.deny, tc.egress)
		}
	}
	p, err := Compile(&File{Filename: "hand.yaml", Name: "hand",
		Ingress:     []IngressRule{{Line: 3, Ports: ports, CIDRs: []netip.Prefix{netip.MustParsePrefix("::/0")}, AllowAny: true}},
		IngressDeny: []IngressRule{{Line: 5, CIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkInbound(t, p, []inboundCase{
		{remotePeer("2001:db8::1"), tcp, 80, Allow, "hand.yaml:3 ingress[0]", false},
		{remotePeer("192.0.2.1"), tcp, 80, Deny, "hand.yaml:5 ingress_deny[0]", false},
	})
}

func TestExplainInbound(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	tests := []struct {
		in      Inbound
		want    Verdict
		rule    string
		reasons []string
	}{
		{Inbound{tcp, 18789, agentPeer("openclaw-cli")}, Allow, "inbound.yaml:19 ingress[0]",
			[]string{"agent openclaw-cli may connect to tcp port 18789", "agent openclaw-cli's own policy must also name this agent"}},
		{Inbound{tcp, 0, agentPeer("tester")}, Allow, "inbound.yaml:19 ingress[0]",
			[]string{"agent tester may connect to tcp ports 8000-8079,8081-8100,9000,18789"}},
		{Inbound{udp, 0, agentPeer("tester")}, Deny, RuleDefault,
			[]string{"no ingress rule allows agent tester on any udp port", "add to ingress: {ports: [PORT], protocol: udp, agents: [tester]}"}},
		{Inbound{tcp, 18789, agentPeer("x")}, Deny, RuleDefault,
			[]string{"no ingress rule allows agent x on tcp port 18789; to let it in, add to ingress: {ports: [18789], agents: [x]}"}},
		{Inbound{tcp, 22, hostPeer}, Deny, RuleDefault, []string{"add to ingress: {ports: [22], host: true}"}},
		{Inbound{tcp, 0, hostPeer}, Allow, "inbound.yaml:19 ingress[0]", []string{"the host may connect to tcp port 18789"}},
		{Inbound{tcp, 22, remotePeer("::ffff:198.51.100.7")}, Deny, RuleDefault, []string{"add to ingress: {ports: [22], cidrs: [198.51.100.7]}"}},
		{Inbound{tcp, 9000, remotePeer("192.0.2.5")}, Allow, "inbound.yaml:24 ingress[2]", []string{"with a PROXY v2 header"}},
		{Inbound{tcp, 0, remotePeer("192.0.2.200")}, Deny, "inbound.yaml:39 ingress_deny[1]", []string{"denied on every tcp port an ingress rule gives it"}},
		{Inbound{tcp, 8080, agentPeer("tester")}, Deny, "inbound.yaml:37 ingress_deny[0]", []string{"denied by an ingress_deny rule"}},
		{Inbound{tcp, 0, agentPeer("bad name")}, Deny, RuleBadPeer, nil},
		{Inbound{Proto(1), 0, hostPeer}, Deny, RuleBadProto, nil},
	}
	for _, tc := range tests {
		d := ExplainInbound(p, tc.in)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("ExplainInbound(%s %s %d) = %v, want %v by %s", tc.in.Peer, tc.in.Proto, tc.in.Port, d, tc.want, tc.rule)
		}
		for _, r := range tc.reasons {
			if !strings.Contains(d.Reason, r) {
				t.Errorf("ExplainInbound(%s %s %d).Reason = %q, want it to contain %q", tc.in.Peer, tc.in.Proto, tc.in.Port, d.Reason, r)
			}
		}
	}
	only := mustParse(t, "only.yaml", "version: v1\nname: only\ningress_deny:\n  - agents: [x]\n", Options{})
	if d := ExplainInbound(only, Inbound{tcp, 0, agentPeer("x")}); d.Rule != "only.yaml:4 ingress_deny[0]" || !strings.Contains(d.Reason, "denied on every tcp port by an ingress_deny rule") {
		t.Errorf("ExplainInbound(only, agent:x tcp 0) = %v, want deny by only.yaml:4 ingress_deny[0]", d)
	}
}

func TestExplainAgent(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	tests := []struct {
		agent   string
		proto   Proto
		port    uint16
		want    Verdict
		rule    string
		reasons []string
	}{
		{"db", tcp, 5432, Allow, "inbound.yaml:6 egress[0]", []string{"agent db's own policy must also let this agent in"}},
		{"db", tcp, 0, Allow, "inbound.yaml:6 egress[0]", []string{"agent db is allowed on tcp ports 5432,6379"}},
		{"cache", tcp, 0, Allow, "inbound.yaml:6 egress[0]", []string{"agent cache is allowed on tcp port 6379"}},
		{"search", tcp, 0, Deny, "inbound.yaml:17 deny[1]", []string{"denied on every tcp port an egress rule gives it"}},
		{"search", udp, 0, Deny, "inbound.yaml:17 deny[1]", []string{"agent search is denied on every udp port by a deny rule"}},
		{"db", udp, 0, Deny, RuleDefault, []string{"add to egress: {agents: [db], ports: [PORT], protocol: udp}"}},
		{"cache", udp, 0, Deny, RuleDefault, []string{"no egress rule allows udp to agent cache"}}, // the deny covers 5432 only
		{"web", tcp, 8080, Deny, RuleDefault, []string{"no egress rule allows tcp to agent web on port 8080; to allow it, add to egress: {agents: [web], ports: [8080]}"}},
		{"a b", tcp, 80, Deny, RuleBadName, nil},
		{"db", Proto(1), 0, Deny, RuleBadProto, nil},
	}
	for _, tc := range tests {
		d := ExplainAgent(p, tc.agent, tc.proto, tc.port)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("ExplainAgent(%q, %s, %d) = %v, want %v by %s", tc.agent, tc.proto, tc.port, d, tc.want, tc.rule)
		}
		for _, r := range tc.reasons {
			if !strings.Contains(d.Reason, r) {
				t.Errorf("ExplainAgent(%q, %s, %d).Reason = %q, want it to contain %q", tc.agent, tc.proto, tc.port, d.Reason, r)
			}
		}
	}
}

// Inbound decisions share the compiled policy too; run with -race.
func TestConcurrentInbound(t *testing.T) {
	p := mustLoad(t, "testdata/good/inbound.yaml", Options{})
	done := make(chan bool)
	for g := 0; g < 8; g++ {
		go func() {
			ok := true
			for i := 0; i < 500; i++ {
				ok = ok && p.DecideInbound(Inbound{tcp, 18789, agentPeer("tester")}).Allowed()
				ok = ok && !p.DecideInbound(Inbound{tcp, 9000, remotePeer("192.0.2.200")}).Allowed()
				ok = ok && p.DecideAgent("db", tcp, 5432).Allowed()
				ok = ok && ExplainInbound(p, Inbound{tcp, 0, hostPeer}).Allowed()
				ok = ok && ExplainAgent(p, "cache", tcp, 0).Allowed()
			}
			done <- ok
		}()
	}
	for g := 0; g < 8; g++ {
		if !<-done {
			t.Errorf("a concurrent decision came out wrong")
		}
	}
}

// ValidAgentName is the gateway's attach-time pattern, without a regexp.
func TestValidAgentName(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	long := strings.Repeat("a", 63)
	for _, s := range []string{
		"a", "Z", "0", "openclaw-cli", "A.b_c-1", "1234", long, long + "a", "",
		"-a", ".a", "_a", "a b", "a/b", "a:b", "é", "a\n", "a\x00", "a..b", "a-", "ab\u0131",
	} {
		if got, want := ValidAgentName(s), re.MatchString(s); got != want {
			t.Errorf("ValidAgentName(%q) = %v, want %v", s, got, want)
		}
	}
}

// Every complete policy in README.md (a yaml block that starts with
// version: v1) parses and compiles, so the documentation cannot drift.
func TestReadmeExamples(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	blocks := strings.Split(string(data), "```yaml\n")
	for _, b := range blocks[1:] {
		src, _, _ := strings.Cut(b, "```")
		if !strings.HasPrefix(src, "version: v1") {
			continue
		}
		n++
		f, err := Parse("README.md", []byte(src))
		if err == nil {
			_, err = Compile(f, Options{})
		}
		if err != nil {
			t.Errorf("README example %d: %v", n, err)
		}
	}
	if n < 3 {
		t.Errorf("README.md has %d complete policy examples, want at least 3", n)
	}
}
