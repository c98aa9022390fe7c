package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// setupPolicy opens, for good, llm.canary.test on 443 and the primary
// server's echo (the sentinel); in the setup phase only, matrix.canary.test
// on 443 by name and its address's source (:19) by address.
func setupPolicy(in *harness.Internet) string {
	setupHost := in.Addr4(labHost[matrixName])
	return fmt.Sprintf(`version: v1
name: phased
egress:
  - domains: [%s]
    ports: [443]
  - cidrs: ["%s/32"]
    ports: [7]
setup:
  - domains: [%s]
    ports: [443]
    from: "test: a launcher's download"
  - cidrs: ["%s/32"]
    ports: [19]
    from: "test: a launcher's download"
`, llmName, in.Server4, matrixName, setupHost)
}

// TestSetupPhase: an agent attached under a policy with setup rules starts
// in phase setup and reaches the setup host (the canary logs it); clawnet
// policy phase AGENT run resets its live setup flow within a second with a
// revoke line naming the setup rule, a new one is refused (NXDOMAIN by
// name, RST by address) and never reaches the canary, the run-phase host
// keeps working, and a restart of clawnetd keeps the agent in run.
func TestSetupPhase(t *testing.T) {
	e := newLabEnv(t)
	if err := os.WriteFile(filepath.Join(e.d.PolicyDir, "phased.yaml"), []byte(setupPolicy(e.in)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.d.MustCLI(t, "reload")
	a := e.attach("phased", "phased")
	if got := lsAgents(t, e.d)["phased"].Phase; got != "setup" {
		t.Fatalf("clawnet ls: phase %q at attach, want setup", got)
	}
	setupHost := e.in.Addr4(labHost[matrixName])

	// Setup phase: the setup host by name, and a download from it.
	a.reach(t, e.in, matrixName)
	a.reach(t, e.in, llmName)
	dl, ended := a.movingDownload(t, ap(setupHost, 19), "in the setup phase")

	start := time.Now()
	if out := e.d.MustCLI(t, "policy", "phase", "phased", "run"); out != "phased: phase run, 1 live flows revoked\n" {
		t.Errorf("clawnet policy phase phased run = %q", out)
	}
	waitReset(t, ended, start, "the setup download", "the phase ended")
	l := e.d.WaitAudit(t, time.Until(start.Add(revokeWithin)), "the revoke line of the setup download", func(l harness.AuditEntry) bool {
		return l.Event == "revoke" && l.SrcAddr() == localOf(dl)
	})
	if l.Verdict != "deny" || l.Rule != "default" || !strings.Contains(l.Line, "the setup phase is over") || !strings.Contains(l.Line, "phased.yaml:12 setup[1]") {
		t.Errorf("revoke line = %s; want the run phase's deny and the setup rule that had allowed it", l.Line)
	}
	ce := e.in.WaitFor(t, 5*time.Second, "the source's close line", func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceSource && ce.Event == canarylog.EventClose && ce.Requested == 1000000000
	})
	if ce.Error == "" || ce.BytesOut >= ce.Requested {
		t.Errorf("canary source closed with error %q after %d of %d bytes, want a reset mid-stream", ce.Error, ce.BytesOut, ce.Requested)
	}

	// Run phase: the setup host is refused by name and by address and
	// nothing of it reaches the canary; the run host still works.
	mark := e.in.Mark()
	a.expectNXDOMAIN(t, matrixName)
	a.expectRefused(t, ap(setupHost, 19))
	a.expectRefused(t, ap(setupHost, 443))
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the request to "+llmName, done, "anything of the setup host after the setup phase",
		func(ce canarylog.Entry) bool {
			return ce.LocalAddr().Addr() == setupHost || strings.TrimSuffix(ce.Qname, ".") == matrixName
		})

	// A restart attaches the agent again in run, never in setup.
	e.d.Restart(t)
	if got := lsAgents(t, e.d)["phased"].Phase; got != "run" {
		t.Fatalf("clawnet ls after a restart: phase %q, want run", got)
	}
	mark = e.in.Mark()
	a.expectNXDOMAIN(t, matrixName)
	a.expectRefused(t, ap(setupHost, 19))
	sentinel := a.echoSentinel(t, ap(e.in.Server4, 7))
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the echo sentinel", sentinel, "anything of the setup host after the restart",
		func(ce canarylog.Entry) bool {
			return ce.LocalAddr().Addr() == setupHost || strings.TrimSuffix(ce.Qname, ".") == matrixName
		})
}

// TestSetupTimeout: attach --setup-timeout makes the daemon end the setup
// phase by itself, after the CLI has exited.
func TestSetupTimeout(t *testing.T) {
	e := newLabEnv(t)
	if err := os.WriteFile(filepath.Join(e.d.PolicyDir, "phased.yaml"), []byte(setupPolicy(e.in)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.d.MustCLI(t, "reload")
	ns := harness.NewNetNS(t, "agent")
	out := e.d.MustCLI(t, "attach", "--name", "timed", "--policy", "phased", "--setup-timeout", "2s", "--netns", ns.Path)
	if !strings.Contains(out, " phase=setup until=") {
		t.Errorf("clawnet attach --setup-timeout = %q; want the phase and its end", out)
	}
	a := &agent{name: "timed", ns: ns}
	a.reach(t, e.in, matrixName)
	if !harness.Poll(5*time.Second, 50*time.Millisecond, func() bool { return lsAgents(t, e.d)["timed"].Phase == "run" }) {
		t.Fatalf("phase %q 5s after a 2s setup timeout, want run", lsAgents(t, e.d)["timed"].Phase)
	}
	a.expectNXDOMAIN(t, matrixName)
}

// TestPendingApprove: a rule generate derived from a repository's
// .mcp.json is pending: the agent cannot reach its host (the canary sees
// nothing of it) until clawnet policy approve moves it into egress; the
// daemon applies the edited file without a command.
func TestPendingApprove(t *testing.T) {
	e := newLabEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "openclaw.json")
	mcp := filepath.Join(dir, ".mcp.json")
	os.WriteFile(cfg, []byte(llmOnlyConfig), 0o600)
	os.WriteFile(mcp, []byte(`{"mcpServers": {"tools": {"type": "http", "url": "https://`+mcpName+`/mcp"}}}`), 0o600)
	file := filepath.Join(e.d.PolicyDir, "repo.yaml")
	e.d.MustCLI(t, "policy", "generate", cfg, mcp, "--name", "repo", "--out", file)
	body, _ := os.ReadFile(file)
	if !strings.Contains(string(body), "\npending:\n  - domains: ["+mcpName+"]") || !strings.Contains(string(body), "sha256: ") {
		t.Fatalf("generated policy has no pending rule for %s:\n%s", mcpName, body)
	}
	e.d.MustCLI(t, "reload")
	a := e.attach("repo", "repo")

	mark := e.in.Mark()
	a.expectNXDOMAIN(t, mcpName)
	a.expectRefused(t, ap(e.in.Addr4(labHost[mcpName]), 443))
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the request to "+llmName, done, "anything of the pending host",
		func(ce canarylog.Entry) bool {
			return ce.LocalAddr().Addr() == e.in.Addr4(labHost[mcpName]) || strings.TrimSuffix(ce.Qname, ".") == mcpName
		})

	if out := e.d.MustCLI(t, "policy", "approve", file, "--all"); !strings.Contains(out, "approved 1\t"+mcpName+" tcp 443") {
		t.Errorf("clawnet policy approve --all = %q", out)
	}
	// No reload: the daemon's watch of policy_dir applies the edit.
	if !harness.Poll(5*time.Second, 100*time.Millisecond, func() bool {
		return strings.Contains(e.d.MustCLI(t, "policy", "explain", "--policy", "repo", mcpName+":443"), ": allow by ")
	}) {
		t.Fatal("the approved rule is not in force 5s after approve")
	}
	a.reach(t, e.in, mcpName)
}

// TestPendingApproveSetup: a docker run server in a repository's .mcp.json
// pulls from its image's registry (matrix.canary.test here), a start-up
// need: generate writes it pending with phase: setup, and clawnet policy
// approve moves it into setup:, not egress. An agent attached under the
// approved policy reaches the registry in its setup phase (the canary logs
// it); after clawnet policy phase AGENT run it is refused by name and by
// address and nothing of it reaches the canary, while the run host works.
func TestPendingApproveSetup(t *testing.T) {
	e := newLabEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "openclaw.json")
	mcp := filepath.Join(dir, ".mcp.json")
	os.WriteFile(cfg, []byte(llmOnlyConfig), 0o600)
	os.WriteFile(mcp, []byte(`{"mcpServers": {"tools": {"command": "docker", "args": ["run", "-i", "--rm", "`+matrixName+`/tools:1"]}}}`), 0o600)
	file := filepath.Join(e.d.PolicyDir, "repo.yaml")
	e.d.MustCLI(t, "policy", "generate", cfg, mcp, "--name", "repo", "--out", file)
	body, _ := os.ReadFile(file)
	if !strings.Contains(string(body), "\npending:\n  - domains: ["+matrixName+"]") || !strings.Contains(string(body), "\n    phase: setup\n") || strings.Contains(string(body), "\nsetup:\n") {
		t.Fatalf("generated policy has no pending phase: setup rule for %s:\n%s", matrixName, body)
	}
	if out := e.d.MustCLI(t, "policy", "approve", file, "--all"); !strings.Contains(out, "approved 1\t"+matrixName+" tcp 443\tinto setup (setup phase only)\t") {
		t.Errorf("clawnet policy approve --all = %q", out)
	}
	body, _ = os.ReadFile(file)
	if !strings.Contains(string(body), "\nsetup:\n  - domains: ["+matrixName+"]") || strings.Contains(string(body), "\n    phase: setup\n") || strings.Contains(string(body), "\npending:") {
		t.Fatalf("approved policy has no setup rule for %s:\n%s", matrixName, body)
	}
	e.d.MustCLI(t, "reload")
	if out := e.d.MustCLI(t, "policy", "explain", "--policy", "repo", matrixName+":443"); !strings.Contains(out, ": deny by default:") || !strings.Contains(out, "in the setup phase only") {
		t.Errorf("clawnet policy explain after approve = %q; want denied in run, allowed in the setup phase only", out)
	}
	a := e.attach("repo", "repo")
	if got := lsAgents(t, e.d)["repo"].Phase; got != "setup" {
		t.Fatalf("clawnet ls: phase %q at attach, want setup", got)
	}
	setupHost := e.in.Addr4(labHost[matrixName])

	// Setup phase: the registry, by name, reaches the canary.
	a.reach(t, e.in, matrixName)
	a.reach(t, e.in, llmName)

	if out := e.d.MustCLI(t, "policy", "phase", "repo", "run"); !strings.HasPrefix(out, "repo: phase run") {
		t.Errorf("clawnet policy phase repo run = %q", out)
	}
	mark := e.in.Mark()
	a.expectNXDOMAIN(t, matrixName)
	a.expectRefused(t, ap(setupHost, 443))
	// An HTTPS request to the registry's address with its name as SNI: had
	// the approval opened it for good, the canary would log it.
	if err := a.httpsGet(t, e.in, setupHost, matrixName, "/registry-"+uniq()); err == nil {
		t.Errorf("agent repo: HTTPS to %s (%s) after the setup phase succeeded", matrixName, setupHost)
	}
	done := a.reach(t, e.in, llmName)
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the request to "+llmName, done, "anything of the approved setup host after the setup phase",
		func(ce canarylog.Entry) bool {
			return ce.LocalAddr().Addr() == setupHost || strings.TrimSuffix(ce.Qname, ".") == matrixName
		})
}
