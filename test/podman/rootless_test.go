package podmantest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// TestPodmanRootlessByPID: a rootful clawnetd (following the rootful
// engine, or none) attaches a rootless user's container by the PID of its
// process: the TUN goes into a network namespace the user's user namespace
// owns, and the resolv.conf it lacked is created in its root, owned by the
// container's root (the user), not by the host's.
func TestPodmanRootlessByPID(t *testing.T) {
	rl := requireRootless(t)
	w := enginetest.NewWorld(t, requirePodman(t))
	w.E = rl // the containers are the rootless user's
	name := enginetest.Uniq("cn-rl-pid")
	rl.Start(t, name, "--network", "none")
	out := w.D.MustCLI(t, "attach", "--name", name, "--pid", rl.PidOf(t, name))
	if !strings.Contains(out, "attached "+name) || !strings.Contains(out, createdNote) {
		t.Errorf("clawnet attach --pid printed %q; want attached, and %q", out, createdNote)
	}
	if r := rl.Inside(name, "ls", "-ln", "/etc/resolv.conf"); !r.OK() || !strings.Contains(r.Stdout, " 0 ") {
		t.Errorf("ls -ln /etc/resolv.conf inside: %v; want it owned by the container's root", r)
	}
	w.CheckAgentWorks(t, name)

	// A read-only root: attached, with the note.
	ro := enginetest.Uniq("cn-rl-ro")
	rl.Start(t, ro, "--network", "none", "--read-only")
	out = w.D.MustCLI(t, "attach", "--name", ro, "--pid", rl.PidOf(t, ro))
	if !strings.Contains(out, "attached "+ro) || !strings.Contains(out, "note: DNS: the agent has no /etc/resolv.conf and its root filesystem is read-only") {
		t.Errorf("clawnet attach --pid of a read-only rootless container printed %q; want attached, with the read-only note", out)
	}
	w.EchoWorks(t, ro)
}

// TestPodmanRootlessByName: a rootful clawnetd pointed at a rootless
// user's Podman socket attaches that user's containers by name and follows
// them (restart, stop, start, removal), and `clawnet run` (run by root) runs the
// user's agent rootless with the gateway on its first instruction.
func TestPodmanRootlessByName(t *testing.T) {
	rl := requireRootless(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, rl)
	name := enginetest.Uniq("cn-rl-name")
	rl.Start(t, name, "--network", "none")
	out := w.D.MustCLI(t, "attach", name)
	if !strings.Contains(out, "attached "+name) || !strings.Contains(out, createdNote) {
		t.Errorf("clawnet attach %s printed %q; want attached, and %q", name, out, createdNote)
	}
	w.EchoWorks(t, name)

	pid1 := rl.PidOf(t, name)
	rl.Must(t, "restart", "-t", "0", name)
	if rl.PidOf(t, name) == pid1 {
		t.Fatal("restart kept the init process")
	}
	w.WaitAgent(t, name, true, 10*time.Second)
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		return slices.Contains(enginetest.LinesOf(rl.Inside(name, "probe", "ifaces").Stdout), "clawnet0")
	}) {
		t.Fatalf("no clawnet0 inside %s after restart; clawnet ls: %+v", name, w.D.List(t))
	}
	w.EchoWorks(t, name)
	rl.Must(t, "stop", "-t", "0", name)
	w.WaitAgent(t, name, false, 10*time.Second)
	rl.Must(t, "start", name)
	w.WaitAgent(t, name, true, 10*time.Second)
	w.EchoWorks(t, name)
	rl.Must(t, "rm", "-f", "-t", "0", name)
	w.WaitAgent(t, name, false, 10*time.Second)

	run := enginetest.Uniq("cn-rl-run")
	t.Cleanup(func() { rl.Remove(run) })
	token := "/first-" + run
	r := w.D.CLI("run", "--name", run, "--policy", "canary", "--rm", "--", rl.TestImage(t), "probe", "http", "http://canary.test"+token)
	if !r.OK() || !strings.HasPrefix(r.Stdout, "200 ") {
		t.Fatalf("clawnet run (rootless) ... probe http (first instruction, by name): %v", r)
	}
	w.In.WaitFor(t, 5*time.Second, "the first instruction's request", func(e canarylog.Entry) bool {
		return e.Service == canarylog.ServiceHTTP && e.Path == token
	})
	rl.NoneLeft(t, run)
}
