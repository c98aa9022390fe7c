package integration_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// The names an OpenClaw-shaped configuration points at, each served by the
// fake internet's DNS at an address of its own (so the canary's log says
// which one a flow reached), and one name no configuration mentions.
const (
	llmName      = "llm.canary.test"    // models.providers.lab.baseUrl
	mcpName      = "mcp.canary.test"    // mcp.servers.tools.url
	matrixName   = "matrix.canary.test" // channels.matrix.homeserver
	fallbackName = "api.anthropic.com"  // the anthropic preset, from a fallback model
	strayName    = "stray.canary.test"  // in no configuration
)

// labHost is the canary host (Addr4) each name resolves to; host 9 is an
// address no name resolves to.
var labHost = map[string]int{llmName: 4, mcpName: 5, matrixName: 6, strayName: 7, fallbackName: 8}

const unnamedHost = 9

// labZone serves the names above: the canary.test ones in the canary's own
// zone, api.anthropic.com in a zone of its own (the preset's real name, here
// answered by the test internet alone).
func labZone(in *harness.Internet) string {
	var b strings.Builder
	for _, name := range []string{llmName, mcpName, matrixName, strayName} {
		label := strings.TrimSuffix(name, ".canary.test")
		fmt.Fprintf(&b, "%s IN A %s\n%s IN AAAA %s\n", label, in.Addr4(labHost[name]), label, in.Addr6(labHost[name]))
	}
	fmt.Fprintf(&b, `$ORIGIN anthropic.com.
@   IN SOA ns.anthropic.com. hostmaster.anthropic.com. 1 3600 600 86400 60
api IN A    %s
api IN AAAA %s
`, in.Addr4(labHost[fallbackName]), in.Addr6(labHost[fallbackName]))
	return b.String()
}

// labConfig is an openclaw.json, in OpenClaw's JSON5, whose provider,
// channel and MCP server live in the test internet. Its secrets must never
// reach the policy.
const labConfig = `// ~/.openclaw/openclaw.json of a lab agent
{
  agents: {
    defaults: {
      model: { primary: "lab/big-model", fallbacks: ["anthropic/claude-opus-4-6"] },
    },
  },
  models: {
    providers: {
      lab: { baseUrl: "https://llm.canary.test/v1", apiKey: "sk-lab-SECRET-1" },
    },
  },
  channels: {
    matrix: { homeserver: "https://matrix.canary.test", accessToken: "syt_SECRET-2" },
  },
  mcp: {
    servers: {
      tools: { url: "https://mcp.canary.test/mcp", headers: { Authorization: "Bearer SECRET-3" } },
    },
  },
  gateway: { port: 18789, bind: "lan" },
}
`

// llmOnlyConfig names the provider alone: what an agent's policy starts
// from before audit mode and learn find the rest.
const llmOnlyConfig = `{
  agents: { defaults: { model: { primary: "lab/big-model" } } },
  models: { providers: { lab: { baseUrl: "https://llm.canary.test/v1", apiKey: "sk-lab-SECRET-1" } } },
}
`

// newLabEnv starts the test internet serving the lab's names and a daemon
// on it.
func newLabEnv(t *testing.T) *env {
	t.Helper()
	harness.RequireRoot(t)
	in := harness.NewInternetWith(t, harness.InternetOptions{ExtraZoneFor: labZone})
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in})
	return &env{t: t, in: in, d: d}
}

// generate writes config as openclaw.json and runs the clawnet binary's
// policy generate on it, with args, into the daemon's policy_dir as
// name.yaml; then clawnet reload. It returns the policy written.
func (e *env) generate(t *testing.T, config, name string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "openclaw.json")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(e.d.PolicyDir, name+".yaml")
	e.d.MustCLI(t, append([]string{"policy", "generate", cfg, "--name", name, "--out", out}, args...)...)
	body, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	e.d.MustCLI(t, "reload")
	return string(body)
}

// resolve asks the gateway for name's A record from the agent.
func (a *agent) resolve(t *testing.T, name string) (rcode int, addrs []netip.Addr) {
	t.Helper()
	c := a.dial(t, "udp", ap(gatewayV4, 53))
	defer c.Close()
	r, err := harness.DNSExchange(c, name, dns.TypeA, 5*time.Second)
	if err != nil {
		t.Fatalf("agent %s: look up %s: %v", a.name, name, err)
	}
	for _, rr := range r.Answer {
		if ar, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(ar.A)
			addrs = append(addrs, ip.Unmap())
		}
	}
	return r.Rcode, addrs
}

// mustResolve looks name up and fails t unless the answer is the address the
// lab's zone gives it.
func (a *agent) mustResolve(t *testing.T, in *harness.Internet, name string) netip.Addr {
	t.Helper()
	want := in.Addr4(labHost[name])
	rcode, got := a.resolve(t, name)
	if rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != want {
		t.Fatalf("agent %s: %s A = %s %v, want %v", a.name, name, dns.RcodeToString[rcode], got, want)
	}
	return want
}

// httpsGet sends one HTTPS request for path to addr:443 with name as SNI and
// Host, verifying the canary's certificate.
func (a *agent) httpsGet(t *testing.T, in *harness.Internet, addr netip.Addr, name, path string) error {
	t.Helper()
	pem, err := os.ReadFile(in.CAPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), "tcp", ap(addr, 443).String())
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: roots})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, name); err != nil {
		return err
	}
	body, err := io.ReadAll(tc)
	if err != nil {
		return err
	}
	if !strings.Contains(string(body), " 200 OK") {
		return fmt.Errorf("answer %q", body)
	}
	return nil
}

// reach looks name up through the gateway and sends an HTTPS request to it
// by that name, then waits for the canary's line of it at the name's own
// address: the flow reached the host the name stands for, by name.
func (a *agent) reach(t *testing.T, in *harness.Internet, name string) func(canarylog.Entry) bool {
	t.Helper()
	addr := a.mustResolve(t, in, name)
	path := "/" + strings.SplitN(name, ".", 2)[0] + "-" + uniq()
	if err := a.httpsGet(t, in, addr, name, path); err != nil {
		t.Fatalf("agent %s: HTTPS to %s (%s): %v", a.name, name, addr, err)
	}
	got := func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceHTTPS && ce.Event == canarylog.EventRequest && ce.Path == path &&
			ce.SNI == name && ce.Host == name && ce.LocalAddr() == ap(addr, 443)
	}
	in.WaitFor(t, 5*time.Second, "the HTTPS request to "+name, got)
	return got
}

// expectNXDOMAIN checks the gateway answers name with NXDOMAIN and no
// address.
func (a *agent) expectNXDOMAIN(t *testing.T, name string) {
	t.Helper()
	if rcode, got := a.resolve(t, name); rcode != dns.RcodeNameError || len(got) > 0 {
		t.Errorf("agent %s: %s A = %s %v, want NXDOMAIN and no address", a.name, name, dns.RcodeToString[rcode], got)
	}
}

// onlyNames matches every canary line but what the names may cause: their
// DNS queries, and HTTPS at their own addresses carrying no other name.
func onlyNames(in *harness.Internet, names ...string) func(canarylog.Entry) bool {
	byAddr := map[netip.AddrPort]string{}
	for _, n := range names {
		byAddr[ap(in.Addr4(labHost[n]), 443)] = n
	}
	return func(ce canarylog.Entry) bool {
		if ce.Service == canarylog.ServiceDNS {
			return !slices.Contains(names, strings.TrimSuffix(ce.Qname, "."))
		}
		n, ok := byAddr[ce.LocalAddr()]
		if ce.Service != canarylog.ServiceHTTPS || !ok {
			return true
		}
		return (ce.SNI != "" && ce.SNI != n) || (ce.Host != "" && ce.Host != n)
	}
}

// TestGeneratedPolicy is the product's core: clawnet policy generate turns
// an agent's openclaw.json into its policy, and the agent, attached with it,
// reaches by name exactly the hosts its configuration names (its custom
// provider's baseUrl, its fallback model's provider, its Matrix homeserver,
// its MCP server) and nothing else: a name the configuration does not
// mention is NXDOMAIN and never asked upstream, its address is refused, and
// a configured host is reached on no other port or name.
func TestGeneratedPolicy(t *testing.T) {
	e := newLabEnv(t)
	pol := e.generate(t, labConfig, "lab")
	for _, want := range []string{
		"domains: [" + llmName + "]", "domains: [" + matrixName + "]", "domains: [" + mcpName + "]", "  - anthropic\n",
		`openclaw.json: models.providers.lab.baseUrl"`, `openclaw.json: mcp.servers.tools.url"`,
	} {
		if !strings.Contains(pol, want) {
			t.Errorf("generated policy lacks %q:\n%s", want, pol)
		}
	}
	if strings.Contains(pol, "SECRET") {
		t.Errorf("generated policy holds a secret of the configuration:\n%s", pol)
	}
	if strings.Contains(pol, strayName) {
		t.Errorf("generated policy names %s, which no configuration does:\n%s", strayName, pol)
	}

	a := e.attach("lab", "lab")
	configured := []string{llmName, fallbackName, matrixName, mcpName}
	for _, name := range configured {
		a.reach(t, e.in, name)
	}

	// Nothing else: the stray name is NXDOMAIN from the gateway itself; its
	// address, a configured host's other port, and a configured host's
	// address under another name are refused.
	a.expectNXDOMAIN(t, strayName)
	a.expectRefused(t, ap(e.in.Addr4(labHost[strayName]), 443))
	a.expectRefused(t, ap(e.in.Addr4(unnamedHost), 443))
	llm := e.in.Addr4(labHost[llmName])
	a.expectRefused(t, ap(llm, 80))
	if err := a.httpsGet(t, e.in, llm, strayName, "/stray-"+uniq()); err == nil {
		t.Errorf("HTTPS with SNI %s to %s's address went through", strayName, llmName)
	}

	// Barrier: a request to the provider, sent after every refused attempt,
	// reached the canary. By then its whole log may hold nothing but the
	// configured names' queries and requests.
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, 0, sentinelWithin, "the sentinel request to "+llmName, done,
		"traffic to anything the configuration does not name", onlyNames(e.in, configured...))
}

// TestAuditMode: under a generated policy with enforcement: audit, a flow to
// a name no rule allows goes through once the agent's lookup bound it, and
// its open line says "verdict":"would_deny" with the rule that would have
// denied it; a raw address no lookup bound stays refused, and a flow the
// policy allows stays "allow".
func TestAuditMode(t *testing.T) {
	e := newLabEnv(t)
	pol := e.generate(t, llmOnlyConfig, "audited", "--audit")
	if !strings.Contains(pol, "\nenforcement: audit\n") {
		t.Fatalf("policy generate --audit wrote no enforcement: audit:\n%s", pol)
	}
	a := e.attach("auditee", "audited")

	a.reach(t, e.in, llmName)
	a.reach(t, e.in, strayName)
	stray := e.in.Addr4(labHost[strayName])
	open := e.d.WaitAudit(t, 5*time.Second, "the open line of the flow to "+strayName, func(ae harness.AuditEntry) bool {
		return ae.Agent == "auditee" && ae.Event == "open" && ae.DstAddr() == ap(stray, 443)
	})
	if open.Verdict != "would_deny" || open.Rule != "default" || !strings.Contains(open.Line, `"verdict":"would_deny"`) {
		t.Errorf("open line of the flow to %s: verdict %q rule %q, want would_deny by default:\n%s", strayName, open.Verdict, open.Rule, open.Line)
	}
	if open.SNI != strayName && open.Name != strayName {
		t.Errorf("open line of the flow to %s names neither it as sni nor as name:\n%s", strayName, open.Line)
	}
	llm := e.in.Addr4(labHost[llmName])
	allowed := e.d.WaitAudit(t, 5*time.Second, "the open line of the flow to "+llmName, func(ae harness.AuditEntry) bool {
		return ae.Agent == "auditee" && ae.Event == "open" && ae.DstAddr() == ap(llm, 443)
	})
	if allowed.Verdict != "allow" {
		t.Errorf("open line of the flow to %s (a rule allows it): verdict %q, want allow:\n%s", llmName, allowed.Verdict, allowed.Line)
	}

	// A raw address no lookup bound: refused, audit or not.
	mark := e.in.Mark()
	raw := ap(e.in.Addr4(unnamedHost), 443)
	a.expectRefused(t, raw)
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the sentinel request to "+llmName, done,
		"traffic to the raw address "+raw.String(), harness.To(raw.Addr(), 0))
	deny := e.d.WaitAudit(t, 5*time.Second, "the deny line of the raw address", func(ae harness.AuditEntry) bool {
		return ae.Agent == "auditee" && ae.DstAddr() == raw
	})
	if deny.Verdict != "deny" {
		t.Errorf("flow to the raw address %s: verdict %q, want deny:\n%s", raw, deny.Verdict, deny.Line)
	}
}

// TestLearnedPolicy: an agent runs under an audit policy that allows its
// provider only and reaches two more names; clawnet policy learn proposes
// rules for those two (not for the provider, allowed already); added under
// the policy's egress with enforcement back to enforce, the same traffic is
// allowed and a new destination is denied, by name and by address.
func TestLearnedPolicy(t *testing.T) {
	e := newLabEnv(t)
	e.generate(t, llmOnlyConfig, "learner", "--audit")
	a := e.attach("learner", "learner")
	did := []string{llmName, mcpName, matrixName}
	for _, name := range did {
		a.reach(t, e.in, name)
	}
	// Someone else's traffic is never learned for this agent.
	other := e.attach("bystander", "learner")
	other.reach(t, e.in, fallbackName)

	// The agent's lines are in the audit log once its flows have closed.
	for _, name := range did {
		addr := ap(e.in.Addr4(labHost[name]), 443)
		e.d.WaitAudit(t, 5*time.Second, "the close line of the flow to "+name, func(ae harness.AuditEntry) bool {
			return ae.Agent == "learner" && ae.Event == "close" && ae.DstAddr() == addr
		})
	}
	proposal := filepath.Join(t.TempDir(), "proposal.yaml")
	e.d.MustCLI(t, "policy", "learn", "learner", "--audit", e.d.AuditPath, "--out", proposal,
		"--treat-as-public", harness.TestNet4.String()+","+harness.TestNet6.String())
	p, err := os.ReadFile(proposal)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{mcpName, matrixName} {
		if !strings.Contains(string(p), "- "+name+"  # ") {
			t.Errorf("proposal lacks %s:\n%s", name, p)
		}
	}
	for _, name := range []string{llmName, fallbackName, strayName} {
		if strings.Contains(string(p), name) {
			t.Errorf("proposal names %s (allowed already, another agent's, or never reached):\n%s", name, p)
		}
	}

	// Apply it as its header says: its rules under the policy's egress;
	// and end the audit.
	path := filepath.Join(e.d.PolicyDir, "learner.yaml")
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next := applyProposal(t, cur, p)
	if err := os.WriteFile(path, next, 0o644); err != nil {
		t.Fatal(err)
	}
	e.d.MustCLI(t, "policy", "check", path)
	e.d.MustCLI(t, "reload")
	t.Logf("policy after learn:\n%s", next)

	for _, name := range did {
		a.reach(t, e.in, name)
	}
	for _, name := range did {
		addr := ap(e.in.Addr4(labHost[name]), 443)
		e.d.WaitAudit(t, 5*time.Second, "an allow line of the flow to "+name, func(ae harness.AuditEntry) bool {
			return ae.Agent == "learner" && ae.Event == "open" && ae.DstAddr() == addr && ae.Verdict == "allow"
		})
	}
	mark := e.in.Mark()
	a.expectNXDOMAIN(t, strayName)
	a.expectNXDOMAIN(t, fallbackName)
	a.expectRefused(t, ap(e.in.Addr4(labHost[strayName]), 443))
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the sentinel request to "+llmName, done,
		"traffic to a destination the learned policy does not allow", onlyNames(e.in, did...))
}

// applyProposal adds the egress rules of a clawnet policy learn proposal to
// a policy file and drops its enforcement: audit: the review step a person
// does by hand.
func applyProposal(t *testing.T, policyYAML, proposal []byte) []byte {
	t.Helper()
	var doc, prop yaml.Node
	if err := yaml.Unmarshal(policyYAML, &doc); err != nil {
		t.Fatalf("policy: %v", err)
	}
	if err := yaml.Unmarshal(proposal, &prop); err != nil {
		t.Fatalf("proposal: %v", err)
	}
	learned := mapValue(prop.Content[0], "egress")
	if learned == nil || len(learned.Content) == 0 {
		t.Fatalf("proposal has no egress rules:\n%s", proposal)
	}
	top := doc.Content[0]
	if egress := mapValue(top, "egress"); egress != nil {
		egress.Content = append(egress.Content, learned.Content...)
	} else {
		top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "egress"}, learned)
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "enforcement" {
			top.Content = slices.Delete(top.Content, i, i+2)
			break
		}
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mapValue is the value of key in a YAML mapping node, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
