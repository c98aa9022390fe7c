package dockertest

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

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
	a := w.WaitAgent(t, name, true, 5*time.Second)
	if a.Policy != "canary" || !strings.Contains(a.Target, name) {
		t.Errorf("agent = %+v; want policy canary and a target naming the container", a)
	}
	w.CheckAgentWorks(t, name)

	w.D.MustCLI(t, "detach", name)
	w.WaitAgent(t, name, false, 5*time.Second)
	r := docker.Inside(name, "probe", "ifaces")
	if got := enginetest.LinesOf(r.Stdout); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("interfaces after detach = %q; want only lo", got)
	}
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

	for _, tc := range []struct{ target, want string }{
		{bridged, `container "` + bridged + `" uses network "bridge": run it with --network none (or use clawnet run)`},
		{hosted, `container "` + hosted + `" uses the host network: run it with --network none (or use clawnet run)`},
		{stopped, `container "` + stopped + `" is not running`},
		{"cn-no-such-container", `container "cn-no-such-container" not found`},
	} {
		r := w.D.CLI("attach", tc.target)
		if r.OK() {
			t.Errorf("clawnet attach %s succeeded; want a refusal", tc.target)
			continue
		}
		msg := strings.TrimSpace(r.Stderr)
		if !strings.Contains(msg, tc.want) || strings.Count(msg, "\n") > 0 {
			t.Errorf("clawnet attach %s: stderr %q; want one line containing %q", tc.target, msg, tc.want)
		}
	}
	if got := w.D.List(t); len(got) != 0 {
		t.Errorf("clawnet ls after refusals = %+v; want no agent", got)
	}
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
	name := enginetest.Uniq("cn-life")
	docker.Start(t, name, "--network", "none")
	w.D.MustCLI(t, "attach", "--name", "life", "--policy", "canary", name)
	w.WaitAgent(t, "life", true, 5*time.Second)
	// A restart is a new init process in a new namespace. (Namespace inode
	// numbers are recycled as soon as the old one is freed, so the PID is
	// what tells the runs apart.)
	pid1 := docker.PidOf(t, name)
	docker.Must(t, "restart", "-t", "0", name)
	pid2 := docker.PidOf(t, name)
	if pid2 == pid1 {
		t.Fatal("restart kept the init process")
	}
	// Watch the new namespace from the host, and measure the window in
	// which the restarted container ran with no network (only lo).
	if !harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
		return enginetest.RunTimeout(5*time.Second, "nsenter", "-t", pid2, "-n", "ip", "link", "show", "clawnet0").OK()
	}) {
		t.Fatalf("no clawnet0 inside %s 10s after restart; clawnet ls: %+v", name, w.D.List(t))
	}
	seen := time.Now()
	if started, err := time.Parse(time.RFC3339Nano, docker.Must(t, "inspect", "--format", "{{.State.StartedAt}}", name)); err == nil {
		t.Logf("restarted container had no network for at most %v (start to TUN seen)", seen.Sub(started).Round(time.Millisecond))
	}
	a := w.WaitAgent(t, "life", true, 5*time.Second)
	if a.Policy != "canary" {
		t.Errorf("re-attached agent = %+v; want the same policy", a)
	}
	w.CheckAgentWorks(t, name)

	docker.Must(t, "stop", "-t", "0", name)
	w.WaitAgent(t, "life", false, 10*time.Second)
	if st := w.D.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after stop = %+v; want no agent and no flow", st)
	}

	docker.Must(t, "start", name)
	w.WaitAgent(t, "life", true, 10*time.Second)
	w.EchoWorks(t, name)

	docker.Must(t, "rm", "-f", name)
	w.WaitAgent(t, "life", false, 10*time.Second)
	if st := w.D.MustStatus(t); st.Agents != 0 || st.Flows != 0 {
		t.Errorf("status after rm = %+v; want no agent and no flow", st)
	}
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
	img := docker.TestImage(t)
	name := enginetest.Uniq("cn-rund")
	t.Cleanup(func() { docker.Remove(name) })
	r := w.D.CLI("run", "--name", name, "--policy", "canary", "-d", "--", img, "sleep", "3600")
	if !r.OK() {
		t.Fatalf("clawnet run -d: %v", r)
	}
	w.WaitAgent(t, name, true, 5*time.Second)
	w.CheckAgentWorks(t, name)

	// Restarting the agent's container keeps the holder's namespace: the
	// agent has its network from its first instruction again.
	docker.Must(t, "restart", "-t", "0", name)
	if r := docker.Inside(name, "probe", "ifaces"); !slices.Contains(enginetest.LinesOf(r.Stdout), "clawnet0") {
		t.Errorf("after restarting the agent container: %v; want clawnet0 at once", r)
	}

	// A clawnetd that dies takes the agent's TUN with it (fail closed); the
	// next one finds the running holder and attaches it as it was.
	w.D.Kill()
	if r := docker.Inside(name, "probe", "ifaces"); slices.Contains(enginetest.LinesOf(r.Stdout), "clawnet0") {
		t.Errorf("clawnet0 still there with no daemon: %v", r)
	}
	w.D = enginetest.StartDaemon(t, w.In)
	a := w.WaitAgent(t, name, true, 10*time.Second)
	if a.Policy != "canary" {
		t.Errorf("agent after a daemon restart = %+v; want policy canary", a)
	}
	w.EchoWorks(t, name)

	docker.Must(t, "rm", "-f", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	docker.NoneLeft(t, name)
}
