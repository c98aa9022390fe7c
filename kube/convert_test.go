package kube

import (
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/clawnet/clawnet/policy"
)

// spec decodes a spec written in YAML as the API server would hand it
// over (JSON numbers and all).
func spec(t *testing.T, src string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(src), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPolicyFileGood(t *testing.T) {
	f, err := policyFile("agents", "coder", spec(t, `
description: coding agent
presets: [anthropic]
egress:
  - domains: [api.github.com]
    ports: [443, "8000-8100"]
  - cidrs: [10.20.0.0/16]
    ports: [5432]
    protocol: tcp
deny:
  - domains: [gist.github.com]
ingress:
  - ports: [8080]
    agents: [orchestrator]
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "agents/coder" {
		t.Errorf("Name = %q, want agents/coder", f.Name)
	}
	p, err := policy.Compile(f, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    policy.Decision
		want string
	}{
		{p.DecideName("api.github.com", policy.ProtoTCP, 8050), "allow by agents:coder egress[0]"},
		{p.DecideName("api.anthropic.com", policy.ProtoTCP, 443), "allow by agents:coder preset anthropic"},
		{p.DecideFlow(policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("10.20.1.1:5432")}), "allow by agents:coder egress[1]"},
		{p.DecideQuery("gist.github.com"), "deny by agents:coder deny[0]"},
	} {
		if got := tc.d.Verdict.String() + " by " + tc.d.Rule; got != tc.want {
			t.Errorf("%v: want %s", tc.d, tc.want)
		}
	}

	c, err := policyFile("", "no-paste", spec(t, "deny:\n  - domains: [pastebin.com]\ningress_deny:\n  - cidrs: [192.0.2.0/24]\n"))
	if err != nil || c.Name != "no-paste" || len(c.Deny) != 1 || len(c.IngressDeny) != 1 {
		t.Fatalf("cluster policy: %+v, %v", c, err)
	}
	if e, err := policyFile("agents", "empty", nil); err != nil || e.Name != "agents/empty" || len(e.Egress) != 0 {
		t.Errorf("no spec: %+v, %v; want a policy that allows nothing", e, err)
	}
}

// TestPolicyFileErrors: policyFile(spec) = the error at its field path.
func TestPolicyFileErrors(t *testing.T) {
	for _, tc := range []struct {
		ns, spec, want string
	}{
		{"agents", "egress:\n  - domains: [api.github.com]\n    ports: [443]\n  - domains: [api.github.com, '*.com']\n    ports: [443]\n",
			`spec.egress[1].domains[1]: domain "*.com": a wildcard directly over a top-level domain is refused`},
		{"agents", "egress:\n  - cidrs: [10.20.1.0/16]\n    ports: [5432]\n", `spec.egress[0].cidrs[0]: cidr "10.20.1.0/16" has host bits set`},
		{"agents", "egress:\n  - domains: [a.example.com]\n", "spec.egress[0]: egress rule needs ports"},
		{"agents", "egress:\n  - domains: [a.example.com]\n    ports: [70000]\n", "spec.egress[0].ports[0]: "},
		{"agents", "egres: []\n", `spec.egres: unknown key "egres" (did you mean "egress"?)`},
		{"agents", "deny: []\negres: []\n", `spec.egres: unknown key "egres"`},
		{"agents", "presets: [antropic]\n", `spec.presets[0]: unknown preset "antropic"`},
		{"agents", "enforcement: sometimes\n", `spec.enforcement: enforcement: want enforce or audit`},
		{"agents", "ingress:\n  - ports: [80]\n    proxy_protocol: v1\n    host: true\n", `spec.ingress[0].proxy_protocol: proxy_protocol: want v2, got "v1"`},
		{"agents", "name: other\n", "spec.name: not a key of the spec"},
		{"", "egress:\n  - domains: [a.example.com]\n    ports: [443]\n", "spec.egress: a ClusterAgentNetworkPolicy can only deny"},
		{"", "presets: [anthropic]\n", "spec.presets: a ClusterAgentNetworkPolicy can only deny"},
		{"", "deny:\n  - ports: [22]\n", "spec.deny[0]: deny rule matches nothing"},
	} {
		_, err := policyFile(tc.ns, "p", spec(t, tc.spec))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("policyFile(%q, %q) = %v, want %q...", tc.ns, tc.spec, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error on more than one line: %q", err)
		}
	}
}
