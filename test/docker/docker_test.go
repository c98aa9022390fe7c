package dockertest

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestDockerAttach attaches a --network none container by name, as a
// person would, and checks it from inside.
func TestDockerAttach(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	name := enginetest.Uniq("cn-attach")
	docker.Start(t, name, "--network", "none")

	out := w.D.MustCLI(t, "attach", name)
	if !strings.Contains(out, "attached "+name) {
		t.Errorf("clawnet attach %s printed %q; want the agent named after the container", name, out)
	}
	w.CheckAttachedThenDetach(t, name)
}

// TestDockerAttachLoopbackDNS: a container whose nameserver is on its own
// loopback (never reaching the TUN) gets the gateway as its nameserver.
func TestDockerAttachLoopbackDNS(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	name := enginetest.Uniq("cn-dns")
	docker.Start(t, name, "--network", "none", "--dns", "127.0.0.11", "--dns-search", "corp.test")
	w.D.MustCLI(t, "attach", "--policy", "canary", name)

	r := docker.Inside(name, "cat", "/etc/resolv.conf")
	if !strings.Contains(r.Stdout, "nameserver 100.96.0.1") || regexp.MustCompile(`(?m)^nameserver 127\.`).MatchString(r.Stdout) {
		t.Errorf("resolv.conf inside after attach:\n%s\nwant the gateway instead of 127.0.0.11", r.Stdout)
	}
	if !strings.Contains(r.Stdout, "search corp.test") {
		t.Errorf("resolv.conf lost its search line:\n%s", r.Stdout)
	}
	r = docker.Inside(name, "probe", "lookup", "canary.test")
	if !r.OK() || !strings.Contains(r.Stdout, w.In.Server4.String()) {
		t.Errorf("lookup canary.test: %v", r)
	}

	// A read-only root changes nothing: Docker's copy of the file, on the
	// host, is what is rewritten.
	ro := enginetest.Uniq("cn-dns-ro")
	docker.Start(t, ro, "--network", "none", "--read-only", "--dns", "127.0.0.11")
	if out := w.D.MustCLI(t, "attach", "--policy", "canary", ro); strings.Contains(out, "read-only") {
		t.Errorf("clawnet attach of a read-only container printed %q; want no read-only note", out)
	}
	if r := docker.Inside(ro, "probe", "lookup", "canary.test"); !r.OK() || !strings.Contains(r.Stdout, w.In.Server4.String()) {
		t.Errorf("lookup canary.test in a read-only container: %v", r)
	}
}

// TestDockerAttachRefusals: a container with any other network, a stopped
// one and an unknown one are refused with one line saying what to do.
func TestDockerAttachRefusals(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	bridged := enginetest.Uniq("cn-bridge")
	docker.Start(t, bridged) // the default bridge network
	hosted := enginetest.Uniq("cn-host")
	docker.Start(t, hosted, "--network", "host")
	stopped := enginetest.Uniq("cn-stopped")
	docker.Start(t, stopped, "--network", "none")
	docker.Must(t, "stop", "-t", "0", stopped)

	w.CheckRefusals(t, []enginetest.Refusal{
		{Target: bridged, Want: `container "` + bridged + `" uses network "bridge": run it with --network none (or use clawnet run)`},
		{Target: hosted, Want: `container "` + hosted + `" uses the host network: run it with --network none (or use clawnet run)`},
		{Target: stopped, Want: `container "` + stopped + `" is not running`},
		{Target: "cn-no-such-container", Want: `container "cn-no-such-container" not found`},
	}...)
	// The bridged container's own interface is still its only one: nothing
	// was added to it.
	if r := docker.Inside(bridged, "probe", "ifaces"); slices.Contains(enginetest.LinesOf(r.Stdout), "clawnet0") {
		t.Errorf("refused container got a TUN: %v", r)
	}
}

// TestDockerLifecycle: the daemon follows the engine. A restarted container
// (new PID, new namespace) is attached again with the same name and policy;
// a stopped one is detached, and attached again when started; a removed one
// is detached for good. Nothing is left behind.
func TestDockerLifecycle(t *testing.T) {
	requireDocker(t)
	w := enginetest.NewWorld(t, docker)
	w.CheckLifecycle(t)
}

// TestDockerRun: `clawnet run` has the gateway on its very first
// instruction, and leaves nothing behind with --rm.
func TestDockerRun(t *testing.T) {
	requireDocker(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, docker)
	w.CheckRun(t)
}

// TestDockerRunDetached: a detached `clawnet run` agent keeps its holder
// while it exists, across restarts of its container and of clawnetd;
// removing the agent's container removes the holder and detaches the agent.
func TestDockerRunDetached(t *testing.T) {
	requireDocker(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, docker)
	w.CheckRunDetached(t)
}
