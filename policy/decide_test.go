package policy

import (
	"net/netip"
	"strings"
	"testing"
)

type flowCase struct {
	proto Proto
	dst   string
	names []string
	want  Verdict
	rule  string
}

func (c flowCase) flow() Flow {
	return Flow{Proto: c.proto, Dst: netip.MustParseAddrPort(c.dst), Names: c.names}
}

func checkFlows(t *testing.T, p *Policy, cases []flowCase) {
	t.Helper()
	for _, tc := range cases {
		d := p.DecideFlow(tc.flow())
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("%s.DecideFlow(%s %s %v) = %v, want %v by %s", p.Name(), tc.proto, tc.dst, tc.names, d, tc.want, tc.rule)
		}
		if d.Reason == "" || strings.Contains(d.Reason, "\n") {
			t.Errorf("%s.DecideFlow(%s %s %v).Reason = %q, want one line", p.Name(), tc.proto, tc.dst, tc.names, d.Reason)
		}
	}
}

const (
	tcp = ProtoTCP
	udp = ProtoUDP
)

// Deny beats allow both ways: a narrow allow inside a broad deny, and a
// narrow deny inside a broad allow, by name and by CIDR.
func TestDecideFlowLayered(t *testing.T) {
	p := mustLoad(t, "testdata/good/layered.yaml", Options{})
	const (
		e0 = "layered.yaml:6 egress[0]"
		e2 = "layered.yaml:10 egress[2]"
		e4 = "layered.yaml:14 egress[4]"
		d0 = "layered.yaml:18 deny[0]"
		d1 = "layered.yaml:19 deny[1]"
		d2 = "layered.yaml:20 deny[2]"
		d3 = "layered.yaml:22 deny[3]"
		d4 = "layered.yaml:23 deny[4]"
	)
	web := "93.184.216.34"
	checkFlows(t, p, []flowCase{
		{tcp, web + ":443", []string{"www.example.com"}, Allow, e0},
		{tcp, web + ":80", []string{"api.example.com"}, Allow, e0},
		{tcp, web + ":80", []string{"www.example.com"}, Deny, d2},     // narrow deny in broad allow
		{tcp, web + ":443", []string{"secret.example.com"}, Deny, d0}, // deny on every port
		{udp, web + ":443", []string{"secret.example.com"}, Deny, d0}, // and both protocols
		{tcp, web + ":443", []string{"a.secret.example.com"}, Allow, e0},
		{tcp, web + ":443", []string{"ok.blocked.example.org"}, Deny, d1}, // narrow allow in broad deny
		{tcp, web + ":443", []string{"api.example.com", "secret.example.com"}, Deny, d0},
		{tcp, web + ":443", []string{"secret.example.com", "api.example.com"}, Deny, d0},
		{tcp, web + ":443", []string{"bad name!", "api.example.com"}, Allow, e0},
		{udp, web + ":443", []string{"www.example.com"}, Deny, RuleDefault},
		{tcp, web + ":8443", []string{"www.example.com"}, Deny, RuleDefault},
		{tcp, web + ":443", []string{"example.com"}, Deny, RuleDefault}, // wildcard is not the apex
		{tcp, web + ":443", nil, Deny, RuleDefault},
		{tcp, "10.1.2.3:22", nil, Allow, e2},
		{tcp, "10.1.2.3:65535", nil, Allow, e2},
		{udp, "10.1.2.3:22", nil, Deny, RuleDefault},
		{tcp, "10.99.1.1:22", nil, Deny, d3}, // narrow deny in broad allow, by cidr
		{udp, "10.99.1.1:22", nil, Deny, d3},
		{tcp, "10.1.2.3:22", []string{"secret.example.com"}, Deny, d0},
		{tcp, "172.16.5.5:443", nil, Deny, d4}, // narrow allow in broad deny, by cidr
		{udp, "172.16.5.5:443", nil, Deny, RuleDefault},
		{udp, "8.8.8.8:53", nil, Allow, e4},
		{tcp, "8.8.8.8:53", nil, Deny, RuleDefault},
		{udp, "8.8.4.4:53", nil, Deny, RuleDefault},
		{tcp, "[::ffff:10.1.2.3]:22", nil, Allow, e2},
		{tcp, "[::ffff:10.99.1.1]:22", nil, Deny, d3},
		{tcp, "[64:ff9b::10.1.2.3]:22", nil, Deny, RuleSpecialAddress}, // the v4 rule does not open the NAT64 form
		{tcp, "[2002:a01:203::1]:22", nil, Deny, RuleSpecialAddress},
		{tcp, "192.168.1.1:443", []string{"www.example.com"}, Deny, RuleSpecialAddress}, // DNS rebinding
		{tcp, "127.0.0.1:443", []string{"www.example.com"}, Deny, RuleSpecialAddress},
		{tcp, "[::1]:443", []string{"www.example.com"}, Deny, RuleSpecialAddress},
		{tcp, "[::ffff:127.0.0.1]:443", []string{"www.example.com"}, Deny, RuleSpecialAddress},
		{tcp, "169.254.169.254:80", []string{"www.example.com"}, Deny, RuleMetadata},
		{tcp, "[fe80::1%eth0]:443", []string{"www.example.com"}, Deny, RuleSpecialAddress},
		{Proto(1), web + ":443", []string{"www.example.com"}, Deny, RuleBadProto},
	})
	if d := p.DecideFlow(Flow{Proto: tcp}); d.Verdict != Deny || d.Rule != RuleBadAddress {
		t.Errorf("DecideFlow(zero Flow) = %v, want deny by %s", d, RuleBadAddress)
	}
}

// An unsafe /0 opens public addresses only: never private, loopback,
// link-local, CGNAT or metadata, and deny rules still apply, also to the
// IPv4 address inside NAT64 and 6to4 forms.
func TestDecideFlowUnsafe(t *testing.T) {
	p := mustLoad(t, "testdata/good/unsafe.yaml", Options{})
	const (
		e0 = "unsafe.yaml:6 egress[0]"
		e1 = "unsafe.yaml:8 egress[1]"
		d0 = "unsafe.yaml:11 deny[0]"
		d1 = "unsafe.yaml:12 deny[1]"
	)
	checkFlows(t, p, []flowCase{
		{tcp, "8.8.8.8:443", nil, Allow, e0},
		{tcp, "[2606:4700:4700::1111]:443", nil, Allow, e0},
		{tcp, "[64:ff9b::8.8.8.8]:443", nil, Allow, e0},
		{tcp, "10.0.0.1:443", nil, Deny, RuleSpecialAddress},
		{tcp, "192.168.0.1:443", nil, Deny, RuleSpecialAddress},
		{tcp, "127.0.0.1:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[::1]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[fe80::1]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[fd00::1]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "100.64.0.1:80", nil, Deny, RuleSpecialAddress},
		{tcp, "0.0.0.0:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[::]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "224.0.0.1:80", nil, Deny, RuleSpecialAddress},
		{tcp, "255.255.255.255:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[64:ff9b::10.0.0.1]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[2002:7f00:1::1]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "[2001:0:4136:e378:8000:63bf:f5ff:fffe]:80", nil, Deny, RuleSpecialAddress},
		{tcp, "169.254.169.254:80", nil, Deny, RuleMetadata},
		{tcp, "[::ffff:169.254.169.254]:80", nil, Deny, RuleMetadata},
		{tcp, "[64:ff9b::a9fe:a9fe]:80", nil, Deny, RuleMetadata},
		{tcp, "[fd00:ec2::254]:80", nil, Deny, RuleMetadata},
		{tcp, "100.100.100.200:80", nil, Deny, RuleMetadata},
		{tcp, "10.20.1.1:5432", nil, Allow, e1},
		{tcp, "10.20.1.1:5433", nil, Deny, RuleDefault},
		{tcp, "1.1.1.1:443", nil, Deny, d0},
		{tcp, "[64:ff9b::1.1.1.1]:443", nil, Deny, d0},
		{tcp, "[2002:101:101::1]:443", nil, Deny, d0},
		{tcp, "203.0.113.5:443", nil, Deny, d0},
		{udp, "9.9.9.9:53", nil, Deny, d1},
		{tcp, "9.9.9.9:53", nil, Allow, e0},
		{udp, "8.8.8.8:53", nil, Deny, RuleDefault},
	})
}

// treat_as_public makes lab addresses ordinary public ones: still bound by
// names and rules, never blanket-allowed, and metadata stays closed.
func TestDecideFlowTreatAsPublic(t *testing.T) {
	opts := Options{TreatAsPublic: []netip.Prefix{
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("169.254.0.0/16"),
	}}
	p := mustLoad(t, "testdata/good/coder.yaml", opts)
	const (
		preset = "coder.yaml:4 preset anthropic"
		e0     = "coder.yaml:6 egress[0]"
		d0     = "coder.yaml:12 deny[0]"
	)
	checkFlows(t, p, []flowCase{
		{tcp, "198.18.0.10:443", []string{"api.github.com"}, Allow, e0},
		{tcp, "198.18.0.10:443", []string{"raw.githubusercontent.com"}, Allow, e0},
		{tcp, "198.18.0.10:443", nil, Deny, RuleDefault},
		{tcp, "198.18.0.10:80", []string{"api.github.com"}, Deny, RuleDefault},
		{tcp, "198.18.0.10:443", []string{"gist.github.com"}, Deny, d0},
		{tcp, "[2001:db8::10]:443", []string{"api.anthropic.com"}, Allow, preset},
		{tcp, "[::ffff:198.18.0.10]:443", []string{"api.github.com"}, Allow, e0},
		{tcp, "[64:ff9b::198.18.0.10]:443", []string{"api.github.com"}, Allow, e0},
		{tcp, "169.254.169.254:80", []string{"api.github.com"}, Deny, RuleMetadata},
		{tcp, "169.254.1.1:443", []string{"api.github.com"}, Allow, e0},
		{tcp, "198.51.100.1:443", []string{"api.github.com"}, Deny, RuleSpecialAddress},
	})
	plain := mustLoad(t, "testdata/good/coder.yaml", Options{})
	checkFlows(t, plain, []flowCase{
		{tcp, "198.18.0.10:443", []string{"api.github.com"}, Deny, RuleSpecialAddress},
		{tcp, "[2001:db8::10]:443", []string{"api.anthropic.com"}, Deny, RuleSpecialAddress},
	})
	for _, bad := range []string{"0.0.0.0/0", "::/0", "0.0.0.0/4", "::ffff:0:0/96"} {
		_, err := Compile(&File{Name: "x"}, Options{TreatAsPublic: []netip.Prefix{netip.MustParsePrefix(bad)}})
		if err == nil {
			t.Errorf("Compile(TreatAsPublic %s) = nil error, want one", bad)
		}
	}
}

// A cidrs rule opens a special range only if it lies within that range.
func TestDecideFlowSpecialRanges(t *testing.T) {
	p := mustParse(t, "ranges.yaml", `version: v1
name: ranges
egress:
  - cidrs: [10.20.0.0/16, 127.0.0.1, "fd00:1::/64", 100.64.0.0/10, 169.254.169.0/24]
    ports: [8080]
  - cidrs: [8.0.0.0/8]
    ports: [8080]
  - cidrs: ["64:ff9b::a14:0/112", "2002:c0a8::/32"]
    ports: [8080]
`, Options{})
	const e0, e1, e2 = "ranges.yaml:4 egress[0]", "ranges.yaml:6 egress[1]", "ranges.yaml:8 egress[2]"
	checkFlows(t, p, []flowCase{
		{tcp, "10.20.1.1:8080", nil, Allow, e0},
		{tcp, "10.21.1.1:8080", nil, Deny, RuleSpecialAddress},
		{tcp, "127.0.0.1:8080", nil, Allow, e0},
		{tcp, "127.0.0.2:8080", nil, Deny, RuleSpecialAddress},
		{tcp, "[fd00:1::5]:8080", nil, Allow, e0},
		{tcp, "[fd00:2::5]:8080", nil, Deny, RuleSpecialAddress},
		{tcp, "100.64.3.4:8080", nil, Allow, e0},
		{tcp, "169.254.169.1:8080", nil, Allow, e0},
		{tcp, "169.254.169.254:8080", nil, Deny, RuleMetadata}, // never, even when a rule names it
		{tcp, "8.1.1.1:8080", nil, Allow, e1},
		{tcp, "[64:ff9b::10.20.1.1]:8080", nil, Allow, e2},
		{tcp, "[64:ff9b::10.21.1.1]:8080", nil, Deny, RuleSpecialAddress},
		{tcp, "[2002:c0a8:101::1]:8080", nil, Allow, e2},
		{tcp, "[2002:a00:1::1]:8080", nil, Deny, RuleSpecialAddress},
		{tcp, "[2002:c0a9:101::1]:8080", nil, Deny, RuleDefault}, // 192.169.1.1 is public
	})
}

func TestDecideName(t *testing.T) {
	p := mustLoad(t, "testdata/good/layered.yaml", Options{})
	tests := []struct {
		name  string
		proto Proto
		port  uint16
		want  Verdict
		rule  string
	}{
		{"www.example.com", tcp, 443, Allow, "layered.yaml:6 egress[0]"},
		{"WWW.Example.COM.", tcp, 443, Allow, "layered.yaml:6 egress[0]"},
		{"www.example.com", tcp, 80, Deny, "layered.yaml:20 deny[2]"},
		{"api.example.com", tcp, 80, Allow, "layered.yaml:6 egress[0]"},
		{"www.example.com", udp, 443, Deny, RuleDefault},
		{"secret.example.com", tcp, 443, Deny, "layered.yaml:18 deny[0]"},
		{"ok.blocked.example.org", tcp, 443, Deny, "layered.yaml:19 deny[1]"},
		{"example.com", tcp, 443, Deny, RuleDefault},
		{"example.org", tcp, 443, Deny, RuleDefault},
		{"bad name", tcp, 443, Deny, RuleBadName},
		{"", tcp, 443, Deny, RuleBadName},
		{"www.example.com", Proto(1), 443, Deny, RuleBadProto},
	}
	for _, tc := range tests {
		d := p.DecideName(tc.name, tc.proto, tc.port)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("DecideName(%q, %s, %d) = %v, want %v by %s", tc.name, tc.proto, tc.port, d, tc.want, tc.rule)
		}
	}
}

func TestDecideQuery(t *testing.T) {
	p := mustParse(t, "q.yaml", `version: v1
name: q
egress:
  - domains: ["*.example.com"]
    ports: [443, 80]
  - domains: [mail.example.net]
    ports: [25]
  - domains: [dns.example.net]
    ports: [53]
    protocol: udp
  - domains: [ok.blocked.example.org]
    ports: [443]
deny:
  - domains: [secret.example.com]
  - domains: ["*.blocked.example.org"]
  - domains: [www.example.com]
    ports: [80]
  - domains: [mail.example.net]
    ports: [1-1024]
  - domains: [dns.example.net]
    protocol: tcp
`, Options{})
	tests := []struct {
		qname string
		want  Verdict
		rule  string
	}{
		{"www.example.com", Allow, "q.yaml:4 egress[0]"}, // 443 is still open
		{"WWW.EXAMPLE.COM.", Allow, "q.yaml:4 egress[0]"},
		{"a.b.example.com", Allow, "q.yaml:4 egress[0]"},
		{"dns.example.net", Allow, "q.yaml:8 egress[2]"}, // the deny is tcp only
		{"example.com", Deny, RuleDefault},
		{"secret.example.com", Deny, "q.yaml:14 deny[0]"},
		{"x.secret.example.com", Allow, "q.yaml:4 egress[0]"},
		{"ok.blocked.example.org", Deny, "q.yaml:15 deny[1]"},
		{"blocked.example.org", Deny, RuleDefault},
		{"mail.example.net", Deny, "q.yaml:18 deny[3]"}, // denied on every port it is allowed
		{"example.org", Deny, RuleDefault},
		{"1.2.3.4", Deny, RuleBadName},
		{"4.3.2.1.in-addr.arpa", Deny, RuleDefault},
		{"", Deny, RuleBadName},
	}
	for _, tc := range tests {
		d := p.DecideQuery(tc.qname)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("DecideQuery(%q) = %v, want %v by %s", tc.qname, d, tc.want, tc.rule)
		}
	}
}

func TestDefault(t *testing.T) {
	mcp := []string{
		"https://mcp.example.com/sse",
		"tools.example.net:8443",
		"10.5.0.7:9000",
		"[2001:db8::5]:7000",
		"http://mcp2.example.com",
		"mcp3.example.com",
		"https://MCP4.example.com:9443/v1?x=1",
		"2001:db8::6",
	}
	p, err := Default("anthropic", mcp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != DefaultName {
		t.Errorf("Default().Name() = %q, want %q", p.Name(), DefaultName)
	}
	names := []struct {
		name string
		port uint16
		want Verdict
		rule string
	}{
		{"api.anthropic.com", 443, Allow, "default preset anthropic"},
		{"api.anthropic.com", 80, Deny, RuleDefault},
		{"mcp.example.com", 443, Allow, "default mcp_servers[0] https://mcp.example.com/sse"},
		{"mcp.example.com", 80, Deny, RuleDefault},
		{"tools.example.net", 8443, Allow, "default mcp_servers[1] tools.example.net:8443"},
		{"tools.example.net", 443, Deny, RuleDefault},
		{"mcp2.example.com", 80, Allow, "default mcp_servers[4] http://mcp2.example.com"},
		{"mcp3.example.com", 443, Allow, "default mcp_servers[5] mcp3.example.com"},
		{"mcp4.example.com", 9443, Allow, "default mcp_servers[6] https://MCP4.example.com:9443/v1?x=1"},
		{"example.com", 443, Deny, RuleDefault},
		{"api.openai.com", 443, Deny, RuleDefault},
		{"github.com", 443, Deny, RuleDefault},
	}
	for _, tc := range names {
		d := p.DecideName(tc.name, tcp, tc.port)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("Default.DecideName(%q, tcp, %d) = %v, want %v by %s", tc.name, tc.port, d, tc.want, tc.rule)
		}
	}
	checkFlows(t, p, []flowCase{
		{tcp, "10.5.0.7:9000", nil, Allow, "default mcp_servers[2] 10.5.0.7:9000"},
		{tcp, "10.5.0.8:9000", nil, Deny, RuleSpecialAddress},
		{tcp, "[2001:db8::5]:7000", nil, Allow, "default mcp_servers[3] [2001:db8::5]:7000"},
		{tcp, "[2001:db8::6]:443", nil, Allow, "default mcp_servers[7] 2001:db8::6"},
		{tcp, "160.79.104.10:443", []string{"api.anthropic.com"}, Allow, "default preset anthropic"},
		{tcp, "160.79.104.10:443", nil, Deny, RuleDefault},
	})
	if d := p.DecideQuery("api.anthropic.com"); !d.Allowed() {
		t.Errorf("Default.DecideQuery(api.anthropic.com) = %v, want allow", d)
	}
	if d := p.DecideQuery("pypi.org"); d.Allowed() {
		t.Errorf("Default.DecideQuery(pypi.org) = %v, want deny", d)
	}

	empty, err := Default("", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := empty.DecideName("api.anthropic.com", tcp, 443); d.Allowed() {
		t.Errorf("Default(\"\", nil).DecideName(api.anthropic.com) = %v, want deny", d)
	}

	for _, tc := range []struct {
		llm string
		mcp []string
	}{
		{"github", nil},   // a preset, but not an LLM provider
		{"antropic", nil}, // unknown
		{"anthropic", []string{"ftp://mcp.example.com"}},
		{"anthropic", []string{"https://"}},
		{"anthropic", []string{"*.example.com"}},
		{"anthropic", []string{"mcp.example.com:0"}},
		{"anthropic", []string{"mcp.example.com:"}},
		{"anthropic", []string{"mcp.example.com:https"}},
		{"anthropic", []string{"[2001:db8::1"}},
		{"anthropic", []string{"[2001:db8::1]x"}},
		{"anthropic", []string{""}},
		{"anthropic", []string{"bad host.example.com"}},
		{"anthropic", []string{"fe80::1%eth0"}},
	} {
		if _, err := Default(tc.llm, tc.mcp, Options{}); err == nil {
			t.Errorf("Default(%q, %q) = nil error, want one", tc.llm, tc.mcp)
		}
	}
}

func TestExplain(t *testing.T) {
	p := mustLoad(t, "testdata/good/coder.yaml", Options{})
	tests := []struct {
		proto   Proto
		host    string
		port    uint16
		want    Verdict
		rule    string
		reasons []string
	}{
		{tcp, "api.github.com", 443, Allow, "coder.yaml:6 egress[0]", []string{"dns query for api.github.com: allow", "tcp api.github.com:443: allow"}},
		{tcp, "api.github.com", 0, Allow, "coder.yaml:6 egress[0]", []string{"dns query for api.github.com: allow", "allowed on tcp port 443"}},
		{tcp, "api.github.com", 80, Deny, RuleDefault, []string{"dns query for api.github.com: allow", "tcp api.github.com:80: deny"}},
		{udp, "api.github.com", 0, Deny, RuleDefault, []string{"dns query for api.github.com: allow", "no rule allows udp"}},
		{tcp, "gist.github.com", 443, Deny, "coder.yaml:12 deny[0]", []string{"dns query for gist.github.com: deny"}},
		{tcp, "Raw.GitHubUserContent.com.", 443, Allow, "coder.yaml:6 egress[0]", []string{"raw.githubusercontent.com"}},
		{tcp, "githubusercontent.com", 443, Deny, RuleDefault, []string{"dns query for githubusercontent.com: deny"}},
		{tcp, "api.anthropic.com", 443, Allow, "coder.yaml:4 preset anthropic", nil},
		{tcp, "10.20.3.3", 5432, Allow, "coder.yaml:8 egress[1]", []string{"10.20.0.0/16"}},
		{tcp, "10.20.3.3", 0, Allow, "coder.yaml:8 egress[1]", []string{"ports 5432,8000-8100"}},
		{tcp, "10.20.3.3", 22, Deny, RuleDefault, nil},
		{udp, "10.20.3.3", 0, Deny, RuleDefault, nil},
		{tcp, "10.21.3.3", 0, Deny, RuleSpecialAddress, []string{"private"}},
		{tcp, "[::ffff:10.20.3.3]", 5432, Allow, "coder.yaml:8 egress[1]", nil},
		{tcp, "8.8.8.8", 0, Deny, RuleDefault, []string{"a name bound"}},
		{tcp, "169.254.169.254", 0, Deny, RuleMetadata, []string{"never"}},
		{tcp, "169.254.169.254", 80, Deny, RuleMetadata, nil},
		{tcp, "bad name", 443, Deny, RuleBadName, nil},
		{Proto(1), "api.github.com", 443, Deny, RuleBadProto, nil},
	}
	for _, tc := range tests {
		d := Explain(p, tc.proto, tc.host, tc.port)
		if d.Verdict != tc.want || d.Rule != tc.rule {
			t.Errorf("Explain(%s, %q, %d) = %v, want %v by %s", tc.proto, tc.host, tc.port, d, tc.want, tc.rule)
		}
		for _, r := range tc.reasons {
			if !strings.Contains(d.Reason, r) {
				t.Errorf("Explain(%s, %q, %d).Reason = %q, want it to contain %q", tc.proto, tc.host, tc.port, d.Reason, r)
			}
		}
	}
}

func mustParse(t testing.TB, name, src string, opts Options) *Policy {
	t.Helper()
	f, err := Parse(name, []byte(src))
	if err != nil {
		t.Fatalf("Parse(%s) = %v", name, err)
	}
	p, err := Compile(f, opts)
	if err != nil {
		t.Fatalf("Compile(%s) = %v", name, err)
	}
	return p
}

// A compiled policy is shared by every agent's goroutines; run with -race.
func TestConcurrentDecisions(t *testing.T) {
	p := mustLoad(t, "testdata/good/layered.yaml", Options{})
	done := make(chan bool)
	for g := 0; g < 8; g++ {
		go func() {
			ok := true
			for i := 0; i < 500; i++ {
				ok = ok && p.DecideFlow(Flow{Proto: tcp, Dst: netip.MustParseAddrPort("10.1.2.3:22")}).Allowed()
				ok = ok && !p.DecideFlow(Flow{Proto: tcp, Dst: netip.MustParseAddrPort("10.99.2.3:22")}).Allowed()
				ok = ok && p.DecideQuery("www.example.com").Allowed()
				ok = ok && !p.DecideName("secret.example.com", tcp, 443).Allowed()
				ok = ok && Explain(p, tcp, "www.example.com", 0).Allowed()
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

// Compile re-checks what matching relies on, for Files built by hand.
func TestCompileHandBuilt(t *testing.T) {
	bad := []Rule{
		{Domains: []Pattern{{Base: "API.example.com"}}, Ports: []PortRange{{443, 443}}},
		{Domains: []Pattern{{Base: "com", Wildcard: true}}, Ports: []PortRange{{443, 443}}},
		{Domains: []Pattern{{Base: ""}}, Ports: []PortRange{{443, 443}}},
		{CIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Ports: []PortRange{{443, 443}}},
		{CIDRs: []netip.Prefix{{}}, Ports: []PortRange{{443, 443}}},
		{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Ports: []PortRange{{443, 443}}, Protocol: Proto(1)},
	}
	for _, r := range bad {
		if _, err := Compile(&File{Filename: "hand.yaml", Name: "hand", Egress: []Rule{r}}, Options{}); err == nil {
			t.Errorf("Compile(egress %+v) = nil error, want one", r)
		}
	}
	p, err := Compile(&File{Filename: "hand.yaml", Name: "hand", UnsafeAllowAnyAddress: true, Egress: []Rule{
		{Line: 3, CIDRs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Ports: []PortRange{{443, 443}}},
	}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkFlows(t, p, []flowCase{
		{tcp, "8.8.8.8:443", nil, Allow, "hand.yaml:3 egress[0]"},
		{tcp, "10.0.0.1:443", nil, Deny, RuleSpecialAddress},
	})
}
