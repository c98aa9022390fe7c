package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const auditPolicy = `version: v1
name: learner
enforcement: audit
egress:
  - domains: [api.github.com]
    ports: [443]
  - cidrs: [10.20.0.0/16]
    ports: [5432]
deny:
  - domains: [gist.github.com]
ingress:
  - ports: [8080]
    agents: [cli]
`

func compileText(t *testing.T, name, text string) *Policy {
	t.Helper()
	f, err := Parse(name, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAudit: under enforcement: audit, what only the default deny refuses
// is WouldDeny (allowed, logged would_deny); deny rules, the guards, bare
// addresses, inbound and agents stay decided as under enforcement.
func TestAudit(t *testing.T) {
	audit := compileText(t, "learner.yaml", auditPolicy)
	enforce := compileText(t, "learner.yaml", strings.Replace(auditPolicy, "enforcement: audit", "enforcement: enforce", 1))
	if !audit.Audit() || enforce.Audit() {
		t.Fatalf("Audit() = %v, %v; want true, false", audit.Audit(), enforce.Audit())
	}
	web := "93.184.216.34"
	tests := []struct {
		what        string
		decide      func(p *Policy) Decision
		audit, enfc Verdict
		rule        string
	}{
		{"query for a name no rule names", func(p *Policy) Decision { return p.DecideQuery("example.org") }, WouldDeny, Deny, RuleDefault},
		{"query for an allowed name", func(p *Policy) Decision { return p.DecideQuery("api.github.com") }, Allow, Allow, "learner.yaml:5 egress[0]"},
		{"query for a denied name", func(p *Policy) Decision { return p.DecideQuery("gist.github.com") }, Deny, Deny, "learner.yaml:10 deny[0]"},
		{"query for a bad name", func(p *Policy) Decision { return p.DecideQuery("a..b") }, Deny, Deny, RuleBadName},
		{"flow to a public address bound to an unknown name", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort(web + ":443"), Names: []string{"example.org"}})
		}, WouldDeny, Deny, RuleDefault},
		{"udp too", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoUDP, Dst: netip.MustParseAddrPort(web + ":3478"), Names: []string{"stun.example.org"}})
		}, WouldDeny, Deny, RuleDefault},
		{"flow to a bare public address", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort(web + ":443")})
		}, Deny, Deny, RuleDefault},
		{"flow bound to a denied name", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort(web + ":443"), Names: []string{"gist.github.com"}})
		}, Deny, Deny, "learner.yaml:10 deny[0]"},
		{"private address with a name (rebinding)", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("192.168.1.5:443"), Names: []string{"example.org"}})
		}, Deny, Deny, RuleSpecialAddress},
		{"private address a cidrs rule names, other port", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("10.20.1.1:22"), Names: []string{"db.example.org"}})
		}, Deny, Deny, RuleDefault},
		{"metadata", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("169.254.169.254:80"), Names: []string{"metadata.example"}})
		}, Deny, Deny, RuleMetadata},
		{"loopback", func(p *Policy) Decision {
			return p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("127.0.0.1:80"), Names: []string{"localhost.example"}})
		}, Deny, Deny, RuleSpecialAddress},
		{"SNI no rule names", func(p *Policy) Decision { return p.DecideName("example.org", ProtoTCP, 443) }, WouldDeny, Deny, RuleDefault},
		{"SNI denied", func(p *Policy) Decision { return p.DecideName("gist.github.com", ProtoTCP, 443) }, Deny, Deny, "learner.yaml:10 deny[0]"},
		{"SNI bad", func(p *Policy) Decision { return p.DecideName("bad name.example", ProtoTCP, 443) }, Deny, Deny, RuleBadName},
		{"another agent", func(p *Policy) Decision { return p.DecideAgent("db", ProtoTCP, 5432) }, Deny, Deny, RuleDefault},
		{"inbound from an agent no rule names", func(p *Policy) Decision {
			return p.DecideInbound(Inbound{Proto: ProtoTCP, Port: 8080, Peer: Peer{Kind: PeerAgent, Agent: "stranger"}}).Decision
		}, Deny, Deny, RuleDefault},
		{"inbound from the host", func(p *Policy) Decision {
			return p.DecideInbound(Inbound{Proto: ProtoTCP, Port: 22, Peer: Peer{Kind: PeerHost}}).Decision
		}, Deny, Deny, RuleDefault},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			p    *Policy
			want Verdict
		}{{audit, tt.audit}, {enforce, tt.enfc}} {
			d := tt.decide(c.p)
			if d.Verdict != c.want || d.Rule != tt.rule {
				t.Errorf("audit=%v %s = %v, want %v by %s", c.p.Audit(), tt.what, d, c.want, tt.rule)
			}
			if d.Verdict == WouldDeny && (!d.Allowed() || !strings.HasSuffix(d.Reason, auditNote)) {
				t.Errorf("%s: WouldDeny %v not allowed, or its reason does not say audit", tt.what, d)
			}
		}
	}
	if WouldDeny.String() != "would_deny" {
		t.Errorf("WouldDeny.String() = %q", WouldDeny.String())
	}
}

// TestAuditByName follows the gateway's decideFlow: a flow audit lets
// through for its bound name alone is not allowed by its address alone, so
// the gateway still checks the client's SNI or Host against the names this
// agent's DNS bound.
func TestAuditByName(t *testing.T) {
	p := compileText(t, "learner.yaml", auditPolicy)
	fl := Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("93.184.216.34:443"), Names: []string{"example.org"}}
	if d := p.DecideFlow(fl); d.Verdict != WouldDeny {
		t.Fatalf("DecideFlow = %v, want WouldDeny", d)
	}
	fl.Names = nil
	if byName := !p.DecideFlow(fl).Allowed(); !byName {
		t.Errorf("the address alone is allowed under audit: the gateway would skip the name checks")
	}
}

func TestAuditExplain(t *testing.T) {
	p := compileText(t, "learner.yaml", auditPolicy)
	d := Explain(p, ProtoTCP, "example.org", 443)
	if d.Verdict != WouldDeny || !strings.Contains(d.Reason, "would_deny") {
		t.Errorf("Explain(example.org:443) = %v, want would_deny", d)
	}
	d = Explain(p, ProtoTCP, "example.org", 0)
	if d.Verdict != WouldDeny {
		t.Errorf("Explain(example.org) = %v, want would_deny", d)
	}
	d = Explain(p, ProtoTCP, "93.184.216.34", 443)
	if d.Verdict != Deny || !strings.Contains(d.Reason, "under enforcement: audit, a name this agent's own DNS bound to it would open it") {
		t.Errorf("Explain(93.184.216.34:443) = %v, want deny saying what audit would do", d)
	}
	if d := Explain(p, ProtoTCP, "gist.github.com", 443); d.Verdict != Deny {
		t.Errorf("Explain(gist.github.com:443) = %v, want deny", d)
	}
}

func TestEnforcementKey(t *testing.T) {
	for text, want := range map[string]string{
		"version: v1\nname: a\n":                       "",
		"version: v1\nname: a\nenforcement: enforce\n": "",
		"version: v1\nname: a\nenforcement: audit\n":   "",
		"version: v1\nname: a\nenforcement: report\n":  `e.yaml:3: enforcement: want enforce or audit, got "report"`,
		"version: v1\nname: a\nenforcement: [audit]\n": "e.yaml:3: enforcement: want a string",
		"version: v1\nname: a\nenforcement: true\n":    `e.yaml:3: enforcement: want a string, got "true"`,
		"version: v1\nname: a\nenforcment: audit\n":    `e.yaml:3: unknown key "enforcment" (did you mean "enforcement"?)`,
	} {
		_, err := Parse("e.yaml", []byte(text))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("Parse(%q) = %q, want %q", text, got, want)
		}
	}
	if _, err := Compile(&File{Filename: "x", Name: "x", Enforcement: "report"}, Options{}); err == nil {
		t.Errorf("Compile of a hand-built File with enforcement report succeeded")
	}
}
