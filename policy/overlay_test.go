package policy_test

import (
	"net/netip"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

func TestWithDenies(t *testing.T) {
	base := mustParse(t, "coder.yaml", `version: v1
name: coder
egress:
  - domains: [api.github.com, gist.github.com]
    ports: [443]
  - cidrs: [10.20.0.0/16]
    ports: [5432]
ingress:
  - ports: [8080]
    agents: [orchestrator]
`)
	tight := mustParse(t, "tight.yaml", `version: v1
name: tight
deny:
  - domains: [gist.github.com]
  - cidrs: [10.20.9.0/24]
ingress_deny:
  - agents: [orchestrator]
    ports: [8080]
`)
	merged := base.WithDenies(tight)
	if len(base.Deny) != 0 || len(base.IngressDeny) != 0 {
		t.Fatalf("WithDenies changed its receiver: %d deny, %d ingress_deny", len(base.Deny), len(base.IngressDeny))
	}
	p, err := policy.Compile(merged, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "coder" {
		t.Errorf("Name() = %q, want coder", p.Name())
	}
	tcp := policy.ProtoTCP
	for _, tc := range []struct {
		d          policy.Decision
		verdict    policy.Verdict
		rule       string
		whatItTest string
	}{
		{p.DecideQuery("gist.github.com"), policy.Deny, "tight.yaml:4 deny[0]", "a denied name is not resolved"},
		{p.DecideQuery("api.github.com"), policy.Allow, "coder.yaml:4 egress[0]", "the rest of the rule stands"},
		{p.DecideFlow(policy.Flow{Proto: tcp, Dst: netip.MustParseAddrPort("10.20.9.1:5432")}), policy.Deny, "tight.yaml:5 deny[1]", "a denied range"},
		{p.DecideFlow(policy.Flow{Proto: tcp, Dst: netip.MustParseAddrPort("10.20.1.1:5432")}), policy.Allow, "coder.yaml:6 egress[1]", "outside the denied range"},
		{p.DecideInbound(policy.Inbound{Proto: tcp, Port: 8080, Peer: policy.Peer{Kind: policy.PeerAgent, Agent: "orchestrator"}}).Decision, policy.Deny, "tight.yaml:7 ingress_deny[0]", "ingress_deny"},
	} {
		if tc.d.Verdict != tc.verdict || tc.d.Rule != tc.rule {
			t.Errorf("%s: %v, want %v by %s", tc.whatItTest, tc.d, tc.verdict, tc.rule)
		}
	}
}

func TestDefaultFile(t *testing.T) {
	f, err := policy.DefaultFile("anthropic", []string{"mcp.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Compile(f.WithDenies(mustParse(t, "t.yaml", "version: v1\nname: t\ndeny:\n  - domains: [mcp.example.com]\n")), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.DecideName("mcp.example.com", policy.ProtoTCP, 443); d.Verdict != policy.Deny || d.Rule != "t.yaml:4 deny[0]" {
		t.Errorf("DecideName(mcp.example.com) = %v, want deny by t.yaml:4 deny[0]", d)
	}
	if d := p.DecideName("api.anthropic.com", policy.ProtoTCP, 443); !d.Allowed() {
		t.Errorf("DecideName(api.anthropic.com) = %v, want allow", d)
	}
}

func mustParse(t *testing.T, name, src string) *policy.File {
	t.Helper()
	f, err := policy.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}
