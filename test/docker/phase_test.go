package dockertest

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/harness"
)

// phaseOf is the agent's phase as clawnet ls --json says it.
func (w world) phaseOf(t *testing.T, name string) string {
	t.Helper()
	r := w.d.CLI("ls", "--json")
	var as []control.Agent
	if !r.OK() || json.Unmarshal([]byte(r.Stdout), &as) != nil {
		t.Fatalf("clawnet ls --json: %v", r)
	}
	for _, a := range as {
		if a.Name == name {
			return a.Phase
		}
	}
	return ""
}

// TestDockerSetupPhaseAcrossRestart: a container's agent that left its
// setup phase stays in run when the engine restarts the container (the
// watcher attaches the new run again): the agent cannot reopen its setup
// rules by exiting. The setup-only echo is refused after the restart.
func TestDockerSetupPhaseAcrossRestart(t *testing.T) {
	requireDocker(t)
	w := newWorld(t)
	pol := fmt.Sprintf("version: v1\nname: phased\negress:\n  - domains: [canary.test]\n    ports: [80]\nsetup:\n  - cidrs: [%s/32]\n    ports: [7]\n", w.in.Server4)
	if err := os.WriteFile(filepath.Join(w.d.PolicyDir, "phased.yaml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	w.d.MustCLI(t, "reload")
	name := uniq("cn-phase")
	startContainer(t, name, "--network", "none")
	if r := w.d.CLI("attach", name, "--policy", "phased"); !r.OK() || !strings.Contains(r.Stdout, " phase=setup ") {
		t.Fatalf("clawnet attach %s --policy phased: %v", name, r)
	}
	w.echoWorks(t, name) // the setup rule
	w.d.MustCLI(t, "policy", "phase", name, "run")
	echo := netip.AddrPortFrom(w.in.Server4, 7).String()
	failsFast(t, inside(name, "probe", "tcp", echo), time.Second, "echo after the setup phase")

	mustDocker(t, "restart", "-t", "1", name)
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		// Attached again, and its new namespace answers lookups.
		_, ok := w.d.Lookup(t, name)
		return ok && inside(name, "probe", "lookup", "canary.test").OK()
	}) {
		t.Fatalf("agent %s not attached again after docker restart: %+v", name, w.d.List(t))
	}
	if got := w.phaseOf(t, name); got != "run" {
		t.Errorf("phase after the engine restarted the container = %q, want run", got)
	}
	failsFast(t, inside(name, "probe", "tcp", echo), time.Second, "echo after the container's restart")
}
