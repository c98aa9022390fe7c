package policy

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// TestPhases: setup rules allow only in the setup phase's Decider, and
// never what a deny rule names (evil.example is in both); pending rules
// never allow; the run phase's Decider is the policy itself.
func TestPhases(t *testing.T) {
	p := mustLoad(t, "testdata/good/phases.yaml", Options{})
	run := ForPhase(p, PhaseRun)
	setup := ForPhase(p, PhaseSetup)
	if run != Decider(p) || setup == run || setup == nil {
		t.Fatalf("ForPhase: run %p, setup %p, policy %p", run, setup, p)
	}
	if ForPhase(p, PhaseSetup) != setup {
		t.Errorf("ForPhase(setup) is a new Decider each time; want one snapshot")
	}
	if setup.Name() != p.Name() || p.Phase() != PhaseRun || setup.(*Policy).Phase() != PhaseSetup {
		t.Errorf("phases: names %q %q, phases %q %q", p.Name(), setup.Name(), p.Phase(), setup.(*Policy).Phase())
	}
	tests := []struct {
		d          Decider
		name       string
		want       Verdict
		ruleSuffix string
	}{
		{run, "api.anthropic.com", Allow, "egress[0]"},
		{setup, "api.anthropic.com", Allow, "egress[0]"},
		{run, "registry.npmjs.org", Deny, "default"},
		{setup, "registry.npmjs.org", Allow, "phases.yaml:8 setup[0]"},
		{run, "mcp.asana.com", Deny, "default"},
		{setup, "mcp.asana.com", Deny, "default"},
		{run, "pypi.org", Deny, "default"},
		{setup, "pypi.org", Deny, "default"},
		{setup, "evil.example", Deny, "deny[0]"},
	}
	for _, tt := range tests {
		ph := tt.d.(*Policy).Phase()
		got := tt.d.DecideName(tt.name, ProtoTCP, 443)
		if got.Verdict != tt.want || !strings.HasSuffix(got.Rule, tt.ruleSuffix) {
			t.Errorf("%s: DecideName(%s) = %v; want %v by ...%s", ph, tt.name, got, tt.want, tt.ruleSuffix)
		}
		q := tt.d.DecideQuery(tt.name)
		if q.Allowed() != (tt.want == Allow) {
			t.Errorf("%s: DecideQuery(%s) = %v", ph, tt.name, q)
		}
		fl := tt.d.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("93.184.216.34:443"), Names: []string{tt.name}})
		if fl.Verdict != tt.want {
			t.Errorf("%s: DecideFlow(bound %s) = %v; want %v", ph, tt.name, fl, tt.want)
		}
	}
	if p.NumSetup() != 1 || p.NumPending() != 2 {
		t.Errorf("NumSetup, NumPending = %d, %d; want 1, 2", p.NumSetup(), p.NumPending())
	}
	// A policy without setup rules has no setup phase.
	c := mustLoad(t, "testdata/good/coder.yaml", Options{})
	if c.SetupPhase() != nil || ForPhase(c, PhaseSetup) != Decider(c) {
		t.Errorf("a policy without setup rules has a setup phase")
	}
}

// TestExplainPhases: explain says a setup rule allows in the setup phase
// only, and a pending rule would allow once approved, and the verdict stays
// the run phase's.
func TestExplainPhases(t *testing.T) {
	p := mustLoad(t, "testdata/good/phases.yaml", Options{})
	d := Explain(p, ProtoTCP, "registry.npmjs.org", 443)
	if d.Verdict != Deny || !strings.Contains(d.Reason, "in the setup phase only") || !strings.Contains(d.Reason, "setup[0] (from: openclaw.json: mcp.servers.github") {
		t.Errorf("Explain(setup host) = %v", d)
	}
	d = Explain(p, ProtoTCP, "mcp.asana.com", 443)
	if d.Verdict != Deny || !strings.Contains(d.Reason, "pending, not applied until clawnet policy approve: phases.yaml:12 pending[0] (from: .mcp.json: mcpServers.asana.url)") {
		t.Errorf("Explain(pending host) = %v", d)
	}
	if strings.Contains(d.Reason, "phase: setup") {
		t.Errorf("Explain(pending egress host) says setup: %v", d)
	}
	// A pending rule with phase: setup: approval makes it a setup rule.
	d = Explain(p, ProtoTCP, "pypi.org", 443)
	if d.Verdict != Deny || !strings.Contains(d.Reason, "pending, not applied until clawnet policy approve: phases.yaml:16 pending[1] (from: .mcp.json: mcpServers.time (uvx downloads mcp-server-time)); phase: setup: once approved, a setup rule, in the setup phase only") {
		t.Errorf("Explain(pending setup host) = %v", d)
	}
	data, _ := os.ReadFile("testdata/good/phases.yaml")
	f, err := Parse("phases.yaml", data)
	if err != nil || len(f.Pending) != 2 || f.Pending[0].Phase != "" || f.Pending[1].Phase != PhaseSetup {
		t.Fatalf("Parse(phases.yaml): %v; want pending phases \"\" and setup", err)
	}
	d = Explain(p, ProtoTCP, "api.anthropic.com", 443)
	if d.Verdict != Allow || strings.Contains(d.Reason, "setup phase") || strings.Contains(d.Reason, "pending") {
		t.Errorf("Explain(run host) = %v", d)
	}
	d = Explain(p, ProtoTCP, "evil.example", 443)
	if strings.Contains(d.Reason, "setup phase") || strings.Contains(d.Reason, "pending") {
		t.Errorf("Explain(denied host) = %v", d)
	}
}
