package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
)

// TestPolicyPhase: phase AGENT run asks the daemon and prints what it
// revoked; anything but run is refused before the daemon is asked.
func TestPolicyPhase(t *testing.T) {
	d := startFakeDaemon(t)
	d.answer = control.PhaseResult{Agent: "coder", Phase: "run", Revoked: 2}
	code, out, stderr := runCLI(t, "policy", "phase", "coder", "run")
	if code != exitOK || out != "coder: phase run, 2 live flows revoked\n" {
		t.Errorf("clawnet policy phase coder run = %d %q %q", code, out, stderr)
	}
	code, _, stderr = runCLI(t, "policy", "phase", "coder", "setup")
	if code != exitUsage || !strings.Contains(stderr, "from setup to run only") {
		t.Errorf("clawnet policy phase coder setup = %d %q; want a usage error", code, stderr)
	}
	code, _, stderr = runCLI(t, "policy", "phase", "coder")
	if code != exitUsage || strings.Count(stderr, "\n") != 1 {
		t.Errorf("clawnet policy phase coder = %d %q; want a usage error", code, stderr)
	}
	want := []string{`POST /v1/agents/coder/phase {"phase":"run"}`}
	if got := d.requests(); !slices.Equal(got, want) {
		t.Errorf("requests = %q; want %q", got, want)
	}
	d.refusal = `no agent called "nobody"`
	if code, _, stderr := runCLI(t, "policy", "phase", "nobody", "run"); code != exitError || stderr != "clawnet: "+d.refusal+"\n" {
		t.Errorf("clawnet policy phase nobody run = %d %q", code, stderr)
	}
}

// TestAttachSetupTimeout: --setup-timeout goes into the attach request,
// a bad one is refused before, and attach and ls show the phase.
func TestAttachSetupTimeout(t *testing.T) {
	d := startFakeDaemon(t)
	until := time.Now().Add(5 * time.Minute)
	d.answer = control.Agent{Name: "coder", Target: "pid:7", Policy: "coder", Phase: "setup", SetupUntil: &until}
	code, out, stderr := runCLI(t, "attach", "--pid", "7", "--setup-timeout", "5m")
	if code != exitOK || !strings.Contains(out, " policy=coder phase=setup until=") {
		t.Errorf("clawnet attach --setup-timeout = %d %q %q", code, out, stderr)
	}
	want := []string{`POST /v1/agents {"pid":7,"setup_timeout":"5m"}`}
	if got := d.requests(); !slices.Equal(got, want) {
		t.Errorf("requests = %q; want %q", got, want)
	}
	for _, args := range [][]string{
		{"attach", "--pid", "7", "--setup-timeout", "soon"},
		{"attach", "--pid", "7", "--setup-timeout", "-1s"},
		{"run", "--setup-timeout", "0s", "--", "img"},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage || !strings.Contains(stderr, "--setup-timeout") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("clawnet %v = %d %q; want one usage line naming --setup-timeout", args, code, stderr)
		}
	}
	d.agents = []control.Agent{{Name: "coder", Target: "pid:7", Policy: "coder", Phase: "setup"}, {Name: "old", Target: "pid:8", Policy: "p"}}
	code, out, _ = runCLI(t, "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 3 || !strings.Contains(lines[0], "POLICY  PHASE") || !strings.Contains(lines[1], "coder   setup") || !strings.Contains(lines[2], "p       -") {
		t.Errorf("clawnet ls = %d\n%s\nwant a PHASE column", code, out)
	}
}

// TestPolicyCheckPhases: check says which rules apply in the setup phase
// only, and explain --file says a setup rule allows in that phase only.
func TestPolicyCheckPhases(t *testing.T) {
	file := filepath.Join(t.TempDir(), "coder.yaml")
	os.WriteFile(file, []byte("version: v1\nname: coder\negress:\n  - domains: [api.github.com]\n    ports: [443]\nsetup:\n  - domains: [registry.npmjs.org]\n    ports: [443]\n"), 0o600)
	code, out, stderr := runCLI(t, "policy", "check", file)
	if code != exitOK || !strings.Contains(out, `ok (policy "coder"); 1 setup rules, applied only in an agent's setup phase`) {
		t.Errorf("policy check = %d %q %q", code, out, stderr)
	}
	code, out, _ = runCLI(t, "policy", "explain", "--file", file, "registry.npmjs.org:443")
	if code != exitOK || !strings.Contains(out, ": deny by default:") || !strings.Contains(out, "in the setup phase only (until clawnet policy phase AGENT run or the setup timeout): allow by coder.yaml:7 setup[0]") {
		t.Errorf("policy explain --file of a setup host = %d %q", code, out)
	}
}
