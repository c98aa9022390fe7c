package policygen

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/policy"
)

func learnFixture(t *testing.T, o LearnOptions) *Proposal {
	t.Helper()
	f, err := os.Open("testdata/learn/audit.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := Learn(f, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ruleStrings(p *Proposal) []string {
	var out []string
	for _, r := range p.Rules {
		var names []string
		for _, n := range r.Names {
			names = append(names, n.Name)
		}
		out = append(out, r.Proto+" "+portsText(r.Ports)+" "+strings.Join(names, ","))
	}
	return out
}

// TestLearn: from the agent's own lines only, names (SNI, Host, bound
// name) not addresses, with ports and protocols; three names under one
// registrable domain become its wildcard; what a deny rule or a guard
// refused, special addresses, unnamed addresses, inbound and other agents
// are never proposed.
func TestLearn(t *testing.T) {
	since := time.Date(2026, 7, 1, 9, 30, 0, 0, time.UTC)
	p := learnFixture(t, LearnOptions{Agent: "coder", Since: since, Source: "audit.log"})
	want := []string{
		"tcp [443] api.stripe.com,*.example.com",
		"tcp [80] plain.example.net",
		"udp [3478] stun.example.net",
	}
	got := ruleStrings(p)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Learn rules:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	stripe := p.Rules[0].Names[0]
	if stripe.Count != 2 || !stripe.First.Equal(time.Date(2026, 7, 1, 10, 0, 1, 0, time.UTC)) || !stripe.Last.Equal(time.Date(2026, 7, 1, 10, 30, 0, 0, time.UTC)) {
		t.Errorf("api.stripe.com seen %+v, want 2 flows (opens only), 10:00:01 to 10:30:00", stripe)
	}
	if w := p.Rules[0].Names[1]; w.Count != 3 || strings.Join(w.Covers, ",") != "a.cdn.example.com,b.cdn.example.com,static.example.com" {
		t.Errorf("wildcard %+v, want 3 flows over a.cdn, b.cdn and static", w)
	}
	if len(p.LookedUp) != 1 || p.LookedUp[0].Name != "lookup-only.example" {
		t.Errorf("LookedUp = %+v, want lookup-only.example", p.LookedUp)
	}
	out := string(p.YAML())
	for _, s := range []string{"evil", "old.example.org", "gist.github.com", "169.254.169.254", "10.0.0.5", "intranet", "lab.example", "93.184.216"} {
		if strings.Contains(out, s) {
			t.Errorf("the proposal names %q:\n%s", s, out)
		}
	}
	for _, s := range []string{
		"      - api.stripe.com  # 2 flows, first 2026-07-01T10:00:01Z, last 2026-07-01T10:30:00Z\n",
		`      - "*.example.com"  # 3 flows to a.cdn.example.com, b.cdn.example.com, static.example.com, first`,
		"    protocol: udp\n",
		"#   1 line refused by a deny rule (stays refused)\n",
		"#   2 lines to a special-purpose or metadata address (never learned)\n",
		"#   1 line to an address no name was bound to (names, not addresses, are learned)\n",
		"#   2 lines inbound or between agents (only egress to names is learned)\n",
		"#   1 line refused by a guard",
		"#   lookup-only.example  1 query, first",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("YAML lacks %q:\n%s", s, out)
		}
	}

	// Without a minimum met, no wildcard; treat_as_public lets a lab
	// address be learned; other agents have their own proposals.
	p = learnFixture(t, LearnOptions{Agent: "coder", Since: since, WildcardMin: 4, TreatAsPublic: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}})
	if got := ruleStrings(p); len(got) == 0 || got[0] != "tcp [443] a.cdn.example.com,api.stripe.com,b.cdn.example.com,lab.example,static.example.com" {
		t.Errorf("WildcardMin 4, lab public: rules %q", got)
	}
	for _, r := range p.Rules {
		for _, n := range r.Names {
			if strings.HasPrefix(n.Name, "*") {
				t.Errorf("WildcardMin 4 wrote %s", n.Name)
			}
		}
	}
	p = learnFixture(t, LearnOptions{Agent: "other"})
	if got := ruleStrings(p); len(got) != 0 {
		t.Errorf("agent other's lines are inbound to coder or its own: rules %q", got)
	}
}

// TestLearnApplied: the proposal, added to the agent's policy, allows what
// the agent did and still denies a destination it never reached.
func TestLearnApplied(t *testing.T) {
	base := `version: v1
name: coder
egress:
  - domains: [api.github.com]
    ports: [443]
deny:
  - domains: [gist.github.com]
`
	p := learnFixture(t, LearnOptions{Agent: "coder", Since: time.Date(2026, 7, 1, 9, 30, 0, 0, time.UTC)})
	// As a person would: paste the egress items under egress:.
	yml := string(p.YAML())
	items := yml[strings.Index(yml, "egress:\n")+len("egress:\n"):]
	if i := strings.Index(items, "\n#"); i >= 0 {
		items = items[:i+1]
	}
	text := strings.Replace(base, "deny:\n", items+"deny:\n", 1)
	pol := mustCompile(t, "coder.yaml", []byte(text))
	for _, c := range []struct {
		name  string
		proto policy.Proto
		port  uint16
		want  bool
	}{
		{"api.stripe.com", policy.ProtoTCP, 443, true},
		{"a.cdn.example.com", policy.ProtoTCP, 443, true},
		{"static.example.com", policy.ProtoTCP, 443, true},
		{"plain.example.net", policy.ProtoTCP, 80, true},
		{"stun.example.net", policy.ProtoUDP, 3478, true},
		{"api.github.com", policy.ProtoTCP, 443, true},
		{"gist.github.com", policy.ProtoTCP, 443, false},
		{"plain.example.net", policy.ProtoTCP, 443, false},
		{"new.example.org", policy.ProtoTCP, 443, false},
		{"evil.example", policy.ProtoTCP, 443, false},
	} {
		if got := policy.Explain(pol, c.proto, c.name, c.port).Allowed(); got != c.want {
			t.Errorf("after learning, %s %s:%d allowed = %v, want %v", c.proto, c.name, c.port, got, c.want)
		}
	}
	// The same, through PolicyRules.
	f, err := policy.Parse("coder.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := p.PolicyRules()
	if err != nil {
		t.Fatal(err)
	}
	f.Egress = append(f.Egress, rules...)
	pol2, err := policy.Compile(f, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !policy.Explain(pol2, policy.ProtoUDP, "stun.example.net", 3478).Allowed() || policy.Explain(pol2, policy.ProtoTCP, "new.example.org", 443).Allowed() {
		t.Errorf("PolicyRules applied: stun allowed and new.example.org denied? no")
	}
}

func TestLearnNoAgent(t *testing.T) {
	if _, err := Learn(strings.NewReader(""), LearnOptions{}); err == nil {
		t.Errorf("Learn with no agent succeeded")
	}
	p, err := Learn(strings.NewReader(""), LearnOptions{Agent: "a"})
	if err != nil || len(p.Rules) != 0 || !strings.Contains(string(p.YAML()), "Nothing to add") {
		t.Errorf("Learn of an empty log = %+v, %v", p, err)
	}
}

// FuzzLearn: no log line makes Learn panic, and what it proposes is a
// policy clawnet takes.
func FuzzLearn(f *testing.F) {
	data, _ := os.ReadFile("testdata/learn/audit.log")
	f.Add(string(data))
	f.Fuzz(func(t *testing.T, log string) {
		p, err := Learn(strings.NewReader(log), LearnOptions{Agent: "coder", WildcardMin: 2})
		if err != nil {
			return
		}
		rules, err := p.PolicyRules()
		if err != nil {
			t.Fatalf("PolicyRules: %v", err)
		}
		pf := &policy.File{Filename: "x", Version: "v1", Name: "x", Egress: rules}
		if _, err := policy.Compile(pf, policy.Options{}); err != nil {
			t.Fatalf("learned rules refused: %v", err)
		}
		text := "version: v1\nname: x\n" + string(p.YAML())
		if _, err := policy.Parse("x.yaml", []byte(text)); err != nil {
			t.Fatalf("learned YAML refused: %v\n%s", err, text)
		}
	})
}
