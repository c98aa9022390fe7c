package dockertest

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/enginetest"
)

// TestDockerRunAgentConfig: `clawnet run --agent-config openclaw.json` is
// the two-command experience: it generates the agent's policy into the
// daemon's policy_dir, named after the agent, and runs the container with
// it. The agent reaches its provider by name; the daemon's default policy
// (which would let it reach the canary's echo by address) is not what it
// runs under; a name its config does not mention does not resolve.
func TestDockerRunAgentConfig(t *testing.T) {
	requireDocker(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, docker)
	img := docker.TestImage(t)
	name := enginetest.Uniq("cn-cfg")
	t.Cleanup(func() { docker.Remove(name) })
	cfg := filepath.Join(t.TempDir(), "openclaw.json")
	if err := os.WriteFile(cfg, []byte(`{
  agents: { defaults: { model: { primary: "lab/big-model" } } },
  models: { providers: { lab: { baseUrl: "http://canary.test/v1", apiKey: "sk-SECRET" } } },
}
`), 0o600); err != nil {
		t.Fatal(err)
	}

	r := w.D.CLI("run", "--name", name, "--agent-config", cfg, "--policy-dir", w.D.PolicyDir, "-d", "--", img, "sleep", "3600")
	if !r.OK() {
		t.Fatalf("clawnet run --agent-config: %v", r)
	}
	pol, err := os.ReadFile(filepath.Join(w.D.PolicyDir, name+".yaml"))
	if err != nil || !strings.Contains(string(pol), "domains: [canary.test]") || strings.Contains(string(pol), "SECRET") {
		t.Fatalf("policy written by clawnet run --agent-config: %v\n%s", err, pol)
	}
	if a := w.WaitAgent(t, name, true, 5*time.Second); a.Policy != name {
		t.Errorf("agent %s runs under policy %q; want the generated %q", name, a.Policy, name)
	}

	token := "/v1/" + enginetest.Uniq("models")
	if r := docker.Inside(name, "probe", "http", "http://canary.test"+token); !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
		t.Fatalf("probe http to the provider inside %s: %v", name, r)
	}
	w.In.WaitFor(t, 5*time.Second, "the request to the provider", func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == token && e.Host == "canary.test"
	})
	// The default policy allows the echo by address; the generated one
	// does not.
	enginetest.FailsFast(t, docker.Inside(name, "probe", "tcp", netip.AddrPortFrom(w.In.Server4, 7).String()), time.Second, "echo by address under the generated policy")
	if r := docker.Inside(name, "probe", "lookup", "other.canary.test"); r.OK() {
		t.Errorf("lookup of a name the config does not mention worked: %v", r)
	}
	// Run again with the same config: the policy on disk is up to date.
	r = w.D.CLI("run", "--name", name+"-2", "--agent-config", cfg, "--policy", name, "--policy-dir", w.D.PolicyDir, "--rm", "--", img, "true")
	t.Cleanup(func() { docker.Remove(name + "-2") })
	if !r.OK() || !strings.Contains(r.Stderr, "up to date") {
		t.Errorf("second clawnet run --agent-config with the same policy: %v", r)
	}
}

// TestDockerAgentConfigLabel: a container started by docker itself with
// --label io.clawnet.agent-config=FILE and attached by `clawnet attach
// CONTAINER` with no policy runs under the policy clawnetd generated from
// FILE into its policy_dir, named after the agent: it reaches its provider
// by name, and not the echo the default policy would let it reach.
func TestDockerAgentConfigLabel(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	name := enginetest.Uniq("cn-label")
	cfg := filepath.Join(t.TempDir(), "openclaw.json")
	if err := os.WriteFile(cfg, []byte(`{
  agents: { defaults: { model: { primary: "lab/big-model" } } },
  models: { providers: { lab: { baseUrl: "http://canary.test/v1", apiKey: "sk-SECRET" } } },
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	docker.Start(t, name, "--network", "none", "--label", "io.clawnet.agent-config="+cfg)
	if r := w.D.CLI("attach", name); !r.OK() || !strings.Contains(r.Stdout, " policy="+name+" ") {
		t.Fatalf("clawnet attach %s (labelled, no --policy): %v", name, r)
	}
	pol, err := os.ReadFile(filepath.Join(w.D.PolicyDir, name+".yaml"))
	if err != nil || !strings.Contains(string(pol), "domains: [canary.test]") || strings.Contains(string(pol), "SECRET") {
		t.Fatalf("policy clawnetd generated from the label: %v\n%s", err, pol)
	}
	token := "/v1/" + enginetest.Uniq("models")
	if r := docker.Inside(name, "probe", "http", "http://canary.test"+token); !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
		t.Fatalf("probe http to the provider inside %s: %v", name, r)
	}
	w.In.WaitFor(t, 5*time.Second, "the request to the provider", func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == token && e.Host == "canary.test"
	})
	enginetest.FailsFast(t, docker.Inside(name, "probe", "tcp", netip.AddrPortFrom(w.In.Server4, 7).String()), time.Second, "echo by address under the generated policy")
}
