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
	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// phaseOf is the agent's phase as clawnet ls --json says it.
func phaseOf(t *testing.T, w enginetest.World, name string) string {
	t.Helper()
	r := w.D.CLI("ls", "--json")
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
	w := enginetest.NewWorld(t, docker)
	pol := fmt.Sprintf("version: v1\nname: phased\negress:\n  - domains: [canary.test]\n    ports: [80]\nsetup:\n  - cidrs: [%s/32]\n    ports: [7]\n", w.In.Server4)
	if err := os.WriteFile(filepath.Join(w.D.PolicyDir, "phased.yaml"), []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	w.D.MustCLI(t, "reload")
	name := enginetest.Uniq("cn-phase")
	docker.Start(t, name, "--network", "none")
	if r := w.D.CLI("attach", name, "--policy", "phased"); !r.OK() || !strings.Contains(r.Stdout, " phase=setup ") {
		t.Fatalf("clawnet attach %s --policy phased: %v", name, r)
	}
	w.EchoWorks(t, name) // the setup rule
	w.D.MustCLI(t, "policy", "phase", name, "run")
	echo := netip.AddrPortFrom(w.In.Server4, 7).String()
	enginetest.FailsFast(t, docker.Inside(name, "probe", "tcp", echo), time.Second, "echo after the setup phase")

	docker.Must(t, "restart", "-t", "1", name)
	if !harness.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		// Attached again, and its new namespace answers lookups.
		_, ok := w.D.Lookup(t, name)
		return ok && docker.Inside(name, "probe", "lookup", "canary.test").OK()
	}) {
		t.Fatalf("agent %s not attached again after docker restart: %+v", name, w.D.List(t))
	}
	if got := phaseOf(t, w, name); got != "run" {
		t.Errorf("phase after the engine restarted the container = %q, want run", got)
	}
	enginetest.FailsFast(t, docker.Inside(name, "probe", "tcp", echo), time.Second, "echo after the container's restart")
}
