package gateway

import (
	"errors"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// The SetPolicies tests use the flow harness's gateway, whose policy_dir
// holds dnstest.yaml (flowTestPolicy), and a source "kubernetes".

// srcPolicy parses body as a source's document and names it name (a name
// no file may have, as the Kubernetes source's NAMESPACE/NAME).
func srcPolicy(t *testing.T, name, body string) *policy.File {
	t.Helper()
	f, err := policy.Parse(strings.ReplaceAll(name, "/", ":"), []byte("version: v1\nname: placeholder\n"+body))
	if err != nil {
		t.Fatal(err)
	}
	f.Name = name
	// Rule names without lines, as the Kubernetes source makes them.
	for i := range f.Egress {
		f.Egress[i].Line = 0
	}
	for i := range f.Deny {
		f.Deny[i].Line = 0
	}
	return f
}

var noUpstream = netip.MustParseAddrPort("127.0.0.1:1")

const agentsCoder = `egress:
  - cidrs: [198.18.0.0/15]
    ports: [7]
`

// TestSetPoliciesMerge: a source's policies join the files' and the
// built-in one; setting the same documents again changes nothing, a new
// version changes only its policy, an empty source removes its own.
func TestSetPoliciesMerge(t *testing.T) {
	g, _ := dnsTestGateway(t, flowTestPolicy, nil, noUpstream)
	coder := srcPolicy(t, "agents/coder", agentsCoder)
	other := srcPolicy(t, "agents/other", agentsCoder)
	res, errs := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder, other}})
	if !errs.empty() {
		t.Fatalf("SetPolicies: %+v", errs)
	}
	if want := []string{"agents/coder", "agents/other", "default", "dnstest"}; !slices.Equal(res.Policies, want) {
		t.Errorf("policies %v, want %v", res.Policies, want)
	}
	if want := []string{"agents/coder", "agents/other"}; !slices.Equal(res.Changed, want) {
		t.Errorf("changed %v, want %v", res.Changed, want)
	}
	before := g.policies.Get("agents/coder")
	res, _ = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder, other}})
	if len(res.Changed) != 0 || g.policies.Get("agents/coder") != before {
		t.Errorf("the same documents again: changed %v; want nothing", res.Changed)
	}
	coder2 := srcPolicy(t, "agents/coder", agentsCoder+"  - cidrs: [198.18.0.0/15]\n    ports: [9]\n")
	res, _ = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder2, other}})
	if !slices.Equal(res.Changed, []string{"agents/coder"}) {
		t.Errorf("a new version of one: changed %v, want [agents/coder]", res.Changed)
	}
	// A file reload leaves the source's policies alone.
	if res := reload(t, g); len(res.Changed) != 0 || !slices.Contains(res.Policies, "agents/coder") {
		t.Errorf("file reload: changed %v, policies %v; want nothing changed, agents/coder kept", res.Changed, res.Policies)
	}
	res, _ = g.SetPolicies("kubernetes", PolicySource{})
	if want := []string{"default", "dnstest"}; !slices.Equal(res.Policies, want) || len(res.Changed) != 2 {
		t.Errorf("empty source: policies %v changed %v, want %v and both of its own changed", res.Policies, res.Changed, want)
	}
}

// TestSetPoliciesBadKeepsLastGood: a document that does not compile is
// refused with its error and its last good version stays in force; one
// that names a file's policy is refused and the file's stays.
func TestSetPoliciesBadKeepsLastGood(t *testing.T) {
	g, _ := dnsTestGateway(t, flowTestPolicy, nil, noUpstream)
	good := srcPolicy(t, "agents/coder", agentsCoder)
	if _, errs := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{good}}); !errs.empty() {
		t.Fatal(errs)
	}
	before := g.policies.Get("agents/coder")
	bad := srcPolicy(t, "agents/coder", agentsCoder)
	bad.Enforcement = "sometimes"
	fresh := srcPolicy(t, "agents/fresh", agentsCoder)
	fresh.Enforcement = "sometimes"
	res, errs := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{bad, fresh}})
	if err := errs.Policies["agents/coder"]; err == nil || !strings.Contains(err.Error(), `enforcement: want enforce or audit, got "sometimes"`) {
		t.Errorf("error for agents/coder = %v, want the enforcement error", err)
	}
	if errs.Policies["agents/fresh"] == nil {
		t.Errorf("no error for agents/fresh")
	}
	if g.policies.Get("agents/coder") != before || len(res.Changed) != 0 {
		t.Errorf("a refused version replaced the last good one (changed %v)", res.Changed)
	}
	if g.policies.Get("agents/fresh") != nil {
		t.Errorf("a refused policy with no good version is in force")
	}

	fileOne := g.policies.Get("dnstest")
	clash := srcPolicy(t, "dnstest", agentsCoder)
	_, errs = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{clash}})
	if err := errs.Policies["dnstest"]; err == nil || !strings.Contains(err.Error(), "already defined in") {
		t.Errorf("a source policy named as a file's: error %v, want already defined", err)
	}
	if g.policies.Get("dnstest") != fileOne {
		t.Errorf("a source's policy replaced the file's")
	}
}

// TestSetPoliciesDenyOverlay: tighten-only rules are laid over every
// policy in force (files', the built-in one and the sources'), name their
// own rule, and go when their source drops them; a set that allows
// anything is refused, and a refused new version of a set in force leaves
// the last good one denying.
func TestSetPoliciesDenyOverlay(t *testing.T) {
	g, _ := dnsTestGateway(t, flowTestPolicy, []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}, noUpstream)
	coder := srcPolicy(t, "agents/coder", agentsCoder)
	tight := srcPolicy(t, "ClusterAgentNetworkPolicy:no-server", "deny:\n  - cidrs: [198.18.0.2/32]\n")
	tight.Name = "no-server"
	res, errs := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder}, Denies: []*policy.File{tight}})
	if !errs.empty() {
		t.Fatal(errs)
	}
	if want := []string{"agents/coder", "default", "dnstest"}; !slices.Equal(res.Changed, want) {
		t.Errorf("changed %v, want every policy: %v", res.Changed, want)
	}
	server := policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("198.18.0.2:7")}
	neighbour := policy.Flow{Proto: policy.ProtoTCP, Dst: netip.MustParseAddrPort("198.18.0.3:7")}
	for _, n := range []string{"agents/coder", "dnstest"} {
		p := g.policies.Get(n)
		if d := p.DecideFlow(server); d.Verdict != policy.Deny || d.Rule != "ClusterAgentNetworkPolicy:no-server deny[0]" {
			t.Errorf("%s: %v, want deny by the overlay's rule", n, d)
		}
		if d := p.DecideFlow(neighbour); !d.Allowed() {
			t.Errorf("%s: %v, want the policy's own allow", n, d)
		}
	}
	// The overlay never allows: the built-in policy still opens nothing here.
	if d := g.policies.Get("default").DecideFlow(neighbour); d.Allowed() {
		t.Errorf("default: %v, want deny", d)
	}

	loose := srcPolicy(t, "ClusterAgentNetworkPolicy:loose", "egress:\n  - domains: [example.com]\n    ports: [443]\n")
	loose.Name = "loose"
	res, errs = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder}, Denies: []*policy.File{tight, loose}})
	if err := errs.Denies["loose"]; err == nil || !strings.Contains(err.Error(), "may only deny") {
		t.Errorf("a rule set with egress: %v, want refused", err)
	}
	if len(res.Changed) != 0 {
		t.Errorf("a refused rule set changed %v", res.Changed)
	}

	// A new version of a rule set in force that is refused (here: one
	// that would also allow) leaves its last good version denying: a bad
	// update never opens what the overlay closed.
	bad := srcPolicy(t, "ClusterAgentNetworkPolicy:no-server", "egress:\n  - cidrs: [198.18.0.2/32]\n    ports: [7]\n")
	bad.Name = "no-server"
	res, errs = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder}, Denies: []*policy.File{bad}})
	if err := errs.Denies["no-server"]; err == nil || !strings.Contains(err.Error(), "may only deny") {
		t.Errorf("a refused new version: %v, want refused", err)
	}
	if len(res.Changed) != 0 {
		t.Errorf("a refused new version changed %v", res.Changed)
	}
	for _, n := range []string{"agents/coder", "dnstest"} {
		if d := g.policies.Get(n).DecideFlow(server); d.Verdict != policy.Deny || d.Rule != "ClusterAgentNetworkPolicy:no-server deny[0]" {
			t.Errorf("%s after a refused new version: %v, want the last good version's deny", n, d)
		}
	}

	res, _ = g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{coder}})
	if len(res.Changed) != 3 || !g.policies.Get("dnstest").DecideFlow(server).Allowed() {
		t.Errorf("overlay removed: changed %v, dnstest %v; want all changed and the server allowed again",
			res.Changed, g.policies.Get("dnstest").DecideFlow(server))
	}
}

// TestSetPoliciesRevokes: a tighten-only rule that covers a live flow
// closes it, as a file reload does: the agent is reset, the upstream
// closed, a revoke line names the overlay's rule, and the answer counts it.
// Changing the agent's own source policy revokes the same way.
func TestSetPoliciesRevokes(t *testing.T) {
	dnstest.LeakCheck(t)
	up := make(upstreamEnd, 2)
	ft := newRevokeTest(t, up.serve)
	g := ft.a.g
	denied := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, denied, "before")

	tight := srcPolicy(t, "ClusterAgentNetworkPolicy:no-server", "deny:\n  - cidrs: [198.18.0.2/32]\n")
	tight.Name = "no-server"
	res, errs := g.SetPolicies("kubernetes", PolicySource{Denies: []*policy.File{tight}})
	if !errs.empty() {
		t.Fatal(errs)
	}
	onlyRevoked(t, res, map[string]int{"flowtest": 1})
	expectReset(t, c)
	if err := up.wait(t); errors.Is(err, io.EOF) {
		t.Errorf("the upstream saw an orderly close (%v), want a reset", err)
	}
	e := ft.waitEvent(t, EventRevoke, denied)
	if e.Verdict != "deny" || e.Rule != "ClusterAgentNetworkPolicy:no-server deny[0]" {
		t.Errorf("revoke line = %+v, want the overlay's rule", e)
	}
	if c, err := ft.dial(t, denied); err == nil {
		c.Close()
		t.Fatal("a new flow to the denied address connected")
	}

}

// TestSetPoliciesRevokesSourcePolicy: an agent on a source's policy loses
// a live flow when a new version of that policy drops its rule.
func TestSetPoliciesRevokesSourcePolicy(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	if _, errs := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{srcPolicy(t, "agents/coder", agentsCoder)}}); !errs.empty() {
		t.Fatal(errs)
	}
	ft.a.policy = "agents/coder" // before its first flow
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, dst, "allowed")
	res, _ := g.SetPolicies("kubernetes", PolicySource{Policies: []*policy.File{srcPolicy(t, "agents/coder", "egress:\n  - cidrs: [198.18.0.0/15]\n    ports: [80]\n")}})
	if !slices.Equal(res.Changed, []string{"agents/coder"}) {
		t.Errorf("changed %v, want [agents/coder]", res.Changed)
	}
	onlyRevoked(t, res, map[string]int{"flowtest": 1})
	expectReset(t, c)
	e := ft.waitEvent(t, EventRevoke, dst)
	if e.Policy != "agents/coder" || e.Rule != "default" {
		t.Errorf("revoke line = %+v, want agents/coder's default deny", e)
	}
}
